//! The run's deciding policies on the real test bed, with the metrics the fixture really
//! serves (Prometheus scraping each host) and deployed over ssh: the k-of-n rule
//! (`checks.quorum`) on a 5xx-ratio check, shadow checks, the no-data policy (an unreadable
//! log, a query without series; `pass`, the default `fail`, `retry` until the deadline) and
//! the rollback fast path. (The same policies on in-memory hosts: `tests/engine/deciding.rs`.)

use super::*;

/// The 5xx share of one host's page requests over the check's window.
const Q_HOST_5XX: &str = r#"(sum(rate(fixture_http_request_duration_seconds_count{host="{host}",route="v1_page_-title-",status=~"5.."}[{window}])) or vector(0)) / sum(rate(fixture_http_request_duration_seconds_count{host="{host}",route="v1_page_-title-"}[{window}]))"#;
/// One host's rate of page requests: over any small threshold wherever there is traffic.
const Q_HOST_PAGE_RATE: &str = r#"sum(rate(fixture_http_request_duration_seconds_count{host="{host}",route="v1_page_-title-"}[{window}]))"#;
/// A query that matches no series: no data, whatever the traffic.
const Q_NO_SERIES: &str = r#"sum(rate(fixture_http_request_duration_seconds_count{host="{host}",route="no_such_route"}[{window}]))"#;

/// The base env's groups: the canary t1, then the rest.
static TWO_GROUPS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    json!([{"name": "canary", "hosts": ["t1"]}, {"name": "rest", "hosts": ["t2", "t3"]}])
        .to_string()
});

const NOT_THE_WINDOWED_CHECKS: [&str; 2] = [
    "metrics fixture_http_requests_total",
    "http /en.wikipedia.org/v1/page/Main_Page",
];

fn no_series(policy: &str) -> Value {
    json!({"type": "metrics", "source": "prometheus", "name": "no-series", "window": "1s",
           "threshold": 0.1, "query": Q_NO_SERIES, "inconclusive": policy})
}

/// The envs of these tests, from the file's shared `base` env and `checks`.
pub(super) fn envs(base: &Value, checks: &Value) -> Vec<(&'static str, Value)> {
    let env = |checks: Value| {
        let mut e = base.clone();
        e["checks"] = checks;
        e
    };
    // One batch of every host at once, where the order of hosts does not matter: shorter.
    let at_once = |mut e: Value| {
        e["groups"] = json!([{"name": "all", "hosts": ["t1", "t2", "t3"]}]);
        e["group_size"] = json!(3);
        e
    };
    // The readings must not depend on how many requests a loaded machine's load client gets
    // through in a 5 s window: the hosts that pass serve no 5xx and the failing ones nothing
    // else (a ratio of 0 or 1, whatever the count), and a window the scrapes have not filled
    // yet is read again (`retry`), not counted as a failure.
    let mut pol = checks.clone();
    pol["extra"] = json!([
        {"type": "metrics", "source": "prometheus", "name": "host-5xx", "window": "5s",
         "threshold": 0.2, "query": Q_HOST_5XX, "inconclusive": "retry", "deadline": "20s"},
        // Named for its place beside host-5xx; it reads the page rate, so it fails wherever
        // there is traffic.
        {"type": "metrics", "source": "prometheus", "name": "shadow-5xx", "window": "5s",
         "threshold": 0.01, "query": Q_HOST_PAGE_RATE, "mode": "shadow",
         "inconclusive": "retry", "deadline": "20s"},
        no_series("pass"),
    ]);
    pol["quorum"] = json!({"k": 2, "checks": ["host-5xx"]});
    // No data under the env's default policy (fail): only this log check reads the log.
    let mut nd = checks.clone();
    nd["disable"] = json!([
        NOT_THE_WINDOWED_CHECKS[0],
        NOT_THE_WINDOWED_CHECKS[1],
        "logs >= 50"
    ]);
    nd["extra"] = json!([{"type": "logs", "name": "log-file", "level": "error", "wait": "5s"}]);
    let mut fast = checks.clone();
    fast["extra"] = json!([]);
    // No 5xx by default in this env: the cases set the failing hosts' share to 1.
    let mut pol_env = at_once(env(pol));
    for h in ["t1", "t2", "t3"] {
        pol_env["hosts"][h]["env"]["FIXTURE_SERVE_5XX"] = json!("0");
    }
    vec![
        ("dec-pol", pol_env),
        ("dec-nd", env(nd)),
        ("dec-fast", at_once(env(fast))),
    ]
}

