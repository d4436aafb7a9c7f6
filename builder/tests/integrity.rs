//! Hostile stores: truncated, flipped, missing and tampered blobs. Each test proves that the
//! builder refuses to reuse or show what it cannot verify, that `--rebuild` and
//! `verify --repair` replace exactly the bad blobs with bytes that hash to their names, and
//! that nothing else in the store is changed or lost.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// Every file of a directory store (but its temp and lock dirs), with its bytes.
fn snapshot(store: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel.starts_with(".tmp") || rel.starts_with(".locks") {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                walk(root, &e.path(), out);
            } else {
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(store, store, &mut out);
    out
}

fn blob_path(store: &Path, digest: &Value) -> PathBuf {
    let hex = digest.as_str().unwrap().strip_prefix("sha256:").unwrap();
    store.join("blobs/sha256").join(hex)
}

/// Rewrites a store blob (they are stored read-only).
fn overwrite(path: &Path, bytes: &[u8]) {
    let mut perms = std::fs::metadata(path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(path, perms).unwrap();
    std::fs::write(path, bytes).unwrap();
}

struct Built {
    _t: tempfile::TempDir,
    repo: PathBuf,
    store: PathBuf,
    report: Value,
}

impl Built {
    fn new(test: &str) -> Option<Built> {
        if !tools_present(test) {
            return None;
        }
        let t = tempfile::tempdir().unwrap();
        let repo = t.path().join("repo");
        make_project(&repo, true);
        let store = t.path().join("store");
        let report = build_ok(&repo, store.to_str().unwrap(), &[]);
        Some(Built {
            _t: t,
            repo,
            store,
            report,
        })
    }
    fn store_str(&self) -> &str {
        self.store.to_str().unwrap()
    }
    fn id(&self) -> &str {
        self.report["id"].as_str().unwrap()
    }
    fn layer_blob(&self, i: usize) -> PathBuf {
        blob_path(&self.store, &self.report["layers"][i]["digest"])
    }
    fn verify(&self, extra: &[&str]) -> std::process::Output {
        let mut c = builder(&["verify", "--store", self.store_str(), self.id()]);
        c.args(extra);
        run(c)
    }
}

#[test]
fn a_truncated_dependency_blob_is_not_reused_and_rebuild_replaces_it() {
    let Some(b) = Built::new("a_truncated_dependency_blob_is_not_reused_and_rebuild_replaces_it")
    else {
        return;
    };
    let deps_blob = b.layer_blob(1);
    let good = std::fs::read(&deps_blob).unwrap();
    overwrite(&deps_blob, &good[..good.len() / 2]);
    let before = snapshot(&b.store);

    // A source-only change has the same dependency key: the build must not reuse the layer.
    write(&b.repo, "index.js", "module.exports = 'changed';\n");
    git(&b.repo, &["commit", "-q", "-am", "source only"]);
    let sha2 = git(&b.repo, &["rev-parse", "HEAD"]);
    let out = run(build_cmd(&b.repo, b.store_str(), &[]));
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    let err = stderr(&out);
    let key = deps_blob
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(err.contains(&key) && err.contains("are recorded"), "{err}");
    assert!(err.contains("hint: `builder verify --repair"), "{err}");
    // Nothing was written or removed: no commit record for the new commit, no new blob.
    let after = snapshot(&b.store);
    assert_eq!(before, after, "a refused build changed the store");
    assert!(!b.store.join("commits").join(&sha2).exists());

    // The first commit, already built, is refused too (its layer fails its size).
    let out = run(build_cmd(&b.repo, b.store_str(), &["--rev", "HEAD~1"]));
    assert_eq!(code(&out), 4, "{}", stderr(&out));

    // --rebuild runs npm again, gets the same layer and replaces the bad blob.
    let rebuilt = build_ok(&b.repo, b.store_str(), &["--rebuild"]);
    assert_eq!(rebuilt["deps"]["reproduced"], true, "{rebuilt}");
    assert_eq!(
        rebuilt["repaired"],
        serde_json::json!([format!("blobs/sha256/{key}")])
    );
    assert_eq!(std::fs::read(&deps_blob).unwrap(), good);
    // Every record that existed is still there, byte for byte (but the repaired blob).
    let now = snapshot(&b.store);
    for (k, v) in &before {
        if !k.ends_with(&key) {
            assert_eq!(now.get(k), Some(v), "{k} changed");
        }
    }
    let out = b.verify(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn verify_repair_replaces_exactly_the_bad_blobs() {
    let Some(b) = Built::new("verify_repair_replaces_exactly_the_bad_blobs") else {
        return;
    };
    // Flip a byte of the source layer (same size: only a full hash sees it) and lose the
    // lockfile blob.
    let src_blob = b.layer_blob(0);
    let mut bytes = std::fs::read(&src_blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    overwrite(&src_blob, &bytes);
    let m = show_json(b.store_str(), b.id());
    let lock_blob = blob_path(&b.store, &m["manifest"]["deps"]["lockfile_blob"]);
    std::fs::remove_file(&lock_blob).unwrap();
    let deps_inode = std::fs::metadata(b.layer_blob(1)).unwrap().ino();

    let out = b.verify(&[]);
    assert_eq!(code(&out), 4);
    assert!(
        stderr(&out).contains("hint: `builder verify --repair"),
        "{}",
        stderr(&out)
    );

    // A repository without the commit cannot repair; nothing changes.
    let other = tempfile::tempdir().unwrap();
    git_init_with(other.path(), &[("README", "another repository\n")]);
    let before = snapshot(&b.store);
    let out = b.verify(&["--repair", "--repo", other.path().to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("hint: --repo must be a git repository"),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot(&b.store), before);

    let out = b.verify(&[
        "--repair",
        "--repo",
        b.repo.to_str().unwrap(),
        "--npm-cache",
        npm_cache().to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    let src_key = format!(
        "blobs/sha256/{}",
        src_blob.file_name().unwrap().to_string_lossy()
    );
    assert_eq!(v["repaired"], serde_json::json!([src_key]), "{v}");
    assert!(lock_blob.exists(), "the missing lockfile blob is back");
    assert_eq!(
        std::fs::metadata(b.layer_blob(1)).unwrap().ino(),
        deps_inode,
        "a good blob was rewritten"
    );
    // Repairing a good artifact does nothing.
    let out = b.verify(&["--repair", "--repo", b.repo.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn show_refuses_a_manifest_whose_bytes_do_not_match_and_repair_restores_it() {
    let Some(b) = Built::new("show_refuses_a_manifest_whose_bytes_do_not_match") else {
        return;
    };
    let manifest_blob = blob_path(&b.store, &b.report["id"]);
    let good = std::fs::read(&manifest_blob).unwrap();
    // Still valid JSON and a valid manifest, but not the one the id names.
    let tampered = String::from_utf8(good.clone())
        .unwrap()
        .replace("\"tiny\"", "\"evil\"");
    assert_ne!(tampered.as_bytes(), &good[..]);
    overwrite(&manifest_blob, tampered.as_bytes());

    for args in [
        vec!["show", "--store", b.store_str(), b.id()],
        vec![
            "build",
            "--store",
            b.store_str(),
            "--repo",
            b.repo.to_str().unwrap(),
        ],
    ] {
        let out = run(builder(&args));
        assert_eq!(code(&out), 4, "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("manifest blobs/sha256/"),
            "{}",
            stderr(&out)
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("evil"));
    }
    let out = run(builder(&["ls", "--store", b.store_str()]));
    assert_eq!(code(&out), 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("(manifest unreadable)"));

    // The manifest's commit comes from commits/<sha> when the manifest cannot be trusted.
    let out = b.verify(&["--repair", "--repo", b.repo.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(std::fs::read(&manifest_blob).unwrap(), good);
    assert_eq!(
        show_json(b.store_str(), b.id())["manifest"]["service"],
        "tiny"
    );
}

/// An npm that runs the real one and then writes a different file into node_modules on
/// every `npm ci`: a dependency layer that does not reproduce.
fn unstable_npm(dir: &Path) -> PathBuf {
    let path = dir.join("unstable-npm");
    std::fs::write(
        &path,
        "#!/bin/sh\nnpm \"$@\" || exit $?\nif [ \"$1\" = ci ]; then date +%s%N > node_modules/.stamp; fi\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn rebuild_names_the_first_differing_file_and_stores_nothing() {
    if !tools_present("rebuild_names_the_first_differing_file_and_stores_nothing") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    make_project(&repo, true);
    let store = t.path().join("store");
    let npm = unstable_npm(t.path());
    let npm = npm.to_str().unwrap();
    let first = build_ok(&repo, store.to_str().unwrap(), &["--npm", npm]);
    assert_eq!(first["deps"]["reused"], false);
    let before = snapshot(&store);

    let out = run(build_cmd(
        &repo,
        store.to_str().unwrap(),
        &["--npm", npm, "--rebuild"],
    ));
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("is not reproducible"), "{err}");
    assert!(
        err.contains("first difference: node_modules/.stamp: content differs"),
        "{err}"
    );
    assert!(
        err.contains("hint: native modules record where they were built"),
        "{err}"
    );
    assert_eq!(
        snapshot(&store),
        before,
        "a failed rebuild changed the store"
    );

    // The control: with the real npm the same rebuild reproduces the layer.
    let out = run(build_cmd(&repo, store.to_str().unwrap(), &["--rebuild"]));
    // The recorded layer has the stamp, so the real npm's layer differs from it too, and is
    // named as missing that file.
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("node_modules/.stamp is only in the recorded layer"),
        "{}",
        stderr(&out)
    );
}
