//! End-to-end tests of `builder` against real git, node and npm (the npm registry), through
//! the binary, on directory stores (and an S3-compatible server when `TEST_S3_*` is set).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::Value;

#[test]
fn rebuilds_and_fresh_clones_are_identical() {
    if !tools_present("rebuilds_and_fresh_clones_are_identical") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    let sha = make_project(&repo, true);
    let store = t.path().join("store");
    let store = store.to_str().unwrap();

    let first = build_ok(&repo, store, &[]);
    assert_eq!(first["outcome"], "built");
    assert_eq!(first["commit"], sha);
    assert_eq!(first["service"], "tiny");
    assert_eq!(first["deps"]["reused"], false);
    assert_eq!(first["deps"]["native"], false);
    assert_eq!(first["layers"].as_array().unwrap().len(), 2);

    // Same commit again: nothing to do.
    let again = build_ok(&repo, store, &[]);
    assert_eq!(again["outcome"], "already_built");
    assert_eq!(again["id"], first["id"]);

    // Forced rebuild: the source layer is packed again and must be byte-identical.
    let rebuilt = build_ok(&repo, store, &["--rebuild"]);
    assert_eq!(rebuilt["outcome"], "identical");
    assert_eq!(rebuilt["id"], first["id"]);
    assert_eq!(layer_digests(&rebuilt), layer_digests(&first));

    // A fresh clone elsewhere into a new store: npm runs again and still gives the same bytes.
    let clone = t.path().join("clone");
    git(
        t.path(),
        &[
            "clone",
            "-q",
            repo.to_str().unwrap(),
            clone.to_str().unwrap(),
        ],
    );
    let store2 = t.path().join("store2");
    let fresh = build_ok(&clone, store2.to_str().unwrap(), &["--rev", &sha]);
    assert_eq!(fresh["outcome"], "built");
    assert_eq!(fresh["deps"]["reused"], false);
    assert_eq!(layer_digests(&fresh), layer_digests(&first));
    assert_eq!(fresh["id"], first["id"]);

    // The source layer holds git's content (no eol filter), modes and symlinks.
    let src_digest = first["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap()
        .to_string();
    let blob = Path::new(store).join("blobs/sha256").join(&src_digest);
    let listing = Command::new("tar").arg("-tvf").arg(&blob).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    let line = |name: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(name))
            .unwrap_or_else(|| panic!("{name} in {listing}"))
            .to_string()
    };
    assert!(line("bin/run.sh").starts_with("-rwxr-xr-x"), "{listing}");
    assert!(line("index.js").starts_with("-rw-r--r--"), "{listing}");
    assert!(line("main.js -> index.js").starts_with('l'), "{listing}");
    let index = Command::new("tar")
        .arg("-xOf")
        .arg(&blob)
        .arg("index.js")
        .output()
        .unwrap();
    assert_eq!(
        index.stdout, b"module.exports = require('ms')('2 days');\n",
        "no CRLF filter applied"
    );
    let manifest = show_json(store, first["id"].as_str().unwrap());
    assert_eq!(manifest["manifest"]["source"]["commit_time"], 1714564800);
    assert_eq!(
        manifest["manifest"]["deps"]["npm_args"],
        serde_json::json!(["ci", "--no-audit", "--no-fund", "--omit=dev"])
    );
    assert_eq!(manifest["manifest"]["platform"], Value::Null);
}

