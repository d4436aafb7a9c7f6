//! Health checks run against a freshly started instance, and the readings the deciding checks
//! are made of.
//!
//! - [`http`], [`logs`], [`metrics`]: the per-host checks of `deploy/service.yaml` and the
//!   inventory's `checks.extra`. Each has its own timeout and yields pass, fail or
//!   inconclusive; [`run_all`] runs them in order and stops at the first gating one that does
//!   not pass.
//! - Policies, applied by [`run`] to every kind alike: the no-data policy (`inconclusive:
//!   fail | pass | retry`, the check's own or the env's; a retried check is evaluated again
//!   until its `deadline`), and `mode: shadow` (evaluated and recorded, never gating). The
//!   result keeps its real outcome: an inconclusive check counted as a pass is still
//!   `inconclusive`, and [`no_data`] names it for the summary.
//! - [`samples`]: per-host series over a window (Prometheus range queries, Graphite renders,
//!   error lines of a log per step) for the canary analysis ([`crate::analysis`]).
//! - [`metrics::read_value`]: one service-wide reading, for the fleet-wide watch.
//!
//! Checks that look at the host (logs) go through the [`Host`] trait, so they work the same
//! over every transport. Waits (a metrics window, a retry) end early when the run is told to
//! stop ([`CheckContext::cancel`]).

pub mod http;
pub mod logs;
pub mod metrics;
pub mod samples;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

pub use logs::{level_number, scan_log};
pub use metrics::{graphite_value, prometheus_value};
pub use model::service::checks::{
    CheckMode, CheckSpec, HttpCheck, InconclusivePolicy, JsonMatch, LogsCheck, MetricsCheck,
    MetricsSource,
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
    /// Whether this result lets the host pass, after the no-data policy and the mode.
    pub passed: bool,
    /// The no-data policy applied, when the outcome was inconclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<InconclusivePolicy>,
    /// Evaluations made (more than one under `inconclusive: retry` or a quorum retry).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub attempts: u32,
    /// `mode: shadow`: recorded, never gating.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
    /// A failure the quorum rule did not act on alone (`checks.quorum`): the host went on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspect: bool,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n <= 1
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
    /// Set when the run must stop (the watch tripped, a quorum agreed): waits end at once.
    pub cancel: Option<&'a AtomicBool>,
}

impl CheckContext<'_> {
    fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::SeqCst))
    }

    /// Sleeps until `t` (at once if it passed); `Err` when the run was told to stop.
    pub fn wait_until(&self, t: SystemTime) -> Result<(), String> {
        loop {
            if self.cancelled() {
                return Err("stopped: the deploy is aborting".into());
            }
            match t.duration_since(SystemTime::now()) {
                Ok(d) if !d.is_zero() => std::thread::sleep(d.min(Duration::from_millis(100))),
                _ => return Ok(()),
            }
        }
    }

    /// `{release}`, `{host}`, `{address}`, `{port}`, `{instance}`, `{name}` substituted.
    /// The placeholders of check templates and their values for this instance.
    pub(crate) fn values(&self) -> Vec<(&'static str, String)> {
        let since = self
            .started_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        vec![
            ("release", self.release.clone()),
            ("host", self.host.name().to_string()),
            ("address", self.address.clone()),
            ("port", self.port.to_string()),
            ("instance", format!("{}:{}", self.address, self.port)),
            ("name", self.service_name.clone()),
            ("since", since.to_string()),
        ]
    }

    /// Substitutes the placeholders into a URL path or a query (not a shell command: those
    /// go through [`crate::shell::fill`] with [`CheckContext::values`]).
    pub fn subst(&self, s: &str) -> String {
        s.replace("{release}", &self.release)
            .replace("{host}", self.host.name())
            .replace("{address}", &self.address)
            .replace("{port}", &self.port.to_string())
            .replace("{instance}", &format!("{}:{}", self.address, self.port))
            .replace("{name}", &self.service_name)
    }
}

/// Runs the checks in order, stopping at the first gating one that does not pass.
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

/// One evaluation of a check.
pub fn evaluate(spec: &CheckSpec, ctx: &CheckContext<'_>) -> (Outcome, String) {
    match spec {
        CheckSpec::Http(c) => http::http(c, ctx),
        CheckSpec::Logs(c) => logs::logs(c, ctx),
        CheckSpec::Metrics(c) => metrics::metrics(c, ctx),
    }
}

/// Default `deadline` of `inconclusive: retry`.
pub const DEFAULT_RETRY_DEADLINE: Duration = Duration::from_secs(30);

