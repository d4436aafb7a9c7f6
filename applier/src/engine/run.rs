//! Running a plan: the lease, preflight and prefetch, batches within the capacity guard and
//! the failure limit, the canary bake; how a run ends (refusal, abort, outcome) is in `end`.
//!
//! Hosts of a batch go through their path ([`super::path`]) in parallel. A failure within the
//! failure limit returns that host to its own last good release and the roll goes on; past it,
//! the run aborts: every touched host goes back to its own last good release, in reverse touch
//! order. A lost lease stops the run at once: before every step that changes a host or the
//! pool the lease is confirmed ([`LeaseKeeper::confirm`]), and a host that refuses the run's
//! fencing token marks it lost; a run that lost its lease rolls nothing back (another deploy
//! holds the environment). An unwritable journal stops the run at the next batch.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use artifact::Digest;
use artifact::manifest::Manifest;

use super::gates::Refusal;
use super::journal::RunJournal;
use super::lease::{self, LeaseError, LeaseKeeper};
use super::plan::{Mode, Plan};
use super::{DeployError, EnvContext, Outcome};
use crate::events::{Event, EventSink};
use crate::protocol::ReleaseRef;
use crate::records::{DeployKind, HostPhase, JournalStatus, Step};
use crate::store_meter::StoreRequests;

mod end;
mod prune;
mod state;

/// One running deploy, rollback or resume.
pub(super) struct Run<'a> {
    pub(super) ctx: &'a EnvContext,
    pub(super) sink: &'a dyn EventSink,
    pub(super) journal: RunJournal,
    pub(super) manifests: BTreeMap<Digest, Manifest>,
    pub(super) lease: LeaseKeeper,
    /// The last touch order given out (hosts are restored in reverse of it).
    pub(super) touch: AtomicU32,
    /// Stops from the side (the watch, a quorum) and what never got data.
    pub(super) signals: super::watch::Signals,
    /// Hosts not to be switched back to their restore target (host -> why).
    pub(super) no_restore: BTreeMap<String, String>,
    /// The store's counts before the plan (see [`Run::finish`]).
    store_base: Option<StoreRequests>,
    /// Each host's own answer for its target's `deploy/service.yaml`, read by the render
    /// check, so the host's path does not ask again (`super::path`).
    pub(super) specs: Mutex<BTreeMap<String, (ReleaseRef, crate::service::ServiceSpec)>>,
    /// What this run wrote to the env state, per host (so it is written once per batch, and
    /// only what changed).
    recorded: Mutex<BTreeMap<String, ReleaseRef>>,
    /// Hosts whose env state the state writer is to write, and whether it is writing.
    state_queue: Mutex<(BTreeSet<String>, bool)>,
    state_cv: Condvar,
    /// Hosts done, to be pruned beside the rest of the run.
    pruner: prune::Pruner,
}

/// Emits the plan; unless this is a dry run, takes the lease and runs it.
// `LeaseError::Held` carries the holder's record by value; taking a lease is rare.
#[allow(clippy::result_large_err)]
pub(super) fn run(
    ctx: &EnvContext,
    sink: &dyn EventSink,
    plan: Plan,
    dry_run: bool,
) -> Result<Outcome, DeployError> {
    if plan.mode == Mode::Fresh {
        super::show::emit_plan(ctx, sink, &plan, dry_run);
    }
    if dry_run {
        return Ok(Outcome {
            deploy_id: plan.journal().id.clone(),
            status: JournalStatus::Running,
            message: "dry run: nothing changed".into(),
            failed: vec![],
            needs_human: vec![],
            store_requests: None,
        });
    }
    let id = plan.journal().id.clone();
    let take = || {
        lease::acquire(
            ctx.store.as_ref(),
            &ctx.name,
            &ctx.who,
            &plan.lease_reason,
            &id,
            ctx.lease_ttl,
            SystemTime::now(),
        )
    };
    let held = match take() {
        Err(LeaseError::Held { info, .. }) if info.deploy_id == id && plan.break_own_lease => {
            lease::break_held(ctx.store.as_ref(), &ctx.name, &id)?;
            take()?
        }
        r => r?,
    };
    let keeper = match LeaseKeeper::new(held.clone(), ctx.lease_ttl) {
        Ok(k) => k,
        Err(e) => {
            let _ = lease::release(ctx.store.as_ref(), &held);
            return Err(e.into());
        }
    };
    let mut run = Run::new(ctx, sink, plan.writer, plan.manifests, keeper);
    run.no_restore = plan.no_restore;
    run.store_base = plan.store_base;
    run.journal.note(|j| {
        j.step(
            None,
            Step::Lease,
            true,
            Some(format!("fencing generation {}", run.lease.fence().token)),
        )
    });
    match plan.mode {
        Mode::Fresh => {}
        Mode::Continue => run.journal.note(|j| j.step(None, Step::Resume, true, None)),
        Mode::RollBack => run
            .journal
            .note(|j| j.step(None, Step::ResumeRollback, true, None)),
    }
    run.start(plan.mode)
}