#[test]
fn source_only_change_reuses_the_dependency_layer_without_npm() {
    if !tools_present("source_only_change_reuses_the_dependency_layer_without_npm") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    make_project(&repo, true);
    let store = t.path().join("store");
    let store = store.to_str().unwrap();
    let first = build_ok(&repo, store, &[]);

    write(&repo, "index.js", "module.exports = 'changed';\n");
    git(&repo, &["commit", "-q", "-am", "source only"]);

    // An npm that records that it ran and fails.
    let marker = t.path().join("npm-ran");
    let fake = t.path().join("fake-npm");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\ntouch '{}'\necho 'fake npm must not run' >&2\nexit 1\n",
            marker.display()
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let fake = fake.to_str().unwrap();

    let second = build_ok(&repo, store, &["--npm", fake]);
    assert_eq!(second["outcome"], "built");
    assert_eq!(second["deps"]["reused"], true);
    assert!(!marker.exists(), "npm ran for a source-only change");
    assert_ne!(second["layers"][0]["digest"], first["layers"][0]["digest"]);
    assert_eq!(
        second["layers"][1],
        first["layers"][1]
            .as_object()
            .map(|o| {
                let mut o = o.clone();
                o.insert("uploaded".into(), Value::Bool(false));
                Value::Object(o)
            })
            .unwrap()
    );
    assert_eq!(second["deps"]["key"], first["deps"]["key"]);

    // Control: a change of npm arguments changes the key, so the fake npm does run and fails
    // the build with exit code 1.
    write(
        &repo,
        "deploy/service.yaml",
        "name: tiny\nbuild:\n  npm_args: [--omit=dev, --ignore-scripts]\n",
    );
    git(&repo, &["commit", "-q", "-am", "npm args"]);
    let out = run(build_cmd(&repo, store, &["--npm", fake]));
    assert_eq!(code(&out), 1, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("fake npm must not run"));
    assert!(marker.exists());
}

#[test]
fn keygen_writes_a_private_key_and_refuses_to_overwrite() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let id = keygen(t.path(), "deploy");
    assert_eq!(id.len(), 16, "{id}");
    let secret = std::fs::read_to_string(t.path().join("deploy.key")).unwrap();
    let public = std::fs::read_to_string(t.path().join("deploy.pub")).unwrap();
    assert!(secret.starts_with("ed25519-secret "), "{secret}");
    assert!(public.starts_with("ed25519-public "), "{public}");
    let mode = std::fs::metadata(t.path().join("deploy.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let out = run(builder(&["keygen", "--out"]).arg(t.path().join("deploy")));
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(t.path().join("deploy.key")).unwrap(),
        secret
    );
}

#[test]
fn signed_builds_verify_with_the_right_key_only() {
    if !tools_present("signed_builds_verify_with_the_right_key_only") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    make_project(&repo, true);
    let store_dir = t.path().join("store");
    let store = store_dir.to_str().unwrap();
    let keys = t.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let key_id = keygen(&keys, "release");
    let other_id = keygen(&keys, "other");
    let release_key = keys.join("release.key");
    let release_pub = keys.join("release.pub");
    let other_pub = keys.join("other.pub");

    // An unsigned artifact fails verification as soon as a trusted key is given.
    let report = build_ok(&repo, store, &[]);
    assert!(report["signature"].is_null(), "{report}");
    let id = report["id"].as_str().unwrap().to_string();
    let out = run(builder(&["verify", "--store", store, &id, "--trusted-key"]).arg(&release_pub));
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no signatures at all"),
        "{}",
        stderr(&out)
    );
    // Without trusted keys verify only checks blobs.
    let out = run(builder(&["verify", "--store", store, &id]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // Building the already-built commit with --sign-key signs the existing artifact.
    let mut c = build_cmd(&repo, store, &[]);
    c.env("BUILDER_SIGN_KEY", &release_key);
    let out = run(c);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "already_built", "{report}");
    assert_eq!(report["signature"]["key_id"], key_id.as_str());
    assert_eq!(report["signature"]["created"], true);
    let sig_key = format!("sigs/{}/{key_id}", id.strip_prefix("sha256:").unwrap());
    assert_eq!(report["signature"]["key"], sig_key.as_str());
    assert!(store_dir.join(&sig_key).is_file());

    // Signing again is idempotent.
    let out = run(builder(&[
        "sign",
        "--format",
        "json",
        "--store",
        store,
        &id,
        "--sign-key",
    ])
    .arg(&release_key));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["signature"]["created"], false, "{v}");

    // The right key verifies; another key does not (exit 4, naming the problem).
    let out = run(builder(&[
        "verify",
        "--format",
        "json",
        "--store",
        store,
        &id,
        "--trusted-key",
    ])
    .arg(&release_pub));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["signature"]["key_id"], key_id.as_str(), "{v}");
    assert_eq!(v["ok"], true);
    let out = run(builder(&["verify", "--store", store, &id, "--trusted-key"]).arg(&other_pub));
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&other_id) && err.contains("not by a trusted key"),
        "{err}"
    );
    // An inline trusted key works like a file; one of several trusted keys is enough.
    let inline = std::fs::read_to_string(&release_pub).unwrap();
    let out = run(builder(&[
        "verify",
        "--store",
        store,
        &id,
        "--trusted-key",
        inline.trim(),
        "--trusted-key",
    ])
    .arg(&other_pub));
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // A tampered signature record no longer verifies.
    let path = store_dir.join(&sig_key);
    let mut rec: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let other_rec_sig = {
        let mut s = rec["signature"].as_str().unwrap().to_string();
        let first = if s.starts_with('A') { "B" } else { "A" };
        s.replace_range(0..1, first);
        s
    };
    rec["signature"] = other_rec_sig.into();
    std::fs::write(&path, rec.to_string()).unwrap();
    let out = run(builder(&["verify", "--store", store, &id, "--trusted-key"]).arg(&release_pub));
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains("does not verify"), "{}", stderr(&out));

    // A bad key file is a usage error.
    let out = run(builder(&["sign", "--store", store, &id, "--sign-key"]).arg(&release_pub));
    assert_eq!(code(&out), 64, "{}", stderr(&out));
}

