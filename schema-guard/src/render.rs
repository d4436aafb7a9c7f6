//! Report renderers: text, json, sarif 2.1.0, GitLab code quality, GitHub workflow commands,
//! Gerrit review input, markdown. All return strings; callers decide where they go.

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::report::{ChangeKind, FailOn, Finding, Report, Severity};
use crate::rules::RULES;

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Sarif,
    Gitlab,
    Github,
    Gerrit,
    Markdown,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "text" => Format::Text,
            "json" => Format::Json,
            "sarif" => Format::Sarif,
            "gitlab" => Format::Gitlab,
            "github" => Format::Github,
            "gerrit" => Format::Gerrit,
            "markdown" => Format::Markdown,
            other => return Err(format!("unknown format {other:?}")),
        })
    }
}

/// Rendering settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct RenderOptions {
    pub fail_on: FailOn,
}

/// GitHub shows at most this many annotations per type and step.
pub const GITHUB_ANNOTATION_CAP: usize = 10;

/// Renders a report.
pub fn render(report: &Report, format: Format, opts: RenderOptions) -> String {
    match format {
        Format::Text => text(report, opts),
        Format::Json => json_report(report, opts),
        Format::Sarif => serde_json::to_string_pretty(&sarif(report)).expect("serialises") + "\n",
        Format::Gitlab => serde_json::to_string_pretty(&gitlab(report)).expect("serialises") + "\n",
        Format::Github => github(report),
        Format::Gerrit => {
            serde_json::to_string_pretty(&gerrit(report, opts)).expect("serialises") + "\n"
        }
        Format::Markdown => markdown(report, opts),
    }
}

fn location(f: &Finding) -> String {
    f.location
        .as_ref()
        .map(|l| l.to_string())
        .unwrap_or_else(|| "(storage)".into())
}

fn scope(f: &Finding) -> String {
    let mut parts = Vec::new();
    if !f.domains.is_empty() {
        parts.push(format!("domains: {}", f.domains.join(", ")));
    }
    if !f.storage_groups.is_empty() {
        parts.push(format!("groups: {}", f.storage_groups.join(", ")));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" [{}]", parts.join("; "))
    }
}

fn full_message(f: &Finding) -> String {
    let mut m = format!("{}{}", f.message, scope(f));
    if let Some(a) = &f.acknowledged {
        m.push_str(&format!(" (acknowledged: {})", a.reason));
    }
    m
}

/// `path:line: severity[ID] message`, recipes and ack hints indented below, then a summary.
pub fn text(r: &Report, opts: RenderOptions) -> String {
    let mut out = String::new();
    for f in &r.findings {
        out.push_str(&format!(
            "{}: {}[{}] {}\n",
            location(f),
            f.severity.as_str(),
            f.rule,
            full_message(f)
        ));
        if let Some(recipe) = &f.recipe {
            out.push_str(&format!("    rollback: {recipe}\n"));
        }
        if f.fails(opts.fail_on)
            && let (Some(flag), Some(t)) = (f.ack_flag(), f.ack_trailer())
        {
            out.push_str(&format!("    to acknowledge: {flag}\n"));
            out.push_str(&format!("      (or the commit trailer `{t}`)\n"));
        }
    }
    for t in &r.tables {
        out.push_str(&format!(
            "table {} ({}) {}: {} -> {}; deploy {}; rollback {}{}\n",
            t.table,
            t.domains.join(", "),
            change_name(t.change),
            t.from_version
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            t.to_version
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            if t.deploy_fails { "FAILS" } else { "ok" },
            if t.rollbackable { "ok" } else { "UNSAFE" },
            if t.storage_groups.is_empty() {
                String::new()
            } else {
                format!(" [groups: {}]", t.storage_groups.join(", "))
            }
        ));
    }
    let (b, f, i) = r.counts();
    let acked = r
        .findings
        .iter()
        .filter(|f| f.acknowledged.is_some())
        .count();
    out.push_str(&format!(
        "schema-guard: {b} block, {f} flag, {i} info ({acked} acknowledged); {}; {} ({} backend)\n",
        if r.changes_schema() {
            "changes stored schemas"
        } else {
            "no stored schema change"
        },
        if r.fails(opts.fail_on) {
            "FAIL"
        } else {
            "pass"
        },
        r.backend.as_str()
    ));
    out
}

fn change_name(c: ChangeKind) -> &'static str {
    match c {
        ChangeKind::New => "new",
        ChangeKind::Removed => "no longer requested",
        ChangeKind::Content => "content change",
        ChangeKind::VersionOnly => "version-only change",
    }
}