impl<'a> Run<'a> {
    fn new(
        ctx: &'a EnvContext,
        sink: &'a dyn EventSink,
        writer: crate::records::JournalWriter,
        manifests: BTreeMap<Digest, Manifest>,
        lease: LeaseKeeper,
    ) -> Self {
        let touch = writer
            .journal
            .hosts
            .values()
            .filter_map(|e| e.touched)
            .max()
            .unwrap_or(0);
        Run {
            ctx,
            sink,
            journal: RunJournal::new(writer),
            manifests,
            lease,
            touch: AtomicU32::new(touch),
            signals: Default::default(),
            no_restore: BTreeMap::new(),
            store_base: None,
            specs: Mutex::new(BTreeMap::new()),
            recorded: Mutex::new(BTreeMap::new()),
            state_queue: Mutex::new((BTreeSet::new(), false)),
            state_cv: Condvar::new(),
            pruner: Default::default(),
        }
    }

    /// `Err` when the run must stop: the lease is lost or the journal cannot be written.
    pub(super) fn healthy(&self) -> Result<(), String> {
        self.lease.held()?;
        if let Some(e) = self.journal.failure() {
            return Err(format!("the journal cannot be written: {e}"));
        }
        Ok(())
    }

    /// Runs the plan with the lease renewed and the journal flushed beside it, then compacts
    /// the journal and releases the lease.
    fn start(self, mode: Mode) -> Result<Outcome, DeployError> {
        let stop = AtomicBool::new(false);
        let watching = AtomicBool::new(false);
        let result = std::thread::scope(|s| {
            s.spawn(|| self.lease.renew_until(self.ctx.store.as_ref(), &stop));
            s.spawn(|| self.journal.flusher(&stop));
            s.spawn(|| self.state_writer(&stop));
            let pruners = self.ctx.cfg.prefetch_parallelism.clamp(1, 4);
            for _ in 0..pruners.min(self.ctx.hosts.len()) {
                s.spawn(|| self.prune_worker());
            }
            // The fleet-wide watch, for the whole rollout of a deploy.
            let kind = self.journal.read(|j| j.kind);
            if let Some(w) = &self.ctx.cfg.checks.watch
                && mode != Mode::RollBack
                && kind == DeployKind::Deploy
            {
                s.spawn(|| self.watch(w, &watching));
            }
            let r = match mode {
                Mode::Fresh => self.execute(false),
                Mode::Continue => self.execute(true),
                Mode::RollBack => Ok(self.abort_and_finish("rollback requested on resume".into())),
            };
            self.stop_pruning();
            watching.store(true, Ordering::SeqCst);
            stop.store(true, Ordering::SeqCst);
            self.state_cv.notify_all();
            r
        });
        if let Err(e) = self.journal.close() {
            tracing::warn!(
                "journal {}: not compacted ({e}); its segments hold it",
                self.journal.id()
            );
        }
        self.lease.release(self.ctx.store.as_ref());
        result
    }