#[test]
fn verify_passes_and_names_a_corrupted_blob() {
    if !tools_present("verify_passes_and_names_a_corrupted_blob") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    let sha = make_project(&repo, true);
    let store_dir = t.path().join("store");
    let store = store_dir.to_str().unwrap();
    let report = build_ok(&repo, store, &[]);
    let id = report["id"].as_str().unwrap();

    let out = run(builder(&["verify", "--store", store, id]));
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("ok "))
            .count(),
        4
    );

    // Resolution by digest prefix and by commit prefix.
    let hex = id.strip_prefix("sha256:").unwrap();
    assert_eq!(show_json(store, &hex[..10])["id"], id);
    assert_eq!(show_json(store, &format!("sha256:{}", &hex[..8]))["id"], id);
    assert_eq!(show_json(store, &sha[..8])["id"], id);
    assert_eq!(show_json(store, &sha)["id"], id);
    let out = run(builder(&["show", "--store", store, "0000ffff"]));
    assert_eq!(code(&out), 64, "an unknown hash is a usage error");
    let out = run(builder(&["show", "--store", store, "xyz"]));
    assert_eq!(code(&out), 64);

    let out = run(builder(&["ls", "--format", "json", "--store", store]));
    assert!(out.status.success());
    let ls: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ls.as_array().unwrap().len(), 1);
    assert_eq!(ls[0]["commit"], sha);
    assert_eq!(ls[0]["manifest"], id);
    assert_eq!(ls[0]["service"], "tiny");

    // Flip one byte in the middle of the dependency layer.
    let deps_hex = report["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap();
    let blob = store_dir.join("blobs/sha256").join(deps_hex);
    let mut perms = std::fs::metadata(&blob).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&blob, perms).unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();

    let out = run(builder(&["verify", "--store", store, &hex[..12]]));
    assert_eq!(code(&out), 4, "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("blobs/sha256/{deps_hex}")),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("BAD") && l.contains(deps_hex)),
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("BAD")).count(),
        1,
        "{stdout}"
    );
}