/// The result of check `name` on `host` (the first: a restore's come later).
fn check<'a>(evs: &'a [Value], host: &str, name: &str) -> &'a Value {
    evs.iter()
        .find(|e| e["event"] == "check" && e["host"] == host && e["result"]["name"] == name)
        .map(|e| &e["result"])
        .unwrap_or_else(|| panic!("no check {name} on {host} in {}", testkit::why(evs)))
}

fn notes<'a>(evs: &'a [Value], step: &str) -> Vec<&'a Value> {
    events(evs, "note")
        .into_iter()
        .filter(|n| n["step"] == step)
        .collect()
}

fn finished(evs: &[Value]) -> String {
    events(evs, "finished")[0]["message"]
        .as_str()
        .unwrap()
        .to_string()
}

impl Dec {
    /// The journal of the deploy that `evs` finished, from the directory store.
    fn journal(&self, env: &str, evs: &[Value]) -> Value {
        let id = events(evs, "finished")[0]["deploy_id"].as_str().unwrap();
        let f = self.store.join(format!("envs/{env}/deploys/{id}.json"));
        serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap()
    }

    /// Load straight at every host's page route (a host is out of the pool during its own
    /// checks, and those read its metrics).
    fn direct_load(&self) -> Load {
        let urls = self
            .bed
            .hosts
            .iter()
            .map(|h| {
                format!(
                    "http://127.0.0.1:{}/en.wikipedia.org/v1/page/Main_Page",
                    h.service_port
                )
            })
            .collect();
        Load::start(urls, 3, 30)
    }
}

