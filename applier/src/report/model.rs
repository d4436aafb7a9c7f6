//! The report model: what a deploy did, read back from its journal into the shapes every
//! renderer draws (the HTML report, `applier show`, `applier history`). It is built from the
//! journal alone; nothing here reads a host or the store.
//!
//! Times come from the journal's step records, which say when each step ended. A step's bar
//! runs from the end of the host's previous step (or of the deploy-level step just before it,
//! such as an abort) to its own end. The first step of a host's path (`spec`) has no recorded
//! start, so it is drawn at its end with no duration rather than with a guessed one.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::checks::{CheckResult, Outcome as CheckOutcome};
use crate::records::{DeployKind, HostPhase, Journal, JournalStatus, Step, StepRecord};

/// One deploy, ready to render.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub summary: Summary,
    /// Hosts in rollout order.
    pub hosts: Vec<HostTimeline>,
    /// Steps of the deploy itself (gates, capacity, abort, resume), in order.
    pub deploy_steps: Vec<Bar>,
    /// Why the deploy stopped, when it did not succeed.
    pub failure: Option<String>,
    pub rollback: Option<RollbackPath>,
    pub schema: Schema,
    /// Canary analyses (the canary against its baseline), where one ran.
    pub canary: Vec<CanaryAnalysis>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub id: String,
    pub env: String,
    pub kind: DeployKind,
    pub status: JournalStatus,
    /// `code`, `config` or `schema`.
    pub deploy_type: Option<String>,
    pub artifact: Option<String>,
    /// The releases the hosts ran before (distinct, in host order).
    pub from: Vec<String>,
    /// The releases the deploy took them to.
    pub to: Vec<String>,
    pub who: String,
    pub reason: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
    /// Hosts the deploy touched (went past prefetch on).
    pub touched: Vec<String>,
    /// Hosts that ended on their new release.
    pub changed: Vec<String>,
    pub needs_human: Vec<String>,
}

/// One host: its steps on the deploy's time axis and its checks.
#[derive(Clone, Debug, Serialize)]
pub struct HostTimeline {
    pub host: String,
    pub group: String,
    pub from: Option<String>,
    pub to: String,
    pub phase: HostPhase,
    pub detail: Option<String>,
    pub bars: Vec<Bar>,
    /// The full results of the host's last check run (the journal keeps the last run).
    pub checks: Vec<CheckResult>,
    /// Every `checks` step that failed, with the failing check's numbers, in order.
    pub failed_checks: Vec<String>,
}

/// How a bar is coloured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BarOutcome {
    Ok,
    Failed,
    /// A step of the way back to the host's last good release.
    Restore,
    RestoreFailed,
}

impl BarOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            BarOutcome::Ok => "ok",
            BarOutcome::Failed => "failed",
            BarOutcome::Restore => "restore",
            BarOutcome::RestoreFailed => "restore_failed",
        }
    }
}

/// One step.
#[derive(Clone, Debug, Serialize)]
pub struct Bar {
    pub step: Step,
    pub at: String,
    /// Milliseconds from the deploy's start to the step's start (its end when the start is
    /// not known).
    pub start_ms: u64,
    /// How long it took, when its start is known.
    pub dur_ms: Option<u64>,
    pub outcome: BarOutcome,
    pub detail: Option<String>,
}

/// The way back, when hosts were restored to their last good release.
#[derive(Clone, Debug, Serialize)]
pub struct RollbackPath {
    pub reason: Option<String>,
    /// In the order they were restored.
    pub hosts: Vec<Restored>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Restored {
    pub host: String,
    /// The release it was taken off.
    pub off: String,
    /// The release it went back to (none: it had none and was left stopped).
    pub back_to: Option<String>,
    pub ok: bool,
    pub detail: Option<String>,
}

/// What the storage guard said.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Schema {
    /// Whether the journal holds the guard's record (journals before it do not).
    pub recorded: bool,
    pub findings: Vec<String>,
    pub acks: Vec<String>,
}

