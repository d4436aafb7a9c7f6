//! The rolling deploy: plan, lease, preflight, prefetch, roll group by group, abort and roll
//! back, and the same engine for `rollback` and `resume`.
//!
//! Per host the path is always the same ([`Run::converge`]): depool -> stop -> render config ->
//! switch -> start -> wait for the port -> checks in order -> mark good and repool only if every
//! check passed. A rollback is that path with the host's own last known good release as the
//! target. Every step is written to the deploy's journal as it completes, so `resume` knows
//! which hosts are done, which were in the middle (redone from the start of the path: it is
//! idempotent) and which were never touched.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use artifact::lease::{self, Lease, LeaseError};
use artifact::manifest::{LayerKind, Manifest};
use artifact::store::{Store, StoreError};
use artifact::{Digest, keys, sign};
use serde::Serialize;

use crate::checks::{self, CheckContext, CheckResult, CheckSpec};
use crate::config::{EnvConfig, TransportConfig};
use crate::events::{Event, EventSink, PlanGroup, PlanHost};
use crate::guard::{self, DeployType};
use crate::hostops::{
    HostError, PreflightRequest, ReadyRequest, ReleaseRef, RenderRequest, StartRequest, now_rfc3339,
};
use crate::pool::{self, Pool};
use crate::records::{
    self, DeployKind, HostEntry, HostPhase, Journal, JournalStatus, JournalWriter, RecordError,
};
use crate::resolve::{self, ResolveError};
use crate::service::ServiceSpec;
use crate::transport::{Host, LocalHost};

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
}

