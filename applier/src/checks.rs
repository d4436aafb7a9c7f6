//! Health checks run against a freshly started instance: `http`, `logs` and `metrics`.
//!
//! Each check has its own timeout and yields pass, fail or inconclusive. Checks run in order
//! and the first one that does not pass stops the sequence ([`run_all`]). Inconclusive (no
//! data, e.g. no metrics yet) counts as a failure or a pass according to the environment's
//! policy. Checks that look at the host (logs) go through the [`Host`] trait, so they work
//! the same over every transport.

use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use model::service::checks::{
    CheckSpec, HttpCheck, InconclusivePolicy, JsonMatch, LogsCheck, MetricsCheck, MetricsSource,
};

use crate::config::CheckSettings;
use crate::host::Host;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    Inconclusive,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub outcome: Outcome,
    pub detail: String,
    pub elapsed_ms: u64,
    /// Whether this result lets the host pass, after the inconclusive policy.
    pub passed: bool,
}

/// What a check needs to know about the instance under test.
#[derive(Clone, Debug)]
pub struct CheckContext<'a> {
    pub host: &'a dyn Host,
    pub address: String,
    pub port: u16,
    /// The release (git commit) the host should be serving.
    pub release: String,
    pub service_name: String,
    /// When this instance was started.
    pub started_at: SystemTime,
    /// Its log file on the host, if the transport captured one.
    pub log_file: Option<String>,
    pub settings: &'a CheckSettings,
}

/// Runs the checks in order, stopping at the first that does not pass.
pub fn run_all(specs: &[CheckSpec], ctx: &CheckContext<'_>) -> Vec<CheckResult> {
    let mut out = Vec::new();
    for spec in specs {
        let r = run(spec, ctx);
        let stop = !r.passed;
        out.push(r);
        if stop {
            break;
        }
    }
    out
}

/// Runs one check.
pub fn run(spec: &CheckSpec, ctx: &CheckContext<'_>) -> CheckResult {
    let t0 = Instant::now();
    let (outcome, detail) = match spec {
        CheckSpec::Http(c) => http(c, ctx),
        CheckSpec::Logs(c) => logs(c, ctx),
        CheckSpec::Metrics(c) => metrics(c, ctx),
    };
    let policy = match spec {
        CheckSpec::Metrics(MetricsCheck {
            inconclusive: Some(p),
            ..
        }) => *p,
        _ => ctx.settings.inconclusive,
    };
    let passed = match outcome {
        Outcome::Pass => true,
        Outcome::Fail => false,
        Outcome::Inconclusive => policy == InconclusivePolicy::Pass,
    };
    CheckResult {
        name: spec.name(),
        outcome,
        detail,
        elapsed_ms: t0.elapsed().as_millis() as u64,
        passed,
    }
}

/// The placeholders of check templates and their values for this instance.
fn values(ctx: &CheckContext<'_>) -> Vec<(&'static str, String)> {
    let since = ctx
        .started_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    vec![
        ("release", ctx.release.clone()),
        ("host", ctx.host.name().to_string()),
        ("address", ctx.address.clone()),
        ("port", ctx.port.to_string()),
        ("instance", format!("{}:{}", ctx.address, ctx.port)),
        ("name", ctx.service_name.clone()),
        ("since", since.to_string()),
    ]
}

/// Substitutes the placeholders into a URL path or a query (not a shell command: those go
/// through [`crate::shell::fill`]).
fn subst(s: &str, ctx: &CheckContext<'_>) -> String {
    s.replace("{release}", &ctx.release)
        .replace("{host}", ctx.host.name())
        .replace("{address}", &ctx.address)
        .replace("{port}", &ctx.port.to_string())
        .replace("{instance}", &format!("{}:{}", ctx.address, ctx.port))
        .replace("{name}", &ctx.service_name)
}

fn agent(timeout: Duration) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build();
    ureq::Agent::new_with_config(config)
}

fn get_text(
    agent: &ureq::Agent,
    url: &str,
    query: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let mut req = agent.get(url);
    for (k, v) in query {
        req = req.query(*k, *v);
    }
    let mut resp = req.call().map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(16 << 20)
        .read_to_string()
        .map_err(|e| format!("GET {url}: reading body: {e}"))?;
    Ok((status, body))
}

