use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::history::{Filter, HistoryRow, parse_since, parse_status, render_text};
use super::model::{BarOutcome, CanaryAnalysis, Report};
use super::*;
use crate::records::{JournalStatus, Step};

const EVIL: &str = "<script>alert(1)</script>";
/// Host names are validated when a journal is read (a hostile one is refused before any
/// report); the hostile text rides in the free-text fields instead.
const HOST: &str = "canary-1";
const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn step(at: &str, host: Option<&str>, step: &str, ok: bool, detail: Option<&str>) -> Value {
    json!({"at": format!("2026-12-01T10:00:{at}Z"), "host": host, "step": step, "ok": ok, "detail": detail})
}

/// A deploy whose canary (with hostile text in its records) failed its checks and was rolled back,
/// with an acknowledged storage finding.
fn journal() -> Journal {
    let h = HOST;
    let path = |t0: u32, ok_checks: bool, detail: Option<&str>| -> Vec<Value> {
        let names = [
            "spec", "port", "depool", "stop", "render", "switch", "start", "ready", "checks",
        ];
        let mut v: Vec<Value> = names
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let ok = *s != "checks" || ok_checks;
                step(
                    &format!("{:06.3}", t0 as f64 + i as f64 * 0.5),
                    Some(h),
                    s,
                    ok,
                    if *s == "checks" { detail } else { None },
                )
            })
            .collect();
        if ok_checks {
            v.push(step(
                &format!("{:06.3}", t0 as f64 + 5.0),
                Some(h),
                "mark_good",
                true,
                None,
            ));
            v.push(step(
                &format!("{:06.3}", t0 as f64 + 5.2),
                Some(h),
                "repool",
                true,
                None,
            ));
        }
        v
    };
    let mut steps = vec![
        step(
            "00.100",
            None,
            "storage_guard",
            true,
            Some(
                "schema deploy; compared with sha256:aa (commit aaaaaaa)\nblock[SG002] pages: schema changed (acknowledged)\nack: SG002 pages 1->2 <b>ok</b>",
            ),
        ),
        step("01.000", Some(h), "preflight", true, Some("900 MiB free")),
        step("01.000", Some("b"), "preflight", true, Some("900 MiB free")),
        step("02.000", Some(h), "fetch", true, Some("fetched")),
        step("02.000", Some("b"), "fetch", true, Some("fetched")),
    ];
    steps.extend(path(
        10,
        false,
        Some("http /_info: GET /_info returned 500, expected 200: <script>x</script>"),
    ));
    steps.push(step("20.000", None, "abort", true, Some("h failed")));
    steps.extend(path(21, true, None));
    let j = json!({
        "id": "20261201T100000Z-abcdef",
        "env": "stg",
        "kind": "deploy",
        "artifact": D2,
        "commit": "2222222222222222222222222222222222222222",
        "who": "ops@<b>box</b>",
        "reason": EVIL,
        "started_at": "2026-12-01T10:00:00.000Z",
        "finished_at": "2026-12-01T10:00:30.000Z",
        "status": "rolled_back",
        "deploy_type": "code",
        "groups": [["canary", [h]], ["rest", ["b"]]],
        "hosts": {
            h: {"group": "canary", "from": {"commit": "1111111111111111111111111111111111111111", "manifest": D1},
                "to": {"commit": "2222222222222222222222222222222222222222", "manifest": D2},
                "phase": "rolled_back", "touched": 1,
                "detail": "check http /_info: GET /_info returned 500; rollback: restored",
                "checks": [{"name": "http /_info", "outcome": "pass", "detail": "GET /_info -> 200 <i>", "elapsed_ms": 12, "passed": true}]},
            "b": {"group": "rest", "from": {"commit": "1111111111111111111111111111111111111111", "manifest": D1},
                "to": {"commit": "2222222222222222222222222222222222222222", "manifest": D2},
                "phase": "fetched", "touched": null, "detail": null, "checks": []}
        },
        "steps": steps,
        "abort_reason": format!("{EVIL} (check http /_info: GET /_info returned 500)"),
        "needs_human": []
    });
    serde_json::from_value(j).expect("a journal")
}

