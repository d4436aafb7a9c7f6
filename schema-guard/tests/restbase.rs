//! schema-guard on upstream RESTBase (e5a608a plus the adoption commit of `ci/restbase-repo`):
//! static and capture extraction agree on it and on each schema trap, both catch every trap,
//! and a capture cannot touch storage (a real SQLite file named by the config stays as it was,
//! the network is unreachable, a storage driver stops the run).
//!
//! Needs node, npm, `unshare` and RESTBase's node_modules (`ci/node-deps restbase`, cached).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{edit, git, table_keys};
use schema_guard::extract::{CaptureOptions, StaticOptions};
use schema_guard::{Backend, Options, Report, StorageManifest};

struct Rb {
    _dir: tempfile::TempDir,
    path: PathBuf,
    adoption: String,
}

fn restbase_repo() -> Rb {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("restbase");
    let out = Command::new(common::repo_root().join("ci/restbase-repo"))
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let adoption = git(&path, &["rev-parse", "HEAD"]);
    Rb {
        _dir: dir,
        path,
        adoption,
    }
}

impl Rb {
    /// A branch from the adoption commit with one edit committed; returns its commit.
    fn trap(&self, name: &str, edits: &[(&str, &str, &str)]) -> String {
        git(&self.path, &["checkout", "-q", "-B", name, &self.adoption]);
        for (file, from, to) in edits {
            edit(&self.path, file, from, to);
        }
        git(&self.path, &["commit", "-qam", name]);
        git(&self.path, &["rev-parse", "HEAD"])
    }

    fn sg(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_schema-guard"))
            .args(args)
            .arg("--repo")
            .arg(&self.path)
            .output()
            .unwrap()
    }
}

fn env_test() -> StaticOptions {
    StaticOptions {
        env: Some("test".into()),
        ..Default::default()
    }
}

/// Both manifests of a revision, asserted to agree.
fn both(rb: &Rb, rev: &str, nm: &Path) -> (StorageManifest, StorageManifest) {
    let statik = schema_guard::extract::static_manifest_with(&rb.path, rev, &env_test()).unwrap();
    let opts = CaptureOptions {
        node_modules: Some(nm.to_path_buf()),
        config: env_test(),
        ..Default::default()
    };
    let captured = schema_guard::extract::capture_rev(&rb.path, rev, &opts)
        .unwrap_or_else(|e| panic!("capture of {rev}: {e}"));
    assert_eq!(captured.extractor, "capture");
    assert!(
        statik.unresolved.is_empty(),
        "{rev}: {:?}",
        statik.unresolved
    );
    assert_eq!(
        table_keys(&statik),
        table_keys(&captured),
        "static and capture disagree at {rev}"
    );
    assert_eq!(statik.domains, captured.domains, "{rev}");
    assert_eq!(statik.storage_groups, captured.storage_groups, "{rev}");
    assert_eq!(statik.backend.as_deref(), Some("sqlite"));
    (statik, captured)
}

fn diff(base: &StorageManifest, head: &StorageManifest) -> Report {
    schema_guard::diff(
        base,
        head,
        &Options {
            backend: Backend::effective(None, base, head, None),
            ..Default::default()
        },
    )
}

fn rules(r: &Report) -> Vec<(String, String, Option<String>, Option<String>)> {
    r.findings
        .iter()
        .map(|f| {
            (
                f.rule.clone(),
                f.subject.clone(),
                f.from.clone(),
                f.to.clone(),
            )
        })
        .collect()
}

fn has(r: &Report, rule: &str, subject: &str, from: Option<&str>, to: Option<&str>) -> bool {
    r.findings.iter().any(|f| {
        f.rule == rule
            && f.subject == subject
            && (from.is_none() || f.from.as_deref() == from)
            && (to.is_none() || f.to.as_deref() == to)
    })
}

/// (what, base: "base" or "inline", head commit, rule, subject, from, to).
type Trap<'a> = (
    &'a str,
    &'a str,
    String,
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
);

const SYS_PATHS: &str = "                    /legacy/key_value:";
const INLINE_BUCKET: &str = "                    /inline_kv:
                      get:
                        x-setup-handler:
                          - init_inline:
                              uri: /{domain}/sys/key_value/inline_kv
                              body:
                                valueType: json
                    /legacy/key_value:";

