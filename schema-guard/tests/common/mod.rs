//! Test support shared by schema-guard's integration tests: the one place that decides what a
//! missing real part means (a failure in CI, a printed skip elsewhere), and the node_modules
//! cache of the test services (`ci/node-deps`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Whether a real part the test needs is here. Under `CI=true` a missing part fails the
/// test; elsewhere the test prints why it is skipped and returns.
pub fn have_part(what: &str, present: bool) -> bool {
    if present {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{what} is required in CI");
    }
    eprintln!("SKIP: {what} not available; test not run");
    false
}

pub fn have_bin(bin: &str) -> bool {
    Command::new(bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether this machine can make the capture sandbox (a network namespace).
pub fn can_sandbox() -> bool {
    Command::new("unshare")
        .args(["--net", "--mount", "true"])
        .output()
        .is_ok_and(|o| o.status.success())
        || Command::new("unshare")
            .args(["--user", "--map-root-user", "--net", "--mount", "true"])
            .output()
            .is_ok_and(|o| o.status.success())
}

/// The cached node_modules of a test service (`restbase` or `fixture`), installed by
/// `ci/node-deps` on first use; `None` (after [`have_part`]) when node, npm or the sandbox is
/// missing.
pub fn node_modules(service: &str) -> Option<PathBuf> {
    if !have_part("unshare (network namespaces)", can_sandbox()) {
        return None;
    }
    node_deps(service)
}

/// As [`node_modules`], for a test that runs the modules itself, outside the capture sandbox.
pub fn node_deps(service: &str) -> Option<PathBuf> {
    let ok = have_bin("node") && have_bin("npm");
    if !have_part("node and npm", ok) {
        return None;
    }
    let out = Command::new(repo_root().join("ci/node-deps"))
        .arg(service)
        .output()
        .expect("ci/node-deps runs");
    assert!(
        out.status.success(),
        "ci/node-deps {service}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Replaces the first `from` with `to` in a file, asserting it was there.
pub fn edit(dir: &Path, file: &str, from: &str, to: &str) {
    let p = dir.join(file);
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains(from), "{file} does not contain {from:?}");
    std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
}

/// The (table, domain, version, content hash, storage group) of every table.
pub fn table_keys(
    m: &schema_guard::StorageManifest,
) -> Vec<(String, String, i64, String, Option<String>)> {
    m.tables
        .iter()
        .map(|t| {
            (
                t.table.clone(),
                t.domain.clone(),
                t.version,
                t.content_hash.clone(),
                t.storage_group.clone(),
            )
        })
        .collect()
}