fn json_report(r: &Report, opts: RenderOptions) -> String {
    let mut v = serde_json::to_value(r).expect("serialises");
    v["failed"] = json!(r.fails(opts.fail_on));
    v["blocking"] = json!(r.is_blocking());
    v["changes_schema"] = json!(r.changes_schema());
    v["rollback_safe"] = json!(r.rollback_safe());
    serde_json::to_string_pretty(&v).expect("serialises") + "\n"
}

fn fingerprint(f: &Finding) -> String {
    let key = format!(
        "{}\0{}\0{}\0{}\0{}",
        f.rule,
        f.subject,
        f.from.as_deref().unwrap_or(""),
        f.to.as_deref().unwrap_or(""),
        f.domains.join(",")
    );
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// SARIF 2.1.0 log.
pub fn sarif(r: &Report) -> Value {
    let rules: Vec<Value> = RULES
        .iter()
        .map(|ri| {
            json!({
                "id": ri.id,
                "name": ri.name,
                "shortDescription": {"text": ri.summary},
                "helpUri": "https://example.invalid/docs/schema-guard.md",
            })
        })
        .collect();
    let results: Vec<Value> = r
        .findings
        .iter()
        .map(|f| {
            let mut text = full_message(f);
            if let Some(recipe) = &f.recipe {
                text.push_str(&format!("\nRollback: {recipe}"));
            }
            let mut res = json!({
                "ruleId": f.rule,
                "ruleIndex": RULES.iter().position(|ri| ri.id == f.rule).unwrap_or(0),
                "level": match f.severity { Severity::Block => "error", Severity::Flag => "warning", Severity::Info => "note" },
                "message": {"text": text},
                "partialFingerprints": {"schemaGuard/v1": fingerprint(f)},
                "properties": {
                    "subject": f.subject,
                    "acknowledgeable": f.acknowledgeable,
                    "domains": f.domains,
                    "storageGroups": f.storage_groups,
                },
            });
            if let Some(l) = &f.location {
                let mut phys = json!({"artifactLocation": {"uri": l.path}});
                if let Some(line) = l.line {
                    phys["region"] = json!({"startLine": line});
                }
                res["locations"] = json!([{"physicalLocation": phys}]);
            }
            if let Some(a) = &f.acknowledged {
                res["suppressions"] = json!([{"kind": "external", "justification": a.reason}]);
            }
            res
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "schema-guard",
                "version": crate::VERSION,
                "informationUri": "https://example.invalid/docs/schema-guard.md",
                "rules": rules,
            }},
            "results": results,
        }],
    })
}

/// GitLab code quality report.
pub fn gitlab(r: &Report) -> Value {
    Value::Array(
        r.findings
            .iter()
            .map(|f| {
                let severity = match (f.severity, f.acknowledged.is_some()) {
                    (_, true) => "info",
                    (Severity::Block, _) => "blocker",
                    (Severity::Flag, _) => "major",
                    (Severity::Info, _) => "info",
                };
                let path = f
                    .location
                    .as_ref()
                    .map(|l| l.path.clone())
                    .unwrap_or_else(|| ".".into());
                let line = f.location.as_ref().and_then(|l| l.line).unwrap_or(1);
                json!({
                    "description": format!("[{}] {}", f.rule, full_message(f)),
                    "check_name": f.rule,
                    "fingerprint": fingerprint(f),
                    "severity": severity,
                    "location": {"path": path, "lines": {"begin": line}},
                })
            })
            .collect(),
    )
}

/// Escapes workflow command data (`%`, CR, LF).
pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes workflow command property values (data escapes plus `:` and `,`).
pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// GitHub workflow commands, at most [`GITHUB_ANNOTATION_CAP`] per type.
pub fn github(r: &Report) -> String {
    let mut out = String::new();
    let mut counts = [0usize; 3];
    let mut dropped = [0usize; 3];
    for f in &r.findings {
        let (cmd, idx) = match (f.severity, f.acknowledged.is_some()) {
            (_, true) | (Severity::Info, _) => ("notice", 2),
            (Severity::Block, _) => ("error", 0),
            (Severity::Flag, _) => ("warning", 1),
        };
        if counts[idx] >= GITHUB_ANNOTATION_CAP {
            dropped[idx] += 1;
            continue;
        }
        counts[idx] += 1;
        let mut props = Vec::new();
        if let Some(l) = &f.location {
            props.push(format!("file={}", escape_property(&l.path)));
            if let Some(line) = l.line {
                props.push(format!("line={line}"));
            }
        }
        props.push(format!(
            "title={}",
            escape_property(&format!("schema-guard {} {}", f.rule, f.subject))
        ));
        let mut msg = full_message(f);
        if let Some(recipe) = &f.recipe {
            msg.push_str(&format!("\nRollback: {recipe}"));
        }
        out.push_str(&format!(
            "::{cmd} {}::{}\n",
            props.join(","),
            escape_data(&msg)
        ));
    }
    let total: usize = dropped.iter().sum();
    if total > 0 {
        out.push_str(&format!(
            "::notice title=schema-guard::{}\n",
            escape_data(&format!(
                "{total} more finding(s) not annotated (GitHub shows {GITHUB_ANNOTATION_CAP} per type); see the step summary"
            ))
        ));
    }
    out
}