    fn execute(&self, resume: bool) -> Result<Outcome, DeployError> {
        self.journal.flush();
        if let Some(e) = self.journal.failure() {
            return Err(DeployError::Refused(Refusal {
                record: self
                    .journal
                    .read(|j| crate::keys::deploy_journal(&j.env, &j.id)),
                reason: format!("cannot write the journal: {e}"),
                way_out: None,
            }));
        }
        let (groups, kind) = self.journal.read(|j| (j.groups.clone(), j.kind));
        let all: Vec<String> = groups
            .iter()
            .flat_map(|(_, hs)| hs.iter().cloned())
            .collect();
        let verified = if resume {
            self.bounded(&all, |h| self.done_and_verified(h))
        } else {
            vec![false; all.len()]
        };
        let pending: Vec<String> = all
            .into_iter()
            .zip(verified)
            .filter(|(_, done)| !done)
            .map(|(h, _)| h)
            .collect();
        let pending_set: HashSet<&String> = pending.iter().collect();
        if !resume && let Err(reason) = self.preflight(&pending) {
            return Ok(self.refuse(reason));
        }
        for check in [Self::prefetch, Self::render_check] {
            if let Err(reason) = check(self, &pending) {
                if resume {
                    return Ok(self.abort_and_finish(reason));
                }
                return Ok(self.refuse(reason));
            }
        }
        if kind == DeployKind::Rollback {
            self.note(
                None,
                Step::FastRollback,
                super::verify::FAST_PATH.to_string(),
            );
        }
        let max_out = self.ctx.cfg.max_out();
        let mut failures = 0usize;
        for (bi, (group, hosts)) in groups.iter().enumerate() {
            let todo: Vec<String> = hosts
                .iter()
                .filter(|h| pending_set.contains(h))
                .cloned()
                .collect();
            if todo.is_empty() {
                continue;
            }
            self.sink.emit(&Event::Group {
                group: group.clone(),
                hosts: todo.clone(),
            });
            let mut rest: &[String] = &todo;
            while !rest.is_empty() {
                if let Err(reason) = self.healthy() {
                    return Ok(self.abort_and_finish(reason));
                }
                if let Some(reason) = self.signals.reason() {
                    return Ok(self.abort_and_finish(reason));
                }
                // Capacity guard: hosts already out of the pool (whoever took them out) count.
                let room = match self.capacity_room(max_out, rest) {
                    Ok(n) => n,
                    Err(reason) => return Ok(self.abort_and_finish(reason)),
                };
                let (chunk, tail) = rest.split_at(room.min(rest.len()));
                rest = tail;
                let failed_here = self.roll_batch(chunk);
                // The watch tripped or hosts agreed on a failure: abort, whatever the limit.
                if let Some(reason) = self.signals.reason() {
                    return Ok(self.abort_and_finish(reason));
                }
                failures += failed_here.len();
                if failures > self.ctx.cfg.failure_limit {
                    return Ok(self.abort_and_finish(format!("{} failed", failed_here.join(", "))));
                }
                // Within the failure limit: return each failed host to its last good release.
                for h in chunk {
                    if self.journal.entry(h).phase == HostPhase::Failed {
                        self.restore(h);
                    }
                }
                self.record_env_later(chunk);
            }
            let bake = self.ctx.cfg.canary_bake.0;
            if bi == 0
                && groups.len() > 1
                && !bake.is_zero()
                && kind == DeployKind::Deploy
                && let Err(reason) = self.bake(group, &todo, bake)
            {
                return Ok(self.abort_and_finish(reason));
            }
            // Canary against baseline: the canary group, and with `every_batch` each batch.
            if let Some(c) = &self.ctx.cfg.checks.canary
                && kind == DeployKind::Deploy
                && (bi == 0 || c.every_batch)
                && let Err(reason) = self.analyse(c, group, &todo, SystemTime::now())
            {
                return Ok(self.abort_and_finish(reason));
            }
            // The group passed (its bake and analysis too): pruned beside the next groups, not
            // after the last host; nothing is asked of a host while its group is judged.
            self.prune_later(
                todo.iter()
                    .filter(|h| self.journal.entry(h).phase == HostPhase::Done),
            );
        }
        self.prune_rest_and_wait();
        let (failed, needs_human) = self.journal.hosts(|hs| {
            let pick = |f: fn(HostPhase) -> bool| -> Vec<String> {
                hs.iter()
                    .filter(|(_, e)| f(e.phase))
                    .map(|(h, _)| h.clone())
                    .collect()
            };
            (
                pick(|p| {
                    matches!(
                        p,
                        HostPhase::RolledBack | HostPhase::NeedsHuman | HostPhase::Failed
                    )
                }),
                pick(|p| matches!(p, HostPhase::NeedsHuman | HostPhase::Failed)),
            )
        });
        let status = if needs_human.is_empty() {
            JournalStatus::Succeeded
        } else {
            JournalStatus::NeedsHuman
        };
        let message = if failed.is_empty() {
            "every host passed".to_string()
        } else {
            format!(
                "completed; within the failure limit, returned to their last good release: {}",
                failed.join(", ")
            )
        };
        Ok(self.finish(status, message, failed, needs_human))
    }