#[test]
fn static_and_capture_agree_on_restbase_and_catch_every_trap() {
    let Some(nm) = common::node_modules("restbase") else {
        return;
    };
    let rb = restbase_repo();
    let (base, _) = both(&rb, &rb.adoption, &nm);
    let names: Vec<&str> = base.tables.iter().map(|t| t.table.as_str()).collect();
    assert_eq!(
        names,
        ["parsoidphp", "parsoidphp-stash", "title_revisions-ng"]
    );
    assert!(
        base.tables
            .iter()
            .all(|t| t.domain == "localhost" && t.storage_group.as_deref() == Some("local"))
    );

    // 1. title_revisions-ng 2 -> 3 with a new column: SG002, with the recipe.
    let column = rb.trap(
        "column",
        &[
            (
                "sys/page_revisions.js",
                "            version: 2,",
                "            version: 3,",
            ),
            (
                "sys/page_revisions.js",
                "page_language: 'string'",
                "page_language: 'string',\n                summary: 'string'",
            ),
        ],
    );
    // 2. A key_value bucket changed in a module (sys/parsoid.js resources).
    let module_bucket = rb.trap(
        "module-bucket",
        &[(
            "sys/parsoid.js",
            "                body: {\n                    valueType: 'blob'\n                }",
            "                body: {\n                    valueType: 'json',\n                    version: 1\n                }",
        )],
    );
    // 3. A bucket declared inline in the env config, then changed there.
    let inline = rb.trap(
        "inline-bucket",
        &[("deploy/env/test.yaml", SYS_PATHS, INLINE_BUCKET)],
    );
    edit(
        &rb.path,
        "deploy/env/test.yaml",
        "valueType: json\n                    /legacy",
        "valueType: blob\n                                version: 2\n                    /legacy",
    );
    git(&rb.path, &["commit", "-qam", "inline bucket change"]);
    let inline_changed = git(&rb.path, &["rev-parse", "HEAD"]);
    // 4. A new domain; 5. a new storage group.
    let domain = rb.trap(
        "domain",
        &[
            (
                "deploy/env/test.yaml",
                "          /{domain:localhost}/{api:sys}:",
                "          /{domain:localhost}/{api:sys}: &sys",
            ),
            (
                "deploy/env/test.yaml",
                "\ninfo:",
                "\n          /{domain:wiki.local}/{api:sys}: *sys\ninfo:",
            ),
        ],
    );
    let group = rb.trap(
        "group",
        &[(
            "deploy/env/test.yaml",
            "                                  domains: /./",
            "                                  domains: /./\n                                - name: archive\n                                  domains: archive.local",
        )],
    );

    let cases: Vec<Trap<'_>> = vec![
        (
            "column",
            "base",
            column.clone(),
            "SG002",
            "title_revisions-ng",
            Some("2"),
            Some("3"),
        ),
        (
            "module bucket",
            "base",
            module_bucket,
            "SG002",
            "parsoidphp",
            Some("5000"),
            Some("5001"),
        ),
        (
            "inline bucket",
            "base",
            inline.clone(),
            "SG010",
            "inline_kv",
            None,
            Some("5000"),
        ),
        (
            "inline bucket change",
            "inline",
            inline_changed,
            "SG002",
            "inline_kv",
            Some("5000"),
            Some("5002"),
        ),
        ("domain", "base", domain, "SG021", "wiki.local", None, None),
        ("group", "base", group, "SG022", "archive", None, None),
    ];
    let inline_m = both(&rb, &inline, &nm);
    for (what, from, rev, rule, subject, f, t) in cases {
        let (hs, hc) = both(&rb, &rev, &nm);
        let (bs, bc) = if from == "base" {
            (base.clone(), base.clone())
        } else {
            inline_m.clone()
        };
        for (extractor, r) in [("static", diff(&bs, &hs)), ("capture", diff(&bc, &hc))] {
            assert!(
                has(&r, rule, subject, f, t),
                "{what} ({extractor}): {:?}",
                rules(&r)
            );
        }
    }

    // Through the binary, both extractors: the refusal names the exact --ack, which passes.
    for extra in [
        vec![],
        vec![
            "--extractor",
            "capture",
            "--node-modules",
            nm.to_str().unwrap(),
        ],
    ] {
        let mut args = vec![
            "check",
            "--env",
            "test",
            "--base",
            &rb.adoption,
            "--head",
            &column,
        ];
        args.extend(extra.iter().copied());
        let o = rb.sg(&args);
        let text = String::from_utf8_lossy(&o.stdout);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{text}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            text.contains("to acknowledge: --ack 'SG002 title_revisions-ng 2->3 <reason>'"),
            "{text}"
        );
        assert!(text.contains("`version: 4`"), "{text}");
        assert!(text.contains("(sqlite backend)"), "{text}");
        args.extend([
            "--ack",
            "SG002 title_revisions-ng 2->3 adds the summary column",
        ]);
        let o = rb.sg(&args);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
}