/// Gerrit review input (`POST .../review`): a summary message, the Verified label and
/// robot-comment style file comments.
pub fn gerrit(r: &Report, opts: RenderOptions) -> Value {
    let verified = if r.fails(opts.fail_on) {
        -1
    } else if r
        .findings
        .iter()
        .any(|f| f.severity >= Severity::Flag && f.acknowledged.is_none())
    {
        0
    } else {
        1
    };
    let mut comments = serde_json::Map::new();
    for f in &r.findings {
        let path = f
            .location
            .as_ref()
            .map(|l| l.path.clone())
            .unwrap_or_else(|| "/PATCHSET_LEVEL".into());
        let mut msg = format!(
            "[schema-guard {} {}] {}",
            f.rule,
            f.severity.as_str(),
            full_message(f)
        );
        if let Some(recipe) = &f.recipe {
            msg.push_str(&format!("\n\nRollback: {recipe}"));
        }
        if f.acknowledged.is_none()
            && f.severity == Severity::Block
            && let Some(t) = f.ack_trailer()
        {
            msg.push_str(&format!("\n\nTo acknowledge: {t}"));
        }
        let mut c = json!({"message": msg, "unresolved": f.severity == Severity::Block && f.acknowledged.is_none()});
        if let Some(line) = f.location.as_ref().and_then(|l| l.line) {
            c["line"] = json!(line);
        }
        comments
            .entry(path)
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .expect("array")
            .push(c);
    }
    let (b, fl, i) = r.counts();
    json!({
        "message": format!(
            "schema-guard: {b} block, {fl} flag, {i} info; {}.",
            if r.changes_schema() { "this change modifies stored schemas" } else { "no stored schema change" }
        ),
        "labels": {"Verified": verified},
        "comments": comments,
    })
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Markdown (PR comments, GitHub step summary).
pub fn markdown(r: &Report, opts: RenderOptions) -> String {
    let (b, f, i) = r.counts();
    let mut out = format!(
        "## schema-guard: {}\n\n{b} block, {f} flag, {i} info ({} backend). {}\n\n",
        if r.fails(opts.fail_on) {
            "failed"
        } else {
            "passed"
        },
        r.backend.as_str(),
        if r.changes_schema() {
            "This revision **changes stored schemas**: a deploy of it is of type `schema`."
        } else {
            "No stored schema change."
        }
    );
    if !r.tables.is_empty() {
        out.push_str("| table | domains | groups | change | version | deploy | rollback |\n|---|---|---|---|---|---|---|\n");
        for t in &r.tables {
            out.push_str(&format!(
                "| `{}` | {} | {} | {} | {} → {} | {} | {} |\n",
                t.table,
                md_escape(&t.domains.join(", ")),
                md_escape(&t.storage_groups.join(", ")),
                change_name(t.change),
                t.from_version
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "–".into()),
                t.to_version
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "–".into()),
                if t.deploy_fails { "fails" } else { "ok" },
                if t.rollbackable { "ok" } else { "**unsafe**" },
            ));
        }
        out.push('\n');
    }
    if !r.findings.is_empty() {
        out.push_str("| severity | rule | where | finding |\n|---|---|---|---|\n");
        for f in &r.findings {
            out.push_str(&format!(
                "| {}{} | {} | `{}` | {} |\n",
                f.severity.as_str(),
                if f.acknowledged.is_some() {
                    " (acked)"
                } else {
                    ""
                },
                f.rule,
                location(f),
                md_escape(&full_message(f))
            ));
        }
        for f in r.findings.iter().filter(|f| f.recipe.is_some()) {
            out.push_str(&format!(
                "\n<details><summary>Rollback recipe for {} {}</summary>\n\n{}\n\n</details>\n",
                f.rule,
                f.subject,
                f.recipe.as_deref().unwrap_or_default()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_escapes() {
        assert_eq!(escape_data("a%b\r\nc:d,e"), "a%25b%0D%0Ac:d,e");
        assert_eq!(escape_property("a%b\nc:d,e"), "a%25b%0Ac%3Ad%2Ce");
    }
}