fn http(c: &HttpCheck, ctx: &CheckContext<'_>) -> (Outcome, String) {
    let timeout = c.timeout.unwrap_or(ctx.settings.timeout).0;
    let url = format!("http://{}:{}{}", ctx.address, ctx.port, c.path);
    let (status, body) = match get_text(&agent(timeout), &url, &[]) {
        Ok(x) => x,
        Err(e) => return (Outcome::Fail, e),
    };
    if status != c.status {
        return (
            Outcome::Fail,
            format!(
                "GET {} returned {status}, expected {}: {}",
                c.path,
                c.status,
                snippet(&body)
            ),
        );
    }
    if let Some(needle) = &c.body_contains {
        let needle = subst(needle, ctx);
        if !body.contains(&needle) {
            return (
                Outcome::Fail,
                format!(
                    "GET {}: body does not contain {needle:?}: {}",
                    c.path,
                    snippet(&body)
                ),
            );
        }
    }
    if let Some(m) = &c.json {
        let v: Value = match serde_json::from_str(&body) {
            Ok(v) => v,
            Err(e) => {
                return (
                    Outcome::Fail,
                    format!("GET {}: body is not JSON ({e}): {}", c.path, snippet(&body)),
                );
            }
        };
        let Some(found) = v.pointer(&m.pointer) else {
            return (
                Outcome::Fail,
                format!("GET {}: no {} in {}", c.path, m.pointer, snippet(&body)),
            );
        };
        if let Some(expected) = &m.equals {
            let expected = match expected {
                Value::String(s) => Value::String(subst(s, ctx)),
                other => other.clone(),
            };
            if found != &expected {
                return (
                    Outcome::Fail,
                    format!(
                        "GET {}: {} is {found}, expected {expected}",
                        c.path, m.pointer
                    ),
                );
            }
        }
    }
    (Outcome::Pass, format!("GET {} -> {status}", c.path))
}

fn snippet(s: &str) -> String {
    let s = s.trim();
    if s.len() <= 200 {
        return s.to_string();
    }
    let mut end = 200;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Bunyan level number for a name or number.
pub fn level_number(s: &str) -> Option<u64> {
    Some(match s.trim().to_ascii_lowercase().as_str() {
        "trace" => 10,
        "debug" => 20,
        "info" => 30,
        "warn" => 40,
        "error" => 50,
        "fatal" => 60,
        "none" => u64::MAX,
        other => return other.parse().ok(),
    })
}

/// Finds the first offending line of a log: a bunyan entry at or above `min_level` or a line
/// containing one of `patterns`.
pub fn scan_log(text: &str, min_level: u64, patterns: &[String]) -> Option<String> {
    for line in text.lines() {
        if let Some(p) = patterns.iter().find(|p| line.contains(p.as_str())) {
            return Some(format!("matches {p:?}: {}", snippet(line)));
        }
        if min_level == u64::MAX {
            continue;
        }
        if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(line)
            && let Some(level) = o.get("level").and_then(Value::as_u64)
            && level >= min_level
        {
            return Some(format!("level {level}: {}", snippet(line)));
        }
    }
    None
}

fn logs(c: &LogsCheck, ctx: &CheckContext<'_>) -> (Outcome, String) {
    let Some(min_level) = level_number(&c.level) else {
        return (Outcome::Fail, format!("unknown log level {:?}", c.level));
    };
    if let Some(w) = c.wait {
        let until = ctx.started_at + w.0;
        if let Ok(d) = until.duration_since(SystemTime::now()) {
            std::thread::sleep(d);
        }
    }
    let text = if let Some(cmd) = &c.command {
        // Values reach the shell quoted, and as variables ($APPLIER_HOST, $APPLIER_SINCE, ...).
        let filled = crate::shell::fill(cmd, &values(ctx));
        let (cmd, env) = (filled.cmd, filled.env);
        let timeout = c.timeout.unwrap_or(ctx.settings.timeout).0;
        match ctx.host.exec(&cmd, &env, timeout) {
            Ok(out) if out.status == 0 => out.stdout,
            Ok(out) => {
                return (
                    Outcome::Inconclusive,
                    format!("{cmd:?} exited {}: {}", out.status, snippet(&out.stderr)),
                );
            }
            Err(e) => return (Outcome::Inconclusive, format!("{cmd:?}: {e}")),
        }
    } else {
        let Some(file) = &ctx.log_file else {
            return (
                Outcome::Inconclusive,
                "no log file for this start and no log command".into(),
            );
        };
        match ctx.host.read_file(file) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => return (Outcome::Inconclusive, format!("reading {file}: {e}")),
        }
    };
    match scan_log(&text, min_level, &c.patterns) {
        Some(bad) => (Outcome::Fail, bad),
        None => (
            Outcome::Pass,
            format!("{} log lines clean", text.lines().count()),
        ),
    }
}

