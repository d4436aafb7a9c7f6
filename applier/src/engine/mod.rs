//! The deploy engine: rolling deploys, rollbacks, resumes and promotions of one environment.
//!
//! The rooms, in the order a deploy walks through them:
//!
//! - [`plan`]: the one planner. Deploy, rollback, resume and promote all become a journal with
//!   a from/to release per host and the batches to roll them in.
//! - `policy`: the env's own policies first: a required message, the failure lock, freeze
//!   windows (overridden, by a person only, with a recorded reason).
//! - `trust`: releases named by records made trustworthy (verified manifest, derived commit),
//!   the storage guard's baseline and each host's restore target.
//! - [`gates`]: storage guard, signature and promotion policy; each passes (with a journal
//!   note) or refuses, naming the record and the way out, before anything is touched.
//! - [`lease`]: the env lease, taken before the first host is touched and renewed beside the run.
//! - `run`: preflight and prefetch, then batches within the capacity guard and the failure
//!   limit, the canary bake, abort (reverse touch order) and the outcome.
//! - `path`: the per-host steps, one definition for going forward and for restoring a host to
//!   its own last known good release; `verify`: its checks step, with the quorum rule and the
//!   fast rollback path.
//! - `canary`: canary against baseline after the canary group (and optionally each batch);
//!   `watch`: the fleet-wide watch beside the whole rollout.
//! - `render_check`: every host renders its target's config in memory before any host is
//!   touched (operator values the release owns, a missing ops file: refused, nothing changed).
//! - [`journal`]: the journal written as the run goes (a base record and append-only
//!   segments, compacted at the end), which is what `resume` reads.
//!
//! Beside them, [`preview`] (`applier plan`): the planner's batches, the capacity guard's waves
//! and an ETA from the env's history, without running anything.
//!
//! This module holds the [`EnvContext`] a run acts on and the public entry points.

mod canary;
pub mod gates;
pub mod journal;
pub mod lease;
mod path;
pub mod plan;
mod policy;
pub mod preview;
mod render_check;
mod run;
mod show;
mod trust;
mod verify;
mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use artifact::resolve::ResolveError;
use artifact::store::{Store, StoreError};
use serde::Serialize;

use crate::config::{EnvConfig, TransportConfig};
use crate::events::{Event, EventSink};
use crate::guard;
use crate::host::{Host, LocalHost};
use crate::pool::{self, Pool};
use crate::records::{self, JournalStatus, RecordError};
use crate::store_meter::{MeteredStore, StoreRequests};
use gates::Refusal;
use lease::LeaseError;
use plan::Intent;

pub use preview::{Preview, preview};
pub use show::service_spec_from_store;

/// An environment ready to act on: its config, store, hosts and pool driver.
#[derive(Debug)]
pub struct EnvContext {
    pub name: String,
    pub cfg: EnvConfig,
    pub store: Arc<dyn Store>,
    pub hosts: BTreeMap<String, Arc<dyn Host>>,
    pub pool: Box<dyn Pool>,
    pub lease_ttl: Duration,
    /// `user@host` of whoever runs this, for the lease and the journal.
    pub who: String,
    /// The meter `store` goes through, whose counts each deploy reports (`None`: not counted).
    pub meter: Option<Arc<MeteredStore>>,
}

impl EnvContext {
    /// The context of `name` with hosts reached as `cfg.transport` says, every store request
    /// going through one [`MeteredStore`] with at most `max_store_requests` in flight.
    pub fn new(
        name: &str,
        cfg: &EnvConfig,
        store: Arc<dyn Store>,
        lease_ttl: Duration,
        who: &str,
        max_store_requests: usize,
    ) -> Self {
        let meter = MeteredStore::new(store, max_store_requests);
        let store: Arc<dyn Store> = meter.clone();
        let hosts = cfg
            .hosts
            .iter()
            .map(|(n, hc)| {
                let h: Arc<dyn Host> = match cfg.transport {
                    TransportConfig::Local => Arc::new(LocalHost::new(n, hc, store.clone())),
                    TransportConfig::Ssh(ref ssh) => {
                        Arc::new(crate::host::ssh::SshHost::new(n, hc, ssh, store.clone()))
                    }
                };
                (n.clone(), h)
            })
            .collect();
        EnvContext {
            name: name.to_string(),
            cfg: cfg.clone(),
            store,
            hosts,
            pool: pool::from_config(name, &cfg.pool),
            lease_ttl,
            who: who.to_string(),
            meter: Some(meter),
        }
    }

