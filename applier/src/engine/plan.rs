//! The one planner: what a deploy, rollback, resume or promote will do, as the journal the run
//! then follows.
//!
//! Every intent comes down to the same plan: per host a `from` (its own last known good
//! release, the restore target) and a `to`, the env's batches filtered to the hosts that have
//! something to do, the manifests the run needs, and the gates' notes. A deploy targets every
//! host with one artifact; a rollback targets each host's release before the last succeeded
//! deploy; a resume reads the journal back as it was left. Gates run here, so a refusal comes
//! before the lease is taken or any host is touched.

use std::collections::BTreeMap;

use artifact::manifest::{LayerKind, Manifest};
use artifact::resolve;
use artifact::store::Store;
use artifact::{Digest, keys};

use super::gates::{self, Decision, Note};
use super::{DeployError, DeployOptions, EnvContext};
use crate::guard::DeployType;
use crate::protocol::ReleaseRef;
use crate::records::{
    self, DeployKind, EnvState, HostEntry, HostPhase, Journal, JournalStatus, JournalWriter,
    RecordError,
};
use crate::service::ServiceSpec;
use crate::target::now_rfc3339;

/// What the operator asked for.
#[derive(Clone, Copy, Debug)]
pub enum Intent<'a> {
    /// One artifact (digest, commit or unique prefix) on every host.
    Deploy { target: &'a str },
    /// Every host back to its release before the last succeeded deploy.
    Rollback,
    /// A deploy whose applier died: continue it, or roll it back.
    Resume {
        id: &'a str,
        rollback: bool,
        /// Break the lease that deploy still holds.
        force: bool,
    },
}

/// How the run treats a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A new journal: preflight, prefetch, roll.
    Fresh,
    /// An existing journal: skip hosts done and verified, redo the interrupted ones.
    Continue,
    /// An existing journal: restore every touched host.
    RollBack,
}

/// A plan, ready to run.
#[derive(Debug)]
pub struct Plan {
    pub writer: JournalWriter,
    pub manifests: BTreeMap<Digest, Manifest>,
    pub mode: Mode,
    /// The lease's reason.
    pub lease_reason: String,
    /// Break a lease still held by this same deploy (`resume --force`).
    pub break_own_lease: bool,
}

impl Plan {
    pub fn journal(&self) -> &Journal {
        &self.writer.journal
    }
}

/// Plans `intent` on `ctx`'s environment, passing every gate first.
pub fn plan(
    ctx: &EnvContext,
    intent: Intent<'_>,
    opts: &DeployOptions,
) -> Result<Plan, DeployError> {
    match intent {
        Intent::Deploy { target } => plan_deploy(ctx, target, opts),
        Intent::Rollback => plan_rollback(ctx, opts),
        Intent::Resume {
            id,
            rollback,
            force,
        } => plan_resume(ctx, id, rollback, force),
    }
}

/// Turns a gate's decision into its value, keeping its note for the journal.
fn gate<T>(d: Decision<T>, notes: &mut Vec<Note>) -> Result<T, DeployError> {
    let (value, note) = d.into_result().map_err(DeployError::Refused)?;
    if let Some(n) = note
        && !notes.contains(&n)
    {
        notes.push(n);
    }
    Ok(value)
}

/// What a new journal says besides its hosts.
struct Header {
    kind: DeployKind,
    artifact: Option<Digest>,
    commit: Option<String>,
    deploy_type: DeployType,
    reason: String,
    notes: Vec<Note>,
}

