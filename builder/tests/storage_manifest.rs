//! The storage manifests the builder records: captured with the commit's dependency layer
//! (npm's output in the build that ran npm, the reused layer unpacked otherwise), so the same
//! storage manifest comes out whether or not the layer was reused. Needs git, node, npm and
//! network namespaces (`unshare`); fails under `CI=true` when one is missing, skips otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn ok(cmd: &mut Command) -> bool {
    cmd.output().is_ok_and(|o| o.status.success())
}

fn parts_present() -> bool {
    let have = ["git", "node", "npm"]
        .iter()
        .all(|t| ok(Command::new(t).arg("--version")))
        && (ok(Command::new("unshare").args(["--net", "--mount", "true"]))
            || ok(Command::new("unshare").args([
                "--user",
                "--map-root-user",
                "--net",
                "--mount",
                "true",
            ])));
    if !have {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "git, node, npm and unshare are required in CI"
        );
        eprintln!("SKIP: git, node, npm or unshare missing; storage manifest test not run");
    }
    have
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let n = e.file_name();
        if n == "node_modules" || n.to_string_lossy().starts_with('.') {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(&n));
        } else {
            std::fs::copy(e.path(), to.join(&n)).unwrap();
        }
    }
}

fn git(dir: &Path, args: &[&str]) {
    let o = Command::new("git")
        .args([
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@example.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn build(repo: &Path, store: &Path, cache: &Path) -> (Value, Value) {
    let o = Command::new(env!("CARGO_BIN_EXE_builder"))
        .args(["build", "--format", "json", "--store"])
        .arg(store)
        .arg("--repo")
        .arg(repo)
        .arg("--npm-cache")
        .arg(cache)
        .env_remove("BUILDER_STORE")
        .env_remove("DEPLOY_STORE")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let hex = report["id"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap()
        .to_string();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(store.join("blobs/sha256").join(hex)).unwrap())
            .unwrap();
    (report, manifest)
}

fn tables(env: &Value) -> Vec<(String, String, i64, String)> {
    env["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let s = |k: &str| t[k].as_str().unwrap_or_default().to_string();
            (
                s("table"),
                s("domain"),
                t["version"].as_i64().unwrap(),
                s("content_hash"),
            )
        })
        .collect()
}

#[test]
fn storage_manifests_are_captured_with_the_dependency_layer_built_or_reused() {
    if !parts_present() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("service");
    copy_tree(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/service"),
        &repo,
    );
    std::fs::remove_dir_all(repo.join("test")).ok();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "service"]);
    let (store, cache) = (t.path().join("store"), t.path().join("npm-cache"));
    let (first, m1) = build(&repo, &store, &cache);
    assert_eq!(first["deps"]["reused"], false);
    let envs = m1["storage"]["envs"].as_object().unwrap();
    assert_eq!(envs.len(), 4, "{envs:?}");
    for (name, env) in envs {
        assert_eq!(env["extractor"], "capture", "{name}");
        assert!(!env["tables"].as_array().unwrap().is_empty(), "{name}");
    }
    let prod = tables(&m1["storage"]["envs"]["production"]);
    let statik = schema_guard::extract::static_manifest_with(
        &repo,
        "HEAD",
        &schema_guard::extract::StaticOptions {
            env: Some("production".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let want: Vec<_> = statik
        .tables
        .iter()
        .map(|t| {
            (
                t.table.clone(),
                t.domain.clone(),
                t.version,
                t.content_hash.clone(),
            )
        })
        .collect();
    assert_eq!(prod, want, "capture and static disagree");

    // A source-only change reuses the layer: still captured, with the same tables.
    std::fs::write(repo.join("NOTES.md"), "docs\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "docs"]);
    let (second, m2) = build(&repo, &store, &cache);
    assert_eq!(second["deps"]["reused"], true);
    assert_eq!(m2["storage"]["envs"]["production"]["extractor"], "capture");
    assert_eq!(tables(&m2["storage"]["envs"]["production"]), prod);
}
