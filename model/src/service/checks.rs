//! The checks a service declares in `deploy/service.yaml` (and operators add in the inventory's
//! `checks.extra`): `http`, `logs` and `metrics`. These are the written form only; the applier
//! runs them.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Dur;

/// One check, as written in `deploy/service.yaml` or the inventory's `checks.extra`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum CheckSpec {
    Http(HttpCheck),
    Logs(LogsCheck),
    Metrics(MetricsCheck),
}

/// `GET http://<address>:<port><path>`: status, then optional body substring and JSON match.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    #[serde(default)]
    pub name: Option<String>,
    pub path: String,
    #[serde(default = "default_status", alias = "expect_status")]
    pub status: u16,
    #[serde(default)]
    pub body_contains: Option<String>,
    /// JSON pointer match on the body; `equals` strings may use `{release}`, `{host}`, `{port}`.
    #[serde(default)]
    pub json: Option<JsonMatch>,
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// `gate` (default): a failure stops the host; `shadow`: evaluated and recorded, never
    /// gating.
    #[serde(default, skip_serializing_if = "CheckMode::is_gate")]
    pub mode: CheckMode,
    /// What an inconclusive result (no data) counts as: `fail`, `pass`, or `retry` until
    /// `deadline`; default: the env's `checks.inconclusive`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inconclusive: Option<InconclusivePolicy>,
    /// With `inconclusive: retry`: how long to keep evaluating (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Dur>,
}

fn default_status() -> u16 {
    200
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonMatch {
    pub pointer: String,
    #[serde(default)]
    pub equals: Option<Value>,
}

/// Scans the service's log since this start: bunyan entries at or above `level`, and lines
/// containing any of `patterns`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsCheck {
    #[serde(default)]
    pub name: Option<String>,
    /// `trace`, `debug`, `info`, `warn`, `error`, `fatal` or a number; `none` to skip levels.
    #[serde(default = "default_level", deserialize_with = "de_scalar")]
    pub level: String,
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Read the log from this command's stdout instead of the log file
    /// (`journalctl -u {name} --since @{since} -o cat`); `{since}` is the start time in
    /// seconds since the epoch, `{name}` the service name, `{release}` the release.
    #[serde(default)]
    pub command: Option<String>,
    /// Let the service run this long before scanning.
    #[serde(default)]
    pub wait: Option<Dur>,
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// `gate` (default): a failure stops the host; `shadow`: evaluated and recorded, never
    /// gating.
    #[serde(default, skip_serializing_if = "CheckMode::is_gate")]
    pub mode: CheckMode,
    /// What an inconclusive result (no data) counts as: `fail`, `pass`, or `retry` until
    /// `deadline`; default: the env's `checks.inconclusive`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inconclusive: Option<InconclusivePolicy>,
    /// With `inconclusive: retry`: how long to keep evaluating (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Dur>,
}

fn default_level() -> String {
    "error".into()
}

fn de_scalar<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "expected a level, got {other}"
        ))),
    }
}

/// The 5xx rate (or any error ratio) of this host over a window after start, from
/// Prometheus (`/api/v1/query`) or Graphite (`/render?format=json`). Above `threshold` fails;
/// no data is inconclusive.
///
/// Either a full `query`, or (Prometheus) a counter `metric` with a `status_label`: the query
/// is then the share of 5xx answers of this instance over the window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsCheck {
    #[serde(default)]
    pub name: Option<String>,
    /// Defaults to whichever of `checks.prometheus` / `checks.graphite` is configured.
    #[serde(default)]
    pub source: Option<MetricsSource>,
    /// Base URL; defaults to the inventory's `checks.prometheus` / `checks.graphite`.
    #[serde(default)]
    pub url: Option<String>,
    /// PromQL expression or Graphite target; `{host}`, `{address}`, `{port}`, `{instance}`
    /// (`address:port`), `{window}` (seconds, e.g. `60s`) substituted.
    #[serde(default)]
    pub query: Option<String>,
    /// A request counter with a status label (Prometheus).
    #[serde(default)]
    pub metric: Option<String>,
    #[serde(default = "default_status_label")]
    pub status_label: String,
    #[serde(default = "default_window")]
    pub window: Dur,
    #[serde(alias = "max_5xx_ratio")]
    pub threshold: f64,
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// `gate` (default): a failure stops the host; `shadow`: evaluated and recorded, never
    /// gating.
    #[serde(default, skip_serializing_if = "CheckMode::is_gate")]
    pub mode: CheckMode,
    /// What an inconclusive result (no data) counts as: `fail`, `pass`, or `retry` until
    /// `deadline`; default: the env's `checks.inconclusive`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inconclusive: Option<InconclusivePolicy>,
    /// With `inconclusive: retry`: how long to keep evaluating (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Dur>,
}

fn default_status_label() -> String {
    "status".into()
}

fn default_window() -> Dur {
    Dur(Duration::from_secs(60))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsSource {
    Prometheus,
    Graphite,
}

/// What an inconclusive check (no data, e.g. no metrics yet) means for the host. Whatever it
/// counts as, the result stays `inconclusive` in the journal and the summary names it: a check
/// that never got data is never reported as a pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InconclusivePolicy {
    #[default]
    Fail,
    Pass,
    /// Evaluate again until the check's deadline; still inconclusive then: fail.
    Retry,
}

/// Whether a check gates the host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckMode {
    #[default]
    Gate,
    /// Evaluated and recorded, never gating: for tuning a new check on real deploys.
    Shadow,
}

impl CheckMode {
    pub fn is_gate(&self) -> bool {
        *self == CheckMode::Gate
    }
}

/// The settings every check kind shares.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CheckCommon {
    pub mode: CheckMode,
    pub inconclusive: Option<InconclusivePolicy>,
    pub deadline: Option<Dur>,
    pub timeout: Option<Dur>,
}

impl CheckSpec {
    /// The kind, as `checks.disable` and `checks.quorum.checks` name it.
    pub fn kind(&self) -> &'static str {
        match self {
            CheckSpec::Http(_) => "http",
            CheckSpec::Logs(_) => "logs",
            CheckSpec::Metrics(_) => "metrics",
        }
    }

    /// Mode, no-data policy, deadline and timeout.
    pub fn common(&self) -> CheckCommon {
        let (mode, inconclusive, deadline, timeout) = match self {
            CheckSpec::Http(c) => (c.mode, c.inconclusive, c.deadline, c.timeout),
            CheckSpec::Logs(c) => (c.mode, c.inconclusive, c.deadline, c.timeout),
            CheckSpec::Metrics(c) => (c.mode, c.inconclusive, c.deadline, c.timeout),
        };
        CheckCommon {
            mode,
            inconclusive,
            deadline,
            timeout,
        }
    }

    /// What a well-formed check can still get wrong.
    pub fn problem(&self) -> Option<String> {
        let c = self.common();
        if c.deadline.is_some() && c.inconclusive != Some(InconclusivePolicy::Retry) {
            return Some(format!(
                "check {}: `deadline` only applies with `inconclusive: retry`",
                self.name()
            ));
        }
        None
    }

    pub fn name(&self) -> String {
        match self {
            CheckSpec::Http(c) => c.name.clone().unwrap_or_else(|| format!("http {}", c.path)),
            CheckSpec::Logs(c) => c
                .name
                .clone()
                .unwrap_or_else(|| format!("logs >= {}", c.level)),
            CheckSpec::Metrics(c) => c.name.clone().unwrap_or_else(|| {
                format!(
                    "metrics {}",
                    c.metric.as_deref().or(c.query.as_deref()).unwrap_or("?")
                )
            }),
        }
    }
}
