//! Shared harness for the applier's integration tests: builds fixture-service artifacts with
//! the real `builder` into a directory store (once per test binary), lays out local hosts
//! (directories under a tempdir, each serving on its own loopback port) and runs the real
//! `applier` binary against them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

pub const VARIANTS: &[(&str, &str, &str)] = &[
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
    pub builds: BTreeMap<String, (String, String)>,
}

impl Fixture {
    pub fn commit(&self, v: &str) -> &str {
        &self.builds[v].0
    }
    pub fn digest(&self, v: &str) -> &str {
        &self.builds[v].1
    }
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn have(bin: &str) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The fixture (built once), or `None` with a printed reason when node/npm/git are missing
/// outside CI. With `CI=true` a missing tool fails the test.
pub fn fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(|| fixture_tools_present().then(build_fixture))
        .as_ref()
}

/// True when node, npm and git are here. Otherwise prints why the test is skipped and returns
/// false, or, with `CI=true`, fails.
pub fn fixture_tools_present() -> bool {
    for bin in ["node", "npm", "git"] {
        if !have(bin) {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{bin} is required for the applier integration tests (CI=true)");
            }
            eprintln!(
                "SKIPPED: {bin} not found; the applier integration tests need node, npm and git"
            );
            return false;
        }
    }
    true
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == "node_modules" {
            continue;
        }
        let ft = e.file_type().unwrap();
        let dst = to.join(&name);
        if ft.is_dir() {
            copy_tree(&e.path(), &dst);
        } else if ft.is_file() {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

pub fn builder_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let bin = target.join("debug/builder");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        run_ok(
            Command::new(cargo)
                .args(["build", "-q", "-p", "builder"])
                .current_dir(workspace()),
        );
    }
    bin
}

fn build_fixture() -> Fixture {
    // Under target/tmp: a static is never dropped, so this is not removed after the run.
    let dir = tempfile::Builder::new()
        .prefix("applier-it-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
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

/// Makes a git repository of `fixtures/service` under `dir`, commits one variant per
/// `(name, from, to)` (the first `from` in `deploy/env/test.yaml` replaced by `to`) and builds
/// each with the real builder; `store_args` adds the store arguments and environment.
/// Returns variant -> (git commit, manifest digest).
pub fn build_variants(
    dir: &Path,
    variants: &[(&str, &str, &str)],
    store_args: impl Fn(&mut Command),
) -> BTreeMap<String, (String, String)> {
    let repo = dir.join("repo");
    copy_tree(&workspace().join("fixtures/service"), &repo);
    let git = |args: &[&str]| {
        run_ok(
            Command::new("git")
                .args([
                    "-c",
                    "user.name=Test",
                    "-c",
                    "user.email=test@example.invalid",
                    "-c",
                    "commit.gpgsign=false",
                ])
                .args(args)
                .current_dir(&repo),
        )
    };
    git(&["init", "-q", "-b", "main"]);
    let env_file = repo.join("deploy/env/test.yaml");
    let base = std::fs::read_to_string(&env_file).unwrap();
    let npm_cache = dir.join("npm-cache");
    let builder = builder_bin();
    let mut builds = BTreeMap::new();
    for (name, from, to) in variants {
        assert!(base.contains(from), "deploy/env/test.yaml has no {from:?}");
        std::fs::write(&env_file, base.replacen(from, to, 1)).unwrap();
        git(&["add", "-A"]);
        git(&["commit", "-q", "--allow-empty", "-m", name]);
        let sha = git(&["rev-parse", "HEAD"]);
        let mut cmd = Command::new(&builder);
        cmd.args(["build", "--repo"])
            .arg(&repo)
            .args(["--rev", &sha, "--npm-cache"])
            .arg(&npm_cache);
        store_args(&mut cmd);
        let out = run_ok(&mut cmd);
        let digest = out.lines().last().unwrap_or_default().trim().to_string();
        assert!(digest.starts_with("sha256:"), "builder printed {out:?}");
        builds.insert(name.to_string(), (sha, digest));
    }
    builds
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
    /// `extra` is YAML merged into the env block (indented by the caller at 4 spaces).
    pub fn new(fx: &Fixture, name: &str, extra: &str) -> Env {
        Env::with_store(&fx.store, name, extra)
    }

    /// As [`Env::new`], on the store at `store`.
    pub fn with_store(store: &Path, name: &str, extra: &str) -> Env {
        let dir = tempfile::Builder::new()
            .prefix("applier-env-")
            .tempdir()
            .unwrap();
        let mut ports = BTreeMap::new();
        let mut hosts = String::new();
        for h in HOSTS {
            let p = free_port();
            ports.insert(h.to_string(), p);
            hosts.push_str(&format!(
                "      {h}: {{root: {}, port: {p}, values: {{services.0.conf.host: 127.0.0.1}}}}\n",
                dir.path().join(h).display()
            ));
        }
        let pool = dir.path().join("pool");
        std::fs::create_dir_all(&pool).unwrap();
        let config = dir.path().join("deploy.yaml");
        // No metrics backend here unless the test brings one: skip the service's metrics check.
        let extra = if extra.contains("    checks:") {
            extra.to_string()
        } else {
            format!("    checks: {{disable: [metrics]}}\n{extra}")
        };
        let block = |env: &str, groups: &str, hosts: &str| {
            format!(
                "  {env}:\n    service_env: test\n    groups:\n{groups}    group_size: 1\n    ready_timeout: 8s\n    pool:\n      driver: command\n      depool: echo out > {pool}/{{host}}\n      repool: echo in > {pool}/{{host}}\n      is_depooled: grep -qx out {pool}/{{host}}\n{extra}    hosts:\n{hosts}",
                pool = pool.display(),
            )
        };
        let h3_line: String = hosts
            .lines()
            .filter(|l| l.trim_start().starts_with("h3:"))
            .map(|l| format!("{l}\n"))
            .collect();
        // `<name>-solo`: h3 alone, to put it on a release of its own.
        let text = format!(
            "store: {store}\nlease_ttl: 6s\nenvs:\n{}{}",
            block(
                name,
                "      - {name: canary, hosts: [h1]}\n      - {name: rest, hosts: [h2, h3]}\n",
                &hosts
            ),
            block(
                &format!("{name}-solo"),
                "      - {name: canary, hosts: [h3]}\n",
                &h3_line
            ),
            store = store.display(),
        );
        std::fs::write(&config, text).unwrap();
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
        let events = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (
            out.status.code().unwrap_or(-1),
            events,
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
        applier::hostops::HostRoot::new(self.root(h))
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
            let st = applier::hostops::HostRoot::new(self.root(h))
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
            let _ = applier::hostops::HostRoot::new(self.root(h)).stop();
        }
    }
}

/// Events of one kind.
pub fn events<'a>(evs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    evs.iter().filter(|e| e["event"] == kind).collect()
}
