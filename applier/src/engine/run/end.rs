//! How a run ends: a refusal before any host is touched, an abort that returns every touched
//! host to its own last good release (in reverse touch order; a host with nothing to go back to
//! is stopped and taken out, and the summary says so), and the outcome every ending records
//! (env state, journal status, store requests, the `finished` event).

use super::Run;
use crate::engine::Outcome;
use crate::events::Event;
use crate::guard::DeployType;
use crate::records::{HostPhase, JournalStatus, Step};

impl Run<'_> {
    pub(super) fn refuse(&self, reason: String) -> Outcome {
        self.journal.note(|j| j.set_abort_reason(reason.clone()));
        self.finish(
            JournalStatus::Refused,
            format!("refused before touching any host: {reason}"),
            vec![],
            vec![],
        )
    }

    /// Aborts: every touched host goes back to its own last good release, in reverse order.
    pub(super) fn abort_and_finish(&self, reason: String) -> Outcome {
        self.stop_pruning();
        self.sink.emit(&Event::Abort {
            reason: reason.clone(),
        });
        self.journal.note(|j| {
            j.set_abort_reason(reason.clone());
            j.step(None, Step::Abort, true, Some(reason.clone()));
        });
        let (mut touched, deploy_type, rollback_safe) = self.journal.read(|j| {
            let t: Vec<(u32, String)> = j
                .hosts
                .iter()
                .filter(|(_, e)| {
                    matches!(
                        e.phase,
                        HostPhase::InProgress
                            | HostPhase::Done
                            | HostPhase::Failed
                            | HostPhase::RollingBack
                    )
                })
                .map(|(h, e)| (e.touched.unwrap_or(0), h.clone()))
                .collect();
            // Journals without a guard record predate rollback-safe schema deploys.
            let safe = j
                .guard
                .as_ref()
                .is_some_and(|g| g.compared && g.rollback_safe);
            (t, j.deploy_type, safe)
        });
        touched.sort_by(|a, b| b.cmp(a));
        let names: Vec<String> = touched.into_iter().map(|(_, h)| h).collect();
        if let Err(why) = self.lease.confirm(self.ctx.store.as_ref()) {
            let reason = if reason.contains(&why) {
                reason
            } else {
                format!("{reason}; {why}")
            };
            return self.finish(
                JournalStatus::NeedsHuman,
                format!(
                    "{reason}; nothing rolled back: the hosts are as the deploy holding the environment now leaves them"
                ),
                names.clone(),
                names,
            );
        }
        if deploy_type == Some(DeployType::Schema) && !rollback_safe {
            for h in &names {
                if self.journal.entry(h).phase != HostPhase::Done {
                    self.set_phase(
                        h,
                        HostPhase::NeedsHuman,
                        Some(
                            "schema deploy: not rolled back automatically; left out of the pool"
                                .into(),
                        ),
                    );
                }
            }
            return self.finish(
                JournalStatus::NeedsHuman,
                format!("{reason}; this deploy changed storage schemas, so it is not rolled back automatically (the storage would refuse the old schema). Remedy: deploy a commit that bumps the old schema's version"),
                names.clone(),
                names,
            );
        }
        let mut needs_human = Vec::new();
        for h in &names {
            if !self.restore(h) {
                needs_human.push(h.clone());
            }
        }
        if needs_human.is_empty() {
            // A host with nothing to go back to was stopped and taken out, not restored.
            let out: Vec<&str> = names
                .iter()
                .filter(|h| {
                    self.journal.entry(h).from.is_none() || self.no_restore.contains_key(*h)
                })
                .map(String::as_str)
                .collect();
            let m = if out.is_empty() {
                format!("{reason}; every touched host is back on its last good release")
            } else if out.len() == names.len() {
                format!(
                    "{reason}; no touched host had a release to go back to: {} stopped and left out of the pool",
                    out.join(", ")
                )
            } else {
                format!(
                    "{reason}; every touched host is back on its last good release but {} (nothing to go back to: stopped and left out of the pool)",
                    out.join(", ")
                )
            };
            self.finish(JournalStatus::RolledBack, m, names, needs_human)
        } else {
            let m = format!(
                "{reason}; could not restore {} (left out of the pool)",
                needs_human.join(", ")
            );
            self.finish(JournalStatus::NeedsHuman, m, names, needs_human)
        }
    }

    pub(super) fn finish(
        &self,
        status: JournalStatus,
        message: String,
        failed: Vec<String>,
        needs_human: Vec<String>,
    ) -> Outcome {
        self.drain_state_writer();
        let all: Vec<String> = self.journal.hosts(|hs| hs.keys().cloned().collect());
        self.record_env(&all);
        // The store requests from the plan to here (the outcome's own write and the lease's
        // release follow).
        let store_requests = self
            .ctx
            .store_requests()
            .map(|r| r.since(&self.store_base.clone().unwrap_or_default()));
        self.journal.note(|j| {
            if let Some(r) = &store_requests {
                j.step(None, Step::StoreRequests, true, Some(r.summary()));
            }
            j.set_outcome(status, needs_human.clone())
        });
        let mut message = message;
        message.push_str(&self.signals.summary_notes());
        if let Some(e) = self.journal.failure() {
            message.push_str(&format!(
                " (warning: the journal could not be written: {e})"
            ));
        }
        let o = Outcome {
            deploy_id: self.journal.id(),
            status,
            message,
            failed,
            needs_human,
            store_requests,
        };
        self.sink.emit(&Event::Finished {
            deploy_id: o.deploy_id.clone(),
            status: o.status,
            message: o.message.clone(),
            store_requests: o.store_requests.clone(),
        });
        o
    }
}
