//! Upstream RESTBase, end to end: `ci/restbase-repo` makes its service repository (upstream
//! e5a608a plus the adoption commit), the real `builder` builds it (npm compiles sqlite3 and
//! the other native modules), and the real `applier` deploys it to three local hosts, each
//! with its own port and SQLite file from the inventory's host values, checking RESTBase's own
//! endpoints; then a source-only commit is built (reusing the dependency layer) and deployed
//! rolling, canary first.
//!
//! The npm compile is paid once per test binary: the repository, the store and both builds
//! are made once ([`restbase`]) and shared; the npm cache is `ci/node-deps`' (`ci/.cache/npm`),
//! so what it downloaded is not downloaded again. The tests that run npm or RESTBase take one
//! lock, so they do not compete for the CPU.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use serde_json::{Value, json};
use testkit::{bin, free_port, http_get, run, run_ok, workspace};

/// The repository, its two commits and their builds in one store.
struct Restbase {
    dir: PathBuf,
    repo: PathBuf,
    store: PathBuf,
    npm_cache: PathBuf,
    /// The adoption commit and its build report.
    first: (String, Value),
    /// A source-only change on top, and its build report.
    second: (String, Value),
}

/// Serialises the heavy tests (npm compiles, three RESTBase processes).
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

fn build(repo: &Path, store: &Path, npm_cache: &Path, rev: &str) -> Value {
    let started = Instant::now();
    let out = run_ok(
        Command::new(bin("builder"))
            .args(["build", "--format", "json", "--repo"])
            .arg(repo)
            .args(["--rev", rev, "--store"])
            .arg(store)
            .arg("--npm-cache")
            .arg(npm_cache)
            .env_remove("BUILDER_STORE")
            .env_remove("DEPLOY_STORE"),
    );
    eprintln!(
        "restbase: built {rev} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("builder printed {out:?}: {e}"))
}

fn git(repo: &Path, args: &[&str]) -> String {
    run_ok(
        Command::new("git")
            .args(args)
            .current_dir(repo)
            .env("GIT_AUTHOR_NAME", "Test")
            .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
            .env("GIT_COMMITTER_NAME", "Test")
            .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
            .env("GIT_AUTHOR_DATE", "2025-05-02T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2025-05-02T00:00:00Z"),
    )
}

/// Everything built once, or `None` (with a printed reason) when node, npm or git are
/// missing outside CI.
fn restbase() -> Option<&'static Restbase> {
    static R: OnceLock<Option<Restbase>> = OnceLock::new();
    R.get_or_init(|| {
        if let Err(m) = testkit::node_tools() {
            testkit::missing(&m);
            return None;
        }
        let _heavy = heavy();
        let target = Path::new(env!("CARGO_TARGET_TMPDIR"));
        // What an earlier run of this binary kept (a static is never dropped).
        for e in std::fs::read_dir(target).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with("restbase-e2e-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        // Kept for the run; the npm cache is kept across runs.
        let dir = tempfile::Builder::new()
            .prefix("restbase-e2e-")
            .tempdir_in(target)
            .unwrap()
            .keep();
        // ci/node-deps' download cache: on a fresh machine ci/test has filled it already.
        let npm_cache = workspace().join("ci/.cache/npm");
        let repo = dir.join("repo");
        let out = run_ok(Command::new(workspace().join("ci/restbase-repo")).arg(&repo));
        let first_commit = out.lines().last().unwrap().trim().to_string();
        let store = dir.join("store");
        let first = build(&repo, &store, &npm_cache, &first_commit);
        // A source-only change: the API docs' README, nothing npm reads.
        let readme = repo.join("README.md");
        let mut text = std::fs::read_to_string(&readme).unwrap();
        text.push_str("\nDeployed with the deploy toolchain.\n");
        std::fs::write(&readme, text).unwrap();
        git(
            &repo,
            &["commit", "-q", "-am", "README: how it is deployed"],
        );
        let second_commit = git(&repo, &["rev-parse", "HEAD"]);
        let second = build(&repo, &store, &npm_cache, &second_commit);
        Some(Restbase {
            dir,
            repo,
            store,
            npm_cache,
            first: (first_commit, first),
            second: (second_commit, second),
        })
    })
    .as_ref()
}

macro_rules! rb {
    () => {
        match restbase() {
            Some(r) => r,
            None => return,
        }
    };
}

#[test]
fn restbase_builds_with_native_modules_and_a_source_only_change_reuses_its_dependency_layer() {
    let rb = rb!();
    let (commit, first) = &rb.first;
    assert_eq!(first["outcome"], "built");
    assert_eq!(&first["commit"], commit);
    assert_eq!(first["service"], "restbase");
    assert_eq!(first["deps"]["reused"], false);
    assert_eq!(
        first["deps"]["native"], true,
        "sqlite3 and friends are native"
    );
    let second = &rb.second.1;
    assert_eq!(second["deps"]["reused"], true, "{second}");
    assert_eq!(second["layers"][1]["digest"], first["layers"][1]["digest"]);
    assert_ne!(second["layers"][0]["digest"], first["layers"][0]["digest"]);
    for id in [&first["id"], &second["id"]] {
        let out = run_ok(
            Command::new(bin("builder"))
                .args(["verify", "--store"])
                .arg(&rb.store)
                .arg(id.as_str().unwrap()),
        );
        assert_eq!(
            out.lines().filter(|l| l.starts_with("ok ")).count(),
            4,
            "{out}"
        );
    }
}

#[test]
fn restbase_builds_to_the_same_artifact_in_an_empty_store_with_a_fresh_npm_cache() {
    let rb = rb!();
    let _heavy = heavy();
    let t = tempfile::tempdir_in(&rb.dir).unwrap();
    let again = build(
        &rb.repo,
        &t.path().join("store"),
        &t.path().join("npm-cache"),
        &rb.first.0,
    );
    assert_eq!(again["outcome"], "built");
    assert_eq!(again["deps"]["reused"], false, "npm ran again");
    assert_eq!(
        again["layers"], rb.first.1["layers"],
        "the dependency layer (node-gyp outputs included) must be byte-identical"
    );
    assert_eq!(again["id"], rb.first.1["id"]);
    let _ = &rb.npm_cache;
}

/// Three local hosts for RESTBase: h1 the canary, h2 and h3 the rest, one at a time. Each has
/// its own root, port and SQLite file.
struct Hosts {
    dir: tempfile::TempDir,
    config: PathBuf,
    ports: Vec<(String, u16)>,
}

/// The path of `dbname` in RESTBase's config (deploy/env/test.yaml), as host values spell it.
const DBNAME_PATH: &str = "services.0.conf.spec.paths./{domain:localhost}/{api:sys}.x-modules.1.spec.paths./table.x-modules.0.options.conf.dbname";

impl Hosts {
    /// Three hosts in env `env` (its own records in the shared store).
    fn new(rb: &Restbase, env: &str) -> Hosts {
        let dir = tempfile::tempdir_in(&rb.dir).unwrap();
        let mut hosts = serde_json::Map::new();
        let mut ports = Vec::new();
        for h in ["h1", "h2", "h3"] {
            let port = free_port();
            let root = dir.path().join(h);
            hosts.insert(
                h.into(),
                json!({
                    "root": root,
                    "port": port,
                    "values": {
                        "services.0.conf.host": "127.0.0.1",
                        DBNAME_PATH: root.join("db.sqlite3"),
                    },
                }),
            );
            ports.push((h.to_string(), port));
        }
        // YAML reads JSON, and JSON needs no quoting rules for keys like `/{domain:localhost}`.
        let config = json!({
            "store": rb.store,
            "lease_ttl": "2m",
            "envs": {env: {
                "service_env": "test",
                "groups": [{"name": "canary", "hosts": ["h1"]}, {"name": "rest", "hosts": ["h2", "h3"]}],
                "group_size": 1,
                "ready_timeout": "120s",
                "pool": {"driver": "none"},
                "checks": {"disable": ["metrics"]},
                "hosts": hosts,
            }},
        });
        let path = dir.path().join("deploy.yaml");
        std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        Hosts {
            dir,
            config: path,
            ports,
        }
    }

    /// Runs the applier; returns exit code, JSON events and stderr.
    fn applier(&self, args: &[&str]) -> (i32, Vec<Value>, String) {
        let (code, out, err) = run(Command::new(bin("applier"))
            .arg("--config")
            .arg(&self.config)
            .args(["--format", "json"])
            .args(args)
            .env_remove("APPLIER_CONFIG")
            .env_remove("APPLIER_STORE"));
        let events = out
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (code, events, err)
    }

    /// Asserts every host answers RESTBase's own endpoints and serves `commit`.
    fn assert_serving(&self, commit: &str) {
        for (h, port) in &self.ports {
            let root: Value = serde_json::from_str(
                &http_get(*port, "/").unwrap_or_else(|| panic!("{h}: GET / did not answer 200")),
            )
            .unwrap();
            assert_eq!(root, json!({"items": ["localhost"]}), "{h}");
            let api = http_get(*port, "/localhost/v1/")
                .unwrap_or_else(|| panic!("{h}: GET /localhost/v1/ did not answer 200"));
            assert!(api.contains("page"), "{h}: {api}");
            let current = std::fs::read_link(self.dir.path().join(h).join("current")).unwrap();
            assert!(
                current.to_string_lossy().ends_with(commit),
                "{h} runs {current:?}, not {commit}"
            );
            assert!(
                self.dir.path().join(h).join("db.sqlite3").is_file(),
                "{h} has no SQLite file of its own"
            );
        }
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for (h, _) in &self.ports {
            let _ = Command::new(bin("applier"))
                .args(["host", "--root"])
                .arg(self.dir.path().join(h))
                .arg("stop")
                .output();
        }
        // Whatever still runs from these hosts' releases (a failed test, a changed host CLI)
        // is ended by its pid, so no RESTBase outlives the test.
        testkit::cmd::kill_processes_under(self.dir.path());
    }
}

fn events<'a>(evs: &'a [Value], kind: &str) -> Vec<(usize, &'a Value)> {
    evs.iter()
        .enumerate()
        .filter(|(_, e)| e["event"] == kind)
        .collect()
}