/// Runs one check under its no-data policy and mode.
pub fn run(spec: &CheckSpec, ctx: &CheckContext<'_>) -> CheckResult {
    let t0 = Instant::now();
    let common = spec.common();
    let policy = common.inconclusive.unwrap_or(ctx.settings.inconclusive);
    let deadline = t0
        + common
            .deadline
            .map(|d| d.0)
            .unwrap_or(DEFAULT_RETRY_DEADLINE);
    let mut attempts = 0;
    let (outcome, detail) = loop {
        attempts += 1;
        let (outcome, detail) = evaluate(spec, ctx);
        if outcome != Outcome::Inconclusive
            || policy != InconclusivePolicy::Retry
            || Instant::now() >= deadline
        {
            break (outcome, detail);
        }
        let next = SystemTime::now() + Duration::from_secs(1).min(deadline - Instant::now());
        if let Err(e) = ctx.wait_until(next) {
            break (outcome, format!("{detail}; {e}"));
        }
    };
    decide(
        spec.name(),
        outcome,
        detail,
        policy,
        common.mode,
        t0,
        attempts,
    )
}

/// The result of an evaluation after the no-data policy and the mode.
pub fn decide(
    name: String,
    outcome: Outcome,
    mut detail: String,
    policy: InconclusivePolicy,
    mode: CheckMode,
    t0: Instant,
    attempts: u32,
) -> CheckResult {
    let counted = match outcome {
        Outcome::Pass => true,
        Outcome::Fail => false,
        Outcome::Inconclusive => {
            let how = match policy {
                InconclusivePolicy::Pass => "no data: counted as a pass by its policy",
                InconclusivePolicy::Fail => "no data: counted as a failure by its policy",
                InconclusivePolicy::Retry => "no data until its deadline: counted as a failure",
            };
            detail = format!("{detail} ({how})");
            policy == InconclusivePolicy::Pass
        }
    };
    let shadow = mode == CheckMode::Shadow;
    if shadow && !counted {
        detail = format!("{detail} [shadow: not gating]");
    }
    CheckResult {
        name,
        outcome,
        detail,
        elapsed_ms: t0.elapsed().as_millis() as u64,
        passed: counted || shadow,
        policy: (outcome == Outcome::Inconclusive).then_some(policy),
        attempts,
        shadow,
        suspect: false,
    }
}

/// The checks of `results` that never got data (whatever they counted as), named.
pub fn no_data(results: &[CheckResult]) -> Vec<String> {
    results
        .iter()
        .filter(|r| r.outcome == Outcome::Inconclusive)
        .map(|r| r.name.clone())
        .collect()
}

pub(crate) fn agent(timeout: Duration) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build();
    ureq::Agent::new_with_config(config)
}

pub(crate) fn get_text(
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

pub(crate) fn snippet(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
            cancel: None,
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

    fn d(outcome: Outcome, policy: InconclusivePolicy, mode: CheckMode) -> CheckResult {
        decide(
            "c".into(),
            outcome,
            "x".into(),
            policy,
            mode,
            Instant::now(),
            1,
        )
    }

    #[test]
    fn no_data_is_recorded_whatever_it_counts_as() {
        let r = d(
            Outcome::Inconclusive,
            InconclusivePolicy::Pass,
            CheckMode::Gate,
        );
        assert!(r.passed);
        assert_eq!(r.outcome, Outcome::Inconclusive);
        assert_eq!(r.policy, Some(InconclusivePolicy::Pass));
        assert!(
            r.detail.contains("no data: counted as a pass"),
            "{}",
            r.detail
        );
        assert_eq!(no_data(&[r]), vec!["c".to_string()]);
        let r = d(
            Outcome::Inconclusive,
            InconclusivePolicy::Fail,
            CheckMode::Gate,
        );
        assert!(!r.passed);
        let r = d(
            Outcome::Inconclusive,
            InconclusivePolicy::Retry,
            CheckMode::Gate,
        );
        assert!(!r.passed);
        let r = d(Outcome::Pass, InconclusivePolicy::Fail, CheckMode::Gate);
        assert!(r.passed && r.policy.is_none());
        assert!(no_data(&[r]).is_empty());
    }

    #[test]
    fn shadow_checks_never_gate_but_keep_their_outcome() {
        let r = d(Outcome::Fail, InconclusivePolicy::Fail, CheckMode::Shadow);
        assert!(r.passed && r.shadow);
        assert_eq!(r.outcome, Outcome::Fail);
        assert!(r.detail.contains("shadow"), "{}", r.detail);
        // Serialised, a plain result has none of the new fields (old journals and goldens).
        let plain = d(Outcome::Pass, InconclusivePolicy::Fail, CheckMode::Gate);
        let v = serde_json::to_value(&plain).unwrap();
        for k in ["policy", "attempts", "shadow", "suspect"] {
            assert!(v.get(k).is_none(), "{k} in {v}");
        }
    }
}
