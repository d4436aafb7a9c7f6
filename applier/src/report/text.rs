//! `applier show <deploy-id>`: the steps of one deploy as text, from the same model as the
//! HTML report.

use std::fmt::Write;

use super::model::{Report, check_outcome, fmt_ms, short};

/// The deploy as plain text: a header, then each host's steps with when they ended and how long
/// they took, its checks, then the rollback path and the storage guard.
pub fn render(r: &Report) -> String {
    let s = &r.summary;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} {} to {}: {}",
        s.kind.as_str(),
        s.id,
        s.env,
        s.status.as_str()
    );
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.iter().map(|c| short(c)).collect::<Vec<_>>().join(",")
        }
    };
    let _ = writeln!(o, "  artifact  {}", s.artifact.as_deref().unwrap_or("-"));
    let _ = writeln!(o, "  commits   {} -> {}", list(&s.from), list(&s.to));
    let _ = writeln!(o, "  type      {}", s.deploy_type.as_deref().unwrap_or("-"));
    let _ = writeln!(o, "  who       {}", s.who);
    let _ = writeln!(
        o,
        "  why       {}",
        if s.reason.is_empty() { "-" } else { &s.reason }
    );
    let _ = writeln!(
        o,
        "  started   {}  finished {}  took {}",
        s.started_at,
        s.finished_at.as_deref().unwrap_or("-"),
        s.duration_ms.map(fmt_ms).unwrap_or_else(|| "-".into())
    );
    let _ = writeln!(
        o,
        "  hosts     touched {}  changed {}",
        if s.touched.is_empty() {
            "-".into()
        } else {
            s.touched.join(",")
        },
        if s.changed.is_empty() {
            "-".into()
        } else {
            s.changed.join(",")
        }
    );
    if let Some(f) = &r.failure {
        let _ = writeln!(o, "  stopped   {f}");
    }
    for b in &r.deploy_steps {
        let _ = writeln!(
            o,
            "  {:<16} {} {}",
            b.step.as_str(),
            b.outcome.as_str(),
            b.detail.as_deref().unwrap_or("")
        );
    }
    for h in &r.hosts {
        let _ = writeln!(
            o,
            "\n{} ({}) {} -> {}: {}{}",
            h.host,
            h.group,
            h.from.as_deref().map(short).unwrap_or("-"),
            short(&h.to),
            label(h.phase),
            h.detail
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        );
        for b in &h.bars {
            let _ = writeln!(
                o,
                "  {:>10}  {:<10} {:>9}  {:<14} {}",
                format!("+{}", fmt_ms(b.start_ms)),
                b.step.as_str(),
                b.dur_ms.map(fmt_ms).unwrap_or_else(|| "-".into()),
                b.outcome.as_str(),
                b.detail.as_deref().unwrap_or("")
            );
        }
        for c in &h.checks {
            let _ = writeln!(
                o,
                "  check {:<24} {:<12} {:>8}  {}",
                c.name,
                check_outcome(c.outcome),
                fmt_ms(c.elapsed_ms),
                c.detail
            );
        }
    }
    if let Some(rb) = &r.rollback {
        let _ = writeln!(o, "\nrollback path");
        for h in &rb.hosts {
            let _ = writeln!(
                o,
                "  {} {} -> {} {}",
                h.host,
                short(&h.off),
                h.back_to.as_deref().map(short).unwrap_or("(stopped)"),
                if h.ok { "restored" } else { "NOT restored" }
            );
        }
    }
    if !r.schema.findings.is_empty() || !r.schema.acks.is_empty() {
        let _ = writeln!(o, "\nstorage guard");
        for f in &r.schema.findings {
            let _ = writeln!(o, "  {f}");
        }
        for a in &r.schema.acks {
            let _ = writeln!(o, "  ack {a}");
        }
    }
    for a in &r.canary {
        let _ = writeln!(o, "\ncanary analysis {}: {}", a.group, a.verdict);
        for m in &a.metrics {
            let _ = writeln!(
                o,
                "  {} {} samples {}/{} U {} p {} effect {}",
                m.metric,
                m.verdict,
                m.canary_samples,
                m.baseline_samples,
                opt(m.u),
                opt(m.p),
                opt(m.effect)
            );
        }
    }
    terminal_safe(&o)
}

/// Control characters of records (an escape sequence in a log line) as U+FFFD, so text
/// output cannot drive the reader's terminal; newlines and tabs stay.
pub fn terminal_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if (c.is_control() && c != '\n' && c != '\t') || c == '\u{9b}' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x}")).unwrap_or_else(|| "-".into())
}

fn label(p: crate::records::HostPhase) -> String {
    serde_json::to_value(p)
        .ok()
        .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
        .unwrap_or_default()
}
