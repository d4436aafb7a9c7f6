//! The `applier` binary's fail-closed edges, with no service needed: usage and configuration
//! errors exit 64 with the rule before anything runs, a closed stdout ends the data quietly,
//! and `unlock` breaks a corrupt lock and records it in the history.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use applier::records::{self, DeployKind, Journal, JournalStatus, JournalWriter};
use artifact::store::Store;

struct Bed {
    dir: tempfile::TempDir,
}

impl Bed {
    fn new() -> Self {
        Bed {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn marker(&self) -> PathBuf {
        self.dir.path().join("MARKER")
    }

    /// A config of env `e` with host `host`, `extra` spliced in at the top level.
    fn config(&self, host: &str, extra: &str) -> PathBuf {
        let n = std::fs::read_dir(self.dir.path()).unwrap().count();
        let p = self.dir.path().join(format!("deploy-{n}.yaml"));
        let text = format!(
            "store: {store}\n{extra}envs:\n  e:\n    groups: [{{name: g, hosts: ['{host}']}}]\n    pool: {{driver: command, depool: 'touch {m}', repool: 'touch {m}'}}\n    hosts:\n      '{host}': {{root: {root}}}\n",
            store = self.store().display(),
            m = self.marker().display(),
            root = self.dir.path().join("h1").display(),
        );
        std::fs::write(&p, text).unwrap();
        p
    }

    fn run(&self, config: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_applier"))
            .arg("--config")
            .arg(config)
            .args(args)
            .env_remove("APPLIER_CONFIG")
            .env_remove("APPLIER_STORE")
            .output()
            .unwrap()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn journal(env: &str, i: usize) -> Journal {
    Journal {
        id: format!("20260101T{:06}Z-{i:06x}", i % 240000),
        env: env.into(),
        kind: DeployKind::Deploy,
        artifact: None,
        commit: None,
        who: "tester@cli".into(),
        reason: "x".repeat(500),
        started_at: format!("2026-01-01T00:00:{:02}Z", i % 60),
        finished_at: None,
        status: JournalStatus::Succeeded,
        deploy_type: None,
        groups: vec![],
        hosts: Default::default(),
        steps: vec![],
        abort_reason: None,
        needs_human: vec![],
        analysis: vec![],
        segments: 0,
        damaged: vec![],
        who_source: None,
        source_ref: None,
        guard: None,
        overrides: vec![],
    }
}

#[test]
fn configuration_and_usage_errors_exit_64_with_the_rule_and_run_nothing() {
    let bed = Bed::new();
    let cases: Vec<(PathBuf, Vec<&str>, &str)> = vec![
        (
            bed.config("h1", "lease_ttl: 1s\n"),
            vec!["status", "--env", "e"],
            "lease_ttl",
        ),
        (
            bed.config("h1", ""),
            vec!["status", "--env", "../e"],
            "invalid name",
        ),
        (
            bed.config("h1", ""),
            vec!["history", "--env", "e;id"],
            "invalid name",
        ),
        (
            bed.config("h1", ""),
            vec!["resume", "../../x", "--env", "e"],
            "invalid deploy id",
        ),
        (
            bed.config("h1", ""),
            vec!["deploy", "abcd", "--env", "e", "--ack", "SG002 pages"],
            "bad --ack",
        ),
        (
            bed.config("h1", ""),
            vec![
                "deploy",
                "abcd",
                "--env",
                "e",
                "--ack",
                "SG002 pages 1->2 <reason>",
            ],
            "your reason",
        ),
        (
            bed.config("h1;touch /tmp/x", ""),
            vec!["deploy", "abcd", "--env", "e"],
            "invalid name",
        ),
        (
            bed.config("$(touch MARKER)", ""),
            vec!["deploy", "abcd", "--env", "e"],
            "invalid name",
        ),
        (
            bed.config("h1", "store: S3://bucket\n"),
            vec!["status", "--env", "e"],
            "scheme",
        ),
        (
            bed.config("h1", ""),
            vec!["unlock", "--env", "e"],
            "--reason",
        ),
    ];
    for (config, args, want) in &cases {
        let o = bed.run(config, args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(64), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert!(
        !bed.marker().exists(),
        "a refused command ran a pool command"
    );
    assert!(
        !bed.dir.path().join("h1").exists(),
        "a refused command touched a host"
    );
}

/// `applier history | head -1`: the data stops when stdout closes; no panic, no message.
#[test]
fn a_closed_stdout_ends_the_output_quietly() {
    let bed = Bed::new();
    let store: Arc<dyn Store> = Arc::new(artifact::store::fs::FsStore::open(bed.store()).unwrap());
    for i in 0..300 {
        let j = journal("e", i);
        JournalWriter::create(store.clone(), j.clone())
            .write_base(&j)
            .unwrap();
    }
    let config = bed.config("h1", "");
    let mut child = Command::new(env!("CARGO_BIN_EXE_applier"))
        .arg("--config")
        .arg(&config)
        .args([
            "--format", "json", "history", "--env", "e", "--limit", "1000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is dropped here: the pipe is closed with ~290 KB still to write.
    assert!(first.contains("tester@cli"), "{first}");
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
}

#[test]
fn unlock_breaks_a_corrupt_lock_and_history_shows_it_and_skips_an_unreadable_journal() {
    let bed = Bed::new();
    let config = bed.config("h1", "");
    let store: Arc<dyn Store> = Arc::new(artifact::store::fs::FsStore::open(bed.store()).unwrap());
    store
        .put_cas(&applier::keys::env_lock("e"), b"\xff not json", None)
        .unwrap();
    store
        .put_cas(
            "envs/e/deploys/20250101T000000Z-000001.json",
            b"{\"id\":",
            None,
        )
        .unwrap();
    let o = bed.run(
        &config,
        &[
            "unlock",
            "--env",
            "e",
            "--reason",
            "lock truncated by a full disk",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.contains("unlock: removed an unreadable lock record"),
        "{out}"
    );
    assert!(
        applier::engine::lease::current(store.as_ref(), "e")
            .unwrap()
            .is_none()
    );
    let o = bed.run(&config, &["history", "--env", "e"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains("unlock "), "{out}");
    assert!(
        stderr(&o).contains("skipped envs/e/deploys/20250101T000000Z-000001.json"),
        "{}",
        stderr(&o)
    );
    let h = records::history(store.as_ref(), "e").unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].reason, "lock truncated by a full disk");
}
