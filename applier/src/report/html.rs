//! The deploy report as one self-contained HTML file: inline CSS and SVG, no script, no
//! network, no external asset. Sections: summary, why it stopped, a timeline per host (a bar
//! per step, coloured by outcome, and the steps as a table), every check with its numbers,
//! canary analyses with their series, the rollback path, the storage guard's findings and
//! acknowledgements, and the deploy's own steps. Readable printed (`@media print`) and on a
//! narrow screen (tables fold into rows).
//!
//! Every value from the journal is escaped ([`super::markup`]); the document is also
//! well-formed XML, which the tests check with a parser.

use super::markup::Markup;
use super::model::{Bar, HostTimeline, Report, check_outcome, fmt_ms, short};

const CSS: &str = include_str!("report.css");

/// The report as a document.
pub fn render(r: &Report) -> String {
    let s = &r.summary;
    let mut m = Markup::default();
    m.raw("<!DOCTYPE html>\n");
    m.open(
        "html",
        &[("lang", "en"), ("xmlns", "http://www.w3.org/1999/xhtml")],
    );
    m.open("head", &[]);
    m.void("meta", &[("charset", "utf-8")]);
    m.void(
        "meta",
        &[
            ("name", "viewport"),
            ("content", "width=device-width, initial-scale=1"),
        ],
    );
    m.elem(
        "title",
        &[],
        &format!(
            "{} {} to {}: {}",
            s.kind.as_str(),
            s.id,
            s.env,
            label(s.status.as_str())
        ),
    );
    m.open("style", &[]).raw(CSS).close();
    m.close(); // head
    m.open("body", &[]);
    m.open("header", &[]);
    m.open("h1", &[]);
    m.text(&format!("{} ", capital(s.kind.as_str())));
    m.elem("span", &[("id", "deploy-id")], &s.id);
    m.text(" to ");
    m.elem("span", &[("id", "env")], &s.env);
    m.close();
    let cls = format!("status status-{}", s.status.as_str());
    m.elem(
        "p",
        &[("id", "outcome"), ("class", &cls)],
        &label(s.status.as_str()),
    );
    m.close(); // header
    m.open("main", &[]);
    summary(&mut m, r);
    if let Some(f) = &r.failure {
        m.open("section", &[("id", "failure")]);
        m.elem("h2", &[], "Why it stopped");
        m.elem("p", &[("id", "failure-reason")], f);
        m.close();
    }
    timeline(&mut m, r);
    checks(&mut m, r);
    if !r.canary.is_empty() {
        m.open("section", &[("id", "canary")]);
        m.elem("h2", &[], "Canary analysis");
        for a in &r.canary {
            super::canary::render(&mut m, a);
        }
        m.close();
    }
    rollback(&mut m, r);
    schema(&mut m, r);
    deploy_steps(&mut m, r);
    m.close(); // main
    m.open("footer", &[]);
    m.text(&format!(
        "From the journal envs/{}/deploys/{}.json, by applier {}.",
        s.env,
        s.id,
        crate::VERSION
    ));
    m.close();
    m.close(); // body
    m.close(); // html
    let mut out = m.finish();
    out.push('\n');
    out
}

fn label(s: &str) -> String {
    s.replace('_', " ")
}

