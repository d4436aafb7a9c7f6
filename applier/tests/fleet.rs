//! The applier against the real multi-host test bed (`ci/testbed up`): three targets reached
//! over ssh (their own sshd on loopback), HAProxy in front of their service ports driven
//! through its admin socket, Prometheus scraping each target, and the S3 store. Artifacts are
//! built with the real `builder` into a fresh prefix of the bucket; targets fetch through
//! presigned URLs with no AWS variable in their environment.
//!
//! The bed is read as its typed description (`testkit::Bed`, from `$TESTBED_DIR/testbed.json`,
//! default `${CI_STATE_DIR:-${TMPDIR:-/tmp}/restbase-deploy-ci}/testbed`). Not up: this fails
//! when `CI=true`, else it is skipped with a printed reason. The deploy roots of the bed's
//! hosts are wiped at the start.

mod common;

use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::{Bed, Missing};

use common::load::Load;
use common::{build_variants, events, read_until};

const VARIANTS: &[(&str, &str, &str)] = &[
    ("good", "marker: test", "marker: test"),
    ("good2", "marker: test", "marker: test-2"),
    ("good3", "marker: test", "marker: test-3"),
    ("bad_5xx", "serve_5xx: 0", "serve_5xx: 1"),
];
const HOSTS: [&str; 3] = ["t1", "t2", "t3"];

/// The running bed with its S3 store, and the tools the fixture needs.
fn bed() -> Result<Bed, Missing> {
    let bed = Bed::running()?;
    bed.s3()?;
    testkit::node_tools()?;
    Ok(bed)
}

struct Fleet {
    bed: Bed,
    dir: tempfile::TempDir,
    store: String,
    s3_env: BTreeMap<String, String>,
    config: PathBuf,
    builds: BTreeMap<String, (String, String)>,
}