#[test]
fn concurrent_builds_of_one_commit_agree() {
    if !tools_present("concurrent_builds_of_one_commit_agree") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    make_project(&repo, true);
    let store = t.path().join("store");
    let store = store.to_str().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            build_cmd(&repo, store, &[])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for o in &outs {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let reports: Vec<Value> = outs
        .iter()
        .map(|o| serde_json::from_slice(&o.stdout).unwrap())
        .collect();
    assert_eq!(reports[0]["id"], reports[1]["id"]);
    let built = reports.iter().filter(|r| r["outcome"] == "built").count();
    assert_eq!(
        built, 1,
        "exactly one build creates the commit record: {reports:?}"
    );
    for r in &reports {
        assert!(["built", "identical", "already_built"].contains(&r["outcome"].as_str().unwrap()));
    }
    let out = run(builder(&[
        "verify",
        "--store",
        store,
        reports[0]["id"].as_str().unwrap(),
    ]));
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn a_project_without_lockfile_records_the_generated_one() {
    if !tools_present("a_project_without_lockfile_records_the_generated_one") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    make_project(&repo, false);
    let store_dir = t.path().join("store");
    let store = store_dir.to_str().unwrap();
    let report = build_ok(&repo, store, &[]);
    assert_eq!(report["deps"]["lockfile_generated"], true);
    let m = show_json(store, report["id"].as_str().unwrap());
    let deps = &m["manifest"]["deps"];
    assert_eq!(deps["lockfile_generated"], true);
    let lock_hex = deps["lockfile_blob"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap();
    let lock: Value = serde_json::from_slice(
        &std::fs::read(store_dir.join("blobs/sha256").join(lock_hex)).unwrap(),
    )
    .unwrap();
    assert!(lock["lockfileVersion"].as_u64().is_some());
    assert_eq!(lock["packages"]["node_modules/ms"]["version"], "2.1.3");
    let out = run(builder(&[
        "verify",
        "--store",
        store,
        report["id"].as_str().unwrap(),
    ]));
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn a_different_existing_record_is_reported_as_not_reproducible() {
    if !tools_present("a_different_existing_record_is_reported_as_not_reproducible") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    let sha = make_project(&repo, true);
    let store_dir = t.path().join("store");
    let store = store_dir.to_str().unwrap();
    // Someone recorded this commit as a different artifact.
    let other = format!("sha256:{}", "ab".repeat(32));
    let record = serde_json::json!({"commit": sha, "manifest": other, "built_at": "2024-01-01T00:00:00Z", "builder_version": "0"});
    std::fs::create_dir_all(store_dir.join("commits")).unwrap();
    std::fs::write(store_dir.join("commits").join(&sha), record.to_string()).unwrap();
    let out = run(build_cmd(&repo, store, &["--rebuild"]));
    assert_eq!(code(&out), 5, "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("commit {sha} was already built as {other}")),
        "{stderr}"
    );
    assert!(stderr.contains("the build is not reproducible"), "{stderr}");
}

#[test]
fn show_config_reports_sources() {
    let out = run(builder(&["--show-config", "--format", "json"])
        .env("DEPLOY_STORE", "/from/env")
        .env("AWS_S3_FORCE_PATH_STYLE", "1"));
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["location"]["value"], "/from/env");
    assert_eq!(v["location"]["origin"]["name"], "DEPLOY_STORE");
    assert_eq!(v["s3_force_path_style"]["value"], true);
    let out = run(builder(&["--show-config", "--store", "/flag"]).env("DEPLOY_STORE", "/from/env"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/flag") && text.contains("flag --store"),
        "{text}"
    );
    let out = run(builder(&["ls"]).env("AWS_S3_FORCE_PATH_STYLE", "sometimes"));
    assert_eq!(code(&out), 64);
}

#[test]
fn s3_store_builds_and_verifies() {
    let (Ok(endpoint), Ok(bucket)) = (
        std::env::var("TEST_S3_ENDPOINT"),
        std::env::var("TEST_S3_BUCKET"),
    ) else {
        assert!(
            !ci(),
            "CI=true but TEST_S3_ENDPOINT/TEST_S3_BUCKET are not set (eval \"$(ci/s3-server start)\")"
        );
        eprintln!(
            "SKIPPED s3_store_builds_and_verifies: TEST_S3_ENDPOINT/TEST_S3_BUCKET not set (eval \"$(ci/s3-server start)\")"
        );
        return;
    };
    if !tools_present("s3_store_builds_and_verifies") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    make_project(&repo, true);
    let unique = t
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let store = format!("s3://{bucket}/builder-test-{unique}");
    let s3 = ["--s3-endpoint", endpoint.as_str(), "--s3-force-path-style"];
    let first = build_ok(&repo, &store, &s3);
    assert_eq!(first["outcome"], "built");
    let again = build_ok(&repo, &store, &[&s3[..], &["--rebuild"]].concat());
    assert_eq!(again["outcome"], "identical");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["layers"][0]["uploaded"], false);
    let id = first["id"].as_str().unwrap();
    let mut c = builder(&["verify", "--store", &store]);
    c.args(s3).arg(&id[7..19]);
    let out = run(c);
    assert_eq!(
        code(&out),
        0,
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ci_hook_builds_the_commit_named_by_the_ci_variables() {
    if !tools_present("ci_hook_builds_the_commit_named_by_the_ci_variables") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    let first = make_project(&repo, true);
    write(&repo, "index.js", "module.exports = 2;\n");
    git(&repo, &["commit", "-q", "-am", "second"]);
    let hook = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/build-artifact");
    let store = t.path().join("store");
    let gh_output = t.path().join("gh-output");
    let out = Command::new("bash")
        .arg(&hook)
        .arg("--npm-cache")
        .arg(npm_cache())
        .current_dir(&repo)
        .env("BUILDER", env!("CARGO_BIN_EXE_builder"))
        .env("BUILDER_STORE", &store)
        .env("GITHUB_SHA", &first)
        .env("GITHUB_OUTPUT", &gh_output)
        .env_remove("CI_COMMIT_SHA")
        .env_remove("DEPLOY_STORE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    assert_eq!(
        std::fs::read_to_string(&gh_output).unwrap(),
        format!("artifact-id={id}\n")
    );
    let shown = show_json(store.to_str().unwrap(), &first);
    assert_eq!(shown["id"], id.as_str());
    assert_eq!(shown["manifest"]["source"]["commit"], first);
}

#[test]
fn submodules_are_skipped_and_a_tree_without_package_json_has_no_dependency_layer() {
    if !have("git") {
        assert!(!ci(), "CI=true but git is missing");
        eprintln!("SKIPPED submodules test: git not installed");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    write(&repo, "deploy/service.yaml", "name: static-site\n");
    write(&repo, "index.html", "<p>hi</p>\n");
    git(&repo, &["add", "-A"]);
    git(
        &repo,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{},vendor/lib", "1".repeat(40)),
        ],
    );
    git(&repo, &["commit", "-q", "-m", "with a submodule"]);
    let store = t.path().join("store");
    let mut c = builder(&[
        "build",
        "--format",
        "json",
        "--store",
        store.to_str().unwrap(),
    ]);
    c.arg("--repo")
        .arg(&repo)
        .arg("--node")
        .arg("/nonexistent/node")
        .arg("--npm")
        .arg("/nonexistent/npm");
    let out = run(c);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["skipped_submodules"], serde_json::json!(["vendor/lib"]));
    assert_eq!(r["layers"].as_array().unwrap().len(), 1);
    assert_eq!(r["deps"], Value::Null);
    assert_eq!(r["service"], "static-site");
    assert!(String::from_utf8_lossy(&out.stderr).contains("skipping submodule vendor/lib"));
}

#[test]
fn a_native_module_makes_the_artifact_platform_specific() {
    if !tools_present("a_native_module_makes_the_artifact_platform_specific") {
        return;
    }
    // A real registry package that ships a prebuilt addon (`*.node`) for linux-x64-glibc only.
    if !(cfg!(target_os = "linux") && cfg!(target_arch = "x86_64") && cfg!(target_env = "gnu")) {
        eprintln!(
            "SKIPPED a_native_module_makes_the_artifact_platform_specific: needs linux-x64-glibc"
        );
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    write(
        &repo,
        "package.json",
        r#"{"name":"native-svc","version":"1.0.0","dependencies":{"@node-rs/crc32-linux-x64-gnu":"1.10.8"}}"#,
    );
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "native"]);
    let store = t.path().join("store");
    let report = build_ok(&repo, store.to_str().unwrap(), &[]);
    assert_eq!(report["service"], "native-svc");
    assert_eq!(report["deps"]["native"], true);
    let m = show_json(store.to_str().unwrap(), report["id"].as_str().unwrap());
    let platform = &m["manifest"]["platform"];
    let node = Command::new("node")
        .args([
            "-p",
            "process.platform + ' ' + process.arch + ' ' + process.versions.modules",
        ])
        .output()
        .unwrap();
    let node = String::from_utf8(node.stdout).unwrap();
    let expected: Vec<&str> = node.split_whitespace().collect();
    assert_eq!(platform["os"], expected[0]);
    assert_eq!(platform["arch"], expected[1]);
    assert_eq!(platform["node_abi"], expected[2]);
    assert_eq!(platform["libc"], "glibc");
    assert_eq!(m["manifest"]["deps"]["native"], true);
}
