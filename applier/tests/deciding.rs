//! The deciding checks against the real test bed (`ci/testbed up`): canary against baseline
//! under load through HAProxy with the fixture's 5xx switch at several rates (Prometheus,
//! with a shadow Graphite metric), the fleet-wide watch tripping on a real Graphite alarm
//! mid-rollout, the Graphite metrics check against graphite-web's render API fed by the
//! fixture's own carbon metrics, and the conftool pool driver against etcd + confctl. The
//! run's policies on real metrics (k-of-n, shadow, no data, the rollback fast path) are in
//! `deciding/policies.rs`, on the same bed and helpers.
//!
//! Hosts are reached over ssh, HAProxy is the pool; the store is a directory (the bed's
//! targets share this machine). Not up: fails under `CI=true`, else skipped with a reason.

mod common;
#[path = "deciding/policies.rs"]
mod policies;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use testkit::{Bed, Missing};

use common::load::Load;
use common::{build_variants, events, read_until};

const VARIANTS: &[(&str, &str, &str)] = &[
    ("good", "marker: test", "marker: test"),
    ("good2", "marker: test", "marker: test-2"),
    ("good3", "marker: test", "marker: test-3"),
];

/// The tests of this file share one bed: one at a time.
static BED: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn bed() -> Result<Bed, Missing> {
    let bed = Bed::running()?;
    testkit::node_tools()?;
    Ok(bed)
}

/// The fixture's variants, built once per test binary into the directory store all the
/// tests share (each test deploys to envs of its own there).
fn shared_builds() -> &'static (PathBuf, common::Builds) {
    static B: std::sync::OnceLock<(PathBuf, common::Builds)> = std::sync::OnceLock::new();
    B.get_or_init(|| {
        // Under target/tmp, kept: a static is never dropped.
        let dir = testkit::paths::kept_tempdir("deciding-").keep();
        let store = dir.join("store");
        let builds = build_variants(&dir, VARIANTS, |c| {
            c.arg("--store").arg(&store);
        });
        (store, builds)
    })
}

struct Dec {
    bed: Bed,
    dir: tempfile::TempDir,
    store: PathBuf,
    config: PathBuf,
    builds: BTreeMap<String, (String, String)>,
    /// This run's Graphite prefix (whisper files outlive a run).
    prefix: String,
}

/// The 5xx share of one host's page requests per step, from the fixture's histogram.
const Q_5XX: &str = r#"(sum(rate(fixture_http_request_duration_seconds_count{host="{host}",route="v1_page_-title-",status=~"5.."}[4s])) or vector(0)) / sum(rate(fixture_http_request_duration_seconds_count{host="{host}",route="v1_page_-title-"}[4s]))"#;
const Q_P99: &str = r#"histogram_quantile(0.99, sum by (le) (rate(fixture_http_request_duration_seconds_bucket{host="{host}",route="v1_page_-title-"}[4s])))"#;