fn metrics(c: &MetricsCheck, ctx: &CheckContext<'_>) -> (Outcome, String) {
    let source = match (c.source, &ctx.settings.prometheus, &ctx.settings.graphite) {
        (Some(s), _, _) => s,
        (None, Some(_), _) => MetricsSource::Prometheus,
        (None, None, Some(_)) => MetricsSource::Graphite,
        (None, None, None) => {
            return (
                Outcome::Inconclusive,
                "no metrics backend configured (checks.prometheus or checks.graphite)".into(),
            );
        }
    };
    let base = match (&c.url, source) {
        (Some(u), _) => u.clone(),
        (None, MetricsSource::Prometheus) => match &ctx.settings.prometheus {
            Some(u) => u.clone(),
            None => {
                return (
                    Outcome::Inconclusive,
                    "no Prometheus URL (checks.prometheus)".into(),
                );
            }
        },
        (None, MetricsSource::Graphite) => match &ctx.settings.graphite {
            Some(u) => u.clone(),
            None => {
                return (
                    Outcome::Inconclusive,
                    "no Graphite URL (checks.graphite)".into(),
                );
            }
        },
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
    let base = base.trim_end_matches('/').to_string();
    // The window starts at this instance's start: wait until it has passed.
    let until = ctx.started_at + c.window.0;
    if let Ok(d) = until.duration_since(SystemTime::now()) {
        std::thread::sleep(d);
    }
    let window = format!("{}s", c.window.0.as_secs().max(1));
    let query = subst(&template, ctx).replace("{window}", &window);
    let agent = agent(c.timeout.unwrap_or(ctx.settings.timeout).0);
    let value = match source {
        MetricsSource::Prometheus => {
            let url = format!("{base}/api/v1/query");
            match get_text(&agent, &url, &[("query", &query)]) {
                Ok((200, body)) => prometheus_value(&body),
                Ok((s, body)) => Err(format!("Prometheus returned {s}: {}", snippet(&body))),
                Err(e) => Err(e),
            }
        }
        MetricsSource::Graphite => {
            let url = format!("{base}/render");
            let from = format!("-{window}");
            match get_text(
                &agent,
                &url,
                &[("target", &query), ("from", &from), ("format", "json")],
            ) {
                Ok((200, body)) => graphite_value(&body),
                Ok((s, body)) => Err(format!("Graphite returned {s}: {}", snippet(&body))),
                Err(e) => Err(e),
            }
        }
    };
    match value {
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
    let v: Value =
        serde_json::from_str(body).map_err(|e| format!("Graphite answer is not JSON: {e}"))?;
    let series = v.as_array().ok_or("Graphite answer is not a list")?;
    let points: Vec<f64> = series
        .iter()
        .filter_map(|s| s["datapoints"].as_array())
        .flatten()
        .filter_map(|p| p.get(0).and_then(Value::as_f64))
        .filter(|x| x.is_finite())
        .collect();
    if points.is_empty() {
        return Ok(None);
    }
    Ok(Some(points.iter().sum::<f64>() / points.len() as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_scan_levels_and_patterns() {
        let log = "{\"level\":30,\"msg\":\"ok\"}\nplain text\n{\"level\":50,\"msg\":\"bad\"}\n";
        assert!(scan_log(log, 60, &[]).is_none());
        assert!(scan_log(log, 50, &[]).unwrap().contains("bad"));
        assert!(
            scan_log(log, u64::MAX, &["plain".into()])
                .unwrap()
                .contains("plain")
        );
        assert_eq!(level_number("warn"), Some(40));
        assert_eq!(level_number("55"), Some(55));
        assert_eq!(level_number("loud"), None);
    }

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

    /// A logs check's `command` gets the instance's values quoted and as variables: a host
    /// name that is shell text reaches it as data and runs nothing.
    #[test]
    fn a_logs_command_with_hostile_values_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("MARKER");
        let hostile = format!("h;touch {}", marker.display());
        let store: std::sync::Arc<dyn artifact::Store> =
            std::sync::Arc::new(artifact::store::fs::FsStore::open(dir.path().join("s")).unwrap());
        let cfg: crate::config::HostConfig = serde_json::from_value(serde_json::json!({
            "root": dir.path().join("root"),
            "address": "127.0.0.1"
        }))
        .unwrap();
        let host = crate::host::LocalHost::new(&hostile, &cfg, store);
        let settings = CheckSettings::default();
        let ctx = CheckContext {
            host: &host,
            address: "127.0.0.1".into(),
            port: 7231,
            release: "$(touch /nonexistent/x)".into(),
            service_name: format!("`touch {}`", marker.display()),
            started_at: SystemTime::UNIX_EPOCH,
            log_file: None,
            settings: &settings,
        };
        let spec: CheckSpec = serde_json::from_value(serde_json::json!({
            "type": "logs",
            "command": "echo {host} {name} {release}; echo \"$APPLIER_HOST\"; echo '{\"level\":50,\"msg\":\"x\"}' >&2",
        }))
        .unwrap();
        let r = run_all(&[spec], &ctx);
        assert!(r[0].passed, "{:?}", r[0]);
        assert!(!marker.exists(), "a hostile value ran a command");
    }
}
