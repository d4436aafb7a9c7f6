//! The `metrics` check (one reading of this host over a window after its start, from
//! Prometheus `/api/v1/query` or Graphite `/render`, against a threshold; no data is
//! inconclusive), and [`read_value`], the same reading for any query, which the watch uses.

use serde_json::Value;

use super::{CheckContext, MetricsCheck, MetricsSource, Outcome, agent, get_text, snippet};
use crate::config::CheckSettings;

/// The metrics backend and base URL a query goes to: the check's own, else the env's.
pub fn backend(
    source: Option<MetricsSource>,
    url: Option<&str>,
    settings: &CheckSettings,
) -> Result<(MetricsSource, String), String> {
    let source = match (source, &settings.prometheus, &settings.graphite) {
        (Some(s), _, _) => s,
        (None, Some(_), _) => MetricsSource::Prometheus,
        (None, None, Some(_)) => MetricsSource::Graphite,
        (None, None, None) => {
            return Err(
                "no metrics backend configured (checks.prometheus or checks.graphite)".into(),
            );
        }
    };
    let base = match (url, source) {
        (Some(u), _) => u.to_string(),
        (None, MetricsSource::Prometheus) => settings
            .prometheus
            .clone()
            .ok_or("no Prometheus URL (checks.prometheus)")?,
        (None, MetricsSource::Graphite) => settings
            .graphite
            .clone()
            .ok_or("no Graphite URL (checks.graphite)")?,
    };
    Ok((source, base.trim_end_matches('/').to_string()))
}

/// One reading of `query` over the last `window_s` seconds: Prometheus's largest sample, or
/// Graphite's mean of the non-null points. `Ok(None)`: no data.
pub fn read_value(
    source: MetricsSource,
    base: &str,
    query: &str,
    window_s: u64,
    timeout: std::time::Duration,
) -> Result<Option<f64>, String> {
    let agent = agent(timeout);
    match source {
        MetricsSource::Prometheus => {
            let url = format!("{base}/api/v1/query");
            match get_text(&agent, &url, &[("query", query)]) {
                Ok((200, body)) => prometheus_value(&body),
                Ok((s, body)) => Err(format!("Prometheus returned {s}: {}", snippet(&body))),
                Err(e) => Err(e),
            }
        }
        MetricsSource::Graphite => {
            let url = format!("{base}/render");
            let from = format!("-{}s", window_s.max(1));
            match get_text(
                &agent,
                &url,
                &[("target", query), ("from", &from), ("format", "json")],
            ) {
                Ok((200, body)) => graphite_value(&body),
                Ok((s, body)) => Err(format!("Graphite returned {s}: {}", snippet(&body))),
                Err(e) => Err(e),
            }
        }
    }
}

pub(super) fn metrics(c: &MetricsCheck, ctx: &CheckContext<'_>) -> (Outcome, String) {
    let (source, base) = match backend(c.source, c.url.as_deref(), ctx.settings) {
        Ok(x) => x,
        Err(e) => return (Outcome::Inconclusive, e),
    };
    let template = match (&c.query, &c.metric, source) {
        (Some(q), _, _) => q.clone(),
        (None, Some(m), MetricsSource::Prometheus) => {
            let l = &c.status_label;
            format!(
                "sum(rate({m}{{instance=\"{{instance}}\",{l}=~\"5..\"}}[{{window}}])) / sum(rate({m}{{instance=\"{{instance}}\"}}[{{window}}]))"
            )
        }
        _ => {
            return (
                Outcome::Fail,
                "metrics check needs a query (or, for Prometheus, a metric)".into(),
            );
        }
    };
    // The window starts at this instance's start: wait until it has passed.
    if let Err(e) = ctx.wait_until(ctx.started_at + c.window.0) {
        return (Outcome::Fail, e);
    }
    let secs = c.window.0.as_secs().max(1);
    let query = ctx
        .subst(&template)
        .replace("{window}", &format!("{secs}s"));
    let timeout = c.timeout.unwrap_or(ctx.settings.timeout).0;
    match read_value(source, &base, &query, secs, timeout) {
        Err(e) => (Outcome::Inconclusive, e),
        Ok(None) => (Outcome::Inconclusive, format!("no data for {query:?}")),
        Ok(Some(v)) if v > c.threshold => (
            Outcome::Fail,
            format!("{query:?} = {v} over the threshold {}", c.threshold),
        ),
        Ok(Some(v)) => (
            Outcome::Pass,
            format!("{query:?} = {v} (threshold {})", c.threshold),
        ),
    }
}

/// The largest sample of an instant-query answer; `None` when there is no (finite) sample.
pub fn prometheus_value(body: &str) -> Result<Option<f64>, String> {
    let v: Value =
        serde_json::from_str(body).map_err(|e| format!("Prometheus answer is not JSON: {e}"))?;
    if v.get("status").and_then(Value::as_str) != Some("success") {
        return Err(format!("Prometheus query failed: {}", snippet(body)));
    }
    let data = &v["data"];
    let samples: Vec<&Value> = match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .map(|a| a.iter().map(|s| &s["value"][1]).collect())
            .unwrap_or_default(),
        Some("scalar") => vec![&data["result"][1]],
        other => return Err(format!("unsupported Prometheus result type {other:?}")),
    };
    Ok(samples
        .into_iter()
        .filter_map(|s| s.as_str().and_then(|s| s.parse::<f64>().ok()))
        .filter(|x| x.is_finite())
        .reduce(f64::max))
}

/// The mean of every non-null datapoint of a render answer; `None` when there is none.
pub fn graphite_value(body: &str) -> Result<Option<f64>, String> {
    let points = graphite_points(body)?;
    if points.is_empty() {
        return Ok(None);
    }
    Ok(Some(points.iter().sum::<f64>() / points.len() as f64))
}

/// Every non-null, finite datapoint of a render answer, every series in turn.
pub fn graphite_points(body: &str) -> Result<Vec<f64>, String> {
    let v: Value =
        serde_json::from_str(body).map_err(|e| format!("Graphite answer is not JSON: {e}"))?;
    let series = v.as_array().ok_or("Graphite answer is not a list")?;
    Ok(series
        .iter()
        .filter_map(|s| s["datapoints"].as_array())
        .flatten()
        .filter_map(|p| p.get(0).and_then(Value::as_f64))
        .filter(|x| x.is_finite())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_answers() {
        let p = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.25"]},{"metric":{},"value":[1,"0.5"]}]}}"#;
        assert_eq!(prometheus_value(p).unwrap(), Some(0.5));
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(prometheus_value(empty).unwrap(), None);
        let nan = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#;
        assert_eq!(prometheus_value(nan).unwrap(), None);
        assert!(prometheus_value(r#"{"status":"error"}"#).is_err());
        let g = r#"[{"target":"x","datapoints":[[1.0,1],[null,2],[3.0,3]]}]"#;
        assert_eq!(graphite_value(g).unwrap(), Some(2.0));
        assert_eq!(
            graphite_value(r#"[{"target":"x","datapoints":[[null,1]]}]"#).unwrap(),
            None
        );
    }
}
