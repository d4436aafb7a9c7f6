//! Ops-side settings of the deciding checks (`envs.<env>.checks`): the canary analysis
//! against a baseline (`canary`), the k-of-n rule for host-level metric failures (`quorum`)
//! and the fleet-wide watch during the whole rollout (`watch`). Every type refuses unknown
//! keys.

use serde::{Deserialize, Serialize};

use super::{Dur, secs};
use crate::analysis::{Rule, Worse};
use model::service::{CheckMode, InconclusivePolicy, MetricsSource};

/// `checks.canary`: compare the canary group's hosts with hosts still on the old release.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// Analyse every batch too (against the hosts not yet touched), not only the canary group.
    #[serde(default)]
    pub every_batch: bool,
    /// How long after the group is back in the pool the samples are read over.
    #[serde(default = "default_window")]
    pub window: Dur,
    /// One sample per host per step.
    #[serde(default = "default_step")]
    pub step: Dur,
    /// At least this many samples on each side, else inconclusive.
    #[serde(default = "default_min_samples")]
    pub min_samples: usize,
    /// Significance level of the one-sided Mann-Whitney U test.
    #[serde(default = "default_p_value")]
    pub p_value: f64,
    /// What an inconclusive analysis counts as: `fail` (default), `pass`, or `retry`: read
    /// again over a longer window until `deadline`.
    #[serde(default)]
    pub inconclusive: InconclusivePolicy,
    /// With `retry`: the longest window (default: 3 x `window`).
    #[serde(default)]
    pub deadline: Option<Dur>,
    pub metrics: Vec<CanaryMetric>,
}

fn default_window() -> Dur {
    secs(30)
}
fn default_step() -> Dur {
    secs(2)
}
fn default_min_samples() -> usize {
    8
}
fn default_p_value() -> f64 {
    0.01
}

/// Where a canary metric's samples come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SampleSource {
    /// `/api/v1/query_range` over the window, one point per step.
    Prometheus,
    /// `/render?format=json` over the window (the query should bucket by `{step}`, e.g.
    /// `summarize(..., "{step}", "sum")`).
    Graphite,
    /// Lines of the host's log at or above `level` (or matching `patterns`), counted per step.
    Logs,
}

/// One metric of the canary analysis, read per host: `{host}`, `{address}`, `{port}`,
/// `{instance}` and `{step}` (e.g. `2s`) are substituted in `query`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryMetric {
    pub name: String,
    pub source: SampleSource,
    /// Base URL; default: `checks.prometheus` / `checks.graphite`.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub query: Option<String>,
    /// For `logs`: the lowest bunyan level counted (default `error`).
    #[serde(default)]
    pub level: Option<String>,
    #[serde(default)]
    pub patterns: Vec<String>,
    #[serde(default)]
    pub worse: Worse,
    /// Smallest difference of means that fails the canary (the metric's unit).
    #[serde(default)]
    pub min_effect: f64,
    /// Optionally also: canary mean at least this many times the baseline's.
    #[serde(default)]
    pub min_ratio: Option<f64>,
    /// Without a baseline: the canary's mean must stay within this (none: inconclusive).
    #[serde(default)]
    pub threshold: Option<f64>,
    #[serde(default)]
    pub min_samples: Option<usize>,
    #[serde(default)]
    pub p_value: Option<f64>,
    #[serde(default, skip_serializing_if = "CheckMode::is_gate")]
    pub mode: CheckMode,
}

impl CanaryMetric {
    pub fn rule(&self, c: &CanaryConfig) -> Rule {
        Rule {
            min_samples: self.min_samples.unwrap_or(c.min_samples),
            p_value: self.p_value.unwrap_or(c.p_value),
            min_effect: self.min_effect,
            min_ratio: self.min_ratio,
            worse: self.worse,
        }
    }
}

