//! The table rules, checked against RESTBase's real table backends: the same sequences of
//! schemas go through `restbase-mod-table-sqlite` (a real SQLite database), through
//! `restbase-mod-table-cassandra`'s own validation and migrator (no cluster: every check, no
//! CQL) and through the fixture service's table backend in both flavours
//! (`tests/node/table-rules.js`). The test asserts that the fixture decides as the real
//! backend does at every step, and that schema-guard predicts each refusal: it blocks with a
//! rule that means "start-up fails" exactly where the real backend refuses.
//!
//! Needs node and RESTBase's node_modules (`ci/node-deps restbase`, cached).

mod common;

use schema_guard::{Backend, Options, Report, Severity, StorageManifest, diff};
use serde_json::{Value, json};
use std::process::Command;

/// What schema-guard predicts when `head` follows `base` on `backend`: `Some(rules)` when it
/// says the backend refuses the schema (start-up fails), `None` when it says it is accepted.
fn predicted_refusal(
    base: &Value,
    head: &Value,
    backend: Backend,
) -> (Option<Vec<String>>, Report) {
    let manifest = |schema: &Value| {
        let v = json!({
            "format": 1,
            "extractor": "manual",
            "domains": ["en.wikipedia.org"],
            "storage_groups": [{"name": "group.wikipedia", "domains": ["/\\.wikipedia\\.org$/"]}],
            "schemas": [{"domain": "en.wikipedia.org", "schema": schema}],
        });
        StorageManifest::from_json(&serde_json::to_vec(&v).unwrap()).unwrap()
    };
    let opts = Options {
        backend,
        ..Options::default()
    };
    let report = diff(&manifest(base), &manifest(head), &opts);
    // The rules whose finding means the backend refuses the schema at start-up.
    let refusing: Vec<String> = report
        .findings
        .iter()
        .filter(|f| {
            matches!(f.rule.as_str(), "SG001" | "SG003" | "SG008")
                || (f.rule == "SG007" && f.severity == Severity::Block)
        })
        .map(|f| f.rule.clone())
        .collect();
    ((!refusing.is_empty()).then_some(refusing), report)
}

#[test]
fn the_fixture_and_schema_guard_decide_as_the_real_table_backends() {
    let Some(nm) = common::node_deps("restbase") else {
        return;
    };
    let root = common::repo_root();
    let out = Command::new("node")
        .arg(root.join("schema-guard/tests/node/table-rules.js"))
        .arg(&nm)
        .arg(root.join("fixtures/service"))
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "table-rules.js: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cases: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let mut steps = 0;
    let (mut refused, mut accepted) = (0, 0);
    let mut wrong = Vec::new();
    for c in &cases {
        let name = format!(
            "{} ({})",
            c["case"].as_str().unwrap(),
            c["flavour"].as_str().unwrap()
        );
        let backend = Backend::parse(c["flavour"].as_str().unwrap()).unwrap();
        let list = c["steps"].as_array().unwrap();
        assert!(
            list[0]["real"]["accepted"] == true,
            "{name}: the real backend refused the first schema: {}",
            list[0]["real"]
        );
        for (i, pair) in list.windows(2).enumerate() {
            let (prev, step) = (&pair[0], &pair[1]);
            assert!(
                prev["real"]["accepted"] == true,
                "{name}: a step after a refused one says nothing (the case is wrong)"
            );
            steps += 1;
            let real = &step["real"];
            if real["accepted"] == true {
                accepted += 1;
            } else {
                refused += 1;
            }
            if step["fixture"] != *real {
                wrong.push(format!(
                    "{name}, step {}: the fixture {} where the real backend {}",
                    i + 1,
                    step["fixture"],
                    real
                ));
            }
            let (prediction, report) = predicted_refusal(&prev["schema"], &step["schema"], backend);
            if prediction.is_some() == (real["accepted"] == true) {
                wrong.push(format!(
                    "{name}, step {}: schema-guard predicts {} where the real backend {real}; findings: {:?}",
                    i + 1,
                    match &prediction {
                        Some(rules) => format!("a refusal ({})", rules.join(", ")),
                        None => "no refusal".to_string(),
                    },
                    report
                        .findings
                        .iter()
                        .map(|f| format!("{} {}", f.rule, f.message))
                        .collect::<Vec<_>>()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The cases reach both outcomes on both backends, so the comparison can fail either way.
    assert!(
        steps >= 30 && refused >= 8 && accepted >= 8,
        "{steps} steps, {refused} refused, {accepted} accepted"
    );
}