fn canary() -> CanaryAnalysis {
    // The shape of an analysis record, with the two series.
    CanaryAnalysis::from_value(json!({
        "group": "canary", "canary": [HOST], "baseline": ["b"],
        "from": "2026-12-01T10:00:10Z", "to": "2026-12-01T10:00:20Z",
        "verdict": "fail", "passed": false,
        "metrics": [{"metric": "5xx", "verdict": "fail", "test": "mann_whitney", "reason": "worse",
            "canary_samples": 4, "baseline_samples": 4, "canary_mean": 0.5, "baseline_mean": 0.01,
            "u": 16.0, "p": 0.0143, "method": "exact", "effect": 0.49,
            "canary_series": [0.4, 0.5, 0.6, 0.5], "baseline_series": [0.0, 0.02, 0.01, 0.01]}]
    }))
    .expect("an analysis record reads")
}

#[test]
fn the_model_has_each_hosts_steps_with_durations_and_the_way_back() {
    let r = of(&journal());
    assert_eq!(r.summary.duration_ms, Some(30_000));
    assert_eq!(r.summary.touched, [HOST]);
    assert!(r.summary.changed.is_empty());
    assert_eq!(r.hosts.len(), 2);
    let h = &r.hosts[0];
    assert_eq!(h.host, HOST);
    assert_eq!(h.group, "canary");
    let depool = h.bars.iter().find(|b| b.step == Step::Depool).unwrap();
    assert_eq!((depool.start_ms, depool.dur_ms), (10_500, Some(500)));
    // `spec` has no recorded start: drawn at its end, no duration.
    assert_eq!(
        h.bars.iter().find(|b| b.step == Step::Spec).unwrap().dur_ms,
        None
    );
    let failed: Vec<_> = h
        .bars
        .iter()
        .filter(|b| b.outcome == BarOutcome::Failed)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].step, Step::Checks);
    let restore = h
        .bars
        .iter()
        .filter(|b| b.outcome == BarOutcome::Restore)
        .count();
    assert_eq!(restore, 11, "the whole way back is drawn as such");
    assert_eq!(h.failed_checks.len(), 1);
    assert!(h.failed_checks[0].contains("returned 500"));
    let rb = r.rollback.as_ref().expect("a rollback path");
    assert_eq!(rb.hosts.len(), 1);
    assert!(rb.hosts[0].ok);
    assert_eq!(
        rb.hosts[0].back_to.as_deref(),
        Some("1111111111111111111111111111111111111111")
    );
    assert!(r.failure.as_deref().unwrap().contains("returned 500"));
    assert_eq!(r.schema.findings.len(), 1);
    assert_eq!(r.schema.acks, ["SG002 pages 1->2 <b>ok</b>"]);
    assert_eq!(r.deploy_steps.len(), 2);
}