impl EnvContext {
    pub fn new(
        name: &str,
        cfg: &EnvConfig,
        store: Arc<dyn Store>,
        lease_ttl: Duration,
        who: &str,
    ) -> Self {
        let hosts = cfg
            .hosts
            .iter()
            .map(|(n, hc)| {
                let h: Arc<dyn Host> = match cfg.transport {
                    TransportConfig::Local => Arc::new(LocalHost::new(n, hc, store.clone())),
                    TransportConfig::Ssh(ref ssh) => {
                        Arc::new(crate::ssh::SshHost::new(n, hc, ssh, store.clone()))
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
        }
    }

    fn host(&self, name: &str) -> &dyn Host {
        self.hosts[name].as_ref()
    }
}

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
    /// Refused before touching anything (preflight, prefetch, guard).
    #[error("refused: {0}")]
    Refused(String),
    /// The request itself is wrong (unknown deploy id, nothing to roll back to).
    #[error("{0}")]
    Usage(String),
    /// Refused by the env's `promotion` gate (or nothing to promote); nothing was touched.
    #[error("refused: {0}")]
    Promotion(#[from] crate::promotion::PromotionError),
}

impl From<LeaseError> for DeployError {
    fn from(e: LeaseError) -> Self {
        DeployError::Lease(Box::new(e))
    }
}

impl DeployError {
    /// 64 for usage errors, 3 for everything refused before a host was touched.
    pub fn exit_code(&self) -> i32 {
        match self {
            DeployError::Usage(_) | DeployError::Resolve(ResolveError::BadInput(_)) => 64,
            _ => 3,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct DeployOptions {
    pub reason: String,
    pub dry_run: bool,
    /// Storage guard settings: backend rules and `--ack`s.
    pub guard: guard::GuardOptions,
    /// Roll back even where the storage guard says the old code would not start
    /// (`--force-schema-rollback`: for operators who know the storage accepts it).
    pub force_schema_rollback: bool,
    /// Deploy even though the artifact has not passed the env's `promotion.requires`
    /// (`--skip-promotion-check`: an emergency override, recorded in the journal).
    pub skip_promotion_check: bool,
}

/// How a deploy (or rollback, or resume) ended.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub deploy_id: String,
    pub status: JournalStatus,
    pub message: String,
    pub failed: Vec<String>,
    pub needs_human: Vec<String>,
}

impl Outcome {
    /// 0 success (or a dry run), 1 failed and cleanly rolled back, 2 hosts need a human.
    pub fn exit_code(&self) -> i32 {
        match self.status {
            JournalStatus::Succeeded | JournalStatus::Running => 0,
            JournalStatus::RolledBack => 1,
            JournalStatus::NeedsHuman => 2,
            JournalStatus::Refused => 3,
        }
    }
}

/// Deploys an artifact (digest, commit or unique prefix) to the environment.
pub fn deploy(
    ctx: &EnvContext,
    sink: &dyn EventSink,
    target: &str,
    opts: &DeployOptions,
) -> Result<Outcome, DeployError> {
    let (digest, manifest) = resolve::resolve(ctx.store.as_ref(), target)?;
    check_signature(ctx, &digest, &manifest.source.commit)?;
    let promotion_step = promotion_gate(ctx, &digest, &manifest.source.commit, opts)?;
    let to = ReleaseRef {
        commit: manifest.source.commit.clone(),
        manifest: digest,
    };
    let (env_state, _) = records::load_state(ctx.store.as_ref(), &ctx.name)?;

    // Guard: compare storage manifests with what the env runs now.
    let current_digest = most_common(
        env_state
            .hosts
            .values()
            .filter_map(|h| h.current.as_ref().map(|r| r.manifest)),
    );
    let current_manifest = match current_digest {
        Some(d) if d != digest => resolve::load_verified(ctx.store.as_ref(), &d).ok(),
        _ => None,
    };
    let current_storage = match &current_manifest {
        Some(m) => m.storage.clone(),
        None => manifest.storage.clone(),
    };
    let service_env = ctx
        .cfg
        .service_env
        .clone()
        .unwrap_or_else(|| ctx.name.clone());
    let g = guard::check(
        guard::select(current_storage.as_ref(), &service_env),
        guard::select(manifest.storage.as_ref(), &service_env),
        &opts.guard,
    )
    .map_err(|e| DeployError::Refused(format!("storage guard: {e}")))?;
    let mut g = g;
    if g.deploy_type == DeployType::Code
        && current_manifest
            .as_ref()
            .is_some_and(|cur| guard::config_only(cur, &manifest))
    {
        g.deploy_type = DeployType::Config;
    }
    if !g.allowed {
        let mut msg = format!("storage guard: {}", g.findings.join("; "));
        if !g.recipes.is_empty() {
            msg.push_str(&format!(
                ". If you deploy it anyway (--ack), the way back is: {}",
                g.recipes.join(" ")
            ));
        }
        return Err(DeployError::Refused(msg));
    }

    let id = records::new_deploy_id();
    let mut hosts = BTreeMap::new();
    let batches = ctx.cfg.batches();
    for (group, names) in &batches {
        for n in names {
            let from = host_from(ctx, n, &env_state);
            hosts.insert(
                n.clone(),
                HostEntry {
                    group: group.clone(),
                    from,
                    to: to.clone(),
                    phase: HostPhase::Pending,
                    touched: None,
                    detail: None,
                    checks: vec![],
                },
            );
        }
    }
    let mut journal = Journal {
        id: id.clone(),
        env: ctx.name.clone(),
        kind: DeployKind::Deploy,
        artifact: Some(digest),
        commit: Some(to.commit.clone()),
        who: ctx.who.clone(),
        reason: opts.reason.clone(),
        started_at: now_rfc3339(),
        finished_at: None,
        status: JournalStatus::Running,
        deploy_type: Some(g.deploy_type),
        groups: batches,
        hosts,
        steps: vec![],
        abort_reason: None,
        needs_human: vec![],
    };
    if let Some((skipped, detail)) = promotion_step {
        if skipped {
            journal.reason = format!("{} [promotion check skipped: {detail}]", opts.reason)
                .trim_start()
                .to_string();
        }
        journal.step(None, "promotion-check", true, Some(detail));
    }
    let mut manifests = BTreeMap::new();
    manifests.insert(digest, manifest);
    let reason = format!("deploy {} ({})", to.commit, opts.reason);
    plan_then_run(ctx, sink, journal, manifests, opts.dry_run, &reason)
}

/// Prints the plan; unless this is a dry run, takes the env lease and runs the journal's plan.
fn plan_then_run(
    ctx: &EnvContext,
    sink: &dyn EventSink,
    journal: Journal,
    manifests: BTreeMap<Digest, Manifest>,
    dry_run: bool,
    lease_reason: &str,
) -> Result<Outcome, DeployError> {
    emit_plan(ctx, sink, &journal, &manifests, dry_run);
    if dry_run {
        return Ok(Outcome {
            deploy_id: journal.id,
            status: JournalStatus::Running,
            message: "dry run: nothing changed".into(),
            failed: vec![],
            needs_human: vec![],
        });
    }
    let lease = lease::acquire(
        ctx.store.as_ref(),
        &ctx.name,
        &ctx.who,
        lease_reason,
        &journal.id,
        ctx.lease_ttl,
        SystemTime::now(),
    )?;
    let writer = JournalWriter::create(ctx.store.clone(), journal);
    Run::new(ctx, sink, writer, manifests, lease).start(false)
}

/// Rolls every host of the environment back to the release it ran before the last successful
/// deploy (its `from` in that deploy's journal), through the same checked path.
pub fn rollback(
    ctx: &EnvContext,
    sink: &dyn EventSink,
    opts: &DeployOptions,
) -> Result<Outcome, DeployError> {
    let (env_state, _) = records::load_state(ctx.store.as_ref(), &ctx.name)?;
    let last = records::history(ctx.store.as_ref(), &ctx.name)?
        .into_iter()
        .rev()
        .find(|j| j.status == JournalStatus::Succeeded && j.kind == DeployKind::Deploy);
    let id = records::new_deploy_id();
    let mut hosts = BTreeMap::new();
    let mut manifests = BTreeMap::new();
    let batches = ctx.cfg.batches();
    for (group, names) in &batches {
        for n in names {
            let target = match &last {
                Some(j) => j.hosts.get(n).and_then(|e| e.from.clone()),
                None => ctx
                    .host(n)
                    .status()
                    .ok()
                    .and_then(|s| s.state.previous_good),
            };
            let Some(target) = target else { continue };
            let from = host_from(ctx, n, &env_state);
            if from.as_ref() == Some(&target) {
                continue;
            }
            for r in from.iter().chain(std::iter::once(&target)) {
                if let std::collections::btree_map::Entry::Vacant(slot) =
                    manifests.entry(r.manifest)
                {
                    slot.insert(resolve::load_verified(ctx.store.as_ref(), &r.manifest)?);
                }
            }
            check_signature(ctx, &target.manifest, &target.commit)?;
            if let Some(f) = &from
                && !opts.force_schema_rollback
            {
                let service_env = ctx.cfg.service_env.as_deref().unwrap_or(&ctx.name);
                guard::check_rollback(
                    guard::select(manifests[&f.manifest].storage.as_ref(), service_env),
                    guard::select(manifests[&target.manifest].storage.as_ref(), service_env),
                    opts.guard.backend,
                )
                .map_err(|e| {
                    DeployError::Refused(format!(
                        "rollback of {n} refused by the storage guard: {e} (override: --force-schema-rollback)"
                    ))
                })?;
            }
            hosts.insert(
                n.clone(),
                HostEntry {
                    group: group.clone(),
                    from,
                    to: target,
                    phase: HostPhase::Pending,
                    touched: None,
                    detail: None,
                    checks: vec![],
                },
            );
        }
    }
    if hosts.is_empty() {
        return Err(DeployError::Usage(format!(
            "nothing to roll back to in {}",
            ctx.name
        )));
    }
    let batches: Vec<(String, Vec<String>)> = batches
        .into_iter()
        .map(|(g, hs)| {
            (
                g,
                hs.into_iter()
                    .filter(|h| hosts.contains_key(h))
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, hs)| !hs.is_empty())
        .collect();
    let journal = Journal {
        id: id.clone(),
        env: ctx.name.clone(),
        kind: DeployKind::Rollback,
        artifact: None,
        commit: None,
        who: ctx.who.clone(),
        reason: opts.reason.clone(),
        started_at: now_rfc3339(),
        finished_at: None,
        status: JournalStatus::Running,
        deploy_type: Some(DeployType::Code),
        groups: batches,
        hosts,
        steps: vec![],
        abort_reason: None,
        needs_human: vec![],
    };
    let reason = format!("rollback ({})", opts.reason);
    plan_then_run(ctx, sink, journal, manifests, opts.dry_run, &reason)
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
    let writer = match JournalWriter::open(ctx.store.clone(), &ctx.name, id) {
        Ok(w) => w,
        Err(RecordError::Store(e)) if e.is_not_found() => {
            return Err(DeployError::Usage(format!(
                "no deploy {id} in {}",
                ctx.name
            )));
        }
        Err(e) => return Err(e.into()),
    };
    if writer.journal.status != JournalStatus::Running {
        return Err(DeployError::Usage(format!(
            "deploy {id} already finished ({:?})",
            writer.journal.status
        )));
    }
    // Continuing installs the deploy's targets: they must still be signed. Rolling back on
    // resume restores what the hosts ran before and is not held up by a signature policy.
    if !rollback {
        let mut checked = std::collections::BTreeSet::new();
        for e in writer.journal.hosts.values() {
            if checked.insert(e.to.manifest) {
                check_signature(ctx, &e.to.manifest, &e.to.commit)?;
            }
        }
    }
    let lease = match lease::acquire(
        ctx.store.as_ref(),
        &ctx.name,
        &ctx.who,
        &format!("resume {id}"),
        id,
        ctx.lease_ttl,
        SystemTime::now(),
    ) {
        Ok(l) => l,
        Err(LeaseError::Held { info, .. }) if info.deploy_id == id && force => {
            if let Some((_, etag)) = lease::current(ctx.store.as_ref(), &ctx.name)? {
                ctx.store.delete_if(&keys::env_lock(&ctx.name), &etag)?;
            }
            lease::acquire(
                ctx.store.as_ref(),
                &ctx.name,
                &ctx.who,
                &format!("resume {id}"),
                id,
                ctx.lease_ttl,
                SystemTime::now(),
            )?
        }
        Err(e) => return Err(e.into()),
    };
    let mut manifests = BTreeMap::new();
    for e in writer.journal.hosts.values() {
        for r in std::iter::once(&e.to).chain(e.from.iter()) {
            if !manifests.contains_key(&r.manifest)
                && let Ok(m) = resolve::load_verified(ctx.store.as_ref(), &r.manifest)
            {
                manifests.insert(r.manifest, m);
            }
        }
    }
    let run = Run::new(ctx, sink, writer, manifests, lease);
    run.note(|j| {
        j.step(
            None,
            if rollback {
                "resume-rollback"
            } else {
                "resume"
            },
            true,
            None,
        )
    });
    if rollback {
        Ok(run.abort_and_finish("rollback requested on resume".into()))
    } else {
        run.start(true)
    }
}

/// With `promotion` set, refuses an artifact that has not passed every required env, unless
/// `skip_promotion_check`. Returns the journal note: (skipped, detail), or `None` without a gate.
fn promotion_gate(
    ctx: &EnvContext,
    digest: &Digest,
    commit: &str,
    opts: &DeployOptions,
) -> Result<Option<(bool, String)>, DeployError> {
    let Some(policy) = &ctx.cfg.promotion else {
        return Ok(None);
    };
    match crate::promotion::check(ctx.store.as_ref(), &ctx.name, policy, digest, commit) {
        Ok(passed) => {
            let by: Vec<String> = passed
                .iter()
                .map(|(env, id)| format!("{env} (deploy {id})"))
                .collect();
            Ok(Some((false, format!("passed {}", by.join(", ")))))
        }
        Err(crate::promotion::PromotionError::NotPassed { missing, .. })
            if opts.skip_promotion_check =>
        {
            let missing = missing.join(", ");
            tracing::warn!("--skip-promotion-check: {commit} has not passed {missing}");
            Ok(Some((
                true,
                format!("--skip-promotion-check; not passed: {missing}"),
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// With `require_signature` set, refuses an artifact that has no valid signature by one of the
/// trusted keys (before anything is touched).
fn check_signature(ctx: &EnvContext, digest: &Digest, commit: &str) -> Result<(), DeployError> {
    let Some(policy) = &ctx.cfg.require_signature else {
        return Ok(());
    };
    let trusted = policy
        .trusted_keys
        .iter()
        .map(|k| sign::PublicKey::from_spec(k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            DeployError::Refused(format!("{}: require_signature.trusted_keys: {e}", ctx.name))
        })?;
    match sign::require_signature(ctx.store.as_ref(), digest, &trusted) {
        Ok(key_id) => {
            tracing::info!("{digest} (commit {commit}) is signed by trusted key {key_id}");
            Ok(())
        }
        Err(e @ sign::SignError::Store(_)) => Err(DeployError::Refused(format!(
            "checking the signatures of {digest}: {e}"
        ))),
        Err(e) => Err(DeployError::Refused(format!(
            "{} requires a signed artifact; commit {commit}: {e} (sign it with `builder sign`)",
            ctx.name
        ))),
    }
}

/// The rollback target of a host: its own last known good release.
fn host_from(ctx: &EnvContext, host: &str, env_state: &records::EnvState) -> Option<ReleaseRef> {
    let reported = ctx
        .host(host)
        .status()
        .ok()
        .and_then(|s| s.state.last_good.or(s.state.current));
    reported.or_else(|| {
        env_state
            .hosts
            .get(host)
            .and_then(|r| r.last_good.clone().or(r.current.clone()))
    })
}

fn most_common(it: impl Iterator<Item = Digest>) -> Option<Digest> {
    let mut counts: BTreeMap<Digest, usize> = BTreeMap::new();
    for d in it {
        *counts.entry(d).or_default() += 1;
    }
    counts.into_iter().max_by_key(|(_, n)| *n).map(|(d, _)| d)
}

/// Reads `deploy/service.yaml` straight out of the source layer in the store (for plans),
/// verifying the layer's digests; gzip or zstd layers.
pub fn service_spec_from_store(store: &dyn Store, manifest: &Manifest) -> Option<ServiceSpec> {
    let layer = manifest.layer(LayerKind::Source)?;
    let got = store.get(&keys::blob(&layer.digest)).ok()?;
    let expected = artifact::unpack::Expected {
        digest: Some(layer.digest),
        size: Some(layer.size),
        diff_id: Some(layer.diff_id),
    };
    match artifact::unpack::read_layer_file(got.reader, &expected, "deploy/service.yaml", 1 << 20)
        .ok()?
    {
        Some(b) => ServiceSpec::parse(std::str::from_utf8(&b).ok()?).ok(),
        None => Some(ServiceSpec::default()),
    }
}

fn check_list(ctx: &EnvContext, spec: &ServiceSpec) -> Vec<CheckSpec> {
    let mut v = Vec::new();
    if !ctx.cfg.checks.skip_service_checks {
        v.extend(spec.checks.iter().cloned());
    }
    v.extend(ctx.cfg.checks.extra.iter().cloned());
    let off = &ctx.cfg.checks.disable;
    v.retain(|c| {
        let kind = match c {
            CheckSpec::Http(_) => "http",
            CheckSpec::Logs(_) => "logs",
            CheckSpec::Metrics(_) => "metrics",
        };
        !off.iter().any(|d| d == kind || *d == c.name())
    });
    v
}

fn emit_plan(
    ctx: &EnvContext,
    sink: &dyn EventSink,
    j: &Journal,
    manifests: &BTreeMap<Digest, Manifest>,
    dry_run: bool,
) {
    let mut specs: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
    for (d, m) in manifests {
        let spec = service_spec_from_store(ctx.store.as_ref(), m).unwrap_or_default();
        specs.insert(
            *d,
            check_list(ctx, &spec).iter().map(CheckSpec::name).collect(),
        );
    }
    let groups = j
        .groups
        .iter()
        .map(|(g, hs)| PlanGroup {
            name: g.clone(),
            hosts: hs
                .iter()
                .map(|h| {
                    let e = &j.hosts[h];
                    PlanHost {
                        host: h.clone(),
                        from: e.from.as_ref().map(|r| r.commit.clone()),
                        to: e.to.commit.clone(),
                        checks: specs.get(&e.to.manifest).cloned().unwrap_or_default(),
                    }
                })
                .collect(),
        })
        .collect();
    sink.emit(&Event::Plan {
        deploy_id: j.id.clone(),
        env: ctx.name.clone(),
        kind: format!("{:?}", j.kind).to_lowercase(),
        artifact: j.artifact.map(|d| d.to_string()),
        commit: j.commit.clone(),
        deploy_type: j.deploy_type.map(|t| format!("{t:?}").to_lowercase()),
        dry_run,
        groups,
    });
}

/// Why a host's path stopped.
#[derive(Debug)]
struct StepFail {
    step: String,
    detail: String,
}

/// The in-memory journal of a run and the version of its last change.
struct Snapshot {
    journal: Journal,
    version: u64,
}

/// The journal's writer and the version it last wrote.
struct Persister {
    writer: JournalWriter,
    saved: u64,
}

/// One running deploy, rollback or resume.
struct Run<'a> {
    ctx: &'a EnvContext,
    sink: &'a dyn EventSink,
    /// The journal as this run sees it; every change bumps `version`.
    journal: Mutex<Snapshot>,
    /// The newest serialised snapshot not written yet.
    pending: Mutex<(u64, Vec<u8>)>,
    /// Writes snapshots; held only for the I/O, never while the journal changes.
    persist: Mutex<Persister>,
    manifests: BTreeMap<Digest, Manifest>,
    lease: Mutex<Lease>,
    lease_lost: AtomicBool,
    journal_failed: Mutex<Option<String>>,
    touch: AtomicU32,
}

impl<'a> Run<'a> {
    fn new(
        ctx: &'a EnvContext,
        sink: &'a dyn EventSink,
        journal: JournalWriter,
        manifests: BTreeMap<Digest, Manifest>,
        lease: Lease,
    ) -> Self {
        let touch = journal
            .journal
            .hosts
            .values()
            .filter_map(|e| e.touched)
            .max()
            .unwrap_or(0);
        Run {
            ctx,
            sink,
            journal: Mutex::new(Snapshot {
                journal: journal.journal.clone(),
                version: 0,
            }),
            pending: Mutex::new((0, Vec::new())),
            persist: Mutex::new(Persister {
                writer: journal,
                saved: 0,
            }),
            manifests,
            lease: Mutex::new(lease),
            lease_lost: AtomicBool::new(false),
            journal_failed: Mutex::new(None),
            touch: AtomicU32::new(touch),
        }
    }

    fn id(&self) -> String {
        self.journal.lock().unwrap().journal.id.clone()
    }

    /// Applies a change to the journal and writes it. Writes are coalesced: when hosts of a
    /// batch finish steps while a write is in flight, the next write carries all their changes
    /// (the newest snapshot), and callers whose change is already written return at once.
    fn note(&self, f: impl FnOnce(&mut Journal)) {
        let version = {
            let mut s = self.journal.lock().unwrap();
            f(&mut s.journal);
            s.version += 1;
            let bytes = serde_json::to_vec_pretty(&s.journal).expect("journal serialises");
            *self.pending.lock().unwrap() = (s.version, bytes);
            s.version
        };
        let mut w = self.persist.lock().unwrap();
        if w.saved >= version {
            return;
        }
        let (newest, bytes) = std::mem::take(&mut *self.pending.lock().unwrap());
        if newest < version {
            // Taken by a write that failed; the failure is recorded and stops the run.
            return;
        }
        match w.writer.save_bytes(&bytes) {
            Ok(()) => w.saved = newest,
            Err(e) => {
                self.journal_failed
                    .lock()
                    .unwrap()
                    .get_or_insert(e.to_string());
            }
        }
    }

    fn entry(&self, host: &str) -> HostEntry {
        self.journal.lock().unwrap().journal.hosts[host].clone()
    }

    fn set_phase(&self, host: &str, phase: HostPhase, detail: Option<String>) {
        self.note(|j| {
            let e = j.hosts.get_mut(host).expect("host in journal");
            e.phase = phase;
            e.detail = detail;
        });
    }

    fn healthy(&self) -> Result<(), String> {
        if self.lease_lost.load(Ordering::SeqCst) {
            return Err("the environment lease was lost".into());
        }
        if let Some(e) = self.journal_failed.lock().unwrap().clone() {
            return Err(format!("the journal cannot be written: {e}"));
        }
        Ok(())
    }

    /// Runs the deploy with a lease-renewing thread beside it.
    fn start(self, resume: bool) -> Result<Outcome, DeployError> {
        let stop = AtomicBool::new(false);
        let result = std::thread::scope(|s| {
            s.spawn(|| self.renew_loop(&stop));
            let r = self.execute(resume);
            stop.store(true, Ordering::SeqCst);
            r
        });
        let lease = self.lease.lock().unwrap().clone();
        if !self.lease_lost.load(Ordering::SeqCst) {
            let _ = lease::release(self.ctx.store.as_ref(), &lease);
        }
        result
    }

    fn renew_loop(&self, stop: &AtomicBool) {
        let every = (self.ctx.lease_ttl / 3).max(Duration::from_millis(200));
        let mut last = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
            if last.elapsed() < every {
                continue;
            }
            last = Instant::now();
            let mut l = self.lease.lock().unwrap();
            match lease::renew(
                self.ctx.store.as_ref(),
                &mut l,
                self.ctx.lease_ttl,
                SystemTime::now(),
            ) {
                Ok(()) => {}
                Err(LeaseError::Lost { .. }) => {
                    self.lease_lost.store(true, Ordering::SeqCst);
                    return;
                }
                Err(_) => {} // transient: retried next round, the ttl leaves room
            }
        }
    }

    fn execute(&self, resume: bool) -> Result<Outcome, DeployError> {
        self.note(|_| {});
        if let Some(e) = self.journal_failed.lock().unwrap().clone() {
            return Err(DeployError::Refused(format!(
                "cannot write the journal: {e}"
            )));
        }
        let (groups, kind) = {
            let j = &self.journal.lock().unwrap().journal;
            (j.groups.clone(), j.kind)
        };
        let pending: Vec<String> = groups
            .iter()
            .flat_map(|(_, hs)| hs.iter().cloned())
            .filter(|h| !(resume && self.done_and_verified(h)))
            .collect();
        if !resume && let Err(reason) = self.preflight(&pending) {
            return Ok(self.refuse(reason));
        }
        if let Err(reason) = self.prefetch(&pending) {
            if resume {
                return Ok(self.abort_and_finish(reason));
            }
            return Ok(self.refuse(reason));
        }
        let max_out = self.ctx.cfg.max_out();
        let mut failures = 0usize;
        for (bi, (group, hosts)) in groups.iter().enumerate() {
            let todo: Vec<String> = hosts
                .iter()
                .filter(|h| pending.contains(h))
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
                // Capacity guard: hosts already out of the pool (whoever took them out) count.
                let room = match self.capacity_room(max_out, rest) {
                    Ok(n) => n,
                    Err(reason) => return Ok(self.abort_and_finish(reason)),
                };
                let (chunk, tail) = rest.split_at(room.min(rest.len()));
                rest = tail;
                let results: Vec<(String, Result<(), StepFail>)> = std::thread::scope(|s| {
                    let handles: Vec<_> = chunk
                        .iter()
                        .map(|h| (h.clone(), s.spawn(|| self.deploy_host(h))))
                        .collect();
                    handles
                        .into_iter()
                        .map(|(h, t)| {
                            (
                                h,
                                t.join().unwrap_or_else(|_| {
                                    Err(StepFail {
                                        step: "panic".into(),
                                        detail: "host thread panicked".into(),
                                    })
                                }),
                            )
                        })
                        .collect()
                });
                let mut failed_here = Vec::new();
                for (h, r) in results {
                    if let Err(f) = r {
                        failures += 1;
                        failed_here.push(format!("{h} ({}: {})", f.step, f.detail));
                    }
                }
                if failures > self.ctx.cfg.failure_limit {
                    return Ok(self.abort_and_finish(format!("{} failed", failed_here.join(", "))));
                }
                // Within the failure limit: return each failed host to its last good release.
                for h in chunk {
                    if self.entry(h).phase == HostPhase::Failed {
                        self.restore(h);
                    }
                }
            }
            let bake = self.ctx.cfg.canary_bake.0;
            if bi == 0 && groups.len() > 1 && !bake.is_zero() && kind == DeployKind::Deploy {
                self.sink.emit(&Event::Bake {
                    group: group.clone(),
                    seconds: bake.as_secs(),
                });
                let until = Instant::now() + bake;
                while Instant::now() < until {
                    if let Err(reason) = self.healthy() {
                        return Ok(self.abort_and_finish(reason));
                    }
                    std::thread::sleep(
                        Duration::from_millis(100)
                            .min(until.saturating_duration_since(Instant::now())),
                    );
                }
                for h in &todo {
                    if self.entry(h).phase != HostPhase::Done {
                        continue;
                    }
                    if let Err(f) = self.recheck(h) {
                        self.set_phase(
                            h,
                            HostPhase::Failed,
                            Some(format!("after bake: {}", f.detail)),
                        );
                        return Ok(self.abort_and_finish(format!(
                            "canary {h} failed after the bake: {}",
                            f.detail
                        )));
                    }
                }
            }
        }
        for h in self.ctx.hosts.values() {
            if let Err(e) = h.prune(self.ctx.cfg.keep_releases) {
                self.note(|j| j.step(Some(h.name()), "prune", false, Some(e.to_string())));
            }
        }
        let failed: Vec<String> = self.with_hosts(|hs| {
            hs.iter()
                .filter(|(_, e)| {
                    matches!(
                        e.phase,
                        HostPhase::RolledBack | HostPhase::NeedsHuman | HostPhase::Failed
                    )
                })
                .map(|(h, _)| h.clone())
                .collect()
        });
        let needs_human: Vec<String> = self.with_hosts(|hs| {
            hs.iter()
                .filter(|(_, e)| matches!(e.phase, HostPhase::NeedsHuman | HostPhase::Failed))
                .map(|(h, _)| h.clone())
                .collect()
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

    /// How many of `next` may go out of the pool now: `max_out` less the other hosts the
    /// pool driver reports out.
    fn capacity_room(&self, max_out: usize, next: &[String]) -> Result<usize, String> {
        let all: Vec<String> = self.ctx.hosts.keys().cloned().collect();
        let candidates = &next[..max_out.min(next.len())];
        let wait = self.ctx.cfg.capacity.wait.0;
        let t0 = std::time::Instant::now();
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
                self.note(|j| {
                    j.step(
                        None,
                        "capacity",
                        true,
                        Some(format!(
                            "waiting up to {}s for hosts to return to the pool: {}",
                            wait.as_secs(),
                            others.join(", ")
                        )),
                    )
                });
            }
            self.healthy()?;
            std::thread::sleep(Duration::from_secs(2).min(wait.saturating_sub(t0.elapsed())));
        };
        if room == 0 {
            return Err(format!(
                "capacity guard: already out of the pool: {} (max_out {max_out})",
                others
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        self.note(|j| {
            if !others.is_empty() {
                j.step(
                    None,
                    "capacity",
                    true,
                    Some(format!(
                        "out of the pool already: {}; {room} at a time",
                        others
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                )
            }
        });
        Ok(room)
    }

    fn with_hosts<T>(&self, f: impl FnOnce(&BTreeMap<String, HostEntry>) -> T) -> T {
        f(&self.journal.lock().unwrap().journal.hosts)
    }

    /// On resume: a host recorded done that still runs its target needs nothing.
    fn done_and_verified(&self, host: &str) -> bool {
        let e = self.entry(host);
        if e.phase != HostPhase::Done {
            return false;
        }
        match self.ctx.host(host).status() {
            Ok(s) => {
                s.current.as_deref() == Some(e.to.commit.as_str())
                    && s.running.is_some()
                    && s.state.step.is_none()
            }
            Err(_) => false,
        }
    }

    fn refuse(&self, reason: String) -> Outcome {
        self.note(|j| j.abort_reason = Some(reason.clone()));
        self.finish(
            JournalStatus::Refused,
            format!("refused before touching any host: {reason}"),
            vec![],
            vec![],
        )
    }

    fn preflight(&self, hosts: &[String]) -> Result<(), String> {
        let cfg = &self.ctx.cfg;
        let results: Vec<Result<(), String>> = self.bounded(hosts, |h| {
            let host = self.ctx.host(h);
            let e = self.entry(h);
            let m = self
                .manifests
                .get(&e.to.manifest)
                .ok_or_else(|| format!("{h}: manifest {} unavailable", e.to.manifest))?;
            let size: u64 = m.layers.iter().map(|l| l.size).sum();
            let node = (!cfg.node.is_empty() && m.platform.is_some()).then(|| cfg.node.clone());
            let r = host.preflight(&PreflightRequest {
                min_free_bytes: cfg.min_free_bytes + size * 4,
                node,
            });
            let r = r.map_err(|e| e.to_string()).and_then(|rep| {
                if let Some(p) = &m.platform {
                    if p.os != rep.os || p.arch != rep.arch {
                        return Err(format!(
                            "artifact is for {}/{}, host is {}/{}",
                            p.os, p.arch, rep.os, rep.arch
                        ));
                    }
                    if let Some(abi) = &rep.node_abi
                        && abi != &p.node_abi
                    {
                        return Err(format!(
                            "node ABI {abi} on the host, the artifact needs {}",
                            p.node_abi
                        ));
                    }
                }
                Ok(format!("{} MiB free", rep.free_bytes >> 20))
            });
            self.sink.emit(&Event::Preflight {
                host: h.clone(),
                ok: r.is_ok(),
                detail: r.clone().unwrap_or_else(|e| e.clone()),
            });
            self.note(|j| {
                j.step(
                    Some(h),
                    "preflight",
                    r.is_ok(),
                    Some(r.clone().unwrap_or_else(|e| e.clone())),
                )
            });
            r.map(|_| ()).map_err(|e| format!("preflight {h}: {e}"))
        });
        let errs: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    }

    fn prefetch(&self, hosts: &[String]) -> Result<(), String> {
        let results: Vec<Result<(), String>> = self.bounded(hosts, |h| {
            let host = self.ctx.host(h);
            let e = self.entry(h);
            let m = self
                .manifests
                .get(&e.to.manifest)
                .ok_or_else(|| format!("{h}: manifest {} unavailable", e.to.manifest))?;
            let r = host.fetch(&e.to.manifest, m);
            let detail = match &r {
                Ok(rep) if rep.cached => format!("{} already on the host", rep.release),
                Ok(rep) => format!("{} fetched ({} bytes)", rep.release, rep.downloaded),
                Err(err) => err.to_string(),
            };
            self.sink.emit(&Event::Fetch {
                host: h.clone(),
                ok: r.is_ok(),
                detail: detail.clone(),
            });
            self.note(|j| {
                j.step(Some(h), "fetch", r.is_ok(), Some(detail.clone()));
                if r.is_ok() && j.hosts[h].phase == HostPhase::Pending {
                    j.hosts.get_mut(h).unwrap().phase = HostPhase::Fetched;
                }
            });
            r.map_err(|err| format!("fetch {h}: {err}"))?;
            // Keep the rollback target at hand too (best effort: it is usually there).
            if let Some(from) = &e.from
                && let Some(fm) = self.manifests.get(&from.manifest)
            {
                let _ = host.fetch(&from.manifest, fm);
            }
            Ok(())
        });
        let errs: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    }

    /// Runs `f` over hosts, at most `prefetch_parallelism` at a time.
    /// Runs `f` for every host on at most `prefetch_parallelism` worker threads (a pool: a
    /// worker takes the next host as soon as it is free); results in `hosts` order.
    fn bounded<T: Send>(&self, hosts: &[String], f: impl Fn(&String) -> T + Sync) -> Vec<T> {
        let workers = self.ctx.cfg.prefetch_parallelism.max(1).min(hosts.len());
        let next = std::sync::atomic::AtomicUsize::new(0);
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

    fn deploy_host(&self, host: &str) -> Result<(), StepFail> {
        let n = self.touch.fetch_add(1, Ordering::SeqCst) + 1;
        let e = self.entry(host);
        self.note(|j| {
            let e = j.hosts.get_mut(host).unwrap();
            e.phase = HostPhase::InProgress;
            e.touched.get_or_insert(n);
            e.checks.clear();
        });
        let r = self.converge(host, &e.to);
        match &r {
            Ok(()) => {
                self.set_phase(host, HostPhase::Done, None);
                self.record_env(host, &e.to, true);
                self.sink.emit(&Event::HostDone {
                    host: host.into(),
                    release: e.to.commit.clone(),
                    ok: true,
                    detail: None,
                });
            }
            Err(f) => {
                let d = format!("{}: {}", f.step, f.detail);
                self.set_phase(host, HostPhase::Failed, Some(d.clone()));
                self.sink.emit(&Event::HostDone {
                    host: host.into(),
                    release: e.to.commit.clone(),
                    ok: false,
                    detail: Some(d),
                });
            }
        }
        r
    }

    fn record_env(&self, host: &str, release: &ReleaseRef, good: bool) {
        let id = self.id();
        let dt = self.journal.lock().unwrap().journal.deploy_type;
        let r = records::update_state(self.ctx.store.as_ref(), &self.ctx.name, |st| {
            let rec = st.hosts.entry(host.to_string()).or_default();
            rec.current = Some(release.clone());
            if good {
                rec.last_good = Some(release.clone());
            }
            rec.deploy_id = Some(id.clone());
            rec.updated_at = now_rfc3339();
            st.last_deploy = Some(id.clone());
            if dt.is_some() {
                st.deploy_type = dt;
            }
        });
        if let Err(e) = r {
            self.note(|j| j.step(Some(host), "record", false, Some(e.to_string())));
        }
    }

    fn step<T>(
        &self,
        host: &str,
        step: &str,
        r: Result<T, String>,
        detail: impl Fn(&T) -> Option<String>,
    ) -> Result<T, StepFail> {
        let d = match &r {
            Ok(v) => detail(v),
            Err(e) => Some(e.clone()),
        };
        self.sink.emit(&Event::Step {
            host: host.into(),
            step: step.into(),
            ok: r.is_ok(),
            detail: d.clone(),
        });
        self.note(|j| j.step(Some(host), step, r.is_ok(), d));
        r.map_err(|detail| StepFail {
            step: step.into(),
            detail,
        })
    }

    /// The one path every host goes through, to a new release or back to an old one.
    fn converge(&self, host: &str, to: &ReleaseRef) -> Result<(), StepFail> {
        let h = self.ctx.host(host);
        let he = |e: HostError| e.to_string();
        if let Err(reason) = self.healthy() {
            return Err(StepFail {
                step: "start".into(),
                detail: reason,
            });
        }
        let spec = self.step(host, "spec", h.service_spec(&to.commit).map_err(he), |_| {
            None
        })?;
        let port = self.step(
            host,
            "port",
            h.config().port.or(spec.port).ok_or_else(|| {
                "no port: set hosts.<name>.port or port in deploy/service.yaml".to_string()
            }),
            |_| None,
        )?;
        self.step(
            host,
            "depool",
            self.ctx
                .pool
                .depool(h, Some(port))
                .map_err(|e| e.to_string()),
            |_| None,
        )?;
        self.step(host, "stop", h.stop().map_err(he), |r| {
            r.stopped
                .map(|p| format!("pid {p}{}", if r.killed { " (killed)" } else { "" }))
        })?;
        let req = RenderRequest {
            commit: to.commit.clone(),
            env: self
                .ctx
                .cfg
                .service_env
                .clone()
                .unwrap_or_else(|| self.ctx.name.clone()),
            port: Some(port),
            values: h.config().values.clone(),
        };
        self.step(host, "render", h.render(&req).map_err(he), |r| {
            Some(r.config.clone())
        })?;
        self.step(host, "switch", h.switch(&to.commit).map_err(he), |r| {
            Some(format!("{} -> {}", r.from.as_deref().unwrap_or("-"), r.to))
        })?;
        let run = self.step(
            host,
            "start",
            h.start(&StartRequest {
                port: Some(port),
                env: h.config().env.clone(),
            })
            .map_err(he),
            |r| Some(format!("pid {}, log {}", r.pid, r.log)),
        )?;
        let timeout = self
            .ctx
            .cfg
            .ready_timeout
            .or(spec.ready_timeout)
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(30));
        let ready = ReadyRequest {
            address: h.address().to_string(),
            port,
            timeout_ms: timeout.as_millis() as u64,
        };
        self.step(host, "ready", h.wait_ready(&ready).map_err(he), |r| {
            Some(format!("port {port} after {} ms", r.after_ms))
        })?;
        let started = SystemTime::UNIX_EPOCH + Duration::from_millis(run.started_unix_ms);
        self.run_checks(host, &spec, to, port, started, Some(run.log.clone()))?;
        self.step(host, "mark-good", h.mark_good(to).map_err(he), |_| None)?;
        self.step(
            host,
            "repool",
            self.ctx
                .pool
                .repool(h, Some(port))
                .map_err(|e| e.to_string()),
            |_| None,
        )?;
        Ok(())
    }

    fn run_checks(
        &self,
        host: &str,
        spec: &ServiceSpec,
        to: &ReleaseRef,
        port: u16,
        started: SystemTime,
        log: Option<String>,
    ) -> Result<(), StepFail> {
        let h = self.ctx.host(host);
        let cctx = CheckContext {
            host: h,
            address: h.address().to_string(),
            port,
            release: to.commit.clone(),
            service_name: spec.name.clone().unwrap_or_default(),
            started_at: started,
            log_file: log,
            settings: &self.ctx.cfg.checks,
        };
        let list = check_list(self.ctx, spec);
        let results: Vec<CheckResult> = checks::run_all(&list, &cctx);
        for r in &results {
            self.sink.emit(&Event::Check {
                host: host.into(),
                result: r.clone(),
            });
        }
        let failed = results.iter().find(|r| !r.passed).cloned();
        self.note(|j| {
            j.step(
                Some(host),
                "checks",
                failed.is_none(),
                failed.as_ref().map(|f| format!("{}: {}", f.name, f.detail)),
            );
            j.hosts.get_mut(host).unwrap().checks = results;
        });
        match failed {
            None => Ok(()),
            Some(f) => Err(StepFail {
                step: format!("check {}", f.name),
                detail: f.detail,
            }),
        }
    }

    /// After the bake: the checks again, on the instance already running.
    fn recheck(&self, host: &str) -> Result<(), StepFail> {
        let h = self.ctx.host(host);
        let e = self.entry(host);
        let fail = |d: String| StepFail {
            step: "recheck".into(),
            detail: d,
        };
        let spec = h
            .service_spec(&e.to.commit)
            .map_err(|x| fail(x.to_string()))?;
        let status = h.status().map_err(|x| fail(x.to_string()))?;
        let run = status
            .running
            .ok_or_else(|| fail("the service is no longer running".into()))?;
        let port = run.port.or(h.config().port).or(spec.port).unwrap_or(0);
        let started = SystemTime::UNIX_EPOCH + Duration::from_millis(run.started_unix_ms);
        self.run_checks(host, &spec, &e.to, port, started, Some(run.log))
    }

    /// Returns one host to its own last known good release through the same path; a host
    /// that cannot be restored stays depooled and is marked as needing a human.
    fn restore(&self, host: &str) -> bool {
        let e = self.entry(host);
        self.set_phase(host, HostPhase::RollingBack, e.detail.clone());
        let h = self.ctx.host(host);
        let (ok, detail) = match &e.from {
            Some(from) => match self.converge(host, from) {
                Ok(()) => {
                    self.record_env(host, from, true);
                    (true, None)
                }
                Err(f) => (false, Some(format!("{}: {}", f.step, f.detail))),
            },
            None => {
                // Nothing to go back to: leave it stopped and out of the pool.
                let port = h.config().port;
                let r = self
                    .ctx
                    .pool
                    .depool(h, port)
                    .map_err(|e| e.to_string())
                    .and_then(|_| h.stop().map_err(|e| e.to_string()));
                (
                    r.is_ok(),
                    Some(r.err().unwrap_or_else(|| {
                        "had no earlier release: stopped and left out of the pool".into()
                    })),
                )
            }
        };
        let phase = if ok {
            HostPhase::RolledBack
        } else {
            HostPhase::NeedsHuman
        };
        let keep = e
            .detail
            .clone()
            .map(|d| format!("{d}; "))
            .unwrap_or_default();
        self.set_phase(
            host,
            phase,
            Some(format!(
                "{keep}rollback: {}",
                detail.clone().unwrap_or_else(|| "restored".into())
            )),
        );
        self.sink.emit(&Event::Rollback {
            host: host.into(),
            to: e.from.as_ref().map(|r| r.commit.clone()),
            ok,
            detail,
        });
        ok
    }

    /// Aborts: every touched host goes back to its own last good release, in reverse order.
    fn abort_and_finish(&self, reason: String) -> Outcome {
        self.sink.emit(&Event::Abort {
            reason: reason.clone(),
        });
        self.note(|j| {
            j.abort_reason = Some(reason.clone());
            j.step(None, "abort", true, Some(reason.clone()));
        });
        let (mut touched, deploy_type) = {
            let j = &self.journal.lock().unwrap().journal;
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
            (t, j.deploy_type)
        };
        touched.sort_by(|a, b| b.cmp(a));
        if self.lease_lost.load(Ordering::SeqCst) {
            let names: Vec<String> = touched.into_iter().map(|(_, h)| h).collect();
            return self.finish(
                JournalStatus::NeedsHuman,
                format!("{reason}; not rolling back while another deploy may hold the environment"),
                names.clone(),
                names,
            );
        }
        if deploy_type == Some(DeployType::Schema) {
            let names: Vec<String> = touched.into_iter().map(|(_, h)| h).collect();
            for h in &names {
                if self.entry(h).phase != HostPhase::Done {
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
        let mut failed = Vec::new();
        for (_, h) in touched {
            failed.push(h.clone());
            if !self.restore(&h) {
                needs_human.push(h);
            }
        }
        if needs_human.is_empty() {
            self.finish(
                JournalStatus::RolledBack,
                format!("{reason}; every touched host is back on its last good release"),
                failed,
                needs_human,
            )
        } else {
            let m = format!(
                "{reason}; could not restore {} (left out of the pool)",
                needs_human.join(", ")
            );
            self.finish(JournalStatus::NeedsHuman, m, failed, needs_human)
        }
    }

    fn finish(
        &self,
        status: JournalStatus,
        message: String,
        failed: Vec<String>,
        needs_human: Vec<String>,
    ) -> Outcome {
        self.note(|j| {
            j.status = status;
            j.finished_at = Some(now_rfc3339());
            j.needs_human = needs_human.clone();
        });
        let mut message = message;
        if let Some(e) = self.journal_failed.lock().unwrap().clone() {
            message.push_str(&format!(
                " (warning: the journal could not be written: {e})"
            ));
        }
        let o = Outcome {
            deploy_id: self.id(),
            status,
            message,
            failed,
            needs_human,
        };
        self.sink.emit(&Event::Finished {
            deploy_id: o.deploy_id.clone(),
            status: format!("{:?}", o.status).to_lowercase(),
            exit_code: o.exit_code(),
            message: o.message.clone(),
        });
        o
    }
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
        let recorded_current = rec.and_then(|r| r.current.as_ref().map(|x| x.commit.clone()));
        let recorded_last_good = rec.and_then(|r| r.last_good.as_ref().map(|x| x.commit.clone()));
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
                r.last_good = s.state.last_good.as_ref().map(|x| x.commit.clone());
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