/// A canary analysis: the canary hosts against their baseline over one window, per metric.
/// Deserialises from the analysis records of the journal (every field optional), so those
/// records plug in as they are.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CanaryAnalysis {
    pub group: String,
    pub canary: Vec<String>,
    pub baseline: Vec<String>,
    pub from: String,
    pub to: String,
    pub verdict: String,
    pub passed: bool,
    pub note: Option<String>,
    pub metrics: Vec<CanaryMetric>,
}

/// One metric of a canary analysis with the numbers it was decided on, and the two series
/// when they were recorded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CanaryMetric {
    pub metric: String,
    pub verdict: String,
    pub test: String,
    pub reason: String,
    pub canary_samples: usize,
    pub baseline_samples: usize,
    pub canary_mean: Option<f64>,
    pub baseline_mean: Option<f64>,
    pub u: Option<f64>,
    pub p: Option<f64>,
    pub method: Option<String>,
    pub effect: Option<f64>,
    pub ratio: Option<f64>,
    pub threshold: Option<f64>,
    pub shadow: bool,
    /// The canary's samples, in time order.
    #[serde(alias = "canary_values")]
    pub canary_series: Vec<f64>,
    /// The baseline's samples, in time order.
    #[serde(alias = "baseline_values")]
    pub baseline_series: Vec<f64>,
}

impl CanaryAnalysis {
    /// Reads analysis records as the journal holds them (JSON); records that do not read are
    /// skipped by the caller's choice, so this returns each one's result.
    pub fn from_value(v: serde_json::Value) -> Result<CanaryAnalysis, serde_json::Error> {
        serde_json::from_value(v)
    }
}

/// Milliseconds since the epoch of an RFC 3339 time, if it reads.
pub fn parse_ms(t: &str) -> Option<u64> {
    let st = humantime::parse_rfc3339_weak(t).ok()?;
    Some(ms_of(st))
}

fn ms_of(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `1.2 s`, `340 ms`, `2 min 5 s`.
pub fn fmt_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        let s = ms / 1000;
        if s < 3600 {
            format!("{} min {} s", s / 60, s % 60)
        } else {
            format!("{} h {} min", s / 3600, (s % 3600) / 60)
        }
    }
}

/// A duration as `fmt_ms` spells it.
pub fn fmt_dur(d: Duration) -> String {
    fmt_ms(d.as_millis() as u64)
}

/// The first 12 characters of a commit or digest, for narrow places.
pub fn short(s: &str) -> &str {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    let n = hex.char_indices().nth(12).map_or(hex.len(), |(i, _)| i);
    &hex[..n]
}

/// How long a journal's deploy took (to now for one still running, when `now` is given).
pub fn duration_ms(j: &Journal, now: Option<SystemTime>) -> Option<u64> {
    let start = parse_ms(&j.started_at)?;
    let end = match &j.finished_at {
        Some(f) => parse_ms(f)?,
        None => ms_of(now?),
    };
    Some(end.saturating_sub(start))
}

/// Hosts the deploy touched, in rollout order.
pub fn touched(j: &Journal) -> Vec<String> {
    rollout_order(j)
        .into_iter()
        .filter(|h| j.hosts[h].touched.is_some())
        .collect()
}

/// Hosts that ended on their new release, in rollout order.
pub fn changed(j: &Journal) -> Vec<String> {
    rollout_order(j)
        .into_iter()
        .filter(|h| j.hosts[h].phase == HostPhase::Done)
        .collect()
}

/// Every host of the journal: the batches' order, then any host the batches do not name.
fn rollout_order(j: &Journal) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, hs) in &j.groups {
        for h in hs {
            if j.hosts.contains_key(h) && !out.contains(h) {
                out.push(h.clone());
            }
        }
    }
    for h in j.hosts.keys() {
        if !out.contains(h) {
            out.push(h.clone());
        }
    }
    out
}

fn distinct(it: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for s in it {
        if !v.contains(&s) {
            v.push(s);
        }
    }
    v
}

