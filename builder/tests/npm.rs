//! Dependencies the way real services have them: a native module compiled by node-gyp from a
//! vendored `file:` tarball, a `file:` directory, and npm failures. Real npm and node-gyp;
//! no registry access is needed (every dependency is inside the repository).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

const ADDON_C: &str = r#"#include <node_api.h>
static napi_value init(napi_env env, napi_value exports) {
  napi_value v;
  napi_create_int32(env, 42, &v);
  napi_set_named_property(env, exports, "answer", v);
  return exports;
}
NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
"#;

/// A service with `addon` (a node-gyp module, vendored as `npm pack` made it) and `helper`
/// (a directory in the tree), and a lockfile npm resolved for both.
fn make_native_project(dir: &Path) -> String {
    let addon = dir.join("addon-src");
    write(&addon, "addon.c", ADDON_C);
    write(
        &addon,
        "binding.gyp",
        r#"{"targets":[{"target_name":"addon","sources":["addon.c"]}]}"#,
    );
    write(
        &addon,
        "package.json",
        r#"{"name":"addon","version":"1.0.0","main":"index.js","gypfile":true}"#,
    );
    write(
        &addon,
        "index.js",
        "module.exports = require('./build/Release/addon.node');\n",
    );
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join("vendor")).unwrap();
    let out = Command::new("npm")
        .args(["pack", "--pack-destination"])
        .arg(repo.join("vendor"))
        .current_dir(&addon)
        .output()
        .unwrap();
    assert!(out.status.success(), "npm pack: {}", stderr(&out));
    git(&repo, &["init", "-q", "-b", "main"]);
    write(
        &repo,
        "package.json",
        r#"{"name":"native-svc","version":"1.0.0","private":true,
  "dependencies":{"addon":"file:vendor/addon-1.0.0.tgz","helper":"file:lib/helper"}}
"#,
    );
    write(
        &repo,
        "lib/helper/package.json",
        r#"{"name":"helper","version":"1.0.0","main":"index.js"}"#,
    );
    write(&repo, "lib/helper/index.js", "module.exports = 'helper';\n");
    write(
        &repo,
        "index.js",
        "console.log(require('addon').answer, require('helper'));\n",
    );
    let out = Command::new("npm")
        .args([
            "install",
            "--package-lock-only",
            "--no-audit",
            "--no-fund",
            "--cache",
        ])
        .arg(dir.join("lock-cache"))
        .current_dir(&repo)
        .output()
        .unwrap();
    assert!(out.status.success(), "npm: {}", stderr(&out));
    git(&repo, &["add", "-A"]);
    git(
        &repo,
        &["commit", "-q", "-m", "native and local dependencies"],
    );
    git(&repo, &["rev-parse", "HEAD"])
}

/// Unpacks every layer of artifact `report` from `store` into `dest` with tar.
fn unpack(store: &Path, report: &Value, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    for l in report["layers"].as_array().unwrap() {
        let hex = l["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap();
        let st = Command::new("tar")
            .arg("-xf")
            .arg(store.join("blobs/sha256").join(hex))
            .arg("-C")
            .arg(dest)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

#[test]
fn native_tarball_and_directory_dependencies_build_reproducibly_with_fresh_caches() {
    if !tools_present("native_tarball_and_directory_dependencies_build_reproducibly") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    make_native_project(t.path());
    let repo = t.path().join("repo");
    let build_into = |store: &str, cache: &str, extra: &[&str]| {
        let mut c = builder(&["build", "--format", "json", "--store"]);
        c.arg(t.path().join(store))
            .arg("--repo")
            .arg(&repo)
            .arg("--npm-cache")
            .arg(t.path().join(cache))
            .args(extra);
        run(c)
    };
    // Each build starts from an empty npm cache: the vendored tarball must come from the tree.
    let out = build_into("store1", "cache1", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let first: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(first["deps"]["native"], true, "{first}");
    let out = build_into("store2", "cache2", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let second: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(second["deps"]["reused"], false);
    assert_eq!(
        second["id"], first["id"],
        "two builds of one commit into two empty stores differ"
    );

    // The layers run: the addon loads, the directory dependency resolves through its link.
    let rel = t.path().join("release");
    unpack(&t.path().join("store1"), &first, &rel);
    let out = Command::new("node")
        .arg("index.js")
        .current_dir(&rel)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "42 helper\n",
        "{}",
        stderr(&out)
    );
    let link = std::fs::read_link(rel.join("node_modules/helper")).unwrap();
    assert_eq!(link, Path::new("../lib/helper"));
    // node-gyp recorded the fixed build directory, not a random one.
    let gypi = std::fs::read_to_string(rel.join("node_modules/addon/build/config.gypi")).unwrap();
    assert!(gypi.contains("/tmp/builder-npm-"), "{gypi}");

    // The control: another work directory is another path in node-gyp's outputs, which
    // --rebuild finds and names.
    let other = t.path().join("elsewhere");
    let out = build_into(
        "store1",
        "cache1",
        &["--rebuild", "--work-dir", other.to_str().unwrap()],
    );
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("first difference: node_modules/addon/build/"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn npm_failures_keep_npm_text_and_a_log_that_exists() {
    if !tools_present("npm_failures_keep_npm_text_and_a_log_that_exists") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    git_init_with(
        &repo,
        &[
            (
                "package.json",
                r#"{"name":"broken","version":"1.0.0","dependencies":{"x":"file:vendor/x-1.0.0.tgz"}}"#,
            ),
            ("vendor/x-1.0.0.tgz", "this is not a gzip stream"),
        ],
    );
    let work = t.path().join("work");
    let out = run(build_cmd(
        &repo,
        t.path().join("store").to_str().unwrap(),
        &["--work-dir", work.to_str().unwrap()],
    ));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("npm install --package-lock-only failed"),
        "{err}"
    );
    assert!(err.contains("npm error"), "npm's own text is kept: {err}");
    let log_line = err
        .lines()
        .find(|l| l.starts_with("hint: npm's full log of this run: "))
        .unwrap_or_else(|| panic!("no log hint in {err}"));
    let log = Path::new(log_line.rsplit(": ").next().unwrap());
    assert!(log.starts_with(&work) && log.exists(), "{log:?}");
    // npm's own pointer to its log names the kept copy, not a deleted file.
    assert!(
        err.contains(&*log.to_string_lossy()) && !err.contains("/logs/"),
        "{err}"
    );
    // The build directory is gone; only its lock and the kept log remain.
    let left: Vec<String> = std::fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock") && !n.ends_with(".failed.log"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // A file: dependency that is not in the tree is refused before npm runs.
    write(
        &repo,
        "package.json",
        r#"{"name":"broken","version":"1.0.0","dependencies":{"x":"file:vendor/gone.tgz"}}"#,
    );
    git(&repo, &["commit", "-q", "-am", "gone"]);
    let out = run(build_cmd(
        &repo,
        t.path().join("store").to_str().unwrap(),
        &["--npm", "/nonexistent/npm"],
    ));
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert!(stderr(&out).contains("file:vendor/gone.tgz, which is not in the commit's tree"));
}