impl Fleet {
    fn setup(bed: Bed) -> Fleet {
        let dir = tempfile::Builder::new().prefix("fleet-").tempdir().unwrap();
        let s3_env = bed.s3().expect("checked by bed()").env.clone();
        let store = format!(
            "s3://{}/fleet-{}-{}",
            s3_env["TEST_S3_BUCKET"],
            std::process::id(),
            rand::random::<u32>()
        );
        // Clean targets: nothing running, empty roots.
        for h in &bed.hosts {
            let root = &h.root;
            let _ = applier::target::HostRoot::new(root).stop();
            if let Ok(rd) = std::fs::read_dir(root) {
                for e in rd.flatten() {
                    let p = e.path();
                    let _ = if p.is_dir() && !p.is_symlink() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                }
            }
            let _ = haproxy(&bed, &format!("set server fixture/{} state ready", h.name));
        }
        // Build the variants into the bucket.
        let builds = build_variants(dir.path(), VARIANTS, |c| {
            c.args([
                "--store",
                &store,
                "--s3-endpoint",
                &s3_env["TEST_S3_ENDPOINT"],
                "--s3-force-path-style",
            ])
            .envs(&s3_env);
        });
        // The targets' applier: a wrapper that records its environment and arguments.
        let wrapper = dir.path().join("applier-on-target");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\n{{ echo \"ARGS $*\"; env; }} > {d}/remote-env.$$\ncase \"$*\" in *fetch-urls*) [ -f {d}/slow-fetch ] && sleep 3;; esac\nexec {bin} \"$@\"\n",
                d = dir.path().display(),
                bin = env!("CARGO_BIN_EXE_applier")
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(dir.path().join("ctl")).unwrap();
        let mut hosts = String::new();
        for h in &bed.hosts {
            hosts.push_str(&format!(
                "      {n}: {{root: {r}, port: {p}, ssh: {n}, values: {{services.0.conf.host: 127.0.0.1}}}}\n",
                n = h.name,
                r = h.root.display(),
                p = h.service_port
            ));
        }
        let prom = &bed.prometheus.url;
        let block = |env: &str, expiry: &str, checks: &str| {
            format!(
                "  {env}:\n    service_env: test\n    transport: {{type: ssh, config_file: {cfg}, applier_path: {w}, control_dir: {ctl}, presign_expiry: {expiry}, connect_timeout: 3s}}\n    pool: {{driver: haproxy, socket: {sock}, backend: {be}, drain_timeout: 10s, timeout: 15s}}\n    groups:\n      - {{name: canary, hosts: [t1]}}\n      - {{name: rest, hosts: [t2, t3]}}\n    group_size: 1\n    ready_timeout: 30s\n    checks:\n      prometheus: {prom}\n{checks}    hosts:\n{hosts}",
                cfg = bed.ssh.config.display(),
                w = wrapper.display(),
                ctl = dir.path().join("ctl").display(),
                sock = bed.haproxy.socket.display(),
                be = bed.haproxy.backend,
            )
        };
        let metrics = "      disable: [\"metrics fixture_http_requests_total\", \"http /en.wikipedia.org/v1/page/Main_Page\"]\n      extra:\n        - {type: metrics, name: 5xx-rate, window: 6s, threshold: 0.01, query: 'sum(rate(fixture_http_requests_total{host=\"{host}\",status=~\"5..\"}[{window}])) / sum(rate(fixture_http_requests_total{host=\"{host}\"}[{window}]))'}\n";
        let text = format!(
            "store: {store}\nstore_options: {{s3_endpoint: {ep}, s3_region: us-east-1, s3_force_path_style: true}}\nlease_ttl: 10s\nenvs:\n{}{}{}",
            block("test", "60s", "      disable: [metrics]\n"),
            block("test-metrics", "60s", metrics),
            block("test-expiry", "1s", "      disable: [metrics]\n"),
            ep = s3_env["TEST_S3_ENDPOINT"],
        );
        let config = dir.path().join("deploy.yaml");
        std::fs::write(&config, text).unwrap();
        Fleet {
            bed,
            dir,
            store,
            s3_env,
            config,
            builds,
        }
    }

    fn commit(&self, v: &str) -> &str {
        &self.builds[v].0
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_applier"));
        c.arg("--config")
            .arg(&self.config)
            .args(["--format", "json"])
            .args(args);
        c.env_remove("APPLIER_CONFIG")
            .env_remove("APPLIER_STORE")
            .envs(&self.s3_env);
        c
    }

    fn run(&self, args: &[&str]) -> (i32, Vec<Value>, String, Duration) {
        let t0 = Instant::now();
        let out = self.cmd(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            testkit::json_lines(&String::from_utf8_lossy(&out.stdout)),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            t0.elapsed(),
        )
    }

    fn root(&self, name: &str) -> applier::target::HostRoot {
        applier::target::HostRoot::new(&self.bed.host(name).root)
    }

    fn release(&self, name: &str) -> Option<String> {
        let url = format!(
            "http://127.0.0.1:{}/_info",
            self.bed.host(name).service_port
        );
        let v: Value = ureq::get(&url).call().ok()?.body_mut().read_json().ok()?;
        v["release"].as_str().map(str::to_string)
    }

    fn assert_serving(&self, v: &str) {
        for h in HOSTS {
            assert_eq!(
                self.release(h).as_deref(),
                Some(self.commit(v)),
                "{h} should serve {v}"
            );
            let st = self.root(h).state().unwrap();
            assert_eq!(st.step, None, "{h}: step in progress");
            assert_eq!(
                st.current.map(|r| r.commit).as_deref(),
                Some(self.commit(v))
            );
        }
        let states = haproxy(&self.bed, "show servers state fixture").unwrap();
        let s = applier::haproxy::parse_servers_state(&states, "fixture").unwrap();
        for h in HOSTS {
            let st = s.iter().find(|x| x.name == h).unwrap();
            assert!(st.up(), "{h} should be up and pooled in HAProxy: {st:?}");
        }
    }

    fn stop_host(&self, name: &str) {
        self.bed.stop_host(name).unwrap();
    }

    fn start_host(&self, name: &str) {
        self.bed.start_host(name).unwrap();
    }
}

fn haproxy(bed: &Bed, cmd: &str) -> Result<String, String> {
    applier::haproxy::HaproxyPool {
        socket: bed.haproxy.socket.clone(),
        via_ssh: None,
        backend: "fixture".into(),
        servers: BTreeMap::new(),
        drain_timeout: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
    }
    .command(cmd)
}

fn ts_ms(e: &Value) -> i64 {
    let s = e["ts"].as_str().unwrap_or_default();
    humantime::parse_rfc3339(s)
        .map(|t| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64)
        .unwrap_or(0)
}

/// Splits a deploy's wall time from its events: prefetch, per-host path, checks.
fn timings(evs: &[Value], wall: Duration) -> String {
    let plan = evs
        .iter()
        .find(|e| e["event"] == "plan")
        .map(ts_ms)
        .unwrap_or(0);
    let fetch_end = events(evs, "fetch")
        .iter()
        .map(|e| ts_ms(e))
        .max()
        .unwrap_or(plan);
    let mut s = format!(
        "wall {:.2}s; preflight+prefetch {:.2}s",
        wall.as_secs_f64(),
        (fetch_end - plan) as f64 / 1000.0
    );
    for h in HOSTS {
        let steps: Vec<&Value> = evs
            .iter()
            .filter(|e| e["host"] == h && e["event"] == "step")
            .collect();
        let (Some(first), Some(done)) = (
            steps.first(),
            evs.iter()
                .find(|e| e["event"] == "host_done" && e["host"] == h),
        ) else {
            continue;
        };
        let check_ms: i64 = events(evs, "check")
            .iter()
            .filter(|e| e["host"] == h)
            .map(|e| e["result"]["elapsed_ms"].as_i64().unwrap_or(0))
            .sum();
        let step = |name: &str| steps.iter().find(|e| e["step"] == name).map(|e| ts_ms(e));
        let depool = step("depool")
            .zip(step("spec").or(Some(ts_ms(first))))
            .map(|(d, s)| d - s)
            .unwrap_or(0);
        // Each step's time: from the step before it (or its batch's start) to its own.
        let mut prev = evs
            .iter()
            .filter(|e| e["event"] == "group")
            .map(ts_ms)
            .filter(|t| *t <= ts_ms(first))
            .max()
            .unwrap_or(ts_ms(first));
        let gaps: Vec<String> = steps
            .iter()
            .map(|e| {
                let g = ts_ms(e) - prev;
                prev = ts_ms(e);
                format!("{} {g}", e["step"].as_str().unwrap_or("?"))
            })
            .collect();
        s.push_str(&format!(
            "; {h}: path {:.2}s (drain+depool {:.2}s, checks {:.2}s; ms: {}, done {})",
            (ts_ms(done) - ts_ms(first)) as f64 / 1000.0,
            depool as f64 / 1000.0,
            check_ms as f64 / 1000.0,
            gaps.join(", "),
            ts_ms(done) - prev
        ));
    }
    s
}

/// The tests of this file share one bed (its HAProxy, its hosts): one at a time.
static BED: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// HAProxy's runtime API reached through ssh on the load-balancer host (here: target t1 of
/// the bed plays the LB host; `socat` there talks to the admin socket), as on a fleet where
/// HAProxy does not run on the deploy host.
#[test]
fn haproxy_runtime_api_through_ssh_to_the_lb_host() {
    let _one = BED.lock().unwrap_or_else(|e| e.into_inner());
    let bed = testkit::require!(bed());
    let pool = |dest: &str| applier::haproxy::HaproxyPool {
        socket: bed.haproxy.socket.clone(),
        via_ssh: Some(applier::haproxy::SshHop {
            destination: dest.into(),
            config_file: Some(bed.ssh.config.clone()),
        }),
        backend: "fixture".into(),
        servers: BTreeMap::new(),
        drain_timeout: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
    };
    let lb = pool("t1");
    let state = |p: &applier::haproxy::HaproxyPool| {
        p.servers_state()
            .unwrap()
            .into_iter()
            .find(|s| s.name == "t3")
            .expect("t3 in show servers state")
    };
    assert!(!state(&lb).out(), "t3 starts in the pool");
    assert_eq!(
        lb.command("set server fixture/t3 state drain")
            .unwrap()
            .trim(),
        ""
    );
    let drained = state(&lb);
    // The same change is visible on the local socket: it is the same HAProxy.
    let local = haproxy(&bed, "show servers state fixture").unwrap();
    assert_eq!(
        lb.command("set server fixture/t3 state ready")
            .unwrap()
            .trim(),
        ""
    );
    assert!(drained.out(), "t3 not drained: {drained:?}\n{local}");
    assert!(!state(&lb).out(), "t3 not back in the pool");
    // An unreachable LB host is a clear error, not a hang or an empty answer.
    let err = pool("no-such-lb-host.invalid").servers_state().unwrap_err();
    assert!(err.contains("via ssh"), "{err}");
}

/// The host protocol over the real ssh: a request of each kind travels as JSON on the stdin
/// of `applier host` on a target, and an error answer keeps its kind.
#[test]
fn host_protocol_over_ssh_answers_health_and_keeps_error_kinds() {
    use applier::host::Host;
    let _one = BED.lock().unwrap_or_else(|e| e.into_inner());
    let bed = testkit::require!(bed());
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn artifact::Store> =
        Arc::new(artifact::store::fs::FsStore::open(dir.path().join("store")).unwrap());
    let t1 = &bed.hosts[0];
    let (name, root) = (t1.name.as_str(), &t1.root);
    std::fs::create_dir_all(dir.path().join("ctl")).unwrap();
    let ssh: applier::config::SshConfig = serde_json::from_value(serde_json::json!({
        "config_file": bed.ssh.config,
        "applier_path": env!("CARGO_BIN_EXE_applier"),
        "control_dir": dir.path().join("ctl"),
        "connect_timeout": "3s",
    }))
    .unwrap();
    let hc: applier::config::HostConfig =
        serde_json::from_value(serde_json::json!({ "root": root, "ssh": name })).unwrap();
    let host = applier::host::ssh::SshHost::new(name, &hc, &ssh, store);
    let local = applier::target::HostRoot::new(root);
    let health = host.health().unwrap();
    assert_eq!(health.current, local.current());
    assert!(health.free_bytes > 0);
    assert_eq!(
        health.pid,
        local.running().unwrap().map(|r| r.pid),
        "{health:?}"
    );
    let nowhere = applier::protocol::ReleaseRef {
        commit: model::names::CommitId::parse(&"0".repeat(40)).unwrap(),
        manifest: artifact::Digest::of(b"no such build"),
    };
    // Unfenced (an operator's own request): this test must not raise the host's fence.
    let e = host
        .call(applier::protocol::HostRequest::Switch(
            applier::protocol::ReleaseRequest {
                release: nowhere,
                fence: None,
            },
        ))
        .and_then(|r| r.into_result())
        .unwrap_err();
    assert_eq!(e.kind(), applier::protocol::ErrorKind::NotFetched, "{e}");
    assert_eq!(
        local.current(),
        health.current,
        "a refused switch changed current"
    );
}

#[test]
fn fleet_over_ssh_haproxy_prometheus_s3() {
    let _one = BED.lock().unwrap_or_else(|e| e.into_inner());
    let bed = testkit::require!(bed());
    let t0 = Instant::now();
    let f = Fleet::setup(bed);
    eprintln!(
        "fleet: built {} variants into {} in {:.1}s",
        f.builds.len(),
        f.store,
        t0.elapsed().as_secs_f64()
    );
    let lb = f.bed.haproxy.url.clone();
    let load_urls = vec![
        format!("{lb}/en.wikipedia.org/v1/page/Main_Page"),
        format!("{lb}/_info"),
    ];

    // 1. First deploy over ssh to a clean fleet; fetch through presigned URLs.
    let (code, evs, err, wall) = f.run(&[
        "deploy",
        f.commit("good"),
        "--env",
        "test",
        "--reason",
        "first",
    ]);
    assert_eq!(code, 0, "first deploy: {err}\n{}", testkit::why(&evs));
    f.assert_serving("good");
    eprintln!(
        "fleet timings (first deploy, 3 ssh hosts): {}",
        timings(&evs, wall)
    );
    let requests = &events(&evs, "finished")[0]["store_requests"];
    eprintln!("fleet store requests (first deploy): {requests}");

    // No AWS variable reached any target-side process; the fetch went through URLs.
    let dumps: Vec<String> = std::fs::read_dir(f.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("remote-env."))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert!(
        f.s3_env.contains_key("AWS_SECRET_ACCESS_KEY"),
        "the deploy host had credentials"
    );
    assert!(
        dumps.iter().any(|d| d.contains("fetch-urls")),
        "no fetch-urls ran on a target"
    );
    assert!(
        dumps.iter().any(|d| d.contains("TESTBED_TARGET=")),
        "the dumps come from ssh sessions"
    );
    for d in &dumps {
        assert!(
            !d.lines().any(|l| l.starts_with("AWS_")),
            "AWS variable on a target:\n{d}"
        );
    }
    for h in HOSTS {
        let pid = f.root(h).running().unwrap().expect("running").pid;
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let environ = String::from_utf8_lossy(&environ);
        // Started by `applier host` over ssh, yet with none of the ssh session's environment
        // (its TESTBED_TARGET, the operator's AWS_*): exactly the target's minimal base.
        let mut names: Vec<&str> = environ
            .split('\0')
            .filter(|l| !l.is_empty())
            .map(|l| l.split('=').next().unwrap_or(""))
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["HOME", "LANG", "PATH"], "{h}: {environ}");
        assert!(
            !environ.split('\0').any(|l| l.starts_with("AWS_")),
            "{h}: AWS variable in the service"
        );
    }
    // And the bucket does refuse an unsigned read.
    let blob = f.builds["good"].1.trim_start_matches("sha256:").to_string();
    let prefix = f.store.trim_start_matches("s3://");
    let unsigned = format!(
        "{}/{prefix}/blobs/sha256/{blob}",
        f.s3_env["TEST_S3_ENDPOINT"]
    );
    let st = ureq::get(&unsigned)
        .call()
        .map(|r| r.status().as_u16())
        .unwrap_or_else(|e| match e {
            ureq::Error::StatusCode(c) => c,
            _ => 0,
        });
    assert!(
        st == 403 || st == 401,
        "an unsigned GET of {unsigned} answered {st}"
    );

    // 2. Zero downtime: a rolling deploy under load through HAProxy.
    let load = Load::start(load_urls.clone(), 4, 80);
    std::thread::sleep(Duration::from_millis(500));
    let (code, evs, err, wall) = f.run(&[
        "deploy",
        f.commit("good2"),
        "--env",
        "test",
        "--reason",
        "under load",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    let (ok, failed, errors) = load.finish();
    eprintln!(
        "fleet: rolling deploy under load: {ok} ok, {failed} failed; {}",
        timings(&evs, wall)
    );
    assert_eq!(code, 0, "deploy under load: {err}");
    assert!(ok > 200, "the load client made too few requests ({ok})");
    assert_eq!(failed, 0, "failed requests during the deploy: {errors:?}");
    f.assert_serving("good2");

    // 3. Zero downtime: a full rollback under load.
    let load = Load::start(load_urls.clone(), 4, 80);
    std::thread::sleep(Duration::from_millis(500));
    let (code, _, err, wall) = f.run(&["rollback", "--env", "test", "--reason", "under load"]);
    std::thread::sleep(Duration::from_millis(500));
    let (ok, failed, errors) = load.finish();
    eprintln!(
        "fleet: rollback under load: {ok} ok, {failed} failed in {:.1}s",
        wall.as_secs_f64()
    );
    assert_eq!(code, 0, "rollback under load: {err}");
    assert_eq!(failed, 0, "failed requests during the rollback: {errors:?}");
    f.assert_serving("good");

    // 4. A host whose sshd is down is caught in preflight: nothing changes anywhere.
    let before: Vec<_> = HOSTS.iter().map(|h| f.root(h).state().unwrap()).collect();
    f.stop_host("t3");
    let (code, evs, err, _) = f.run(&["deploy", f.commit("good2"), "--env", "test"]);
    f.start_host("t3");
    assert_eq!(code, 3, "unreachable host: {err}");
    let pf: Vec<_> = events(&evs, "preflight")
        .into_iter()
        .filter(|e| e["ok"] == false)
        .collect();
    assert_eq!(pf.len(), 1, "{}", testkit::why(&evs));
    assert_eq!(pf[0]["host"], "t3");
    assert!(
        pf[0]["detail"].as_str().unwrap().contains("unreachable"),
        "{pf:?}"
    );
    assert!(events(&evs, "fetch").is_empty() && events(&evs, "step").is_empty());
    for (h, b) in HOSTS.iter().zip(&before) {
        assert_eq!(
            &f.root(h).state().unwrap().current,
            &b.current,
            "{h} changed"
        );
    }
    f.assert_serving("good");
    let hist = f.run(&["history", "--env", "test", "--limit", "1"]).1;
    assert!(
        hist.iter().any(|j| j.to_string().contains("refused")),
        "{hist:?}"
    );

    // 5. A host lost mid-deploy: the deploy aborts and rolls the others back.
    let (mut child, out) = {
        let mut c = f.cmd(&[
            "deploy",
            f.commit("good2"),
            "--env",
            "test",
            "--reason",
            "lose t3",
            // The canary bake holds the rollout after t1 long enough for the test to cut t3
            // off before any step reaches it (without it this races the rollout).
            "--set",
            "envs.test.canary_bake=6s",
        ]);
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        (child, out)
    };
    let mut out = out;
    let seen = read_until(&mut out, |e| e["event"] == "host_done" && e["host"] == "t1");
    assert_eq!(seen.last().unwrap()["ok"], true, "{seen:#?}");
    f.stop_host("t3");
    // Cut the shared connection too (stopping sshd leaves established sessions alive).
    let ctl = f
        .dir
        .path()
        .join("ctl")
        .join(format!("applier-ssh-{}", child.id()));
    let _ = Command::new("ssh")
        .arg("-F")
        .arg(&f.bed.ssh.config)
        .arg("-o")
        // The applier's socket of host t3: `<prefix>-%C`, the prefix from its inventory name.
        .arg(format!(
            "ControlPath={}/{}-%C",
            ctl.display(),
            &artifact::Digest::of(b"t3").hex()[..8]
        ))
        .args(["-O", "exit", "t3"])
        .output();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = child.wait().unwrap();
    f.start_host("t3");
    let evs: Vec<Value> = testkit::json_lines(&rest);
    let code = status.code().unwrap();
    assert!(
        code == 1 || code == 2,
        "lost host: exit {code}\n{}",
        testkit::why(&evs)
    );
    assert!(!events(&evs, "abort").is_empty(), "{}", testkit::why(&evs));
    for h in ["t1", "t2"] {
        assert_eq!(
            f.release(h).as_deref(),
            Some(f.commit("good")),
            "{h} not rolled back"
        );
        assert_eq!(f.root(h).state().unwrap().step, None);
    }
    // t3 was never changed: still the old release, and the journal names it.
    assert_eq!(
        f.release("t3").as_deref(),
        Some(f.commit("good")),
        "t3 changed\n{}",
        testkit::why(&evs)
    );
    let st = f.run(&["status", "--env", "test"]);
    eprintln!("fleet: after losing t3: exit {code}; status {:?}", st.1);
    let _ = haproxy(&f.bed, "set server fixture/t3 state ready");
    std::thread::sleep(Duration::from_secs(2));
    f.assert_serving("good");

    // 6. A release raising the 5xx rate (seen by Prometheus) is rolled back on the canary.
    let direct: Vec<String> = HOSTS
        .iter()
        .map(|h| {
            format!(
                "http://127.0.0.1:{}/en.wikipedia.org/v1/page/Main_Page",
                f.bed.host(h).service_port
            )
        })
        .collect();
    let load = Load::start(direct, 3, 30);
    let (code, evs, err, _) = f.run(&["deploy", f.commit("bad_5xx"), "--env", "test-metrics"]);
    let _ = load.finish();
    assert_eq!(code, 1, "5xx canary: {err}\n{}", testkit::why(&evs));
    let checks = events(&evs, "check");
    let bad = checks
        .iter()
        .find(|e| {
            e["host"] == "t1"
                && e["result"]["name"] == "5xx-rate"
                && e["result"]["outcome"] == "fail"
        })
        .unwrap_or_else(|| panic!("no failed 5xx-rate check on t1: {checks:#?}"));
    eprintln!("fleet: canary 5xx check: {}", bad["result"]["detail"]);
    assert!(
        events(&evs, "host_done").iter().all(|e| e["host"] == "t1"),
        "went past the canary"
    );
    f.assert_serving("good");

    // 7. An expired presigned URL fails the fetch cleanly: refused, hosts unchanged.
    std::fs::write(f.dir.path().join("slow-fetch"), "").unwrap();
    let (code, evs, err, _) = f.run(&["deploy", f.commit("good3"), "--env", "test-expiry"]);
    std::fs::remove_file(f.dir.path().join("slow-fetch")).unwrap();
    assert_eq!(code, 3, "expired URL: {err}\n{}", testkit::why(&evs));
    let fe: Vec<_> = events(&evs, "fetch")
        .into_iter()
        .filter(|e| e["ok"] == false)
        .collect();
    assert!(!fe.is_empty(), "{}", testkit::why(&evs));
    assert!(
        fe[0]["detail"].as_str().unwrap().contains("expired"),
        "{fe:?}"
    );
    for h in HOSTS {
        assert!(
            !f.root(h).release_dir(f.commit("good3")).exists(),
            "{h} kept a partial release"
        );
    }
    f.assert_serving("good");
}

/// The ssh processes whose command line names `dir` (the control sockets of one run).
fn ssh_processes_under(dir: &std::path::Path) -> Vec<String> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            e.file_name().to_str()?.parse::<u32>().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            (cmd.starts_with("ssh") && cmd.contains(&needle)).then_some(cmd)
        })
        .collect()
}