#[test]
fn restbase_deploys_to_three_hosts_then_rolls_a_source_only_change() {
    let rb = rb!();
    let _heavy = heavy();
    let hosts = Hosts::new(rb, "rb");
    let (first, second) = (&rb.first, &rb.second);

    let started = Instant::now();
    let (code, evs, err) =
        hosts.applier(&["deploy", first.1["id"].as_str().unwrap(), "--env", "rb"]);
    assert_eq!(code, 0, "{err}\n{evs:#?}");
    eprintln!(
        "restbase: first deploy to 3 hosts in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    hosts.assert_serving(&first.0);
    assert!(
        events(&evs, "check")
            .iter()
            .all(|(_, c)| c["result"]["passed"] == true),
        "{evs:#?}"
    );

    let started = Instant::now();
    let (code, evs, err) = hosts.applier(&["deploy", &second.0[..12], "--env", "rb"]);
    assert_eq!(code, 0, "{err}\n{evs:#?}");
    eprintln!(
        "restbase: rolling deploy of the source-only change in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    hosts.assert_serving(&second.0);
    // Rolling: canary first, then one host at a time; a host is stopped only after the one
    // before it is done.
    let done = events(&evs, "host_done");
    let order: Vec<&str> = done
        .iter()
        .map(|(_, e)| e["host"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["h1", "h2", "h3"]);
    let stops: Vec<(usize, &str)> = events(&evs, "step")
        .into_iter()
        .filter(|(_, e)| e["step"] == "stop")
        .map(|(i, e)| (i, e["host"].as_str().unwrap()))
        .collect();
    assert_eq!(stops.iter().map(|(_, h)| *h).collect::<Vec<_>>(), order);
    for w in 1..3 {
        assert!(
            stops[w].0 > done[w - 1].0,
            "{} stopped before {} was done",
            stops[w].1,
            order[w - 1]
        );
    }

    let (code, evs, err) = hosts.applier(&["status", "--env", "rb"]);
    assert_eq!(code, 0, "{err}");
    let status = evs[0].as_array().unwrap();
    assert_eq!(status.len(), 3);
    assert!(
        status.iter().all(|h| h["current"] == second.0.as_str()),
        "{status:#?}"
    );
}

/// The schema trap through the applier, on real RESTBase and its real SQLite backend: a commit
/// bumping `title_revisions-ng` from 2 to 3 with a new column is refused with the exact `--ack`
/// to type and no host touched; acknowledged, it goes out as a `schema` deploy and every host
/// serves it; a rollback is refused with the recipe; forced, the old code is refused by the
/// storage on the canary, which goes back to the bumped release, and the rest is never touched.
#[test]
fn restbase_schema_bump_is_refused_then_acked_as_a_schema_deploy_and_its_rollback_refused() {
    let rb = rb!();
    let _heavy = heavy();
    let hosts = Hosts::new(rb, "rb-schema");
    let base = &rb.second;
    let (code, evs, err) = hosts.applier(&[
        "deploy",
        base.1["id"].as_str().unwrap(),
        "--env",
        "rb-schema",
    ]);
    assert_eq!(code, 0, "{err}\n{evs:#?}");

    // The trap, on a branch of its own from the second commit (the repo is shared).
    git(&rb.repo, &["checkout", "-q", "-B", "schema-trap", &base.0]);
    let file = rb.repo.join("sys/page_revisions.js");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("            version: 2,") && text.contains("page_language: 'string'"));
    let text = text
        .replacen("            version: 2,", "            version: 3,", 1)
        .replacen(
            "page_language: 'string'",
            "page_language: 'string',\n                summary: 'string'",
            1,
        );
    std::fs::write(&file, text).unwrap();
    git(
        &rb.repo,
        &[
            "commit",
            "-q",
            "-am",
            "title_revisions-ng: a summary column",
        ],
    );
    let trap = git(&rb.repo, &["rev-parse", "HEAD"]);
    let built = build(&rb.repo, &rb.store, &rb.npm_cache, &trap);
    let id = built["id"].as_str().unwrap().to_string();

    // Refused, with the exact ack, nothing touched.
    let (code, evs, err) = hosts.applier(&["deploy", &id, "--env", "rb-schema"]);
    assert_eq!(code, 3, "{err}\n{evs:#?}");
    assert!(
        err.contains("--ack 'SG002 title_revisions-ng 2->3 <reason>'"),
        "the refusal does not give the ack to type: {err}"
    );
    hosts.assert_serving(&base.0);

    // Acknowledged: a schema deploy, every host on the bumped release.
    let ack = "SG002 title_revisions-ng 2->3 adds the summary column";
    let (code, evs, err) = hosts.applier(&["deploy", &id, "--env", "rb-schema", "--ack", ack]);
    assert_eq!(code, 0, "{err}\n{evs:#?}");
    let plan = &events(&evs, "plan")[0].1;
    assert_eq!(plan["deploy_type"], "schema", "{plan:#}");
    hosts.assert_serving(&trap);

    // A rollback is refused with the recipe, and changes nothing.
    let (code, evs, err) = hosts.applier(&["rollback", "--env", "rb-schema"]);
    assert_eq!(code, 3, "{err}\n{evs:#?}");
    assert!(
        err.contains("do not redeploy the previous revision"),
        "the refusal does not give the way back: {err}"
    );
    hosts.assert_serving(&trap);

    // Forced: the storage refuses the old code on the canary; it goes back, the rest untouched.
    let (code, evs, err) =
        hosts.applier(&["rollback", "--env", "rb-schema", "--force-schema-rollback"]);
    assert_eq!(code, 1, "{err}\n{evs:#?}");
    let touched: Vec<&str> = events(&evs, "host_done")
        .iter()
        .map(|(_, e)| e["host"].as_str().unwrap())
        .collect();
    assert_eq!(touched, ["h1"], "only the canary is tried: {evs:#?}");
    hosts.assert_serving(&trap);
    // That failure locked the env; unlocking it is a recorded step.
    let (code, _, err) = hosts.applier(&["deploy", &id, "--env", "rb-schema"]);
    assert_eq!(code, 3, "a failed run must lock the env: {err}");
    let (code, _, err) = hosts.applier(&[
        "unlock",
        "--env",
        "rb-schema",
        "--reason",
        "the forced rollback failed as it must",
    ]);
    assert_eq!(code, 0, "{err}");
}

// After the macros and helpers above, which it uses (a `macro_rules!` is in scope only below
// its definition).
mod traps;