#[test]
fn every_record_value_is_text_in_the_html_and_the_document_is_well_formed() {
    let mut r = of(&journal());
    r.canary = vec![canary()];
    let doc = html::render(&r);
    testkit::browser::well_formed(&doc).unwrap_or_else(|e| panic!("{e}\n{doc}"));
    for bad in ["<script", "<b>", "<i>"] {
        assert!(!doc.contains(bad), "{bad} came through as markup");
    }
    assert!(doc.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(doc.contains("ops@&lt;b&gt;box&lt;/b&gt;"));
    // Self-contained: nothing is fetched.
    for ext in ["src=", "href=", "url(", "@import", "http://", "https://"] {
        let outside = doc.replace("http://www.w3.org/", "");
        assert!(!outside.contains(ext), "{ext} in the report");
    }
}

#[test]
fn a_canary_analysis_is_drawn_with_its_numbers_and_both_series() {
    let mut r = of(&journal());
    r.canary = vec![canary()];
    let doc = html::render(&r);
    assert!(doc.contains("id=\"canary\""));
    assert!(doc.contains("<polyline class=\"canary\""));
    assert!(doc.contains("<polyline class=\"baseline\""));
    assert!(doc.contains("0.0143"), "p shown");
    assert!(doc.contains("<dd>16</dd>"), "U shown");
    // Without an analysis there is no canary section.
    assert!(!html_of(&journal()).contains("id=\"canary\""));
    // The record's own count of samples and the series do not clash.
    assert_eq!(r.canary[0].metrics[0].canary_samples, 4);
    assert_eq!(r.canary[0].metrics[0].canary_series.len(), 4);
}

#[test]
fn show_lists_every_step_and_keeps_escape_sequences_off_the_terminal() {
    let mut j = journal();
    j.steps[1].detail = Some("\u{1b}[2Jwiped".into());
    let t = text::render(&Report::from_journal(&j, vec![]));
    assert!(!t.contains('\u{1b}'));
    assert!(t.contains("\u{fffd}[2Jwiped"));
    for s in [
        "depool",
        "checks",
        "mark_good",
        "repool",
        "rollback path",
        "ack SG002",
    ] {
        assert!(t.contains(s), "{s} missing:\n{t}");
    }
}

#[test]
fn history_rows_filters_and_their_parsers() {
    let j = journal();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_119_200); // 2026-12-01T10:00:00Z
    let row = HistoryRow::of(&j, now);
    assert_eq!(row.duration_ms, Some(30_000));
    let v = serde_json::to_value(&row).unwrap();
    assert_eq!(v["status"], "rolled_back", "the journal's own fields stay");
    assert_eq!(v["hosts_touched"][0], HOST);
    let t = render_text(&[row]);
    assert!(
        t.contains("rolled_back") && t.contains("30.0 s") && t.contains("0/2"),
        "{t}"
    );

    let f = |s: &str, st: &str, h: Option<&str>| Filter {
        since: (!s.is_empty()).then(|| parse_since(s, now).unwrap()),
        status: parse_status(st).unwrap(),
        host: h.map(str::to_string),
    };
    assert!(f("2026-12-01", "", None).accepts(&j));
    assert!(!f("2026-12-02", "", None).accepts(&j));
    assert!(f("1h", "failed", Some(HOST)).accepts(&j));
    assert!(!f("", "succeeded", None).accepts(&j));
    assert!(!f("", "", Some("b")).accepts(&j), "b was never touched");
    assert!(!f("", "", Some("zz")).accepts(&j));
    assert!(parse_since("yesterday-ish", now).is_err());
    assert!(parse_status("done").unwrap_err().contains("rolled_back"));
    assert_eq!(
        parse_status("failed").unwrap(),
        [JournalStatus::RolledBack, JournalStatus::NeedsHuman]
    );
}

#[test]
fn a_report_goes_to_a_plain_file_name_only() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal();
    let p = write_to_dir(dir.path(), &j).unwrap();
    assert_eq!(p.file_name().unwrap(), "stg-20261201T100000Z-abcdef.html");
    assert_eq!(std::fs::read_to_string(&p).unwrap(), html_of(&j));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&p).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644, "a report is readable by its readers");
    assert!(super::write_atomic(&dir.path().join("no-such-dir/r.html"), "x").is_err());
    let mut evil = j.clone();
    evil.id = "../../etc/x".into();
    assert!(write_to_dir(dir.path(), &evil).is_err());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "nothing else written"
    );
}

/// A canary analysis the engine journalled reaches the report with its numbers and series.
#[test]
fn a_journalled_canary_analysis_reaches_the_report() {
    let mut j = journal();
    let a: crate::analysis::AnalysisReport = serde_json::from_value(json!({
        "group": "canary", "canary": [HOST], "baseline": ["b"],
        "from": "2026-12-01T10:00:00Z", "to": "2026-12-01T10:00:24Z",
        "verdict": "fail", "passed": false,
        "metrics": [{"metric": "5xx_rate", "verdict": "fail", "test": "mann_whitney",
                     "reason": "canary worse", "canary_samples": 24, "baseline_samples": 24,
                     "canary_mean": 0.1, "baseline_mean": 0.05, "p": 0.001,
                     "canary_series": [0.1, 0.12, 0.08], "baseline_series": [0.05, 0.04, 0.06]}]
    }))
    .unwrap();
    j.analysis.push(a);
    let c = super::canary_of(&j);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].verdict, "fail");
    assert_eq!(c[0].metrics[0].metric, "5xx_rate");
    assert_eq!(c[0].metrics[0].canary_mean, Some(0.1));
    assert_eq!(c[0].metrics[0].canary_series, [0.1, 0.12, 0.08]);
    assert_eq!(c[0].metrics[0].baseline_series, [0.05, 0.04, 0.06]);
    let doc = super::html_of(&j);
    assert!(
        doc.contains("5xx_rate"),
        "the analysis is not in the report"
    );
}
