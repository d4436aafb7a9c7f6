//! Pruning off the critical path: the hosts of a group are queued as soon as the group passed
//! (its bake and canary analysis included: nothing is asked of a host while its group is
//! judged) and pruned by a few workers beside the rest of the rollout, instead of every host
//! after the last one. Each prune is reported (an
//! [`Event::Prune`] and a journal step) with what it removed and how long it took. A run that
//! completes queues the hosts left and waits for every prune, under the lease, before it
//! finishes; an abort drops what is still queued and waits for the prunes already running.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use super::Run;
use crate::events::Event;
use crate::protocol::PruneReport;
use crate::records::Step;

/// Hosts waiting to be pruned, and the workers' progress.
#[derive(Debug, Default)]
pub(super) struct Pruner {
    q: Mutex<Queue>,
    cv: Condvar,
}

#[derive(Debug, Default)]
struct Queue {
    waiting: VecDeque<String>,
    /// Every host ever queued (each is pruned once per run).
    seen: BTreeSet<String>,
    active: usize,
    closed: bool,
}

impl Run<'_> {
    /// Queues `hosts` (those not queued yet) for the prune workers.
    pub(super) fn prune_later<'h>(&self, hosts: impl IntoIterator<Item = &'h String>) {
        let mut q = self.pruner.q.lock().unwrap();
        if q.closed {
            return;
        }
        for h in hosts {
            if q.seen.insert(h.clone()) {
                q.waiting.push_back(h.clone());
            }
        }
        self.pruner.cv.notify_all();
    }

    /// One prune worker: prunes queued hosts until the queue is closed and empty.
    pub(super) fn prune_worker(&self) {
        loop {
            let h = {
                let mut q = self.pruner.q.lock().unwrap();
                loop {
                    if let Some(h) = q.waiting.pop_front() {
                        q.active += 1;
                        break h;
                    }
                    if q.closed {
                        return;
                    }
                    q = self.pruner.cv.wait(q).unwrap();
                }
            };
            self.prune_host(&h);
            self.pruner.q.lock().unwrap().active -= 1;
            self.pruner.cv.notify_all();
        }
    }

    /// Queues every host of the environment not queued yet, then waits until all are pruned.
    pub(super) fn prune_rest_and_wait(&self) {
        let names: Vec<String> = self.ctx.hosts.keys().cloned().collect();
        self.prune_later(&names);
        self.close_pruner(false);
    }

    /// Drops the hosts still queued and waits for the prunes running. Idempotent.
    pub(super) fn stop_pruning(&self) {
        self.close_pruner(true);
    }

    fn close_pruner(&self, drop_queued: bool) {
        let mut q = self.pruner.q.lock().unwrap();
        if drop_queued {
            q.waiting.clear();
        }
        q.closed = true;
        self.pruner.cv.notify_all();
        while q.active > 0 || !q.waiting.is_empty() {
            q = self.pruner.cv.wait(q).unwrap();
        }
    }

    fn prune_host(&self, h: &str) {
        let t0 = Instant::now();
        let r = self.lease.confirm(self.ctx.store.as_ref()).and_then(|()| {
            self.ctx
                .host(h)
                .prune(self.lease.fence(), self.ctx.cfg.keep_releases)
                .map_err(|e| self.he(e))
        });
        let seconds = t0.elapsed().as_secs_f64();
        let (ok, report, detail) = match r {
            Ok(rep) => (true, rep, None),
            Err(e) => (false, PruneReport::default(), Some(e)),
        };
        let summary = detail.clone().unwrap_or_else(|| summary(&report, seconds));
        self.journal
            .record(|j| j.step(Some(h), Step::Prune, ok, Some(summary)));
        self.sink.emit(&Event::Prune {
            host: h.to_string(),
            ok,
            removed: report.removed,
            layers_removed: report.layers_removed,
            layers_kept: report.layers_kept,
            layers_busy: report.layers_busy,
            seconds,
            detail,
        });
    }
}

/// What a prune did, in a line: `removed 1 release (abc1234), 1 layer; kept 2 releases, 2
/// layers; 0.4s`.
fn summary(r: &PruneReport, seconds: f64) -> String {
    let n = |k: usize, what: &str| format!("{k} {what}{}", if k == 1 { "" } else { "s" });
    let short: Vec<&str> = r.removed.iter().map(|c| &c[..c.len().min(7)]).collect();
    let mut s = format!("removed {}", n(r.removed.len(), "release"));
    if !short.is_empty() {
        s.push_str(&format!(" ({})", short.join(", ")));
    }
    s.push_str(&format!(
        ", {}; kept {}, {}",
        n(r.layers_removed.len(), "layer"),
        n(r.kept.len(), "release"),
        n(r.layers_kept, "layer")
    ));
    if r.layers_busy {
        s.push_str(" (a fetch was running: no layer removed)");
    }
    s.push_str(&format!("; {seconds:.1}s"));
    s
}