    /// The store requests counted so far (none without a meter).
    pub fn store_requests(&self) -> Option<StoreRequests> {
        self.meter.as_ref().map(|m| m.requests())
    }

    fn host(&self, name: &str) -> &dyn Host {
        self.hosts[name].as_ref()
    }

    /// Which `deploy/env/<name>.yaml` a release renders and which storage manifest the guard
    /// reads: `service_env`, or the env's own name.
    pub fn service_env(&self) -> &str {
        self.cfg.service_env.as_deref().unwrap_or(&self.name)
    }
}

/// Why a request was not carried out. Nothing was touched (a run that touched hosts ends in an
/// [`Outcome`] instead).
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Lease(Box<LeaseError>),
    #[error(transparent)]
    Records(#[from] RecordError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A gate refused (storage guard, signature, promotion).
    #[error("refused: {0}")]
    Refused(Refusal),
    /// The request itself is wrong (unknown deploy id, nothing to roll back to).
    #[error("{message}")]
    Usage {
        message: String,
        way_out: Option<String>,
    },
}

/// The classes of [`DeployError`] a caller tells apart (the binary maps them to exit codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or names nothing.
    Usage,
    /// Refused before touching anything.
    Refused,
}

impl From<LeaseError> for DeployError {
    fn from(e: LeaseError) -> Self {
        DeployError::Lease(Box::new(e))
    }
}