impl Dec {
    fn setup(bed: Bed) -> Dec {
        let dir = tempfile::Builder::new()
            // Short: the ssh control sockets live under it (a UNIX socket path has 108 bytes).
            .prefix("dc")
            .tempdir()
            .unwrap();
        let (store, builds) = shared_builds();
        let (store, builds) = (store.clone(), builds.clone());
        for h in &bed.hosts {
            let _ = applier::target::HostRoot::new(&h.root).stop();
            testkit::paths::empty_dir(&h.root);
            let _ = bed.haproxy_cmd(&format!("set server fixture/{} state ready", h.name));
        }
        let prefix = format!("dec{}x{}", std::process::id(), rand::random::<u16>());
        std::fs::create_dir_all(dir.path().join("ctl")).unwrap();
        let g = &bed.graphite;
        let hosts: serde_json::Map<String, Value> = bed
            .hosts
            .iter()
            .map(|h| {
                (
                    h.name.clone(),
                    json!({
                        "root": h.root, "port": h.service_port, "ssh": h.name,
                        "values": {
                            "services.0.conf.host": "127.0.0.1",
                            "metrics": {"type": "carbon", "host": g.carbon_host, "port": g.carbon_port,
                                        "prefix": format!("{prefix}.{}", h.name), "flush_interval_ms": 1000},
                        },
                        "env": {"FIXTURE_SERVE_5XX": "0.05"},
                    }),
                )
            })
            .collect();
        // The 5xx share of a route, from the fixture's RESTBase-style counters: all answers
        // less the 1xx-4xx ones, over all (so a host that never served a 5xx reads 0).
        let share = |route: &str| {
            let a = format!("{prefix}.{{host}}.router.external.{route}.GET");
            format!(
                "divideSeries(diffSeries(sumSeries({a}.*.count),sumSeries({a}.[1-4]*.count)),sumSeries({a}.*.count))"
            )
        };
        // The host check sees the applier's own requests (a host is out of the pool during
        // its checks); the canary metric sees the load.
        let graphite_5xx = share("*");
        let graphite_page_5xx = share("v1_page_-title-");
        let base = json!({
            "service_env": "test",
            "transport": {"type": "ssh", "config_file": bed.ssh.config, "applier_path": env!("CARGO_BIN_EXE_applier"),
                          "control_dir": dir.path().join("ctl"), "connect_timeout": "3s"},
            "pool": {"driver": "haproxy", "socket": bed.haproxy.socket, "backend": bed.haproxy.backend,
                     "drain_timeout": "5s", "timeout": "15s"},
            "groups": [{"name": "canary", "hosts": ["t1"]}, {"name": "rest", "hosts": ["t2", "t3"]}],
            "group_size": 2,
            "ready_timeout": "30s",
            "hosts": hosts,
        });
        let checks = json!({
            "prometheus": bed.prometheus.url,
            "graphite": g.url,
            "disable": ["metrics fixture_http_requests_total", "http /en.wikipedia.org/v1/page/Main_Page"],
            "extra": [{"type": "metrics", "source": "graphite", "name": "graphite-5xx", "window": "4s",
                       "threshold": 0.2, "inconclusive": "retry", "deadline": "10s", "query": graphite_5xx}],
        });
        let canary = json!({
            "window": "24s", "step": "2s", "min_samples": 8, "p_value": 0.01,
            "metrics": [
                {"name": "5xx-ratio", "source": "prometheus", "query": Q_5XX,
                 "min_effect": 0.02, "min_ratio": 1.5, "threshold": 0.2},
                {"name": "latency-p99", "source": "prometheus", "query": Q_P99,
                 "min_effect": 0.05, "min_ratio": 2.0, "mode": "shadow"},
                {"name": "error-log-rate", "source": "logs", "level": "error", "min_effect": 0.5,
                 "threshold": 1.0},
                {"name": "graphite-5xx", "source": "graphite", "mode": "shadow", "min_effect": 0.02,
                 "query": format!("summarize({graphite_page_5xx},\"{{step}}\",\"avg\",true)")},
            ],
        });
        let mut dec = base.clone();
        dec["checks"] = checks.clone();
        dec["checks"]["canary"] = canary;
        let mut watch = base.clone();
        watch["checks"] = checks.clone();
        watch["canary_bake"] = json!("40s");
        watch["checks"]["watch"] = json!({
            "interval": "1s", "window": "10s",
            // The alarm's series exists only once it goes off: no data is explicitly a pass
            // (the default, retry, would trip on an alarm nobody can read).
            "alarms": [{"name": "bed-alarm", "source": "graphite", "query": format!("{prefix}.alarm.errors"), "threshold": 1,
                        "inconclusive": "pass"}],
        });
        let policy_envs = policies::envs(&base, &checks);
        let mut envs = json!({"dec": dec, "dec-watch": watch});
        for (name, env) in policy_envs {
            envs[name] = env;
        }
        let cfg = json!({"store": store, "lease_ttl": "10s", "envs": envs});
        let config = dir.path().join("deploy.yaml");
        testkit::config::write_yaml(&config, &cfg);
        Dec {
            bed,
            dir,
            store,
            config,
            builds,
            prefix,
        }
    }

    fn digest(&self, v: &str) -> &str {
        &self.builds[v].1
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_applier"));
        c.arg("--config")
            .arg(&self.config)
            .args(["--format", "json"])
            .args(args)
            .env_remove("APPLIER_CONFIG")
            .env_remove("APPLIER_STORE");
        c
    }

    /// Runs a deploy with `sets` (`--set` values); exit code, events, stderr.
    fn deploy(&self, env: &str, v: &str, sets: &[String]) -> (i32, Vec<Value>, String) {
        // Each case follows the last on the same env, some of them deliberately failed: a
        // failed deploy locks the env (tested in envs.rs), and a person goes on past the lock
        // with a reason, as here.
        let cmd = [
            "deploy",
            self.digest(v),
            "--env",
            env,
            "--ignore-failure-lock",
            "deciding tests: each case starts from the one before",
        ];
        self.run(sets, &cmd)
    }

