//! The checks step of a host's path, with the run's policies around the checks themselves:
//!
//! - the fast rollback path: a rollback (`applier rollback`, and a host restored after a
//!   failure) keeps readiness and the health checks (`http`, `logs`) but skips the windowed
//!   `metrics` checks, as it skips the bake and the canary analysis; the journal says so;
//! - the k-of-n rule (`checks.quorum`): a failed check it applies to is evaluated again
//!   `retries` times; failing again is a repeat, which aborts; otherwise it becomes a
//!   suspicion and the host goes on, until `k` hosts share a suspicion of the same check,
//!   which aborts at once;
//! - stopping: checks of a host rolling forward end their waits when the run is told to stop.

use std::time::SystemTime;

use super::path::StepFail;
use super::run::Run;
use super::show::check_list;
use crate::checks::{self, CheckContext, CheckResult, CheckSpec};
use crate::config::analysis::QuorumConfig;
use crate::events::Event;
use crate::protocol::ReleaseRef;
use crate::records::{DeployKind, Step};
use crate::service::ServiceSpec;

/// What the fast rollback path keeps and skips, said once per run.
pub(super) const FAST_PATH: &str = "rollback fast path: bake, canary analysis and windowed metrics checks skipped; readiness and health checks (http, logs) kept";

fn applies(q: &QuorumConfig, spec: &CheckSpec) -> bool {
    let name = spec.name();
    q.checks.iter().any(|c| c == spec.kind() || *c == name)
}

impl Run<'_> {
    /// Whether this host's path is a rollback (so takes the fast path).
    fn fast(&self, restoring: bool) -> bool {
        restoring || self.journal.read(|j| j.kind) == DeployKind::Rollback
    }

    /// Runs the host's checks; `Err` names the first gating check that did not pass.
    pub(super) fn run_checks(
        &self,
        host: &str,
        spec: &ServiceSpec,
        to: &ReleaseRef,
        (port, started, log): (u16, SystemTime, Option<String>),
        restoring: bool,
    ) -> Result<(), StepFail> {
        let h = self.ctx.host(host);
        let cctx = CheckContext {
            host: h,
            address: h.address().to_string(),
            port,
            release: to.commit.to_string(),
            service_name: spec.name.clone().unwrap_or_default(),
            started_at: started,
            log_file: log,
            settings: &self.ctx.cfg.checks,
            cancel: (!restoring).then_some(&self.signals.stop),
        };
        let mut list = check_list(self.ctx, spec);
        if self.fast(restoring) {
            let skipped: Vec<String> = list
                .iter()
                .filter(|c| c.kind() == "metrics")
                .map(CheckSpec::name)
                .collect();
            list.retain(|c| c.kind() != "metrics");
            if !skipped.is_empty() {
                self.note(
                    Some(host),
                    Step::FastRollback,
                    format!("{FAST_PATH}: {}", skipped.join(", ")),
                );
            }
        }
        let mut results: Vec<CheckResult> = Vec::new();
        let mut failed: Option<CheckResult> = None;
        let mut abort: Option<String> = None;
        for c in &list {
            let mut r = checks::run(c, &cctx);
            if !r.passed
                && !restoring
                && let Some(q) = &self.ctx.cfg.checks.quorum
                && applies(q, c)
            {
                match self.quorum(q, host, c, &cctx, r) {
                    Ok(x) => r = x,
                    Err((x, why)) => {
                        r = x;
                        abort = Some(why);
                    }
                }
            }
            let stop = !r.passed;
            for n in checks::no_data(std::slice::from_ref(&r)) {
                self.signals.no_data(format!("{host} {n}"));
            }
            if r.shadow && r.outcome == checks::Outcome::Fail {
                self.signals.shadow_failed(format!("{host} {}", r.name));
            }
            self.sink.emit(&Event::Check {
                host: host.into(),
                result: r.clone(),
            });
            results.push(r.clone());
            if stop {
                failed = Some(r);
                break;
            }
        }
        self.journal.record(|j| {
            j.step(
                Some(host),
                Step::Checks,
                failed.is_none(),
                failed.as_ref().map(|f| format!("{}: {}", f.name, f.detail)),
            );
            j.host(host).checks = results;
        });
        if let Some(why) = abort {
            self.signals.trip(why);
        }
        match failed {
            None => Ok(()),
            Some(f) => Err(StepFail {
                step: Step::Checks,
                check: Some(f.name),
                detail: f.detail,
            }),
        }
    }

    /// The k-of-n rule for one failed check: `Ok` (the host goes on, the result marked a
    /// suspicion, or passed on retry after a suspicion) or `Err` with the abort reason.
    fn quorum(
        &self,
        q: &QuorumConfig,
        host: &str,
        spec: &CheckSpec,
        cctx: &CheckContext<'_>,
        mut r: CheckResult,
    ) -> Result<CheckResult, (CheckResult, String)> {
        let name = spec.name();
        let repeat = |r: CheckResult, how: &str| {
            let why = format!("quorum: check {name} failed again on {host} ({how})");
            self.note(Some(host), Step::Quorum, why.clone());
            Err((r, why))
        };
        let known = self
            .signals
            .suspects
            .lock()
            .unwrap()
            .get(&name)
            .is_some_and(|s| s.contains(host));
        if known {
            return repeat(r, "a repeat of its earlier failure");
        }
        for i in 0..q.retries {
            // A fresh reading: wait one more window of the check (metrics), else go at once.
            if let CheckSpec::Metrics(m) = spec
                && cctx.wait_until(SystemTime::now() + m.window.0).is_err()
            {
                return Err((r, "stopped".into()));
            }
            let again = checks::run(spec, cctx);
            let attempts = r.attempts.max(1) + again.attempts.max(1);
            if !again.passed {
                let mut again = again;
                again.attempts = attempts;
                return repeat(again, &format!("retry {} of {}", i + 1, q.retries));
            }
            r.detail = format!("{}; retry passed: {}", r.detail, again.detail);
            r.attempts = attempts;
        }
        let agreeing: Vec<String> = {
            let mut s = self.signals.suspects.lock().unwrap();
            let set = s.entry(name.clone()).or_default();
            set.insert(host.to_string());
            set.iter().cloned().collect()
        };
        if agreeing.len() >= q.k {
            let why = format!(
                "quorum: {} of {} hosts agree that check {name} fails: {}",
                agreeing.len(),
                q.k,
                agreeing.join(", ")
            );
            self.note(Some(host), Step::Quorum, why.clone());
            return Err((r, why));
        }
        r.suspect = true;
        r.passed = true;
        r.detail = format!(
            "{} (suspect: {} of {} hosts needed to abort)",
            r.detail,
            agreeing.len(),
            q.k
        );
        self.note(
            Some(host),
            Step::Quorum,
            format!(
                "check {name} failed alone on {host}: recorded as a suspicion ({} of {})",
                agreeing.len(),
                q.k
            ),
        );
        Ok(r)
    }

    /// A policy decision, in the journal and as an event.
    pub(super) fn note(&self, host: Option<&str>, step: Step, detail: String) {
        self.sink.emit(&Event::Note {
            step,
            host: host.map(str::to_string),
            detail: detail.clone(),
        });
        self.journal
            .note(|j| j.step(host, step, true, Some(detail)));
    }
}
