//! Samples for the canary analysis: one series per host over a window, one point per step,
//! from Prometheus (`/api/v1/query_range`), Graphite (`/render` between two times) or the
//! host's log (offending lines per step). Points without a value (a ratio over no traffic,
//! a Graphite null) are dropped, so a host without traffic contributes no samples.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::logs::{count_by_time, level_number, read_log};
use super::metrics::{backend, graphite_points};
use super::{MetricsSource, agent, get_text, snippet};
use crate::config::CheckSettings;
use crate::config::analysis::{CanaryMetric, SampleSource};
use crate::host::Host;

/// One host as the samples see it.
#[derive(Clone, Copy)]
pub struct SampleHost<'a> {
    pub host: &'a dyn Host,
    pub address: &'a str,
    pub port: u16,
    /// The log of the instance running now.
    pub log: Option<&'a str>,
}

/// The window samples are read over.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub from: SystemTime,
    pub to: SystemTime,
    pub step: Duration,
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// `{host}`, `{address}`, `{port}`, `{instance}`, `{step}` substituted.
fn subst(q: &str, h: &SampleHost<'_>, step: Duration) -> String {
    q.replace("{host}", h.host.name())
        .replace("{address}", h.address)
        .replace("{port}", &h.port.to_string())
        .replace("{instance}", &format!("{}:{}", h.address, h.port))
        .replace("{step}", &format!("{}s", step.as_secs().max(1)))
}

/// The samples of one metric on one host over `w`.
pub fn read(
    m: &CanaryMetric,
    settings: &CheckSettings,
    h: &SampleHost<'_>,
    w: &Window,
) -> Result<Vec<f64>, String> {
    let timeout = settings.timeout.0;
    let source = match m.source {
        SampleSource::Logs => {
            let level = m.level.as_deref().unwrap_or("error");
            let min = level_number(level).ok_or_else(|| format!("unknown log level {level:?}"))?;
            let file = h.log.ok_or("no log file for the running instance")?;
            let text = read_log(h.host, file)?;
            return Ok(count_by_time(&text, min, &m.patterns, w.from, w.to, w.step));
        }
        SampleSource::Prometheus => MetricsSource::Prometheus,
        SampleSource::Graphite => MetricsSource::Graphite,
    };
    let (source, base) = backend(Some(source), m.url.as_deref(), settings)?;
    let query = subst(m.query.as_deref().unwrap_or_default(), h, w.step);
    let agent = agent(timeout);
    match source {
        MetricsSource::Prometheus => {
            let url = format!("{base}/api/v1/query_range");
            let (start, end) = (format!("{:.3}", unix(w.from)), format!("{:.3}", unix(w.to)));
            let step = format!("{:.3}", w.step.as_secs_f64());
            match get_text(
                &agent,
                &url,
                &[
                    ("query", &query),
                    ("start", &start),
                    ("end", &end),
                    ("step", &step),
                ],
            )? {
                (200, body) => prometheus_range(&body),
                (s, body) => Err(format!("Prometheus returned {s}: {}", snippet(&body))),
            }
        }
        MetricsSource::Graphite => {
            let url = format!("{base}/render");
            let from = format!("{}", unix(w.from) as u64);
            let until = format!("{}", unix(w.to) as u64);
            match get_text(
                &agent,
                &url,
                &[
                    ("target", &query),
                    ("from", &from),
                    ("until", &until),
                    ("format", "json"),
                ],
            )? {
                (200, body) => graphite_points(&body),
                (s, body) => Err(format!("Graphite returned {s}: {}", snippet(&body))),
            }
        }
    }
}

/// Every finite value of a range-query (matrix) answer.
pub fn prometheus_range(body: &str) -> Result<Vec<f64>, String> {
    let v: Value =
        serde_json::from_str(body).map_err(|e| format!("Prometheus answer is not JSON: {e}"))?;
    if v.get("status").and_then(Value::as_str) != Some("success") {
        return Err(format!("Prometheus query failed: {}", snippet(body)));
    }
    let data = &v["data"];
    if data["resultType"].as_str() != Some("matrix") {
        return Err(format!(
            "expected a matrix from query_range, got {:?}",
            data["resultType"]
        ));
    }
    Ok(data["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["values"].as_array())
        .flatten()
        .filter_map(|p| p[1].as_str().and_then(|s| s.parse::<f64>().ok()))
        .filter(|x| x.is_finite())
        .collect())
}

/// The samples of one metric over several hosts, pooled; hosts that could not be read are
/// named in the error (a side with a host unread is not compared on partial data).
pub fn read_side(
    m: &CanaryMetric,
    settings: &CheckSettings,
    hosts: &[SampleHost<'_>],
    w: &Window,
) -> Result<Vec<f64>, String> {
    let mut all = Vec::new();
    let mut errs = Vec::new();
    for h in hosts {
        match read(m, settings, h, w) {
            Ok(v) => all.extend(v),
            Err(e) => errs.push(format!("{}: {e}", h.host.name())),
        }
    }
    if errs.is_empty() {
        Ok(all)
    } else {
        Err(errs.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_answers() {
        let body = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"0.1"],[2,"NaN"],[3,"0.2"]]},{"metric":{},"values":[[1,"0"]]}]}}"#;
        assert_eq!(prometheus_range(body).unwrap(), vec![0.1, 0.2, 0.0]);
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(prometheus_range(vector).is_err());
        let empty = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(prometheus_range(empty).unwrap().is_empty());
    }
}
