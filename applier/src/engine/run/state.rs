//! The run's env-state writer: hosts done (or rolled back) are queued and written to
//! `envs/<env>/state.json` by one thread, one compare-and-swap for all that queued during the
//! last write, so the state is written at most once per batch, and only by the lease holder.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::Run;
use crate::protocol::ReleaseRef;
use crate::records::{self, HostPhase, Step};
use crate::target::now_rfc3339;

impl Run<'_> {
    /// Has the state writer record `hosts` in the env state, beside the next batch.
    pub(super) fn record_env_later(&self, hosts: &[String]) {
        self.state_queue
            .lock()
            .unwrap()
            .0
            .extend(hosts.iter().cloned());
        self.state_cv.notify_all();
    }

    /// Writes the env state of the hosts [`Run::record_env_later`] queues, one compare-and-swap
    /// for all that queued while the last was written, until `stop`.
    pub(super) fn state_writer(&self, stop: &AtomicBool) {
        loop {
            let hosts: Vec<String> = {
                let mut q = self.state_queue.lock().unwrap();
                while q.0.is_empty() && !stop.load(Ordering::SeqCst) {
                    q = self
                        .state_cv
                        .wait_timeout(q, Duration::from_millis(100))
                        .unwrap()
                        .0;
                }
                if q.0.is_empty() {
                    return;
                }
                q.1 = true;
                std::mem::take(&mut q.0).into_iter().collect()
            };
            self.record_env(&hosts);
            self.state_queue.lock().unwrap().1 = false;
            self.state_cv.notify_all();
        }
    }

    /// Takes what the state writer has not written yet and waits for the write under way, so
    /// the run's last write of the env state comes after every other.
    pub(super) fn drain_state_writer(&self) {
        let mut q = self.state_queue.lock().unwrap();
        q.0.clear();
        while q.1 {
            q = self
                .state_cv
                .wait_timeout(q, Duration::from_millis(100))
                .unwrap()
                .0;
        }
    }

    /// Writes to the env state, in one compare-and-swap, what the journal says `hosts` run now
    /// that this run did not write yet: a host done runs its target, a host rolled back its
    /// own `from` (a host with nothing to go back to is left as recorded). A failed write is a
    /// journal step; the next call (at the latest, the one at the end) writes it again.
    pub(super) fn record_env(&self, hosts: &[String]) {
        let (id, dt, changes) = self.journal.read(|j| {
            let recorded = self.recorded.lock().unwrap();
            let changes: Vec<(String, ReleaseRef)> = hosts
                .iter()
                .filter_map(|h| {
                    let e = &j.hosts[h];
                    let now = match e.phase {
                        HostPhase::Done => Some(&e.to),
                        // Not a host taken out instead of switched back (it runs nothing).
                        HostPhase::RolledBack => {
                            e.from.as_ref().filter(|_| !self.no_restore.contains_key(h))
                        }
                        _ => None,
                    }?;
                    (recorded.get(h) != Some(now)).then(|| (h.clone(), now.clone()))
                })
                .collect();
            (j.id.clone(), j.deploy_type, changes)
        });
        if changes.is_empty() {
            return;
        }
        // Only the lease holder writes the env state.
        if let Err(why) = self.lease.confirm(self.ctx.store.as_ref()) {
            self.journal
                .record(|j| j.step(None, Step::Record, false, Some(why)));
            return;
        }
        let r = records::update_state(self.ctx.store.as_ref(), &self.ctx.name, |st| {
            let at = now_rfc3339();
            for (h, release) in &changes {
                let rec = st.hosts.entry(h.clone()).or_default();
                rec.current = Some(release.clone());
                rec.last_good = Some(release.clone());
                rec.deploy_id = Some(id.clone());
                rec.updated_at = at.clone();
            }
            st.last_deploy = Some(id.clone());
            if dt.is_some() {
                st.deploy_type = dt;
            }
        });
        match r {
            Ok(_) => self.recorded.lock().unwrap().extend(changes),
            Err(e) => {
                let names: Vec<&str> = changes.iter().map(|(h, _)| h.as_str()).collect();
                let detail = format!("{} (hosts {})", e, names.join(", "));
                self.journal
                    .record(|j| j.step(None, Step::Record, false, Some(detail)));
            }
        }
    }
}