impl Report {
    /// The report of one journal. `canary` are the analyses the journal records.
    pub fn from_journal(j: &Journal, canary: Vec<CanaryAnalysis>) -> Report {
        let order = rollout_order(j);
        let t0 = parse_ms(&j.started_at).unwrap_or(0);
        let summary = Summary {
            id: j.id.clone(),
            env: j.env.clone(),
            kind: j.kind,
            status: j.status,
            deploy_type: j
                .deploy_type
                .map(|t| serde_json::to_value(t).ok())
                .and_then(|v| v.and_then(|v| v.as_str().map(str::to_string))),
            artifact: j.artifact.map(|d| d.to_string()),
            from: distinct(
                order
                    .iter()
                    .filter_map(|h| j.hosts[h].from.as_ref().map(|r| r.commit.to_string())),
            ),
            to: distinct(order.iter().map(|h| j.hosts[h].to.commit.to_string())),
            who: j.who.clone(),
            reason: j.reason.clone(),
            started_at: j.started_at.clone(),
            finished_at: j.finished_at.clone(),
            duration_ms: duration_ms(j, None),
            touched: touched(j),
            changed: changed(j),
            needs_human: j.needs_human.clone(),
        };
        let abort_at = j
            .steps
            .iter()
            .find(|s| s.host.is_none() && s.step == Step::Abort)
            .and_then(|s| parse_ms(&s.at));
        let hosts: Vec<HostTimeline> = order
            .iter()
            .map(|h| host_timeline(j, h, t0, abort_at))
            .collect();
        let deploy_steps = j
            .steps
            .iter()
            .filter(|s| s.host.is_none())
            .map(|s| {
                let at = parse_ms(&s.at).unwrap_or(t0);
                Bar {
                    step: s.step,
                    at: s.at.clone(),
                    start_ms: at.saturating_sub(t0),
                    dur_ms: None,
                    outcome: if s.ok {
                        BarOutcome::Ok
                    } else {
                        BarOutcome::Failed
                    },
                    detail: s.detail.clone(),
                }
            })
            .collect();
        Report {
            failure: failure(j),
            rollback: rollback_path(j, &hosts),
            schema: schema(j),
            summary,
            hosts,
            deploy_steps,
            canary,
        }
    }

    /// The end of the time axis: the deploy's duration, or its last step.
    pub fn span_ms(&self) -> u64 {
        let last = self
            .hosts
            .iter()
            .flat_map(|h| &h.bars)
            .chain(&self.deploy_steps)
            .map(|b| b.start_ms + b.dur_ms.unwrap_or(0))
            .max()
            .unwrap_or(0);
        self.summary.duration_ms.unwrap_or(0).max(last).max(1)
    }
}

