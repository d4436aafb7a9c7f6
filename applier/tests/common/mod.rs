//! Shared harness for the applier's integration tests, on top of `testkit`: builds
//! fixture-service artifacts with the real `builder` into a directory store (once per test
//! binary), lays out local hosts (directories under a tempdir, each serving on its own
//! loopback port), writes their inventory by serialising the applier's own config types, and
//! runs the real `applier` binary against them.
#![allow(dead_code)]

pub mod load;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use applier::config::{Config, EnvConfig, GroupConfig, HostConfig, PoolConfig};
use serde_json::{Value, json};
use testkit::Missing;
use testkit::config::{merge, write_yaml, yaml};

pub use testkit::repo::{Builds, Variant};
pub use testkit::{build_variants, free_port};

pub const VARIANTS: &[Variant<'static>] = &[
    ("good", "marker: test", "marker: test"),
    ("good2", "marker: test", "marker: test-2"),
    ("good3", "marker: test", "marker: test-3"),
    ("bad_5xx", "serve_5xx: 0", "serve_5xx: 1"),
    ("bad_logs", "storage_errors: false", "storage_errors: true"),
    ("bad_crash", "crash_at_start: false", "crash_at_start: true"),
    ("bad_bind", "never_bind: false", "never_bind: true"),
    ("corrupt", "marker: test", "marker: corrupt-me"),
];

pub struct Fixture {
    _dir: tempfile::TempDir,
    pub store: PathBuf,
    /// variant -> (git commit, manifest digest)
    pub builds: Builds,
}

impl Fixture {
    pub fn commit(&self, v: &str) -> &str {
        &self.builds[v].0
    }
    pub fn digest(&self, v: &str) -> &str {
        &self.builds[v].1
    }
}

/// The fixture (built once per test binary), or `None` once the missing tool was reported
/// for this test (`testkit::missing`: fails under `CI=true`, skips loudly elsewhere).
pub fn fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Result<Fixture, Missing>> = OnceLock::new();
    match F.get_or_init(|| testkit::node_tools().map(|()| build_fixture())) {
        Ok(f) => Some(f),
        Err(m) => {
            testkit::missing(m);
            None
        }
    }
}

/// True when node, npm and git are here; otherwise reports the missing tool for this test
/// (`testkit::missing`: fails under `CI=true`, skips loudly elsewhere) and returns false.
pub fn fixture_tools_present() -> bool {
    match testkit::node_tools() {
        Ok(()) => true,
        Err(m) => {
            testkit::missing(&m);
            false
        }
    }
}

pub fn builder_bin() -> PathBuf {
    testkit::bin("builder")
}

fn build_fixture() -> Fixture {
    // Under target/tmp: a static is never dropped, so this is not removed after the run.
    let dir = testkit::paths::kept_tempdir("applier-it-");
    let store = dir.path().join("store");
    let builds = build_variants(dir.path(), VARIANTS, |c| {
        c.arg("--store").arg(&store);
    });
    Fixture {
        _dir: dir,
        store,
        builds,
    }
}

/// One test environment: hosts h1 (canary), h2, h3 under a tempdir.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub name: String,
    pub ports: BTreeMap<String, u16>,
    pub config: PathBuf,
}

pub const HOSTS: [&str; 3] = ["h1", "h2", "h3"];

impl Env {
    /// `extra` is YAML merged into the env block (keys of an environment, indented by the
    /// caller at 4 spaces as they would sit in the file).
    pub fn new(fx: &Fixture, name: &str, extra: &str) -> Env {
        Env::with_store(&fx.store, name, extra)
    }

