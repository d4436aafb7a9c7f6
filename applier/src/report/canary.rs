//! The canary-analysis part of the HTML report: per metric the numbers it was decided on (U,
//! p, effect, means, samples) and, when the series were recorded, the canary's and the
//! baseline's samples as two lines of one small inline SVG chart.

use super::markup::Markup;
use super::model::{CanaryAnalysis, CanaryMetric};

fn num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x != 0.0 && (x.abs() < 0.001 || x.abs() >= 1e6) => format!("{x:.3e}"),
        Some(x) => format!("{}", (x * 10_000.0).round() / 10_000.0),
    }
}

pub(super) fn render(m: &mut Markup, a: &CanaryAnalysis) {
    m.open("div", &[("class", "analysis"), ("data-group", &a.group)]);
    m.elem(
        "h3",
        &[],
        &format!(
            "{}: {} against baseline {}: {}",
            a.group,
            a.canary.join(", "),
            if a.baseline.is_empty() {
                "none".to_string()
            } else {
                a.baseline.join(", ")
            },
            a.verdict
        ),
    );
    m.elem(
        "p",
        &[("class", "note")],
        &format!("window {} to {}", a.from, a.to),
    );
    if let Some(n) = &a.note {
        m.elem("p", &[("class", "note")], n);
    }
    for c in &a.metrics {
        m.open("div", &[("class", "metric"), ("data-metric", &c.metric)]);
        m.elem(
            "h4",
            &[],
            &format!(
                "{}: {}{}",
                c.metric,
                c.verdict,
                if c.shadow { " (shadow)" } else { "" }
            ),
        );
        m.open("dl", &[("class", "stats")]);
        for (k, v) in [
            ("test", c.test.clone()),
            (
                "samples (canary/baseline)",
                format!("{}/{}", c.canary_samples, c.baseline_samples),
            ),
            ("mean canary", num(c.canary_mean)),
            ("mean baseline", num(c.baseline_mean)),
            ("U", num(c.u)),
            ("p", num(c.p)),
            ("effect", num(c.effect)),
            ("ratio", num(c.ratio)),
            ("threshold", num(c.threshold)),
        ] {
            m.elem("dt", &[], k);
            m.elem("dd", &[], &v);
        }
        m.close();
        if !c.reason.is_empty() {
            m.elem("p", &[("class", "note")], &c.reason);
        }
        chart(m, c);
        m.close();
    }
    m.close();
}

/// The canary and baseline series as two lines on one scale.
fn chart(m: &mut Markup, c: &CanaryMetric) {
    let all: Vec<f64> = c
        .canary_series
        .iter()
        .chain(&c.baseline_series)
        .copied()
        .filter(|x| x.is_finite())
        .collect();
    if all.is_empty() {
        return;
    }
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let range = if hi > lo { hi - lo } else { 1.0 };
    let (x0, x1, y0, y1) = (40.0, 310.0, 10.0, 110.0);
    let points = |v: &[f64]| -> String {
        let n = v.len().max(2) - 1;
        v.iter()
            .enumerate()
            .filter(|(_, y)| y.is_finite())
            .map(|(i, y)| {
                let x = x0 + (x1 - x0) * i as f64 / n as f64;
                let y = y1 - (y1 - y0) * (y - lo) / range;
                format!("{x:.1},{y:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let aria = format!(
        "{}: canary {} samples, baseline {} samples",
        c.metric,
        c.canary_series.len(),
        c.baseline_series.len()
    );
    m.open(
        "svg",
        &[
            ("class", "chart"),
            ("xmlns", "http://www.w3.org/2000/svg"),
            ("viewBox", "0 0 320 135"),
            ("role", "img"),
            ("aria-label", &aria),
        ],
    );
    m.void(
        "line",
        &[
            ("class", "axis"),
            ("x1", "40"),
            ("y1", "110"),
            ("x2", "310"),
            ("y2", "110"),
        ],
    );
    m.void(
        "line",
        &[
            ("class", "axis"),
            ("x1", "40"),
            ("y1", "10"),
            ("x2", "40"),
            ("y2", "110"),
        ],
    );
    m.elem(
        "text",
        &[("class", "tick"), ("x", "36"), ("y", "14")],
        &num(Some(hi)),
    );
    m.elem(
        "text",
        &[("class", "tick"), ("x", "36"), ("y", "110")],
        &num(Some(lo)),
    );
    for (series, cls) in [
        (&c.baseline_series, "baseline"),
        (&c.canary_series, "canary"),
    ] {
        if !series.is_empty() {
            m.void("polyline", &[("class", cls), ("points", &points(series))]);
        }
    }
    m.elem(
        "text",
        &[("class", "key canary"), ("x", "40"), ("y", "128")],
        "canary",
    );
    m.elem(
        "text",
        &[("class", "key baseline"), ("x", "110"), ("y", "128")],
        "baseline",
    );
    m.close();
}
