//! End-to-end tests of the `schema-guard` binary on real git repositories built from the
//! fixture service (`fixtures/service`, without its node_modules).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

mod common;
use common::git;

fn fixture_service() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/service")
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let n = name.to_string_lossy();
        if n == "node_modules" || n == "test" || n.starts_with('.') {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

struct Repo {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Repo {
    /// A repository whose first commit is the fixture service.
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("service");
        copy_tree(&fixture_service(), &path);
        git(&path, &["init", "-q", "-b", "main"]);
        git(&path, &["add", "-A"]);
        git(&path, &["commit", "-q", "-m", "Initial service"]);
        Repo { _dir: dir, path }
    }

    fn edit(&self, file: &str, from: &str, to: &str) {
        let p = self.path.join(file);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{file} does not contain {from:?}");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.path.join(file), text).unwrap();
    }

    fn commit(&self, msg: &str) -> String {
        git(&self.path, &["add", "-A"]);
        git(&self.path, &["commit", "-q", "-m", msg]);
        git(&self.path, &["rev-parse", "HEAD"])
    }

    fn sg(&self, args: &[&str]) -> Output {
        self.sg_env(args, &[])
    }

    fn sg_env(&self, args: &[&str], env: &[(&str, &Path)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_schema-guard"));
        cmd.args(args)
            .current_dir(&self.path)
            .env_remove("GITHUB_STEP_SUMMARY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("schema-guard runs")
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exit code")
}

fn line_of(repo: &Repo, file: &str, needle: &str) -> usize {
    let text = std::fs::read_to_string(repo.path.join(file)).unwrap();
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

/// Adds a column to page_revisions with a version bump (an SG002 change).
fn add_summary_column(r: &Repo, version: u32) {
    r.edit(
        "sys/page_revisions.js",
        "tags: 'set<string>'",
        "tags: 'set<string>',\n                        summary: 'string'",
    );
    r.edit(
        "sys/page_revisions.js",
        "table: 'page_revisions',\n                    version: 1",
        &format!("table: 'page_revisions',\n                    version: {version}"),
    );
}

#[test]
fn clean_change_exits_zero() {
    let r = Repo::new();
    r.write("NOTES.md", "docs only\n");
    r.commit("Docs only");
    let o = r.sg(&["check", "--base", "HEAD~1", "--head", "HEAD"]);
    assert_eq!(
        code(&o),
        0,
        "{}{}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout(&o).contains("no stored schema change; pass"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn non_rollbackable_change_blocks_and_points_at_the_declaration() {
    let r = Repo::new();
    add_summary_column(&r, 2);
    r.commit("Add summary column");
    let o = r.sg(&["check", "--base", "HEAD~1", "--head", "HEAD"]);
    let out = stdout(&o);
    assert_eq!(code(&o), 1, "{out}");
    let line = line_of(&r, "sys/page_revisions.js", "body: {");
    assert!(
        out.contains(&format!(
            "sys/page_revisions.js:{line}: block[SG002] table page_revisions adds summary"
        )),
        "{out}"
    );
    assert!(out.contains("rollback: To roll back"), "{out}");
    assert!(out.contains("`version: 3`"), "{out}");
    assert!(
        out.contains("to acknowledge: --ack 'SG002 page_revisions 1->2 <reason>'"),
        "{out}"
    );
    assert!(
        out.contains(
            "(or the commit trailer `Schema-Change-Ack: SG002 page_revisions 1->2 <reason>`)"
        ),
        "{out}"
    );
    // The printed --ack, with a reason, passes; a malformed one is a usage error.
    let o = r.sg(&[
        "check",
        "--ack",
        "SG002 page_revisions 1->2 reviewed the recipe",
    ]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let o = r.sg(&["check", "--ack", "SG002 page_revisions 1->2"]);
    assert_eq!(code(&o), 64, "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("rollback UNSAFE"), "{out}");
}

#[test]
fn trailer_ack_passes_until_the_table_changes_again() {
    let r = Repo::new();
    let base = git(&r.path, &["rev-parse", "HEAD"]);
    add_summary_column(&r, 2);
    r.commit("Add summary column\n\nSchema-Change-Ack: SG002 page_revisions 1->2 summaries are needed; rollback recipe reviewed");
    let o = r.sg(&["check", "--base", &base, "--head", "HEAD"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(
        stdout(&o).contains("(acknowledged: summaries are needed; rollback recipe reviewed)"),
        "{}",
        stdout(&o)
    );

    // Same version, other content: the ack names 1->2 but no longer this content.
    r.edit(
        "sys/page_revisions.js",
        "summary: 'string'",
        "summary: 'json'",
    );
    r.commit("Make the summary JSON");
    let o = r.sg(&["check", "--base", &base, "--head", "HEAD"]);
    assert_eq!(code(&o), 1, "stale ack must not pass: {}", stdout(&o));

    // A new version: the ack names 1->2, the change is now 1->3.
    r.edit("sys/page_revisions.js", "version: 2", "version: 3");
    r.commit("Bump");
    let o = r.sg(&["check", "--base", &base, "--head", "HEAD"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(
        stdout(&o).contains("to acknowledge: --ack 'SG002 page_revisions 1->3 <reason>'"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn config_file_ack_and_unackable_rules() {
    let r = Repo::new();
    add_summary_column(&r, 2);
    r.write(
        ".schema-guard.yaml",
        "acks:\n  - {rule: SG002, table: page_revisions, from: 1, to: 2, reason: planned in review}\n  - {rule: SG001, table: title_revisions-ng, from: 1, to: 1, reason: cannot ack this}\n",
    );
    r.edit(
        "sys/page_revisions.js",
        "page_deleted: 'int'",
        "page_deleted: 'int',\n                        redirect: 'string'",
    );
    r.commit("Two changes");
    let o = r.sg(&["check", "--base", "HEAD~1", "--head", "HEAD"]);
    let out = stdout(&o);
    assert_eq!(code(&o), 1, "{out}");
    assert!(
        out.contains("block[SG002] table page_revisions")
            && out.contains("(acknowledged: planned in review)"),
        "{out}"
    );
    assert!(
        out.contains("block[SG001] table title_revisions-ng changes its schema"),
        "{out}"
    );
}

#[test]
fn config_value_changes_a_bucket_schema() {
    let r = Repo::new();
    r.edit(
        "deploy/env/production.yaml",
        "html_version: 3",
        "html_version: 4",
    );
    r.commit("Bump the html bucket version via config");
    // Same content, higher version: info on Cassandra, flag on SQLite.
    let o = r.sg(&[
        "check", "--base", "HEAD~1", "--head", "HEAD", "--format", "json",
    ]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let f = &v["findings"][0];
    assert_eq!(
        (f["rule"].as_str(), f["from"].as_str(), f["to"].as_str()),
        (Some("SG007"), Some("5003"), Some("5004")),
        "{v:#}"
    );
    assert_eq!(f["location"]["path"], "projects/sys.yaml");
    assert_eq!(v["changes_schema"], true);
    let o = r.sg(&[
        "check",
        "--base",
        "HEAD~1",
        "--head",
        "HEAD",
        "--backend",
        "sqlite",
        "--fail-on",
        "flag",
    ]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(stdout(&o).contains("flag[SG007]"), "{}", stdout(&o));

    // A YAML body change without a version bump: the deploy would fail.
    r.edit(
        "projects/sys.yaml",
        "valueType: json\n        version: 1",
        "valueType: blob\n        version: 1",
    );
    r.commit("Change value type");
    let o = r.sg(&["check", "--base", "HEAD~1", "--head", "HEAD"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(
        stdout(&o).contains("block[SG001] table parsoid.data-parsoid"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn unresolvable_values_block_until_acknowledged() {
    let r = Repo::new();
    r.write(
        "sys/computed.js",
        "'use strict';\nmodule.exports = function (options) {\n    return { resources: [{ uri: '/{domain}/sys/table/computed', body: {\n        table: 'computed',\n        version: Date.now() % 7,\n        attributes: { k: 'string' },\n        index: [{ attribute: 'k', type: 'hash' }]\n    } }] };\n};\n",
    );
    r.commit("Computed schema");
    let o = r.sg(&["check", "--base", "HEAD~1", "--head", "HEAD"]);
    let out = stdout(&o);
    assert_eq!(code(&o), 1, "{out}");
    assert!(
        out.contains("sys/computed.js:5: block[SG090] could not resolve `version: Date.now() % 7`"),
        "{out}"
    );
    let ack = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("to acknowledge: --ack '"))
        .and_then(|l| l.strip_suffix(" <reason>'"))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    assert!(ack.starts_with("SG090 sys/computed.js new->"), "{ack}");
    let o = r.sg(&[
        "check",
        "--ack",
        &format!("{ack} reviewed: the version is fixed per process"),
    ]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    // Unchanged in a later commit: known since base, info only.
    r.write("NOTES.md", "x\n");
    r.commit("Docs");
    let o = r.sg(&["check"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(stdout(&o).contains("info[SG090]"), "{}", stdout(&o));
}

#[test]
fn tool_errors_exit_two_usage_errors_sixty_four() {
    let r = Repo::new();
    let o = r.sg(&["check", "--base", "no-such-rev", "--head", "HEAD"]);
    assert_eq!(code(&o), 2);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no-such-rev") && err.contains("\nhint: "),
        "{err}"
    );
    let o = r.sg(&["check", "--format", "bogus"]);
    assert_eq!(code(&o), 64);
    let o = r.sg(&["check", "--ack", "not an ack"]);
    assert_eq!(code(&o), 64);
    let o = r.sg(&["--help"]);
    assert_eq!(code(&o), 0);
}

#[test]
fn closed_stdout_ends_quietly() {
    let r = Repo::new();
    add_summary_column(&r, 2);
    r.commit("Add summary column");
    let mut child = Command::new(env!("CARGO_BIN_EXE_schema-guard"))
        .args(["check", "--format", "sarif"])
        .current_dir(&r.path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 1, "the outcome, not an error");
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn manifest_and_diff_of_manifest_files() {
    let r = Repo::new();
    let o = r.sg(&["manifest", "HEAD"]);
    assert_eq!(code(&o), 0);
    let m: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(m["format"], 1);
    assert_eq!(m["extractor"], "static");
    assert_eq!(m["storage_groups"][0]["name"], "group.wikipedia");
    let tables = m["tables"].as_array().unwrap();
    let bucket = tables
        .iter()
        .find(|t| t["table"] == "parsoid.html")
        .unwrap();
    assert_eq!(bucket["version"], 5003);
    assert!(
        bucket["content_hash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    let base_file = r.path.join("base.json");
    std::fs::write(&base_file, stdout(&o)).unwrap();
    add_summary_column(&r, 2);
    r.commit("Add column");
    let head = r.sg(&["manifest", "HEAD"]);
    let head_file = r.path.join("head.json");
    std::fs::write(&head_file, stdout(&head)).unwrap();
    let o = r.sg(&[
        "diff",
        base_file.to_str().unwrap(),
        head_file.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(stdout(&o).contains("block[SG002]"));
    // Revisions work as well as files.
    let o = r.sg(&["diff", "HEAD~1", "HEAD", "--format", "json"]);
    assert_eq!(code(&o), 1);
}

fn failing_repo() -> Repo {
    let r = Repo::new();
    add_summary_column(&r, 2);
    r.edit(
        "deploy/env/production.yaml",
        "version: 1\n        storage_groups",
        "version: 0\n        storage_groups",
    );
    r.edit(
        "deploy/env/production.yaml",
        "html_version: 3",
        "html_version: 4",
    );
    r.commit("Several changes, one with a comma, and: a colon");
    r
}

#[test]
fn sarif_output_validates_against_the_schema() {
    let r = failing_repo();
    let o = r.sg(&["check", "--format", "sarif"]);
    assert_eq!(code(&o), 1);
    let sarif: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let schema: Value = serde_json::from_str(include_str!("data/sarif-schema-2.1.0.json")).unwrap();
    let validator = jsonschema::draft4::new(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&sarif)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert!(
        results
            .iter()
            .any(|r| r["ruleId"] == "SG002" && r["level"] == "error")
    );
    assert!(results.iter().any(|r| r["ruleId"] == "SG030"));
    // A broken document must not validate (the validator is really checking).
    let mut broken = sarif.clone();
    broken["runs"][0]["results"][0]["level"] = Value::from("fatal");
    assert!(!validator.is_valid(&broken));
}

#[test]
fn gitlab_output_has_the_code_quality_shape() {
    let r = failing_repo();
    let o = r.sg(&["check", "--format", "gitlab"]);
    assert_eq!(code(&o), 1);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let items = v.as_array().unwrap();
    assert!(!items.is_empty());
    let mut fingerprints = std::collections::BTreeSet::new();
    for i in items {
        assert!(
            i["description"].is_string() && i["check_name"].as_str().unwrap().starts_with("SG")
        );
        assert!(
            ["info", "minor", "major", "critical", "blocker"]
                .contains(&i["severity"].as_str().unwrap())
        );
        assert!(i["location"]["path"].is_string());
        assert!(i["location"]["lines"]["begin"].as_u64().unwrap() >= 1);
        assert!(
            fingerprints.insert(i["fingerprint"].as_str().unwrap().to_string()),
            "fingerprints unique"
        );
    }
    assert!(
        items
            .iter()
            .any(|i| i["check_name"] == "SG002" && i["severity"] == "blocker")
    );
}

#[test]
fn github_output_is_workflow_commands_and_writes_the_step_summary() {
    let r = failing_repo();
    let summary = r.path.join("summary.md");
    let o = r.sg_env(
        &["check", "--format", "github"],
        &[("GITHUB_STEP_SUMMARY", &summary)],
    );
    assert_eq!(code(&o), 1);
    let out = stdout(&o);
    let re = regex::Regex::new(
        r"^::(error|warning|notice)( [a-z]+=[^,:]*(,[a-z]+=[^,:]*)*)?::[^\r\n]*$",
    )
    .unwrap();
    for l in out.lines() {
        assert!(re.is_match(l), "not a workflow command: {l}");
    }
    let line = line_of(&r, "sys/page_revisions.js", "body: {");
    assert!(out.contains(&format!("::error file=sys/page_revisions.js,line={line},title=schema-guard SG002 page_revisions::")), "{out}");
    assert!(
        out.contains("%0ARollback: "),
        "multi-line messages are escaped: {out}"
    );
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(md.starts_with("## schema-guard: failed"), "{md}");
    assert!(md.contains("| `page_revisions` |"), "{md}");
}

#[test]
fn gerrit_output_is_review_input() {
    let r = failing_repo();
    let o = r.sg(&["check", "--format", "gerrit"]);
    assert_eq!(code(&o), 1);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["labels"]["Verified"], -1);
    assert!(v["message"].as_str().unwrap().starts_with("schema-guard:"));
    let comments = v["comments"].as_object().unwrap();
    let c = &comments["sys/page_revisions.js"][0];
    assert!(c["line"].as_u64().unwrap() > 0);
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .starts_with("[schema-guard SG002 block]")
    );
    // Clean change: +1.
    let r = Repo::new();
    r.write("NOTES.md", "x\n");
    r.commit("Docs");
    let v: Value = serde_json::from_str(&stdout(&r.sg(&["check", "--format", "gerrit"]))).unwrap();
    assert_eq!(v["labels"]["Verified"], 1);
    assert!(v["comments"].as_object().unwrap().is_empty());
}

#[test]
fn markdown_and_output_file() {
    let r = failing_repo();
    let file = r.path.join("report.md");
    let o = r.sg(&[
        "check",
        "--format",
        "markdown",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 1);
    assert!(stdout(&o).is_empty());
    let md = std::fs::read_to_string(file).unwrap();
    assert!(
        md.contains("Rollback recipe for SG002 page_revisions"),
        "{md}"
    );
    assert!(md.contains("| block | SG030 |"), "{md}");
}

// ---- capture (needs node, npm and a network namespace) ----

#[test]
fn capture_agrees_with_static_and_follows_config_values() {
    let Some(nm) = common::node_modules("fixture") else {
        return;
    };
    let r = Repo::new();
    let opts = schema_guard::extract::CaptureOptions {
        node_modules: Some(nm.clone()),
        ..Default::default()
    };
    let captured = schema_guard::extract::capture_rev(&r.path, "HEAD", &opts).expect("capture");
    let statik = schema_guard::extract::static_manifest(&r.path, "HEAD").unwrap();
    assert_eq!(captured.extractor, "capture");
    let key = |m: &schema_guard::StorageManifest| -> Vec<(String, String, i64, String)> {
        m.tables
            .iter()
            .map(|t| {
                (
                    t.table.clone(),
                    t.domain.clone(),
                    t.version,
                    t.content_hash.clone(),
                )
            })
            .collect()
    };
    assert!(!captured.tables.is_empty());
    assert_eq!(key(&captured), key(&statik), "capture and static disagree");
    assert_eq!(captured.domains, statik.domains);
    assert_eq!(captured.storage_groups, statik.storage_groups);
    // The bucket whose version comes from `{{options.html_version}}` in the config.
    let html = captured
        .tables
        .iter()
        .find(|t| t.table == "parsoid.html")
        .unwrap();
    assert_eq!(html.version, 5003);
    assert_eq!(html.location.as_ref().unwrap().path, "projects/sys.yaml");

    // A config-only change, seen by capture through the binary.
    r.edit(
        "deploy/env/production.yaml",
        "html_version: 3",
        "html_version: 7",
    );
    r.edit(
        "projects/sys.yaml",
        "valueType: blob\n        version: '{{options.html_version}}'",
        "valueType: json\n        version: '{{options.html_version}}'",
    );
    r.commit("New html bucket layout");
    // The fixture's failure switches in the environment do not leak into the capture run.
    let o = r.sg_env(
        &[
            "check",
            "--extractor",
            "capture",
            "--node-modules",
            nm.to_str().unwrap(),
            "--format",
            "json",
        ],
        &[("FIXTURE_CRASH_AT_START", Path::new("true"))],
    );
    assert_eq!(
        code(&o),
        1,
        "{}{}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let f = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "SG002")
        .expect("SG002");
    assert_eq!(
        (f["subject"].as_str(), f["from"].as_str(), f["to"].as_str()),
        (Some("parsoid.html"), Some("5003"), Some("5007"))
    );
    assert_eq!(f["domains"].as_array().unwrap().len(), 4);
}

#[test]
fn capture_reports_a_service_that_fails_to_start() {
    let Some(nm) = common::node_modules("fixture") else {
        return;
    };
    let r = Repo::new();
    r.edit(
        "projects/sys.yaml",
        "version: '{{options.html_version}}'",
        "version: '{{options.missing_value}}'",
    );
    r.commit("Broken template");
    let o = r.sg(&[
        "check",
        "--extractor",
        "capture",
        "--node-modules",
        nm.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 2, "{}", stdout(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("exited") && err.contains("missing_value"),
        "{err}"
    );
}

#[test]
fn capture_require_hook_replaces_a_backend_loaded_by_package_name() {
    let Some(nm) = common::node_modules("fixture") else {
        return;
    };
    let r = Repo::new();
    let expected = schema_guard::extract::static_manifest(&r.path, "HEAD").unwrap();
    r.edit(
        "deploy/env/production.yaml",
        "backend: ./lib/storage/file-store.js",
        "backend: restbase-mod-table-cassandra",
    );
    r.write(
        ".schema-guard.yaml",
        "capture:\n  backend_modules: [restbase-mod-table-cassandra]\n",
    );
    r.commit("Backend by package name");
    let opts = schema_guard::extract::CaptureOptions {
        node_modules: Some(nm),
        ..Default::default()
    };
    let captured = schema_guard::extract::capture_rev(&r.path, "HEAD", &opts)
        .expect("capture through the hook");
    let key = |m: &schema_guard::StorageManifest| -> Vec<(String, String, String)> {
        m.tables
            .iter()
            .map(|t| (t.table.clone(), t.domain.clone(), t.content_hash.clone()))
            .collect()
    };
    assert_eq!(key(&captured), key(&expected));
}

#[test]
fn capture_kills_what_the_service_started() {
    let Some(nm) = common::node_modules("fixture") else {
        return;
    };
    let r = Repo::new();
    let marker = format!("sg-orphan-{}", std::process::id());
    r.write(
        "sys/spawner.js",
        &format!(
            "'use strict';\nconst {{ spawn }} = require('child_process');\nmodule.exports = function () {{\n    spawn(process.execPath, ['-e', 'setTimeout(() => {{}}, 600000)', '{marker}'], {{ stdio: 'ignore' }}).unref();\n    return {{ resources: [] }};\n}};\n"
        ),
    );
    r.commit("A module that leaves a child process behind");
    let opts = schema_guard::extract::CaptureOptions {
        node_modules: Some(nm),
        ..Default::default()
    };
    schema_guard::extract::capture_rev(&r.path, "HEAD", &opts).expect("capture");
    let left = Command::new("pgrep")
        .args(["-f", &marker])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "left running: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}