impl DeployError {
    fn usage(message: String, way_out: Option<String>) -> Self {
        DeployError::Usage { message, way_out }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            DeployError::Usage { .. } | DeployError::Resolve(ResolveError::BadInput(_)) => {
                ErrorKind::Usage
            }
            _ => ErrorKind::Refused,
        }
    }

    /// What the operator can do about it, where there is something.
    pub fn way_out(&self) -> Option<String> {
        match self {
            DeployError::Refused(r) => r.way_out.clone(),
            DeployError::Usage { way_out, .. } => way_out.clone(),
            DeployError::Resolve(ResolveError::BadInput(_)) => Some(
                "give a manifest digest (sha256:...), a git commit, or a unique prefix of at least 4 hex digits".into(),
            ),
            DeployError::Resolve(ResolveError::NotFound(_)) => Some(
                "build it first (`builder build --rev <commit>`); `builder ls` lists what is stored".into(),
            ),
            DeployError::Resolve(ResolveError::Ambiguous { .. }) => {
                Some("give more digits".into())
            }
            DeployError::Lease(l) => match l.as_ref() {
                LeaseError::Held { env, info } => Some(format!(
                    "wait for deploy {id} to finish; if its applier is gone, `applier resume {id} --env {env}` continues it (add --force if its lease has not expired), or `applier unlock --env {env} --reason '...'` breaks the lock",
                    id = info.deploy_id
                )),
                LeaseError::Corrupt { env, .. } | LeaseError::CorruptFence { key: env, .. } => {
                    let env = env
                        .strip_prefix("envs/")
                        .and_then(|k| k.split('/').next())
                        .unwrap_or(env);
                    Some(format!(
                        "if no deploy of {env} is running, `applier unlock --env {env} --reason '...'` breaks the lock and repairs the fencing counter (recorded in the history)"
                    ))
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// The store record the refusal was decided on, where one is named.
    pub fn record(&self) -> Option<&str> {
        match self {
            DeployError::Refused(r) => Some(&r.record),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct DeployOptions {
    /// The deploy message (`-m/--message`): why.
    pub reason: String,
    /// Where [`EnvContext::who`] came from (`--who`, `SUDO_USER`, `USER`, a CI system).
    pub who_source: Option<String>,
    /// A deploy no person started (continuous deployment, `promote --auto`): the failure lock
    /// and freeze windows refuse it, with no override.
    pub automatic: bool,
    /// Deploy by hand although the env's failure lock is set: the reason (recorded).
    pub ignore_failure_lock: Option<String>,
    /// Deploy during an open freeze window: the reason (recorded).
    pub override_freeze: Option<String>,
    /// A git repository to resolve tag and branch names through (besides the store's ref
    /// records).
    pub repo: Option<std::path::PathBuf>,
    /// `rollback --to <target>`: every host to this artifact (a digest, commit, tag or
    /// branch) instead of its release before the last deploy.
    pub rollback_to: Option<String>,
    /// The moment the policies judge (freeze windows); `None`: now.
    pub now: Option<std::time::SystemTime>,
    /// Set by [`promote`]: the source env's deploy of this artifact, whose deploy type and
    /// acknowledgements are reused and whose storage diff must be this env's too.
    pub promoted_from: Option<crate::promotion::PromotedFrom>,
    pub dry_run: bool,
    /// Storage guard settings: backend rules and `--ack`s.
    pub guard: guard::GuardOptions,
    /// Roll back even where the storage guard says the old code would not start
    /// (`--force-schema-rollback`: for operators who know the storage accepts it).
    pub force_schema_rollback: bool,
    /// Deploy even though the artifact has not passed the env's `promotion.requires`
    /// (`--skip-promotion-check`: an emergency override, recorded in the journal).
    pub skip_promotion_check: bool,
    /// Compare the new release's storage manifest with this release's (digest, commit or
    /// prefix) instead of what the env's records say runs (`--schema-baseline`: for when those
    /// records cannot be read; recorded in the journal).
    pub schema_baseline: Option<String>,
}

/// How a deploy (or rollback, or resume) ended.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub deploy_id: String,
    /// `Running` only for a dry run (nothing was started).
    pub status: JournalStatus,
    pub message: String,
    pub failed: Vec<String>,
    pub needs_human: Vec<String>,
    /// The store requests the deploy made, from its plan to its outcome (with a meter).
    pub store_requests: Option<StoreRequests>,
}

/// Deploys an artifact (digest, commit or unique prefix) to the environment.
pub fn deploy(
    ctx: &EnvContext,
    sink: &dyn EventSink,
    target: &str,
    opts: &DeployOptions,
) -> Result<Outcome, DeployError> {
    let p = plan::plan(ctx, Intent::Deploy { target }, opts)?;
    after_run(ctx, run::run(ctx, sink, p, opts.dry_run))
}

/// A failed run (rolled back, or hosts needing a human) locks the env against automatic
/// deploys ([`crate::failure_lock`]); a lock that cannot be written is said in the outcome.
fn after_run(ctx: &EnvContext, r: Result<Outcome, DeployError>) -> Result<Outcome, DeployError> {
    let mut o = r?;
    if !matches!(
        o.status,
        JournalStatus::RolledBack | JournalStatus::NeedsHuman
    ) {
        return Ok(o);
    }
    let journal =
        records::JournalWriter::open(ctx.store.clone(), &ctx.name, &o.deploy_id).map(|w| w.journal);
    let locked =
        journal.and_then(|j| crate::failure_lock::lock_after(ctx.store.as_ref(), &j, &o.message));
    match locked {
        Ok(_) => o.message.push_str(&format!(
            "; {} is locked against automatic deploys until `applier unlock --env {}`",
            ctx.name, ctx.name
        )),
        Err(e) => o.message.push_str(&format!(
            " (warning: the failure lock could not be written: {e})"
        )),
    }
    Ok(o)
}

/// Deploys to `ctx`'s environment the artifact that environment `from` runs: every host of
/// `from` (`from_hosts`, when its inventory is known) on one release that a succeeded deploy
/// put there. Emits [`Event::Promote`] before the deploy's own events.
pub fn promote(
    ctx: &EnvContext,
    sink: &dyn EventSink,
    from: &str,
    from_hosts: Option<&[String]>,
    opts: &DeployOptions,
) -> Result<Outcome, DeployError> {
    let src =
        crate::promotion::source_release(ctx.store.as_ref(), from, from_hosts).map_err(|e| {
            DeployError::Refused(Refusal {
                record: format!(
                    "{}, {}",
                    crate::keys::env_state(from),
                    crate::keys::deploys_prefix(from)
                ),
                reason: e.to_string(),
                way_out: None,
            })
        })?;
    if opts.automatic
        && let Some(l) = crate::failure_lock::active(ctx.store.as_ref(), from).map_err(|e| {
            DeployError::Refused(Refusal {
                record: crate::keys::failure_lock(from),
                reason: format!("cannot read the failure lock of {from}: {e}"),
                way_out: None,
            })
        })?
    {
        return Err(DeployError::Refused(Refusal {
            record: crate::keys::failure_lock(from),
            reason: format!(
                "an automatic promotion refused: the source {}",
                l.describe()
            ),
            way_out: Some(format!(
                "`applier unlock --env {from} --reason '...'` once it is understood"
            )),
        }));
    }
    let staged = records::JournalWriter::open(ctx.store.clone(), from, &src.deploy_id)?.journal;
    let mut opts = opts.clone();
    let via = format!("{from} deploy {}", src.deploy_id);
    opts.guard.reused_acks = staged
        .guard
        .as_ref()
        .map(|g| g.acks().into_iter().map(|a| (via.clone(), a)).collect())
        .unwrap_or_default();
    opts.promoted_from = Some(crate::promotion::PromotedFrom {
        env: from.to_string(),
        deploy_id: src.deploy_id.clone(),
        deploy_type: staged.deploy_type,
        guard: staged.guard.clone(),
    });
    let opts = &opts;
    sink.emit(&Event::Promote {
        from: from.to_string(),
        to: ctx.name.clone(),
        commit: src.release.commit.to_string(),
        artifact: src.release.manifest,
        from_deploy: src.deploy_id.clone(),
        from_hosts: src.hosts.clone(),
        dry_run: opts.dry_run,
    });
    deploy(ctx, sink, &src.release.manifest.to_string(), opts)
}

/// Rolls every host of the environment back to the release it ran before the last successful
/// deploy (its `from` in that deploy's journal), through the same checked path.
pub fn rollback(
    ctx: &EnvContext,
    sink: &dyn EventSink,
    opts: &DeployOptions,
) -> Result<Outcome, DeployError> {
    let p = plan::plan(ctx, Intent::Rollback, opts)?;
    after_run(ctx, run::run(ctx, sink, p, opts.dry_run))
}

/// Continues (or, with `rollback`, rolls back) a deploy whose applier died. `force` breaks a
/// lease that is still held by that same deploy (use only when its applier is surely gone).
pub fn resume(
    ctx: &EnvContext,
    sink: &dyn EventSink,
    id: &str,
    rollback: bool,
    force: bool,
) -> Result<Outcome, DeployError> {
    let p = plan::plan(
        ctx,
        Intent::Resume {
            id,
            rollback,
            force,
        },
        &DeployOptions::default(),
    )?;
    after_run(ctx, run::run(ctx, sink, p, false))
}

/// One host's view for `applier status`.
#[derive(Clone, Debug, Serialize)]
pub struct HostReport {
    pub host: String,
    pub recorded_current: Option<String>,
    pub recorded_last_good: Option<String>,
    pub current: Option<String>,
    pub running: Option<String>,
    pub pid: Option<i32>,
    pub last_good: Option<String>,
    pub step_in_progress: Option<String>,
    /// What disagrees between the records and the host, if anything.
    pub drift: Vec<String>,
    pub error: Option<String>,
}

/// Every host's release, and drift between the env records and what the host reports.
pub fn status(ctx: &EnvContext) -> Result<Vec<HostReport>, DeployError> {
    let (st, _) = records::load_state(ctx.store.as_ref(), &ctx.name)?;
    let mut out = Vec::new();
    for (name, h) in &ctx.hosts {
        let rec = st.hosts.get(name);
        let recorded_current = rec.and_then(|r| r.current.as_ref().map(|x| x.commit.to_string()));
        let recorded_last_good =
            rec.and_then(|r| r.last_good.as_ref().map(|x| x.commit.to_string()));
        let mut r = HostReport {
            host: name.clone(),
            recorded_current: recorded_current.clone(),
            recorded_last_good,
            current: None,
            running: None,
            pid: None,
            last_good: None,
            step_in_progress: None,
            drift: vec![],
            error: None,
        };
        match h.status() {
            Ok(s) => {
                r.current = s.current.clone();
                r.running = s.running.as_ref().map(|x| x.release.clone());
                r.pid = s.running.as_ref().map(|x| x.pid);
                r.last_good = s.state.last_good.as_ref().map(|x| x.commit.to_string());
                r.step_in_progress = s
                    .state
                    .step
                    .as_ref()
                    .map(|x| format!("{} {}", x.op, x.release.as_deref().unwrap_or("")));
                if recorded_current != s.current {
                    r.drift.push(format!(
                        "records say {}, host has {}",
                        recorded_current.as_deref().unwrap_or("nothing"),
                        s.current.as_deref().unwrap_or("nothing")
                    ));
                }
                if s.current.is_some() && r.running.is_none() {
                    r.drift.push("service not running".into());
                } else if r.running.is_some() && r.running != s.current {
                    r.drift.push("running release differs from current".into());
                }
                if let Some(p) = &r.step_in_progress {
                    r.drift.push(format!("interrupted step: {p}"));
                }
            }
            Err(e) => r.error = Some(e.to_string()),
        }
        out.push(r);
    }
    Ok(out)
}

/// What `applier unlock` did.
#[derive(Clone, Debug, Serialize)]
pub struct UnlockReport {
    /// The journal that records it (`envs/<env>/deploys/<id>.json`, kind `unlock`).
    pub deploy_id: String,
    /// The lock removed: who held it, or why its record did not parse; `None`: there was none.
    pub removed: Option<String>,
    /// The fencing generation now: requests of the removed holder are older.
    pub generation: u64,
}

/// Breaks the env's lock (a stuck or corrupt one) and bumps the fencing counter past every
/// generation the hosts report, so the former holder, if it still runs, is refused by every
/// host a later deploy reaches. Recorded in the env's history as an `unlock` journal with the
/// operator's reason.
pub fn unlock(ctx: &EnvContext, reason: &str) -> Result<UnlockReport, DeployError> {
    if reason.trim().is_empty() {
        return Err(DeployError::usage(
            "unlock needs a reason (--reason ...): it is recorded in the env's history".into(),
            None,
        ));
    }
    // The newest generation any host has seen (unreachable hosts are left to their next
    // preflight, which refuses an older token and says so).
    let floor = ctx
        .hosts
        .values()
        .filter_map(|h| h.status().ok())
        .filter_map(|s| s.state.fences.get(ctx.name.as_str()).map(|f| f.token))
        .max()
        .unwrap_or(0);
    let id = records::new_deploy_id();
    let done = lease::unlock(ctx.store.as_ref(), &ctx.name, &id, floor)?;
    let removed = done.removed.as_ref().map(|r| match r {
        Ok(info) => format!(
            "the lock of deploy {} held by {} (generation {}, until {}): {}",
            info.deploy_id, info.holder, info.generation, info.expires_at, info.reason
        ),
        Err(e) => format!("an unreadable lock record ({e})"),
    });
    let detail = format!(
        "applier unlock: removed {}; fencing generation now {}",
        removed.as_deref().unwrap_or("nothing (no lock was held)"),
        done.generation
    );
    let now = crate::target::now_rfc3339();
    let mut j = records::Journal {
        id: id.clone(),
        env: ctx.name.clone(),
        kind: records::DeployKind::Unlock,
        artifact: None,
        commit: None,
        who: ctx.who.clone(),
        reason: reason.to_string(),
        started_at: now.clone(),
        finished_at: Some(now),
        status: JournalStatus::Succeeded,
        deploy_type: None,
        groups: vec![],
        hosts: BTreeMap::new(),
        steps: vec![],
        abort_reason: None,
        needs_human: vec![],
        analysis: vec![],
        segments: 0,
        damaged: vec![],
        who_source: None,
        source_ref: None,
        guard: None,
        overrides: vec![],
    };
    j.step(None, records::Step::Override, true, Some(detail));
    let mut w = records::JournalWriter::create(ctx.store.clone(), j.clone());
    w.write_base(&j)?;
    Ok(UnlockReport {
        deploy_id: id,
        removed,
        generation: done.generation,
    })
}