    /// Runs `applier <cmd>` with `sets` (`--set` values); exit code, events, stderr.
    fn run(&self, sets: &[String], cmd: &[&str]) -> (i32, Vec<Value>, String) {
        let mut args: Vec<&str> = Vec::new();
        for s in sets {
            args.extend(["--set", s.as_str()]);
        }
        args.extend(cmd);
        let out = self.cmd(&args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            testkit::json_lines(&String::from_utf8_lossy(&out.stdout)),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn load(&self) -> Load {
        let lb = &self.bed.haproxy.url;
        Load::start(
            vec![
                format!("{lb}/en.wikipedia.org/v1/page/Main_Page"),
                format!("{lb}/_info"),
            ],
            4,
            50,
        )
    }
}

impl Drop for Dec {
    fn drop(&mut self) {
        for h in &self.bed.hosts {
            let _ = applier::target::HostRoot::new(&h.root).stop();
        }
        let _ = &self.dir;
    }
}

fn rate_on(host: &str, rate: &str) -> String {
    rate_in("dec", host, rate)
}

/// `--set` for the fixture's 5xx switch of `host` in `env`.
fn rate_in(env: &str, host: &str, rate: &str) -> String {
    format!("envs.{env}.hosts.{host}.env.FIXTURE_SERVE_5XX='{rate}'")
}

/// The (one) analysis report of a deploy's events.
fn report(evs: &[Value]) -> Value {
    let a = events(evs, "analysis");
    assert_eq!(a.len(), 1, "one analysis expected: {a:#?}");
    a[0]["report"].clone()
}

fn metric<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == name)
        .unwrap_or_else(|| panic!("no {name} in {r:#}"))
}

