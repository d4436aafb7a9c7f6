//! `ci/bench analysis`: how well the canary analysis decides, on the test bed's real traffic.
//!
//! The fixture is deployed to t1..t3 (ssh, HAProxy pool) with binomial 5xx noise
//! (`serve_5xx_random`): t2 and t3 at the base rate, t1 at twice it. Load runs through HAProxy
//! while consecutive, disjoint windows are read from Prometheus (`query_range`, the 5xx share
//! of each host's page requests per step, as a deploy's canary metric reads it). Each window
//! is judged twice by [`applier::analysis::compare`] with the rule of a deploy config:
//! t2 against t3 (equal noise: a fail or an inconclusive is a false abort) and t1 against t3 (a 2x regression: a
//! pass is a miss; an inconclusive aborts, as under a deploy's default policy), once over the
//! window and once as `inconclusive: retry` reads on (a step more while inconclusive, up to
//! twice the window), and by the baseline a user would otherwise have, a fixed threshold on
//! the canary's mean, at several thresholds, in the same windows. Detection time
//! is the shortest prefix of a window (in steps) at which each method first aborts the bad
//! canary; the floor is `min_samples` steps, below which the analysis never decides.
//!
//! Prints a Markdown section (the docs block) on stdout, progress on stderr. Needs the bed up
//! (`ci/testbed up`) and node, npm, git; arguments: `--windows N` (default 20), `--base R`
//! (default 0.05).

#[path = "../tests/common/load.rs"]
mod load;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use applier::analysis::{Rule, Verdict, Worse, compare, threshold};
use applier::checks::samples::prometheus_range;
use serde_json::{Value, json};

/// The 5xx share of a host's page requests per step. With 1 s scrapes, a range of the step
/// plus one second holds each step's own scrapes and the one closing the step before: every
/// sample covers its 2 s of requests and no other sample's (a 4 s range would share a third of
/// each sample with the next, and Mann-Whitney, which takes samples as independent, would
/// report p-values too small: false aborts on equal noise).
const Q_5XX: &str = r#"(sum(rate(fixture_http_request_duration_seconds_count{host="{host}",route="v1_page_-title-",status=~"5.."}[3s])) or vector(0)) / sum(rate(fixture_http_request_duration_seconds_count{host="{host}",route="v1_page_-title-"}[3s]))"#;
const WINDOW: u64 = 24;
/// `inconclusive: retry`: the window grows a step at a time up to this (`deadline`).
const DEADLINE: u64 = 2 * WINDOW;
const STEP: u64 = 2;
const THRESHOLDS: [f64; 4] = [0.06, 0.075, 0.1, 0.2];