    /// Runs the path of every host of `chunk` at once; returns the failed ones, described.
    /// The hosts are recorded in progress, durably, before any is touched.
    fn roll_batch(&self, chunk: &[String]) -> Vec<String> {
        self.take_in_hand(chunk);
        let failed = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|h| (h, s.spawn(|| self.deploy_host(h))))
                .collect();
            handles
                .into_iter()
                .filter_map(|(h, t)| match t.join() {
                    Ok(Ok(())) => None,
                    Ok(Err(f)) => Some(format!("{h} ({})", f.short())),
                    Err(_) => Some(format!("{h} ({}: host thread panicked)", Step::Panic)),
                })
                .collect()
        });
        // The outcomes are written by whatever the run writes next, at the latest the next
        // batch's own durable write before it touches a host (or the flusher, within 50 ms).
        failed
    }

    /// The canary bake: wait, staying healthy, then check the canaries again.
    fn bake(&self, group: &str, hosts: &[String], bake: Duration) -> Result<(), String> {
        self.sink.emit(&Event::Bake {
            group: group.to_string(),
            seconds: bake.as_secs(),
        });
        let until = Instant::now() + bake;
        while Instant::now() < until {
            self.healthy()?;
            if let Some(r) = self.signals.reason() {
                return Err(r);
            }
            std::thread::sleep(
                Duration::from_millis(100).min(until.saturating_duration_since(Instant::now())),
            );
        }
        for h in hosts {
            if self.journal.entry(h).phase != HostPhase::Done {
                continue;
            }
            if let Err(f) = self.recheck(h) {
                self.set_phase(
                    h,
                    HostPhase::Failed,
                    Some(format!("after bake: {}", f.detail)),
                );
                return Err(format!("canary {h} failed after the bake: {}", f.detail));
            }
        }
        Ok(())
    }

    /// How many of `next` may go out of the pool now: `max_out` less the other hosts the
    /// pool driver reports out (waiting up to `capacity.wait` for them to come back).
    fn capacity_room(&self, max_out: usize, next: &[String]) -> Result<usize, String> {
        let all: Vec<String> = self.ctx.hosts.keys().cloned().collect();
        let candidates = &next[..max_out.min(next.len())];
        let wait = self.ctx.cfg.capacity.wait.0;
        let t0 = Instant::now();
        let mut waiting_noted = false;
        let (others, room) = loop {
            let out = self
                .ctx
                .pool
                .out_of_pool(&all)
                .map_err(|e| format!("capacity guard: {e}"))?;
            let others: Vec<String> = out
                .into_iter()
                .filter(|h| !candidates.contains(h))
                .collect();
            let room = max_out.saturating_sub(others.len());
            if room > 0 || t0.elapsed() >= wait {
                break (others, room);
            }
            if !waiting_noted {
                waiting_noted = true;
                let detail = format!(
                    "waiting up to {}s for hosts to return to the pool: {}",
                    wait.as_secs(),
                    others.join(", ")
                );
                self.journal
                    .record(|j| j.step(None, Step::Capacity, true, Some(detail)));
            }
            self.healthy()?;
            std::thread::sleep(Duration::from_secs(2).min(wait.saturating_sub(t0.elapsed())));
        };
        if room == 0 {
            return Err(format!(
                "capacity guard: already out of the pool: {} (max_out {max_out})",
                others.join(", ")
            ));
        }
        if !others.is_empty() {
            let detail = format!(
                "out of the pool already: {}; {room} at a time",
                others.join(", ")
            );
            self.journal
                .record(|j| j.step(None, Step::Capacity, true, Some(detail)));
        }
        Ok(room)
    }

    /// On resume: a host recorded done that still runs its target needs nothing.
    fn done_and_verified(&self, host: &str) -> bool {
        let e = self.journal.entry(host);
        if e.phase != HostPhase::Done {
            return false;
        }
        match self.ctx.host(host).status() {
            Ok(s) => {
                s.current.as_deref() == Some(e.to.commit.as_str())
                    && s.state.current.as_ref() == Some(&e.to)
                    && s.running.is_some()
                    && s.state.step.is_none()
            }
            Err(_) => false,
        }
    }

    /// Runs `f` for every host on at most `prefetch_parallelism` worker threads; results in
    /// `hosts` order.
    pub(super) fn bounded<T: Send>(
        &self,
        hosts: &[String],
        f: impl Fn(&String) -> T + Sync,
    ) -> Vec<T> {
        bounded(self.ctx.cfg.prefetch_parallelism, hosts, f)
    }
}

/// Runs `f` for every host on at most `workers` threads (a pool: a worker takes the next host
/// as soon as it is free); results in `hosts` order.
pub(super) fn bounded<T: Send>(
    workers: usize,
    hosts: &[String],
    f: impl Fn(&String) -> T + Sync,
) -> Vec<T> {
    let workers = workers.max(1).min(hosts.len());
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<T>>> = hosts.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(h) = hosts.get(i) else { break };
                    *results[i].lock().unwrap() = Some(f(h));
                }
            });
        }
    });
    results
        .into_iter()
        .map(|r| r.into_inner().unwrap().expect("every host ran"))
        .collect()
}