fn host_timeline(j: &Journal, host: &str, t0: u64, abort_at: Option<u64>) -> HostTimeline {
    let e = &j.hosts[host];
    let group = j
        .groups
        .iter()
        .find(|(_, hs)| hs.iter().any(|h| h == host))
        .map(|(g, _)| g.clone())
        .unwrap_or_else(|| e.group.clone());
    let mine: Vec<&StepRecord> = j
        .steps
        .iter()
        .filter(|s| s.host.as_deref() == Some(host))
        .collect();
    let deploy_level: Vec<u64> = j
        .steps
        .iter()
        .filter(|s| s.host.is_none())
        .filter_map(|s| parse_ms(&s.at))
        .collect();
    // The way back starts after the host's first failure, or at the abort.
    let first_fail = mine
        .iter()
        .find(|s| !s.ok && !matches!(s.step, Step::Preflight | Step::Fetch | Step::Prune))
        .and_then(|s| parse_ms(&s.at));
    let restore_from = match (first_fail, abort_at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let mut prev: Option<u64> = None;
    let mut failed_checks = Vec::new();
    let mut bars = Vec::new();
    for s in mine {
        let at = parse_ms(&s.at).unwrap_or(t0);
        // The start: the later of this host's previous step and a deploy-level step between.
        let start = match s.step {
            Step::Spec => None,
            Step::Preflight => Some(prev.unwrap_or(t0)),
            _ => prev.map(|p| {
                deploy_level
                    .iter()
                    .copied()
                    .filter(|&d| d > p && d <= at)
                    .max()
                    .unwrap_or(p)
            }),
        };
        let restoring = j.kind == DeployKind::Deploy && restore_from.is_some_and(|r| at > r);
        let outcome = match (s.ok, restoring) {
            (true, false) => BarOutcome::Ok,
            (false, false) => BarOutcome::Failed,
            (true, true) => BarOutcome::Restore,
            (false, true) => BarOutcome::RestoreFailed,
        };
        if s.step == Step::Checks && !s.ok {
            failed_checks.push(s.detail.clone().unwrap_or_default());
        }
        bars.push(Bar {
            step: s.step,
            at: s.at.clone(),
            start_ms: start.unwrap_or(at).saturating_sub(t0),
            dur_ms: start.map(|st| at.saturating_sub(st)),
            outcome,
            detail: s.detail.clone(),
        });
        prev = Some(at);
    }
    HostTimeline {
        host: host.to_string(),
        group,
        from: e.from.as_ref().map(|r| r.commit.to_string()),
        to: e.to.commit.to_string(),
        phase: e.phase,
        detail: e.detail.clone(),
        bars,
        checks: e.checks.clone(),
        failed_checks,
    }
}

fn failure(j: &Journal) -> Option<String> {
    if j.status == JournalStatus::Succeeded {
        return None;
    }
    if let Some(r) = &j.abort_reason {
        return Some(r.clone());
    }
    let failed: Vec<String> = rollout_order(j)
        .into_iter()
        .filter_map(|h| {
            let e = &j.hosts[&h];
            (e.phase != HostPhase::Done)
                .then_some(e.detail.as_ref())
                .flatten()
                .map(|d| format!("{h}: {d}"))
        })
        .collect();
    (!failed.is_empty()).then(|| failed.join("; "))
}

fn rollback_path(j: &Journal, hosts: &[HostTimeline]) -> Option<RollbackPath> {
    let mut restored: Vec<(u64, Restored)> = hosts
        .iter()
        .filter(|h| {
            matches!(h.phase, HostPhase::RolledBack | HostPhase::NeedsHuman)
                || h.bars
                    .iter()
                    .any(|b| matches!(b.outcome, BarOutcome::Restore | BarOutcome::RestoreFailed))
        })
        .filter(|_| j.kind == DeployKind::Deploy)
        .map(|h| {
            let first = h
                .bars
                .iter()
                .find(|b| matches!(b.outcome, BarOutcome::Restore | BarOutcome::RestoreFailed))
                .map_or(u64::MAX, |b| b.start_ms);
            (
                first,
                Restored {
                    host: h.host.clone(),
                    off: h.to.clone(),
                    back_to: h.from.clone(),
                    ok: h.phase == HostPhase::RolledBack,
                    detail: h.detail.clone(),
                },
            )
        })
        .collect();
    if restored.is_empty() {
        return None;
    }
    restored.sort_by_key(|(t, _)| *t);
    Some(RollbackPath {
        reason: j.abort_reason.clone(),
        hosts: restored.into_iter().map(|(_, r)| r).collect(),
    })
}

fn schema(j: &Journal) -> Schema {
    let mut s = Schema::default();
    for st in j.steps.iter().filter(|s| s.step == Step::StorageGuard) {
        s.recorded = true;
        // The first line is the decision (deploy type, what it was compared with).
        for line in st.detail.as_deref().unwrap_or("").lines().skip(1) {
            match line.strip_prefix("ack: ") {
                Some(a) => s.acks.push(a.to_string()),
                None if !line.is_empty() => s.findings.push(line.to_string()),
                None => {}
            }
        }
    }
    s
}

/// `pass`, `fail`, `inconclusive`.
pub fn check_outcome(o: CheckOutcome) -> &'static str {
    match o {
        CheckOutcome::Pass => "pass",
        CheckOutcome::Fail => "fail",
        CheckOutcome::Inconclusive => "inconclusive",
    }
}
