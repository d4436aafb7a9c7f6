//! The rollback trap, end to end: builder records the storage manifest, applier's guard blocks
//! an unacknowledged schema bump before any host changes, and after an acknowledged bump it
//! refuses the rollback with the recipe. With the guard overridden, the fixture's own store
//! really does refuse the old code at start-up: the rule matches the storage's behaviour.

use std::path::Path;
use std::process::Command;

use testkit::{FixtureRepo, bin, free_port, http_get, run, run_ok};

fn release_of(port: u16) -> Option<String> {
    let info: serde_json::Value = serde_json::from_str(&http_get(port, "/_info")?).ok()?;
    info["release"].as_str().map(str::to_string)
}

fn applier(config: &Path, args: &[&str]) -> (i32, String, String) {
    run(Command::new(bin("applier"))
        .arg("--config")
        .arg(config)
        .args(["--format", "plain"])
        .args(args)
        .env_remove("APPLIER_CONFIG")
        .env_remove("APPLIER_STORE"))
}

#[test]
fn schema_bump_is_guarded_and_its_rollback_refused_because_the_store_would_refuse_it() {
    testkit::require!(testkit::node_tools());
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let repo = FixtureRepo::new(dir.path());
    let old = repo.commit("base");
    // A real schema change: a new column and a version bump of page_revisions.
    repo.edit(
        "sys/page_revisions.js",
        "comment: 'string',",
        "comment: 'string',\n                        comment_html: 'string',",
    );
    repo.edit("sys/page_revisions.js", "version: 1,", "version: 2,");
    let new = repo.commit("page_revisions: add comment_html");
    let npm_cache = dir.path().join("npm-cache");
    let build = |rev: &str| {
        run_ok(
            Command::new(bin("builder"))
                .args(["build", "--repo"])
                .arg(&repo.path)
                .args(["--rev", rev, "--store"])
                .arg(&store)
                .arg("--npm-cache")
                .arg(&npm_cache),
        )
    };
    let (a, b) = (build(&old), build(&new));
    // The storage manifest travels in the artifact.
    let shown = run_ok(
        Command::new(bin("builder"))
            .args(["show", &b, "--store"])
            .arg(&store)
            .args(["--format", "json"]),
    );
    assert!(
        shown.contains("page_revisions"),
        "no storage manifest in {shown}"
    );

    let ports = [free_port(), free_port()];
    let config = dir.path().join("deploy.yaml");
    std::fs::write(
        &config,
        format!(
            "store: {store}\nenvs:\n  test:\n    service_env: test\n    groups:\n      - {{name: canary, hosts: [h1]}}\n      - {{name: rest, hosts: [h2]}}\n    ready_timeout: 30s\n    pool: {{driver: none}}\n    checks: {{disable: [metrics]}}\n    hosts:\n      h1: {{root: {r1}, port: {p1}, values: {{services.0.conf.host: 127.0.0.1, services.0.conf.startup.exit_delay_ms: 200}}}}\n      h2: {{root: {r2}, port: {p2}, values: {{services.0.conf.host: 127.0.0.1, services.0.conf.startup.exit_delay_ms: 200}}}}\n",
            store = store.display(),
            r1 = dir.path().join("h1").display(),
            r2 = dir.path().join("h2").display(),
            p1 = ports[0],
            p2 = ports[1],
        ),
    )
    .unwrap();
    let stop_all = || {
        for h in ["h1", "h2"] {
            let _ = run(Command::new(bin("applier"))
                .args(["host", "--root"])
                .arg(dir.path().join(h))
                .arg("stop"));
        }
    };
    let result = std::panic::catch_unwind(|| {
        let (code, _, err) = applier(&config, &["deploy", &a, "--env", "test"]);
        assert_eq!(code, 0, "first deploy: {err}");
        for p in ports {
            assert_eq!(release_of(p).as_deref(), Some(old.as_str()));
        }

        // Unacknowledged SG002: refused before any host is touched.
        let (code, _, err) = applier(&config, &["deploy", &b, "--env", "test"]);
        assert_eq!(code, 3, "unacked schema bump must be refused: {err}");
        assert!(err.contains("SG002"), "{err}");
        for p in ports {
            assert_eq!(
                release_of(p).as_deref(),
                Some(old.as_str()),
                "a host changed"
            );
        }

        // Acknowledged: goes ahead.
        let (code, _, err) = applier(
            &config,
            &[
                "deploy",
                &b,
                "--env",
                "test",
                "--ack",
                "SG002 page_revisions 1->2 adds comment_html",
            ],
        );
        assert_eq!(code, 0, "acked deploy: {err}");
        for p in ports {
            assert_eq!(release_of(p).as_deref(), Some(new.as_str()));
        }

        // Rollback: refused with the recipe, nothing changes.
        let (code, _, err) = applier(&config, &["rollback", "--env", "test"]);
        assert_eq!(
            code, 3,
            "rollback across a schema bump must be refused: {err}"
        );
        assert!(err.contains("page_revisions"), "{err}");
        assert!(err.contains("version"), "no recipe in: {err}");
        for p in ports {
            assert_eq!(
                release_of(p).as_deref(),
                Some(new.as_str()),
                "a host changed"
            );
        }

        // Override: the fixture's store refuses the old schema at start-up, as the guard said.
        let (code, _, err) = applier(
            &config,
            &["rollback", "--env", "test", "--force-schema-rollback"],
        );
        assert_ne!(
            code, 0,
            "the old code must not start against the new schema: {err}"
        );
        let logs = dir.path().join("h1/logs");
        let refused = std::fs::read_dir(&logs)
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
            .any(|l| l.contains("cannot be upgraded") || l.contains("no version increment"));
        assert!(
            refused,
            "the canary's logs show no storage refusal ({})",
            logs.display()
        );
        // The other host was never touched by the failed rollback.
        assert_eq!(release_of(ports[1]).as_deref(), Some(new.as_str()));
    });
    stop_all();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