fn rule() -> Rule {
    Rule {
        min_samples: 8,
        p_value: 0.01,
        min_effect: 0.02,
        min_ratio: Some(1.5),
        worse: Worse::Higher,
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// One host's samples over `[from, from + DEADLINE)`, one per step (the first `WINDOW / STEP`
/// are the window's).
fn samples(agent: &ureq::Agent, prom: &str, host: &str, from: SystemTime) -> Vec<f64> {
    let to = from + Duration::from_secs(DEADLINE - STEP);
    let q = Q_5XX.replace("{host}", host);
    let (start, end) = (format!("{:.3}", unix(from)), format!("{:.3}", unix(to)));
    let body = agent
        .get(format!("{prom}/api/v1/query_range"))
        .query("query", &q)
        .query("start", &start)
        .query("end", &end)
        .query("step", STEP.to_string())
        .call()
        .and_then(|r| r.into_body().read_to_string())
        .unwrap_or_else(|e| panic!("Prometheus query for {host}: {e}"));
    prometheus_range(&body).unwrap_or_else(|e| panic!("Prometheus answer for {host}: {e}"))
}

/// The first prefix length (steps) at which `aborts` holds, if any.
fn first_abort(n: usize, aborts: impl Fn(usize) -> bool) -> Option<usize> {
    (1..=n).find(|&k| aborts(k))
}

#[derive(Default)]
struct Tally {
    false_aborts: usize,
    misses: usize,
    inconclusive_equal: usize,
    detect_steps: Vec<usize>,
}

/// Median and slowest time to detect over the windows where the method aborted, or "never".
fn detect(t: &Tally) -> String {
    let mut v = t.detect_steps.clone();
    v.sort_unstable();
    match (v.get(v.len() / 2), v.last()) {
        (Some(m), Some(x)) => format!(
            "{} s, {} s ({} windows)",
            *m as u64 * STEP,
            *x as u64 * STEP,
            v.len()
        ),
        _ => "never".to_string(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let windows: usize = arg(&args, "--windows").map_or(20, |s| s.parse().expect("--windows N"));
    let base: f64 = arg(&args, "--base").map_or(0.05, |s| s.parse().expect("--base R"));
    let bed = testkit::Bed::running().unwrap_or_else(|m| panic!("{m}"));
    testkit::node_tools().unwrap_or_else(|m| panic!("{m}"));
    let dir = tempfile::Builder::new()
        // Short: the ssh control sockets live under it (a UNIX socket path has 108 bytes).
        .prefix("ba")
        .tempdir()
        .unwrap();
    let store = dir.path().join("store");
    eprintln!("bench analysis: building the fixture");
    let builds = testkit::build_variants(
        dir.path(),
        &[("good", "marker: test", "marker: test")],
        |c| {
            c.arg("--store").arg(&store);
        },
    );
    std::fs::create_dir_all(dir.path().join("ctl")).unwrap();
    let rate = |h: &str| if h == "t1" { 2.0 * base } else { base };
    let hosts: serde_json::Map<String, Value> = bed
        .hosts
        .iter()
        .take(3)
        .map(|h| {
            // A fresh store each run: the host's records of an earlier run (its fencing
            // tokens among them) would refuse this one, so start from an empty root.
            let _ = applier::target::HostRoot::new(&h.root).stop();
            testkit::paths::empty_dir(&h.root);
            let _ = bed.haproxy_cmd(&format!("set server fixture/{} state ready", h.name));
            (
                h.name.clone(),
                json!({
                    "root": h.root, "port": h.service_port, "ssh": h.name,
                    "values": {"services.0.conf.host": "127.0.0.1"},
                    "env": {"FIXTURE_SERVE_5XX": rate(&h.name).to_string(), "FIXTURE_SERVE_5XX_RANDOM": "1"},
                }),
            )
        })
        .collect();
    let env = json!({
        "service_env": "test",
        "transport": {"type": "ssh", "config_file": bed.ssh.config, "applier_path": env!("CARGO_BIN_EXE_applier"),
                      "control_dir": dir.path().join("ctl"), "connect_timeout": "3s"},
        "pool": {"driver": "haproxy", "socket": bed.haproxy.socket, "backend": bed.haproxy.backend,
                 "drain_timeout": "5s", "timeout": "15s"},
        "groups": [{"name": "canary", "hosts": ["t1"]}, {"name": "rest", "hosts": ["t2", "t3"]}],
        "group_size": 2,
        "ready_timeout": "30s",
        "hosts": hosts,
        "checks": {"prometheus": bed.prometheus.url,
                   "disable": ["metrics fixture_http_requests_total", "http /en.wikipedia.org/v1/page/Main_Page"]},
    });
    let config = dir.path().join("deploy.yaml");
    testkit::config::write_yaml(
        &config,
        &json!({"store": store, "lease_ttl": "10s", "envs": {"bench": env}}),
    );
    eprintln!(
        "bench analysis: deploying to t1..t3 (t1 at {}, t2 and t3 at {base})",
        2.0 * base
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_applier"))
        .arg("--config")
        .arg(&config)
        .args([
            "--format",
            "json",
            "deploy",
            &builds["good"].1,
            "--env",
            "bench",
        ])
        .env_remove("APPLIER_CONFIG")
        .env_remove("APPLIER_STORE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "deploy failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );

    let lb = &bed.haproxy.url;
    let load = load::Load::start(
        vec![
            format!("{lb}/en.wikipedia.org/v1/page/Main_Page"),
            format!("{lb}/_info"),
        ],
        4,
        50,
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    // Warm-up: rates need a full range of scrapes.
    std::thread::sleep(Duration::from_secs(8));
    let t0 = SystemTime::now();
    let r = rule();
    let mut mw = Tally::default();
    let mut mw_retry = Tally::default();
    let mut fixed: BTreeMap<String, Tally> = BTreeMap::new();
    let mut counts = Vec::new();
    for i in 0..windows {
        let from = t0 + Duration::from_secs(i as u64 * WINDOW);
        let ready = from + Duration::from_secs(DEADLINE + 3);
        if let Ok(d) = ready.duration_since(SystemTime::now()) {
            std::thread::sleep(d);
        }
        let long: BTreeMap<&str, Vec<f64>> = ["t1", "t2", "t3"]
            .into_iter()
            .map(|h| (h, samples(&agent, &bed.prometheus.url, h, from)))
            .collect();
        let n0 = (WINDOW / STEP) as usize;
        let s: BTreeMap<&str, &[f64]> = long
            .iter()
            .map(|(h, v)| (*h, &v[..v.len().min(n0)]))
            .collect();
        let (bad, equal, baseline) = (s["t1"], s["t2"], s["t3"]);
        counts.push(bad.len().min(equal.len()).min(baseline.len()));
        let eq = compare("5xx", equal, baseline, &r);
        let rg = compare("5xx", bad, baseline, &r);
        // As a deploy with `inconclusive: retry` reads on: one step more while inconclusive.
        let retried = |c: &[f64], b: &[f64]| {
            let mut k = n0;
            loop {
                let v = compare("5xx", &c[..k.min(c.len())], &b[..k.min(b.len())], &r);
                if v.verdict != Verdict::Inconclusive || k >= c.len().max(b.len()) {
                    return (v, k);
                }
                k += 1;
            }
        };
        let (eq2, keq) = retried(&long["t2"], &long["t3"]);
        let (rg2, krg) = retried(&long["t1"], &long["t3"]);
        eprintln!(
            "  window {:>2}: equal {} (p {:.3}), 2x {} (p {:.3}); means t1 {:.3} t2 {:.3} t3 {:.3}; retried: equal {} at {} s, 2x {} at {} s",
            i + 1,
            applier::analysis::verdict_str(eq.verdict),
            eq.p.unwrap_or(f64::NAN),
            applier::analysis::verdict_str(rg.verdict),
            rg.p.unwrap_or(f64::NAN),
            rg.canary_mean.unwrap_or(f64::NAN),
            eq.canary_mean.unwrap_or(f64::NAN),
            eq.baseline_mean.unwrap_or(f64::NAN),
            applier::analysis::verdict_str(eq2.verdict),
            keq as u64 * STEP,
            applier::analysis::verdict_str(rg2.verdict),
            krg as u64 * STEP,
        );
        // Counted as a deploy acts: an inconclusive analysis fails the canary (the default
        // policy, and `retry` at its deadline).
        for (t, eq, rg, bad, base) in [
            (&mut mw, &eq, &rg, bad, baseline),
            (&mut mw_retry, &eq2, &rg2, &long["t1"][..], &long["t3"][..]),
        ] {
            match eq.verdict {
                Verdict::Fail => t.false_aborts += 1,
                Verdict::Inconclusive => {
                    t.false_aborts += 1;
                    t.inconclusive_equal += 1;
                }
                Verdict::Pass => {}
            }
            if rg.verdict == Verdict::Pass {
                t.misses += 1;
            }
            let n = bad.len().min(base.len());
            if let Some(k) = first_abort(n, |k| {
                compare("5xx", &bad[..k], &base[..k], &r).verdict == Verdict::Fail
            }) {
                t.detect_steps.push(k);
            }
        }
        for limit in THRESHOLDS {
            let t = fixed.entry(format!("{limit}")).or_default();
            let fails =
                |v: &[f64]| threshold("5xx", v, Some(limit), &r, "bench").verdict == Verdict::Fail;
            if fails(equal) {
                t.false_aborts += 1;
            }
            if !fails(bad) {
                t.misses += 1;
            }
            if let Some(k) = first_abort(bad.len(), |k| fails(&bad[..k])) {
                t.detect_steps.push(k);
            }
        }
    }
    let (ok, failed, _) = load.finish();
    for h in &bed.hosts {
        let _ = applier::target::HostRoot::new(&h.root).stop();
    }

    let min_n = counts.iter().min().copied().unwrap_or(0);
    let mut rows = vec![
        format!(
            "| Mann-Whitney U against the baseline, one {WINDOW} s window (p <= {}, effect >= {}, ratio >= 1.5, >= {} samples) | {} | {} | {} | {} |",
            r.p_value,
            r.min_effect,
            r.min_samples,
            mw.false_aborts,
            mw.misses,
            detect(&mw),
            mw.inconclusive_equal
        ),
        format!(
            "| the same, `inconclusive: retry` until {DEADLINE} s (a step more while inconclusive) | {} | {} | {} | {} |",
            mw_retry.false_aborts,
            mw_retry.misses,
            detect(&mw_retry),
            mw_retry.inconclusive_equal
        ),
    ];
    for (limit, t) in fixed.iter() {
        rows.push(format!(
            "| fixed threshold: canary mean > {limit} | {} | {} | {} | - |",
            t.false_aborts,
            t.misses,
            detect(t)
        ));
    }
    let (nproc, when) = (
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        humantime::format_rfc3339_seconds(SystemTime::now()),
    );
    println!(
        "<!-- analysis:begin (written by ci/bench analysis) -->
## canary analysis (decisions on the bed's traffic)

Measured {when} on {nproc} CPUs (debug build: what is measured is decisions and the
time to one, bounded by Prometheus' 1 s scrapes, not CPU). The fixture on t1..t3 of the test bed,
deployed over ssh behind HAProxy, serving 5xx at random (binomial) to each page request:
t2 and t3 at {base}, t1 at {bad} (2x). Load through HAProxy: 4 clients at up to 50 req/s each
over a page and `/_info` ({ok} answers, {failed} of them not 200, in {windows} disjoint windows
of {WINDOW} s, one sample per {STEP} s step: the 5xx share of the host's page requests from
Prometheus, a rate over 3 s so that no two samples share requests, at least {min_n} samples per host and window). Each window is judged as a canary:
t2 against t3 (equal noise: an abort is a false abort) and t1 against t3 (the regression: no
abort is a miss), by the analysis and, in the same windows, by a fixed threshold on the
canary's mean (the check a deploy would otherwise run, given the same {ms}-sample minimum).
An inconclusive analysis counts as a deploy acts on it: an abort (the default policy, and
`retry` at its deadline); an observed effect at least the minimum that is not significant is
inconclusive, not a pass. With `retry` the window grows a step at a time, up to {DEADLINE} s
(read from the same start; the next window starts {WINDOW} s later, so the grown part overlaps
it). Time to detect: the shortest prefix of a window at which the method aborts the 2x canary,
median and slowest over the windows where it did (floor: {floor} s, {ms} samples of {STEP} s).

| method | false aborts (of {windows}) | misses (of {windows}) | time to detect: median, slowest | equal canary inconclusive |
|---|---|---|---|---|
{rows}

A threshold has to be placed between the two rates to catch a 2x regression, so it works only
when the base rate is known and stable; the analysis compares with the hosts serving beside the
canary and needs no such number.
<!-- analysis:end -->",
        bad = 2.0 * base,
        floor = r.min_samples as u64 * STEP,
        ms = r.min_samples,
        rows = rows.join("\n"),
    );
}