#[test]
fn canary_against_baseline_under_load_through_haproxy() {
    let _one = BED.lock().unwrap_or_else(|e| e.into_inner());
    let bed = testkit::require!(bed());
    let d = Dec::setup(bed);
    let load = d.load();

    // 1. First deploy: no host runs an older release, so there is no baseline; the analysis
    //    falls back to the thresholds and says so.
    let (code, evs, err) = d.deploy("dec", "good", &[]);
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    let r = report(&evs);
    assert!(
        r["note"].as_str().unwrap().starts_with("no baseline"),
        "{r:#}"
    );
    let m = metric(&r, "5xx-ratio");
    assert_eq!(
        (m["test"].as_str(), m["verdict"].as_str()),
        (Some("threshold"), Some("pass")),
        "{m:#}"
    );
    // The Graphite host check read the fixture's own carbon metrics through the render API
    // (retried until the first flush was readable).
    let graphite: Vec<&Value> = events(&evs, "check")
        .into_iter()
        .filter(|c| c["result"]["name"] == "graphite-5xx")
        .collect();
    assert!(
        graphite.iter().any(|c| c["result"]["outcome"] == "pass"
            && c["result"]["detail"].as_str().unwrap().contains("\" = 0")),
        "no Graphite reading of the fixture's metrics: {graphite:#?}"
    );

    // 2. A real regression: the canary serves twice the baseline's 5xx rate. The analysis
    //    fails with its numbers, and the deploy rolls back.
    let (code, evs, err) = d.deploy("dec", "good2", &[rate_on("t1", "0.1")]);
    assert_eq!(code, 1, "{err}\n{}", testkit::why(&evs));
    let r = report(&evs);
    assert_eq!(r["verdict"], "fail", "{r:#}");
    assert_eq!(r["baseline"], json!(["t2", "t3"]));
    let m = metric(&r, "5xx-ratio");
    assert_eq!(m["verdict"], "fail", "{m:#}");
    assert!(m["canary_samples"].as_u64().unwrap() >= 8, "{m:#}");
    assert!(m["baseline_samples"].as_u64().unwrap() >= 16, "{m:#}");
    assert!(m["p"].as_f64().unwrap() <= 0.01, "{m:#}");
    assert!(m["effect"].as_f64().unwrap() >= 0.02, "{m:#}");
    assert!(m["u"].as_f64().is_some());
    let finished = events(&evs, "finished")[0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(finished.contains("canary analysis of canary"), "{finished}");
    eprintln!("regression: {}", m);

    // 3. Equal noise: the canary at the baseline's rate passes, and the roll goes on.
    let (code, evs, err) = d.deploy("dec", "good2", &[]);
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    let r = report(&evs);
    assert_eq!(r["verdict"], "pass", "{r:#}");
    let m = metric(&r, "5xx-ratio");
    assert_eq!(m["test"], "mann_whitney");
    assert!(m["canary_samples"].as_u64().unwrap() >= 8, "{m:#}");
    eprintln!("equal noise: {}", m);
    // Shadow metrics were read and recorded, never deciding.
    assert_eq!(metric(&r, "latency-p99")["shadow"], true);
    let (ok, failed, _) = load.finish();
    eprintln!("load: {ok} ok, {failed} not 200 (the 5xx switch) during the three deploys");

    // 4. No traffic: no samples on either side, so the analysis is inconclusive, which fails
    //    under the default policy; the summary names what never got data.
    let (code, evs, err) = d.deploy("dec", "good3", &[]);
    assert_eq!(code, 1, "{err}\n{}", testkit::why(&evs));
    let r = report(&evs);
    assert_eq!(r["verdict"], "inconclusive", "{r:#}");
    let m = metric(&r, "5xx-ratio");
    assert!(
        m["reason"].as_str().unwrap().contains("too few samples"),
        "{m:#}"
    );
    let finished = events(&evs, "finished")[0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(finished.contains("never got data"), "{finished}");
    assert!(finished.contains("canary analysis of canary"), "{finished}");
}

#[test]
fn the_watch_aborts_at_once_when_a_graphite_alarm_trips_mid_rollout() {
    let _one = BED.lock().unwrap_or_else(|e| e.into_inner());
    let bed = testkit::require!(bed());
    let d = Dec::setup(bed);
    let (code, evs, err) = d.deploy(
        "dec-watch",
        "good",
        &["envs.dec-watch.canary_bake=0s".into()],
    );
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    // The deploy of good2 bakes its canary for 40 s; the alarm goes off during the bake.
    let mut child = d
        .cmd(&["deploy", d.digest("good2"), "--env", "dec-watch"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = read_until(&mut out, |e| e["event"] == "bake");
    let t0 = Instant::now();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let path = format!("{}.alarm.errors", d.prefix);
    let points: Vec<(&str, f64, u64)> = (0..3).map(|i| (path.as_str(), 5.0, now - i)).collect();
    d.bed.graphite.send(&points).unwrap();
    seen.extend(read_until(&mut out, |e| e["event"] == "finished"));
    let took = t0.elapsed();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{seen:#?}");
    let abort = events(&seen, "abort");
    let reason = abort[0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("watch bed-alarm:"), "{reason}");
    let trip = events(&seen, "watch");
    assert_eq!(trip[0]["tripped"], true, "{trip:#?}");
    assert_eq!(trip[0]["value"], 5.0);
    // At once: well before the 40 s bake would have ended; t2 and t3 never touched.
    assert!(took < Duration::from_secs(20), "abort took {took:?}");
    assert!(
        !seen
            .iter()
            .any(|e| e["event"] == "step" && e["host"] != "t1"),
        "a host past the canary was touched"
    );
    assert_eq!(
        events(&seen, "rollback")[0]["host"],
        "t1",
        "the canary is restored"
    );
}

#[test]
fn graphite_metrics_check_reads_graphite_webs_render_api() {
    let _one = BED.lock().unwrap_or_else(|e| e.into_inner());
    let bed = testkit::require!(Bed::running());
    let g = &bed.graphite;
    let prefix = format!("gcheck{}x{}", std::process::id(), rand::random::<u16>());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (hi, lo) = (format!("{prefix}.t1.ratio"), format!("{prefix}.t2.ratio"));
    let mut pts: Vec<(&str, f64, u64)> = Vec::new();
    for i in 1..5 {
        pts.push((hi.as_str(), 0.5, now - i));
        pts.push((lo.as_str(), 0.01, now - i));
    }
    g.send(&pts).unwrap();
    let settings: applier::config::CheckSettings =
        serde_json::from_value(json!({"graphite": g.url})).unwrap();
    let store: std::sync::Arc<dyn artifact::Store> = std::sync::Arc::new(
        artifact::store::fs::FsStore::open(tempfile::tempdir().unwrap().keep()).unwrap(),
    );
    let spec: applier::checks::CheckSpec = serde_json::from_value(json!({
        "type": "metrics", "source": "graphite", "name": "ratio", "window": "10s",
        "threshold": 0.1, "query": format!("{prefix}.{{host}}.ratio"),
        "inconclusive": "retry", "deadline": "8s",
    }))
    .unwrap();
    let run = |host: &str| {
        let hc: applier::config::HostConfig =
            serde_json::from_value(json!({"root": "/nonexistent"})).unwrap();
        let h = applier::host::LocalHost::new(host, &hc, store.clone());
        let ctx = applier::checks::CheckContext {
            host: &h,
            address: "127.0.0.1".into(),
            port: 1,
            release: "r".into(),
            service_name: "s".into(),
            started_at: SystemTime::now() - Duration::from_secs(10),
            log_file: None,
            settings: &settings,
            cancel: None,
        };
        applier::checks::run(&spec, &ctx)
    };
    let r = run("t1");
    assert_eq!(r.outcome, applier::checks::Outcome::Fail, "{r:?}");
    assert!(
        r.detail.contains("= 0.5 over the threshold"),
        "{}",
        r.detail
    );
    let r = run("t2");
    assert_eq!(r.outcome, applier::checks::Outcome::Pass, "{r:?}");
    // A series nobody wrote: no data, retried until its deadline, never a pass.
    let t0 = Instant::now();
    let r = run("t9");
    assert_eq!(r.outcome, applier::checks::Outcome::Inconclusive, "{r:?}");
    assert!(!r.passed && r.attempts >= 2, "{r:?}");
    assert!(t0.elapsed() >= Duration::from_secs(8));
}

#[test]
fn conftool_driver_depools_repools_and_reads_state_from_etcd() {
    use applier::pool::Pool;
    let _one = BED.lock().unwrap_or_else(|e| e.into_inner());
    let bed = testkit::require!(Bed::running());
    let c = &bed.conftool;
    let pool = applier::conftool::ConftoolPool {
        confctl: c.confctl.clone(),
        config: Some(c.config.clone()),
        schema: Some(c.schema.clone()),
        selector: Some(format!(
            "dc={},cluster={},service={}",
            c.dc, c.cluster, c.service
        )),
        nodes: BTreeMap::new(),
        timeout: Duration::from_secs(30),
    };
    for h in ["t1", "t2", "t3"] {
        c.set_pooled(h, "yes").unwrap();
    }
    let store: std::sync::Arc<dyn artifact::Store> = std::sync::Arc::new(
        artifact::store::fs::FsStore::open(tempfile::tempdir().unwrap().keep()).unwrap(),
    );
    let hc: applier::config::HostConfig =
        serde_json::from_value(json!({"root": "/nonexistent"})).unwrap();
    let t2 = applier::host::LocalHost::new("t2", &hc, store.clone());
    let all: Vec<String> = ["t1", "t2", "t3"].iter().map(|s| s.to_string()).collect();
    assert!(pool.out_of_pool(&all).unwrap().is_empty());
    pool.depool(&t2, None).unwrap();
    // etcd itself says so, and so does confctl for the capacity guard.
    let key = c.key("t2");
    let raw: Value = ureq::get(&format!("{}/v2/keys{key}", bed.etcd.url))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    let node: Value = serde_json::from_str(raw["node"]["value"].as_str().unwrap()).unwrap();
    assert_eq!(node["pooled"], "no", "{raw}");
    assert_eq!(pool.out_of_pool(&all).unwrap(), vec!["t2".to_string()]);
    // Someone else depools t3: the guard counts it too (no selector: one get per host).
    c.set_pooled("t3", "inactive").unwrap();
    let per_host = applier::conftool::ConftoolPool {
        selector: None,
        ..pool.clone()
    };
    assert_eq!(
        per_host.out_of_pool(&all).unwrap(),
        vec!["t2".to_string(), "t3".to_string()]
    );
    pool.repool(&t2, None).unwrap();
    assert_eq!(c.pooled("t2").unwrap(), "yes");
    c.set_pooled("t3", "yes").unwrap();
    // A name that would widen the selector is refused before confctl runs.
    let bad = applier::conftool::ConftoolPool {
        nodes: [("t1".to_string(), "t1,name=.*".to_string())].into(),
        ..pool.clone()
    };
    let t1 = applier::host::LocalHost::new("t1", &hc, store);
    let e = bad.depool(&t1, None).unwrap_err().to_string();
    assert!(e.contains("not a plain name"), "{e}");
    assert_eq!(c.pooled("t1").unwrap(), "yes", "t1 was changed");
    // confctl failing (an unknown node) is a clear error naming the command.
    let e = pool
        .depool(&applier::host::LocalHost::new("t9", &hc, tempstore()), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("t9"), "{e}");
}

fn tempstore() -> std::sync::Arc<dyn artifact::Store> {
    std::sync::Arc::new(
        artifact::store::fs::FsStore::open(tempfile::tempdir().unwrap().keep()).unwrap(),
    )
}