const PROBE: &str = r#"'use strict';
// Tries to reach the test's listener at load time and reports what happened on stderr.
const { spawnSync } = require('child_process');
module.exports = (options) => {
    const code = `require('net').connect(${options.port}, '127.0.0.1')
        .on('connect', () => { console.log('CONNECTED'); process.exit(0); })
        .on('error', (e) => { console.log('FAILED ' + e.code); process.exit(0); });`;
    const r = spawnSync(process.execPath, ['-e', code], { encoding: 'utf8', timeout: 10000 });
    process.stderr.write(`probe: ${(r.stdout || '').trim()}\n`);
    if (options.driver) {
        require('sqlite3');
    }
    return { spec: { paths: {} }, operations: {} };
};
"#;

fn probe_config(port: u16, driver: bool) -> String {
    format!(
        "                    /probe:
                      x-modules:
                        - path: sys/probe.js
                          options:
                            port: {port}
                            driver: {driver}
{SYS_PATHS}"
    )
}

#[test]
fn capture_cannot_touch_storage_or_the_network() {
    let Some(nm) = common::node_modules("restbase") else {
        return;
    };
    let rb = restbase_repo();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("db.sqlite3");
    std::fs::write(&db, b"precious data, not a database").unwrap();
    let before = (
        std::fs::read(&db).unwrap(),
        std::fs::metadata(&db).unwrap().modified().unwrap(),
    );
    std::fs::write(rb.path.join("sys/probe.js"), PROBE).unwrap();
    let dbname = format!("dbname: {}", db.display());
    edit(
        &rb.path,
        "deploy/env/test.yaml",
        "dbname: /var/lib/restbase/db.sqlite3",
        &dbname,
    );
    edit(
        &rb.path,
        "deploy/env/test.yaml",
        SYS_PATHS,
        &probe_config(port, false),
    );
    git(&rb.path, &["add", "-A"]);
    git(&rb.path, &["commit", "-qm", "probe"]);
    let log = data.path().join("capture.log");
    let opts = CaptureOptions {
        node_modules: Some(nm.clone()),
        config: env_test(),
        log_file: Some(log.clone()),
        ..Default::default()
    };
    let m = schema_guard::extract::capture_rev(&rb.path, "HEAD", &opts).expect("capture");
    assert_eq!(m.tables.len(), 3);
    let out = std::fs::read_to_string(&log).unwrap();
    let probe = out
        .lines()
        .find(|l| l.starts_with("probe: "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(probe.starts_with("probe: FAILED"), "{probe}");
    assert!(
        listener.accept().is_err(),
        "the capture run reached the host's network"
    );

    // A revision that loads a storage driver itself: the run is stopped, exit 2.
    edit(
        &rb.path,
        "deploy/env/test.yaml",
        "driver: false",
        "driver: true",
    );
    git(&rb.path, &["commit", "-qam", "driver"]);
    let err = schema_guard::extract::capture_rev(&rb.path, "HEAD", &opts).unwrap_err();
    assert!(
        matches!(err, schema_guard::Error::CaptureUnsafe(_)),
        "{err}"
    );
    assert!(err.to_string().contains("sqlite3"), "{err}");
    let o = rb.sg(&[
        "manifest",
        "HEAD",
        "--env",
        "test",
        "--extractor",
        "capture",
        "--node-modules",
        nm.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("hint:"));

    let after = (
        std::fs::read(&db).unwrap(),
        std::fs::metadata(&db).unwrap().modified().unwrap(),
    );
    assert_eq!(before, after, "the database file was touched");
    let files: Vec<_> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
}