fn plan_deploy(ctx: &EnvContext, target: &str, opts: &DeployOptions) -> Result<Plan, DeployError> {
    let (digest, manifest) = resolve::resolve_verified(ctx.store.as_ref(), target)?;
    let commit = manifest.source.commit.clone();
    let mut notes = Vec::new();
    gate(gates::signature(ctx, &digest, &commit), &mut notes)?;
    let skipped = gate(gates::promotion(ctx, &digest, &commit, opts), &mut notes)?;
    let (env_state, _) = records::load_state(ctx.store.as_ref(), &ctx.name)?;

    // The storage guard compares with what most hosts of the env run now.
    let current_digest = most_common(
        env_state
            .hosts
            .values()
            .filter_map(|h| h.current.as_ref().map(|r| r.manifest)),
    );
    let current = match current_digest {
        Some(d) if d != digest => resolve::load_verified(ctx.store.as_ref(), &d)
            .ok()
            .map(|m| (d, m)),
        _ => None,
    };
    let deploy_type = gate(
        gates::storage(
            ctx,
            current.as_ref().map(|(d, m)| (d, m)),
            (&digest, &manifest),
            opts,
        ),
        &mut notes,
    )?;

    let to = ReleaseRef {
        commit: commit.clone(),
        manifest: digest,
    };
    let targets = ctx
        .cfg
        .batches()
        .into_iter()
        .flat_map(|(_, hs)| hs)
        .map(|h| {
            let from = host_from(ctx, &h, &env_state);
            (h, (from, to.clone()))
        })
        .collect();
    let mut reason = opts.reason.clone();
    if skipped
        && let Some(n) = notes
            .iter()
            .find(|n| n.step == records::Step::PromotionCheck)
    {
        reason = format!("{reason} [promotion check skipped: {}]", n.detail)
            .trim_start()
            .to_string();
    }
    let header = Header {
        kind: DeployKind::Deploy,
        artifact: Some(digest),
        commit: Some(commit.clone()),
        deploy_type,
        reason,
        notes,
    };
    let mut manifests = BTreeMap::new();
    manifests.insert(digest, manifest);
    Ok(Plan {
        writer: JournalWriter::create(ctx.store.clone(), new_journal(ctx, header, targets)),
        manifests,
        mode: Mode::Fresh,
        lease_reason: format!("deploy {commit} ({})", opts.reason),
        break_own_lease: false,
    })
}

fn plan_rollback(ctx: &EnvContext, opts: &DeployOptions) -> Result<Plan, DeployError> {
    let (env_state, _) = records::load_state(ctx.store.as_ref(), &ctx.name)?;
    let last = records::history(ctx.store.as_ref(), &ctx.name)?
        .into_iter()
        .rev()
        .find(|j| j.status == JournalStatus::Succeeded && j.kind == DeployKind::Deploy);
    let mut targets = BTreeMap::new();
    let mut manifests = BTreeMap::new();
    let mut notes = Vec::new();
    for n in ctx.cfg.batches().into_iter().flat_map(|(_, hs)| hs) {
        let target = match &last {
            Some(j) => j.hosts.get(&n).and_then(|e| e.from.clone()),
            None => ctx
                .host(&n)
                .status()
                .ok()
                .and_then(|s| s.state.previous_good),
        };
        let Some(target) = target else { continue };
        let from = host_from(ctx, &n, &env_state);
        if from.as_ref() == Some(&target) {
            continue;
        }
        for r in from.iter().chain(std::iter::once(&target)) {
            if let std::collections::btree_map::Entry::Vacant(slot) = manifests.entry(r.manifest) {
                slot.insert(resolve::load_verified(ctx.store.as_ref(), &r.manifest)?);
            }
        }
        gate(
            gates::signature(ctx, &target.manifest, &target.commit),
            &mut notes,
        )?;
        if let Some(f) = &from {
            gate(
                gates::storage_rollback(
                    ctx,
                    &n,
                    (&f.manifest, &manifests[&f.manifest]),
                    (&target.manifest, &manifests[&target.manifest]),
                    opts,
                ),
                &mut notes,
            )?;
        }
        targets.insert(n, (from, target));
    }
    if targets.is_empty() {
        return Err(DeployError::usage(
            format!("nothing to roll back to in {}", ctx.name),
            None,
        ));
    }
    let header = Header {
        kind: DeployKind::Rollback,
        artifact: None,
        commit: None,
        deploy_type: DeployType::Code,
        reason: opts.reason.clone(),
        notes,
    };
    Ok(Plan {
        writer: JournalWriter::create(ctx.store.clone(), new_journal(ctx, header, targets)),
        manifests,
        mode: Mode::Fresh,
        lease_reason: format!("rollback ({})", opts.reason),
        break_own_lease: false,
    })
}