/// `checks.quorum`: a host-level failure of these checks aborts only when `k` hosts agree on
/// the same check, or when it repeats on one host (its retry, or the recheck after the bake).
/// A lone failure is recorded as a suspicion and the host goes on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuorumConfig {
    pub k: usize,
    /// Evaluate a failed check again this many times (after its window again) before it
    /// counts as a suspicion; a retry that fails too is a repeat.
    #[serde(default)]
    pub retries: usize,
    /// Check kinds or names the rule applies to (default: every `metrics` check).
    #[serde(default = "default_quorum_checks")]
    pub checks: Vec<String>,
}

fn default_quorum_checks() -> Vec<String> {
    vec!["metrics".into()]
}

/// `checks.watch`: read during the whole rollout; a trip aborts at once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    #[serde(default = "default_interval")]
    pub interval: Dur,
    /// The window of rates (`{window}` in queries; the error-log rate's span).
    #[serde(default = "default_watch_window")]
    pub window: Dur,
    /// Service-wide queries (the 5xx rate of the service, any alarm): over `threshold` trips.
    #[serde(default)]
    pub alarms: Vec<WatchAlarm>,
    /// Error lines per second across the pooled hosts' logs.
    #[serde(default)]
    pub error_logs: Option<WatchLogs>,
}

fn default_interval() -> Dur {
    secs(5)
}
fn default_watch_window() -> Dur {
    secs(30)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchAlarm {
    pub name: String,
    #[serde(default)]
    pub source: Option<MetricsSource>,
    #[serde(default)]
    pub url: Option<String>,
    /// PromQL or a Graphite target; `{window}` substituted. The largest value counts.
    pub query: String,
    pub threshold: f64,
    /// No data on a reading, or a reading that failed (the backend unreachable, an error
    /// answer): `retry` (default: trips when no reading had data for `deadline`, default 3
    /// intervals), `fail` (trips at once), or `pass` (ignored, counted in the summary), which
    /// must be said explicitly: an alarm that cannot be read fails closed.
    #[serde(default = "default_watch_no_data")]
    pub inconclusive: InconclusivePolicy,
    #[serde(default)]
    pub deadline: Option<Dur>,
    #[serde(default, skip_serializing_if = "CheckMode::is_gate")]
    pub mode: CheckMode,
}

fn default_watch_no_data() -> InconclusivePolicy {
    InconclusivePolicy::Retry
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchLogs {
    #[serde(default = "default_level")]
    pub level: String,
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Trips above this many matching lines per second (over `window`, all pooled hosts).
    pub max_per_second: f64,
    /// A reading where a serving host's log could not be read: as for an alarm (`retry`
    /// by default, until `deadline`, default 3 intervals; `fail`; or an explicit `pass`).
    #[serde(default = "default_watch_no_data")]
    pub inconclusive: InconclusivePolicy,
    #[serde(default)]
    pub deadline: Option<Dur>,
    #[serde(default, skip_serializing_if = "CheckMode::is_gate")]
    pub mode: CheckMode,
}

fn default_level() -> String {
    "error".into()
}

/// Problems of a parsed section that serde cannot see.
pub fn problems(
    canary: Option<&CanaryConfig>,
    quorum: Option<&QuorumConfig>,
    watch: Option<&WatchConfig>,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(c) = canary {
        if c.metrics.is_empty() {
            out.push("checks.canary.metrics is empty".into());
        }
        if c.step.0.is_zero() || c.step.0 > c.window.0 {
            out.push("checks.canary.step must be above 0 and at most the window".into());
        }
        if !(c.p_value > 0.0 && c.p_value < 1.0) {
            out.push("checks.canary.p_value must be between 0 and 1".into());
        }
        for m in &c.metrics {
            if m.source != SampleSource::Logs && m.query.is_none() {
                out.push(format!("checks.canary metric {}: needs a query", m.name));
            }
        }
    }
    if let Some(q) = quorum
        && q.k == 0
    {
        out.push("checks.quorum.k must be at least 1".into());
    }
    if let Some(w) = watch
        && w.interval.0.is_zero()
    {
        out.push("checks.watch.interval must be above 0".into());
    }
    out
}