    /// As [`Env::new`], on the store at `store`.
    pub fn with_store(store: &Path, name: &str, extra: &str) -> Env {
        let dir = tempfile::Builder::new()
            .prefix("applier-env-")
            .tempdir()
            .unwrap();
        let pool = dir.path().join("pool");
        std::fs::create_dir_all(&pool).unwrap();
        let mut ports = BTreeMap::new();
        let mut hosts = BTreeMap::new();
        for h in HOSTS {
            let p = free_port();
            ports.insert(h.to_string(), p);
            hosts.insert(
                h.to_string(),
                HostConfig {
                    root: dir.path().join(h),
                    address: "127.0.0.1".into(),
                    port: Some(p),
                    values: [("services.0.conf.host".to_string(), json!("127.0.0.1"))].into(),
                    ops_file: None,
                    env: BTreeMap::new(),
                    ssh: None,
                },
            );
        }
        let pool_cfg = PoolConfig::Command {
            depool: format!("echo out > {}/{{host}}", pool.display()),
            repool: format!("echo in > {}/{{host}}", pool.display()),
            confirm_depooled: None,
            is_depooled: Some(format!("grep -qx out {}/{{host}}", pool.display())),
            timeout: applier::config::Dur(Duration::from_secs(30)),
        };
        // No metrics backend here unless the test brings one: skip the service's metrics check.
        let mut over = yaml("checks: {disable: [metrics]}");
        merge(&mut over, yaml(extra));
        let env = |groups: Vec<GroupConfig>, hosts: BTreeMap<String, HostConfig>| -> EnvConfig {
            let mut v = json!({
                "service_env": "test",
                "groups": groups,
                "group_size": 1,
                "ready_timeout": "30s",
                "pool": pool_cfg,
                "hosts": hosts,
            });
            merge(&mut v, over.clone());
            serde_json::from_value(v.clone())
                .unwrap_or_else(|e| panic!("the applier refuses the test env: {e}\n{v:#}"))
        };
        let group = |name: &str, hosts: &[&str]| GroupConfig {
            name: name.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
        };
        let mut envs = BTreeMap::new();
        envs.insert(
            name.to_string(),
            env(
                vec![group("canary", &["h1"]), group("rest", &["h2", "h3"])],
                hosts.clone(),
            ),
        );
        // `<name>-solo`: h3 alone, to put it on a release of its own.
        let h3: BTreeMap<_, _> = hosts.into_iter().filter(|(h, _)| h == "h3").collect();
        envs.insert(
            format!("{name}-solo"),
            env(vec![group("canary", &["h3"])], h3),
        );
        let cfg = Config {
            store: store.display().to_string(),
            lease_ttl: applier::config::Dur(Duration::from_secs(10)),
            envs,
            ..Config::default()
        };
        let config = dir.path().join("deploy.yaml");
        write_yaml(&config, &cfg);
        Env {
            dir,
            name: name.to_string(),
            ports,
            config,
        }
    }

    pub fn root(&self, h: &str) -> PathBuf {
        self.dir.path().join(h)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_applier"));
        c.arg("--config")
            .arg(&self.config)
            .args(["--format", "json"])
            .args(args);
        c.env_remove("APPLIER_CONFIG").env_remove("APPLIER_STORE");
        c
    }

    /// Runs the applier, returning exit code, JSON events and stderr.
    pub fn run(&self, args: &[&str]) -> (i32, Vec<Value>, String) {
        let out: Output = self.cmd(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            testkit::json_lines(&String::from_utf8_lossy(&out.stdout)),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn deploy(&self, target: &str) -> (i32, Vec<Value>, String) {
        self.run(&["deploy", target, "--env", &self.name])
    }

    /// `/_info` of a host, or None if it does not answer.
    pub fn info(&self, h: &str) -> Option<Value> {
        let url = format!("http://127.0.0.1:{}/_info", self.ports[h]);
        let mut r = ureq::get(&url).call().ok()?;
        r.body_mut().read_json().ok()
    }

    pub fn release(&self, h: &str) -> Option<String> {
        self.info(h)
            .and_then(|v| v["release"].as_str().map(str::to_string))
    }

    pub fn pid(&self, h: &str) -> Option<i32> {
        applier::target::HostRoot::new(self.root(h))
            .running()
            .ok()
            .flatten()
            .map(|r| r.pid)
    }

    pub fn pool_state(&self, h: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("pool").join(h))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Asserts every host serves `commit`, is in the pool, and is not mid-step.
    pub fn assert_all_serve(&self, hosts: &[&str], commit: &str) {
        for h in hosts {
            assert_eq!(
                self.release(h).as_deref(),
                Some(commit),
                "{h} should serve {commit}"
            );
            assert_eq!(self.pool_state(h), "in", "{h} should be pooled");
            let st = applier::target::HostRoot::new(self.root(h))
                .state()
                .unwrap();
            assert_eq!(st.step, None, "{h} has a step in progress");
            assert_eq!(st.current.as_ref().map(|r| r.commit.as_str()), Some(commit));
        }
    }

    /// Spawns the applier with its stdout piped (JSON events).
    pub fn spawn(
        &self,
        args: &[&str],
    ) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
        let mut child = self
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        (child, out)
    }
}

/// Reads events until `pred` matches one; returns everything read.
pub fn read_until(r: &mut impl BufRead, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            panic!("stream ended before the awaited event; saw {seen:#?}");
        }
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let hit = pred(&v);
        seen.push(v);
        if hit {
            return seen;
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for h in HOSTS {
            let _ = applier::target::HostRoot::new(self.root(h)).stop();
        }
    }
}

/// Events of one kind.
pub fn events<'a>(evs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    evs.iter().filter(|e| e["event"] == kind).collect()
}