/// Two inventory hosts that share one ssh destination each open their own master, and both
/// are closed when the hosts are dropped (the applier ends): no ssh process is left behind.
#[test]
fn ssh_masters_are_closed_when_the_applier_ends_even_for_hosts_sharing_a_destination() {
    use applier::host::Host;
    let _one = BED.lock().unwrap_or_else(|e| e.into_inner());
    let bed = testkit::require!(bed());
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn artifact::Store> =
        Arc::new(artifact::store::fs::FsStore::open(dir.path().join("store")).unwrap());
    let t1 = &bed.hosts[0];
    let (dest, root) = (t1.name.as_str(), &t1.root);
    let ctl = dir.path().join("ctl");
    std::fs::create_dir_all(&ctl).unwrap();
    let ssh: applier::config::SshConfig = serde_json::from_value(serde_json::json!({
        "config_file": bed.ssh.config,
        "applier_path": env!("CARGO_BIN_EXE_applier"),
        "control_dir": ctl,
        "connect_timeout": "3s",
        "control_persist": "10m",
    }))
    .unwrap();
    let hc: applier::config::HostConfig =
        serde_json::from_value(serde_json::json!({ "root": root, "ssh": dest })).unwrap();
    let hosts: Vec<_> = ["svc-a", "svc-b"]
        .iter()
        .map(|n| applier::host::ssh::SshHost::new(n, &hc, &ssh, store.clone()))
        .collect();
    for h in &hosts {
        h.health().unwrap();
    }
    let running = ssh_processes_under(&ctl);
    assert!(
        running.len() >= 2,
        "one master per host expected: {running:?}"
    );
    drop(hosts);
    let t0 = Instant::now();
    let mut left = ssh_processes_under(&ctl);
    while !left.is_empty() && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
        left = ssh_processes_under(&ctl);
    }
    assert!(left.is_empty(), "ssh processes left behind: {left:?}");
}