fn capital(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// One `<dt>`/`<dd>` pair.
fn row(m: &mut Markup, id: &'static str, k: &str, v: &str) {
    m.elem("dt", &[], k);
    m.elem("dd", &[("id", id)], v);
}

fn releases(v: &[String]) -> String {
    if v.is_empty() {
        "nothing".into()
    } else {
        v.iter().map(|c| short(c)).collect::<Vec<_>>().join(", ")
    }
}

fn summary(m: &mut Markup, r: &Report) {
    let s = &r.summary;
    m.open("section", &[("id", "summary")]);
    m.elem("h2", &[], "Summary");
    m.open("dl", &[]);
    row(m, "sum-env", "Environment", &s.env);
    row(m, "sum-kind", "Kind", s.kind.as_str());
    row(
        m,
        "sum-type",
        "Type",
        s.deploy_type.as_deref().unwrap_or("-"),
    );
    row(m, "sum-outcome", "Outcome", &label(s.status.as_str()));
    row(
        m,
        "sum-artifact",
        "Artifact",
        s.artifact.as_deref().unwrap_or("-"),
    );
    m.elem("dt", &[], "Commits");
    m.open("dd", &[("id", "sum-commits")]);
    m.elem("span", &[("title", &s.from.join(", "))], &releases(&s.from));
    m.text(" \u{2192} ");
    m.elem("span", &[("title", &s.to.join(", "))], &releases(&s.to));
    m.close();
    row(m, "sum-who", "Who", &s.who);
    row(
        m,
        "sum-why",
        "Why",
        if s.reason.is_empty() { "-" } else { &s.reason },
    );
    row(m, "sum-started", "Started", &s.started_at);
    row(
        m,
        "sum-finished",
        "Finished",
        s.finished_at.as_deref().unwrap_or("not finished"),
    );
    row(
        m,
        "sum-duration",
        "Duration",
        &s.duration_ms.map(fmt_ms).unwrap_or_else(|| "-".into()),
    );
    let hosts = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    row(m, "sum-touched", "Hosts touched", &hosts(&s.touched));
    row(m, "sum-changed", "Hosts changed", &hosts(&s.changed));
    if !s.needs_human.is_empty() {
        row(
            m,
            "sum-needs-human",
            "Need a human",
            &s.needs_human.join(", "),
        );
    }
    m.close(); // dl
    m.close();
}

fn timeline(m: &mut Markup, r: &Report) {
    let span = r.span_ms() as f64;
    m.open("section", &[("id", "timeline")]);
    m.elem("h2", &[], "Timeline");
    m.open("p", &[("class", "legend")]);
    for (cls, name) in [
        ("ok", "ok"),
        ("failed", "failed"),
        ("restore", "on the way back"),
        ("restore_failed", "failed on the way back"),
    ] {
        m.open("span", &[("class", "key")]);
        m.elem("span", &[("class", &format!("swatch {cls}"))], "");
        m.text(name);
        m.close();
    }
    m.text(&format!(" Axis: 0 to {}.", fmt_ms(span as u64)));
    m.close();
    for h in &r.hosts {
        host_block(m, h, span);
    }
    m.close();
}

fn host_block(m: &mut Markup, h: &HostTimeline, span: f64) {
    m.open("div", &[("class", "host"), ("data-host", &h.host)]);
    m.open("h3", &[("class", "host-head")]);
    m.elem("span", &[("class", "host-name")], &h.host);
    m.text(" ");
    m.elem("span", &[("class", "group")], &h.group);
    m.text(" ");
    let phase = serde_json::to_value(h.phase)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    m.elem(
        "span",
        &[
            ("class", &format!("phase phase-{phase}")),
            ("data-phase", &phase),
        ],
        &label(&phase),
    );
    m.close();
    m.open("p", &[("class", "host-releases")]);
    m.text(&format!(
        "{} \u{2192} {}",
        h.from.as_deref().map(short).unwrap_or("nothing"),
        short(&h.to)
    ));
    m.close();
    if let Some(d) = &h.detail {
        m.elem("p", &[("class", "host-detail")], d);
    }
    if !h.bars.is_empty() {
        let aria = format!("{}: {} steps", h.host, h.bars.len());
        m.open(
            "svg",
            &[
                ("class", "track"),
                ("xmlns", "http://www.w3.org/2000/svg"),
                ("viewBox", "0 0 1000 20"),
                ("preserveAspectRatio", "none"),
                ("role", "img"),
                ("aria-label", &aria),
            ],
        );
        m.void(
            "rect",
            &[
                ("class", "lane"),
                ("x", "0"),
                ("y", "0"),
                ("width", "1000"),
                ("height", "20"),
            ],
        );
        for b in &h.bars {
            bar_rect(m, b, span);
        }
        m.close();
        steps_table(m, &h.bars);
    }
    m.close();
}

fn bar_rect(m: &mut Markup, b: &Bar, span: f64) {
    let x = b.start_ms as f64 / span * 1000.0;
    let w = (b.dur_ms.unwrap_or(0) as f64 / span * 1000.0).max(3.0);
    let x = x.min(1000.0 - w);
    let cls = format!("bar {}", b.outcome.as_str());
    m.open(
        "rect",
        &[
            ("class", &cls),
            ("x", &format!("{x:.1}")),
            ("y", "2"),
            ("width", &format!("{w:.1}")),
            ("height", "16"),
        ],
    );
    m.elem("title", &[], &format!("{} {}", b.step, dur(b)));
    m.close();
}

fn dur(b: &Bar) -> String {
    b.dur_ms.map(fmt_ms).unwrap_or_else(|| "\u{2014}".into())
}

fn steps_table(m: &mut Markup, bars: &[Bar]) {
    m.open("table", &[("class", "steps")]);
    m.open("thead", &[]).open("tr", &[]);
    for h in ["step", "at", "took", "result", "detail"] {
        m.elem("th", &[], h);
    }
    m.close().close();
    m.open("tbody", &[]);
    for b in bars {
        let o = b.outcome.as_str();
        m.open(
            "tr",
            &[
                ("class", &format!("step {o}")),
                ("data-step", b.step.as_str()),
                ("data-outcome", o),
            ],
        );
        m.elem("td", &[("data-label", "step")], b.step.as_str());
        m.elem(
            "td",
            &[("data-label", "at")],
            &format!("+{}", fmt_ms(b.start_ms)),
        );
        m.elem("td", &[("data-label", "took")], &dur(b));
        m.elem(
            "td",
            &[("data-label", "result"), ("class", "result")],
            &label(o),
        );
        m.open("td", &[("data-label", "detail"), ("class", "detail")]);
        if let Some(d) = &b.detail {
            m.elem("code", &[], d);
        }
        m.close();
        m.close();
    }
    m.close().close();
}

fn checks(m: &mut Markup, r: &Report) {
    m.open("section", &[("id", "checks")]);
    m.elem("h2", &[], "Checks");
    let mut any = false;
    for h in &r.hosts {
        if h.checks.is_empty() && h.failed_checks.is_empty() {
            continue;
        }
        any = true;
        m.open("div", &[("class", "host-checks"), ("data-host", &h.host)]);
        m.elem("h3", &[], &h.host);
        for f in &h.failed_checks {
            m.open("p", &[("class", "failed-check")]);
            m.elem("strong", &[], "failed: ");
            m.elem("code", &[], f);
            m.close();
        }
        if !h.checks.is_empty() {
            m.elem("p", &[("class", "note")], "Last check run:");
            m.open("table", &[("class", "checks")]);
            m.open("thead", &[]).open("tr", &[]);
            for t in ["check", "outcome", "took", "numbers"] {
                m.elem("th", &[], t);
            }
            m.close().close();
            m.open("tbody", &[]);
            for c in &h.checks {
                let o = check_outcome(c.outcome);
                let cls = if c.passed { "check pass" } else { "check fail" };
                m.open("tr", &[("class", cls), ("data-outcome", o)]);
                m.elem("td", &[("data-label", "check")], &c.name);
                let shown = if c.passed || o == "fail" {
                    o.to_string()
                } else {
                    format!("{o} (counted as a failure)")
                };
                m.elem(
                    "td",
                    &[("data-label", "outcome"), ("class", "result")],
                    &shown,
                );
                m.elem("td", &[("data-label", "took")], &fmt_ms(c.elapsed_ms));
                m.open("td", &[("data-label", "numbers"), ("class", "detail")]);
                m.elem("code", &[], &c.detail);
                m.close();
                m.close();
            }
            m.close().close();
        }
        m.close();
    }
    if !any {
        m.elem("p", &[("class", "note")], "No check ran.");
    }
    m.close();
}

fn rollback(m: &mut Markup, r: &Report) {
    let Some(rb) = &r.rollback else { return };
    m.open("section", &[("id", "rollback")]);
    m.elem("h2", &[], "Rollback path");
    if let Some(reason) = &rb.reason {
        m.elem("p", &[("class", "note")], reason);
    }
    m.open("ol", &[]);
    for h in &rb.hosts {
        let cls = if h.ok {
            "restored ok"
        } else {
            "restored failed"
        };
        m.open("li", &[("class", cls), ("data-host", &h.host)]);
        m.elem("strong", &[], &h.host);
        m.text(&format!(
            ": {} \u{2192} {} ({})",
            short(&h.off),
            h.back_to
                .as_deref()
                .map(short)
                .unwrap_or("stopped, nothing to go back to"),
            if h.ok {
                "restored"
            } else {
                "NOT restored: needs a human"
            }
        ));
        if let Some(d) = &h.detail {
            m.open("div", &[("class", "detail")]);
            m.elem("code", &[], d);
            m.close();
        }
        m.close();
    }
    m.close();
    m.close();
}

fn schema(m: &mut Markup, r: &Report) {
    m.open("section", &[("id", "schema")]);
    m.elem("h2", &[], "Storage schema");
    let s = &r.schema;
    m.elem(
        "p",
        &[],
        &format!(
            "Deploy type: {}.",
            r.summary.deploy_type.as_deref().unwrap_or("-")
        ),
    );
    if !s.recorded {
        m.elem(
            "p",
            &[("class", "note")],
            "The journal holds no storage-guard record (no findings, or a journal from before it recorded them).",
        );
    }
    for (title, items, cls) in [
        ("Findings", &s.findings, "findings"),
        ("Acknowledgements", &s.acks, "acks"),
    ] {
        if items.is_empty() {
            continue;
        }
        m.elem("h3", &[], title);
        m.open("ul", &[("class", cls)]);
        for i in items {
            m.open("li", &[]).elem("code", &[], i).close();
        }
        m.close();
    }
    m.close();
}

fn deploy_steps(m: &mut Markup, r: &Report) {
    if r.deploy_steps.is_empty() {
        return;
    }
    m.open("section", &[("id", "deploy-steps")]);
    m.elem("h2", &[], "Deploy steps");
    steps_table(m, &r.deploy_steps);
    m.close();
}