#[test]
fn quorum_shadow_and_no_data_on_real_prometheus_metrics() {
    let _one = BED.lock().unwrap_or_else(|e| e.into_inner());
    let bed = testkit::require!(bed());
    let t0 = Instant::now();
    let d = Dec::setup(bed);
    eprintln!("setup: {:?}", t0.elapsed());
    let load = d.direct_load();

    // 1. All three at once. Every one of t1's page answers is a 5xx, none of the others': t1's
    //    failure alone is a suspicion and the roll goes on. The shadow check (a page rate over
    //    0.01/s) fails everywhere and stops nobody; the query without series counts as a pass
    //    by its policy, never reported as one.
    let (code, evs, err) = d.deploy("dec-pol", "good", &[rate_in("dec-pol", "t1", "1")]);
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    let c = check(&evs, "t1", "host-5xx");
    assert_eq!(
        (&c["outcome"], &c["suspect"], &c["passed"]),
        (&json!("fail"), &json!(true), &json!(true)),
        "{c:#}"
    );
    let detail = c["detail"].as_str().unwrap();
    assert!(detail.contains("over the threshold 0.2"), "{detail}");
    assert!(
        detail.ends_with("(suspect: 1 of 2 hosts needed to abort)"),
        "{detail}"
    );
    let q = notes(&evs, "quorum");
    assert_eq!(q.len(), 1, "{q:#?}");
    assert_eq!(q[0]["host"], "t1");
    assert_eq!(
        q[0]["detail"],
        "check host-5xx failed alone on t1: recorded as a suspicion (1 of 2)"
    );
    for h in ["t1", "t2", "t3"] {
        if h != "t1" {
            // Real readings of the load: a ratio, under the threshold.
            let c = check(&evs, h, "host-5xx");
            assert_eq!(c["outcome"], "pass", "{c:#}");
            assert!(c.get("suspect").is_none(), "{c:#}");
        }
        let s = check(&evs, h, "shadow-5xx");
        assert_eq!(
            (&s["outcome"], &s["shadow"], &s["passed"]),
            (&json!("fail"), &json!(true), &json!(true)),
            "{s:#}"
        );
        assert!(
            s["detail"]
                .as_str()
                .unwrap()
                .ends_with("[shadow: not gating]"),
            "{s:#}"
        );
        let n = check(&evs, h, "no-series");
        assert_eq!(
            (&n["outcome"], &n["policy"], &n["passed"]),
            (&json!("inconclusive"), &json!("pass"), &json!(true)),
            "{n:#}"
        );
    }
    let msg = finished(&evs);
    assert!(
        msg.contains(
            "never got data (not counted as passes): t1 no-series, t2 no-series, t3 no-series"
        ),
        "{msg}"
    );
    assert!(
        msg.contains(
            "shadow checks that failed (not gating): t1 shadow-5xx, t2 shadow-5xx, t3 shadow-5xx"
        ),
        "{msg}"
    );
    // The journal keeps the same: the suspicion, the shadow results, the real outcomes.
    let j = d.journal("dec-pol", &evs);
    assert_eq!(j["status"], "succeeded");
    let t1: Vec<&Value> = j["hosts"]["t1"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    let by = |n: &str| *t1.iter().find(|c| c["name"] == n).unwrap();
    assert_eq!(by("host-5xx")["suspect"], true);
    assert_eq!(by("shadow-5xx")["shadow"], true);
    assert_eq!(by("no-series")["outcome"], "inconclusive");
    eprintln!("1 of 2: {:?}", t0.elapsed());

    // 2. One host at a time, canary first, and t2 fails too: t1's failure is a suspicion
    //    again and the roll goes on; t2's agreement aborts at once (t3 is never touched) and
    //    rolls back, naming both.
    let sets = [
        rate_in("dec-pol", "t1", "1"),
        rate_in("dec-pol", "t2", "1"),
        format!("envs.dec-pol.groups={}", TWO_GROUPS.as_str()),
        "envs.dec-pol.group_size=1".into(),
    ];
    let (code, evs, err) = d.deploy("dec-pol", "good2", &sets);
    assert_eq!(code, 1, "{err}\n{}", testkit::why(&evs));
    let why = "quorum: 2 of 2 hosts agree that check host-5xx fails: t1, t2";
    assert_eq!(
        events(&evs, "abort")[0]["reason"],
        why,
        "{}",
        testkit::why(&evs)
    );
    assert!(finished(&evs).contains(why));
    let q = notes(&evs, "quorum");
    assert!(
        q.iter().any(|n| n["host"] == "t1"
            && n["detail"]
                == "check host-5xx failed alone on t1: recorded as a suspicion (1 of 2)"),
        "{q:#?}"
    );
    assert!(
        q.iter().any(|n| n["host"] == "t2" && n["detail"] == why),
        "{q:#?}"
    );
    assert!(
        !evs.iter()
            .any(|e| e["event"] == "step" && e["host"] == "t3"),
        "t3 was touched after the quorum agreed"
    );
    let good = d.builds["good"].0.as_str();
    let back: Vec<&Value> = events(&evs, "rollback");
    for h in ["t1", "t2"] {
        assert!(
            back.iter()
                .any(|r| r["host"] == h && r["to"] == good && r["ok"] == true),
            "{h} not restored: {back:#?}"
        );
    }
    let j = d.journal("dec-pol", &evs);
    assert_eq!(j["status"], "rolled_back");
    assert!(
        j["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["step"] == "quorum" && s["host"] == "t2" && s["detail"] == why),
        "{j:#}"
    );
    let (ok, failed, _) = load.finish();
    assert!(ok > 100, "the load ran: {ok} ok, {failed} not");
    eprintln!("2 of 2: {:?}", t0.elapsed());
}

#[test]
fn no_data_from_an_unreadable_log_or_a_query_without_series_is_never_a_pass() {
    let _one = BED.lock().unwrap_or_else(|e| e.into_inner());
    let bed = testkit::require!(bed());
    let d = Dec::setup(bed);
    let t0 = Instant::now();

    // 1. t1's log file goes away once t1 is ready (before its log check reads it): no data,
    //    and the env's default policy counts that as a failure.
    let mut child = d
        .cmd(&[
            "deploy",
            d.digest("good"),
            "--env",
            "dec-nd",
            "--ignore-failure-lock",
            "deciding tests",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut evs = read_until(&mut out, |e| {
        e["event"] == "step" && e["step"] == "ready" && e["host"] == "t1" && e["ok"] == true
    });
    let logs = d.bed.host("t1").root.join("logs");
    let mut gone = 0;
    for f in std::fs::read_dir(&logs).unwrap().flatten() {
        std::fs::remove_file(f.path()).unwrap();
        gone += 1;
    }
    assert!(gone >= 1, "no log file under {}", logs.display());
    evs.extend(testkit::json_lines(&std::io::read_to_string(out).unwrap()));
    assert_eq!(
        child.wait().unwrap().code(),
        Some(1),
        "{}",
        testkit::why(&evs)
    );
    let c = check(&evs, "t1", "log-file");
    assert_eq!(
        (&c["outcome"], &c["policy"], &c["passed"]),
        (&json!("inconclusive"), &json!("fail"), &json!(false)),
        "{c:#}"
    );
    let detail = c["detail"].as_str().unwrap();
    assert!(detail.starts_with("reading "), "{detail}");
    assert!(
        detail.ends_with("(no data: counted as a failure by its policy)"),
        "{detail}"
    );
    let msg = finished(&evs);
    assert!(
        msg.ends_with("; never got data (not counted as passes): t1 log-file"),
        "{msg}"
    );
    assert!(
        !evs.iter()
            .any(|e| e["event"] == "step" && e["host"] != "t1"),
        "a host past the canary was touched"
    );
    eprintln!("unreadable log: {:?}", t0.elapsed());

    // 2. A query without series under `retry`: evaluated again until its deadline, then a
    //    failure, named in the summary.
    let mut ns = no_series("retry");
    ns["deadline"] = json!("3s");
    let retry = format!("envs.dec-nd.checks.extra=[{ns}]");
    let (code, evs, err) = d.deploy("dec-nd", "good", &[retry]);
    assert_eq!(code, 1, "{err}\n{}", testkit::why(&evs));
    let c = check(&evs, "t1", "no-series");
    assert_eq!(
        (&c["outcome"], &c["policy"], &c["passed"]),
        (&json!("inconclusive"), &json!("retry"), &json!(false)),
        "{c:#}"
    );
    assert!(c["attempts"].as_u64().unwrap() >= 3, "{c:#}");
    assert!(c["elapsed_ms"].as_u64().unwrap() >= 3000, "{c:#}");
    let detail = c["detail"].as_str().unwrap();
    assert!(detail.starts_with("no data for "), "{detail}");
    assert!(
        detail.ends_with("(no data until its deadline: counted as a failure)"),
        "{detail}"
    );
    assert!(
        finished(&evs).ends_with("; never got data (not counted as passes): t1 no-series"),
        "{}",
        finished(&evs)
    );
    eprintln!("retry: {:?}", t0.elapsed());
}

/// `name value` of the first sample line of `text` (Prometheus exposition) that starts with
/// `metric` and has every one of `labels`.
fn sample(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(metric) && labels.iter().all(|x| l.contains(x)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn a_rollback_on_the_bed_skips_bake_and_analysis_but_not_readiness_and_health_checks() {
    let _one = BED.lock().unwrap_or_else(|e| e.into_inner());
    let bed = testkit::require!(bed());
    let d = Dec::setup(bed);
    let t0 = Instant::now();
    for v in ["good", "good2"] {
        let (code, evs, err) = d.deploy("dec-fast", v, &[]);
        assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    }
    eprintln!("two deploys: {:?}", t0.elapsed());
    // The rollback runs with a 2 min bake, a canary analysis over 24 s, the service's own
    // 60 s metrics check and a 20 s one of the env: none of them may run.
    let canary = json!({"window": "24s", "step": "2s", "min_samples": 8, "metrics": [
        {"name": "5xx-ratio", "source": "prometheus", "query": Q_5XX, "min_effect": 0.02}]});
    let fast_5xx = json!([{"type": "metrics", "source": "prometheus", "name": "fast-5xx",
                           "window": "20s", "threshold": 0.2, "query": Q_HOST_5XX}]);
    let sets = [
        format!("envs.dec-fast.groups={}", TWO_GROUPS.as_str()),
        "envs.dec-fast.group_size=2".into(),
        "envs.dec-fast.canary_bake=120s".to_string(),
        format!("envs.dec-fast.checks.canary={canary}"),
        format!("envs.dec-fast.checks.extra={fast_5xx}"),
        format!(
            "envs.dec-fast.checks.disable={}",
            json!([NOT_THE_WINDOWED_CHECKS[1]])
        ),
    ];
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let t1 = Instant::now();
    let (code, evs, err) = d.run(
        &sets,
        &[
            "rollback",
            "--env",
            "dec-fast",
            "--reason",
            "deciding tests",
        ],
    );
    let took = t1.elapsed();
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    assert!(
        took < Duration::from_secs(120),
        "the rollback took {took:?}"
    );
    // Two groups, so a deploy would have baked the canary and analysed it.
    assert_eq!(events(&evs, "group").len(), 2, "{}", testkit::why(&evs));
    assert!(events(&evs, "bake").is_empty(), "{}", testkit::why(&evs));
    assert!(
        events(&evs, "analysis").is_empty(),
        "{}",
        testkit::why(&evs)
    );
    // Said once for the run, and per host with the checks it skipped.
    let fast = notes(&evs, "fast_rollback");
    let said = "rollback fast path: bake, canary analysis and windowed metrics checks skipped; readiness and health checks (http, logs) kept";
    assert!(
        fast.iter()
            .any(|n| n["host"].is_null() && n["detail"] == said),
        "{fast:#?}"
    );
    let good = d.builds["good"].0.as_str();
    for h in &d.bed.hosts {
        let n = &h.name;
        assert!(
            fast.iter().any(|x| x["host"] == *n
                && x["detail"] == format!("{said}: metrics fixture_http_requests_total, fast-5xx")),
            "{n}: {fast:#?}"
        );
        // Readiness was observed, not skipped.
        let ready = events(&evs, "step")
            .into_iter()
            .find(|s| s["host"] == *n && s["step"] == "ready")
            .unwrap_or_else(|| panic!("no ready step on {n}"));
        assert_eq!(ready["ok"], true, "{ready:#}");
        // The health checks ran, and passed, ...
        let names: Vec<&str> = events(&evs, "check")
            .into_iter()
            .filter(|c| c["host"] == *n)
            .map(|c| {
                assert_eq!(c["result"]["outcome"], "pass", "{c:#}");
                c["result"]["name"].as_str().unwrap()
            })
            .collect();
        assert_eq!(names, ["http /_info", "logs >= 50"], "{n}");
        let logs = check(&evs, n, "logs >= 50")["detail"].as_str().unwrap();
        assert!(!logs.starts_with("0 log lines"), "{logs}");
        // ... against the instance started by the rollback: its own counters have the
        // /_info request of the check (HAProxy's health checks ask /healthz; no load here).
        let base = format!("http://127.0.0.1:{}", h.service_port);
        let text = ureq::get(&format!("{base}/metrics"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        let started = sample(&text, "process_start_time_seconds", &[]).unwrap();
        assert!(started >= since.floor() - 1.0, "{n} was not restarted");
        let info = sample(
            &text,
            "fixture_http_request_duration_seconds_count",
            &["route=\"_-info\"", "status=\"200\""],
        );
        assert!(info.is_some_and(|v| v >= 1.0), "{n}: {text}");
        let info: Value = ureq::get(&format!("{base}/_info"))
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
        assert_eq!(info["release"], good, "{n}");
    }
    eprintln!("rollback: {took:?}; in all {:?}", t0.elapsed());
}