fn plan_resume(
    ctx: &EnvContext,
    id: &str,
    rollback: bool,
    force: bool,
) -> Result<Plan, DeployError> {
    let writer = match JournalWriter::open(ctx.store.clone(), &ctx.name, id) {
        Ok(w) => w,
        Err(RecordError::Store(e)) if e.is_not_found() => {
            return Err(DeployError::usage(
                format!("no deploy {id} in {}", ctx.name),
                Some(format!(
                    "`applier history --env {}` lists its deploys",
                    ctx.name
                )),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    if writer.journal.status != JournalStatus::Running {
        return Err(DeployError::usage(
            format!(
                "deploy {id} already finished ({})",
                writer.journal.status.as_str()
            ),
            None,
        ));
    }
    // Continuing installs the deploy's targets: they must still be signed. Rolling back on
    // resume restores what the hosts ran before and is not held up by a signature policy.
    if !rollback {
        let mut notes = Vec::new();
        let targets: BTreeMap<_, _> = writer
            .journal
            .hosts
            .values()
            .map(|e| (e.to.manifest, &e.to))
            .collect();
        for to in targets.values() {
            gate(gates::signature(ctx, &to.manifest, &to.commit), &mut notes)?;
        }
    }
    // Best effort: a manifest that is gone fails that host's preflight or prefetch.
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
    Ok(Plan {
        writer,
        manifests,
        mode: if rollback {
            Mode::RollBack
        } else {
            Mode::Continue
        },
        lease_reason: format!("resume {id}"),
        break_own_lease: force,
    })
}

/// A new journal: `targets` (host -> (from, to)) in the env's batch order; batches without
/// targets are left out.
fn new_journal(
    ctx: &EnvContext,
    h: Header,
    targets: BTreeMap<String, (Option<ReleaseRef>, ReleaseRef)>,
) -> Journal {
    let mut hosts = BTreeMap::new();
    let mut groups = Vec::new();
    for (group, names) in ctx.cfg.batches() {
        let names: Vec<String> = names
            .into_iter()
            .filter(|n| targets.contains_key(n))
            .collect();
        for n in &names {
            let (from, to) = targets[n].clone();
            hosts.insert(
                n.clone(),
                HostEntry {
                    group: group.clone(),
                    from,
                    to,
                    phase: HostPhase::Pending,
                    touched: None,
                    detail: None,
                    checks: vec![],
                },
            );
        }
        if !names.is_empty() {
            groups.push((group, names));
        }
    }
    let mut j = Journal {
        id: records::new_deploy_id(),
        env: ctx.name.clone(),
        kind: h.kind,
        artifact: h.artifact,
        commit: h.commit,
        who: ctx.who.clone(),
        reason: h.reason,
        started_at: now_rfc3339(),
        finished_at: None,
        status: JournalStatus::Running,
        deploy_type: Some(h.deploy_type),
        groups,
        hosts,
        steps: vec![],
        abort_reason: None,
        needs_human: vec![],
        analysis: vec![],
    };
    for n in h.notes {
        j.step(None, n.step, true, Some(n.detail));
    }
    j
}

/// The restore target of a host: its own last known good release, as the host reports it,
/// else as the env records say.
fn host_from(ctx: &EnvContext, host: &str, env_state: &EnvState) -> Option<ReleaseRef> {
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

/// Reads `deploy/service.yaml` straight out of the source layer in the store, to show each
/// host's checks in the plan, verifying the layer's digests (gzip or zstd layers).
pub fn service_spec_from_store(store: &dyn Store, manifest: &Manifest) -> Option<ServiceSpec> {
    let layer = manifest.layer(LayerKind::Source)?;
    let got = store.get(&keys::blob(&layer.digest)).ok()?;
    let expected = artifact::unpack::Expected {
        digest: Some(layer.digest),
        size: Some(layer.size),
        diff_id: Some(layer.diff_id),
    };
    let file = artifact::unpack::read_layer_file(
        got.reader,
        &expected,
        model::service::SERVICE_YAML,
        1 << 20,
    )
    .ok()?;
    match file {
        Some(b) => ServiceSpec::parse(std::str::from_utf8(&b).ok()?).ok(),
        None => Some(ServiceSpec::default()),
    }
}
