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

use artifact::Digest;
use artifact::manifest::Manifest;
use artifact::resolve;

use super::gates::{self, Decision, Note, Refusal};
use super::policy::{self, Action};
use super::trust::{baseline, host_from, restorable, restore_target, trusted};
use super::{DeployError, DeployOptions, EnvContext};
use crate::guard::{DeployType, GuardRecord};
use crate::protocol::ReleaseRef;
use crate::records::{
    self, DeployKind, EnvState, HostEntry, HostPhase, Journal, JournalStatus, JournalWriter,
    RecordError, SourceRef,
};
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
    /// Hosts whose restore target the env's policies refuse (host -> why): on failure they are
    /// taken out of the pool instead of being switched back.
    pub no_restore: BTreeMap<String, String>,
    /// The store requests counted before planning began (the run reports what it adds).
    pub store_base: Option<crate::store_meter::StoreRequests>,
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
    let store_base = ctx.store_requests();
    let mut p = match intent {
        Intent::Deploy { target } => plan_deploy(ctx, target, opts),
        Intent::Rollback => plan_rollback(ctx, opts),
        Intent::Resume {
            id,
            rollback,
            force,
        } => plan_resume(ctx, id, rollback, force),
    }?;
    p.store_base = store_base;
    Ok(p)
}

/// Turns a gate's decision into its value, keeping its note for the journal.
fn gate<T>(d: Decision<T>, notes: &mut Vec<Note>) -> Result<T, DeployError> {
    let (value, note) = d.into_result().map_err(DeployError::Refused)?;
    note_once(notes, note);
    Ok(value)
}

pub(super) fn note_once(notes: &mut Vec<Note>, note: Option<Note>) {
    if let Some(n) = note
        && !notes.contains(&n)
    {
        notes.push(n);
    }
}

pub(super) fn refused(
    record: impl Into<String>,
    reason: String,
    way_out: Option<String>,
) -> DeployError {
    DeployError::Refused(Refusal {
        record: record.into(),
        reason,
        way_out,
    })
}

/// Journal notes of the operator's acknowledgements and overrides of this run.
fn override_notes(opts: &DeployOptions) -> Vec<Note> {
    let mut v: Vec<Note> = opts
        .guard
        .acks
        .iter()
        .map(|a| Note {
            step: records::Step::Override,
            detail: format!("--ack {}", crate::shell::shell_quote(a)),
        })
        .collect();
    if opts.skip_promotion_check {
        v.push(Note {
            step: records::Step::Override,
            detail: "--skip-promotion-check".into(),
        });
    }
    if opts.force_schema_rollback {
        v.push(Note {
            step: records::Step::Override,
            detail: "--force-schema-rollback".into(),
        });
    }
    v
}

/// Every `--ack` must parse before anything is read: a malformed one is a usage error.
fn check_acks(opts: &DeployOptions) -> Result<(), DeployError> {
    for a in &opts.guard.acks {
        crate::guard::parse_ack(a).map_err(|e| {
            DeployError::usage(
                e,
                Some("an ack is one change exactly as the refusal printed it, with your reason: --ack 'SG002 <table> <from>-><to> <reason>'".into()),
            )
        })?;
    }
    Ok(())
}

/// What a new journal says besides its hosts.
struct Header {
    kind: DeployKind,
    artifact: Option<Digest>,
    commit: Option<String>,
    deploy_type: DeployType,
    reason: String,
    notes: Vec<Note>,
    who_source: Option<String>,
    source_ref: Option<SourceRef>,
    guard: Option<GuardRecord>,
    overrides: Vec<String>,
}

/// Resolves a digest, commit, prefix, tag or branch ([`crate::refs`]) to a verified artifact.
pub(crate) fn resolve_target(
    ctx: &EnvContext,
    target: &str,
    opts: &DeployOptions,
) -> Result<(Digest, Manifest, Option<SourceRef>), DeployError> {
    let t = crate::refs::resolve_target(ctx.store.as_ref(), target, opts.repo.as_deref())
        .map_err(|e| match e {
            crate::refs::TargetError::Resolve(r) => DeployError::Resolve(r),
            e @ crate::refs::TargetError::Unknown { .. } => DeployError::Usage {
                message: e.to_string(),
                way_out: Some(
                    "give a manifest digest (sha256:...), a commit or a unique prefix of at least 4 hex digits, or a tag or branch the builder recorded (`builder build --record-refs`, --tag, --branch)".into(),
                ),
            },
            e => DeployError::Refused(Refusal {
                record: e.record(target),
                reason: e.to_string(),
                way_out: Some(
                    "name an artifact digest, a commit, `tag:<name>` or `branch:<name>`; `builder build --record-refs` (or --tag/--branch) records refs when it builds".into(),
                ),
            }),
        })?;
    let (digest, manifest) = resolve::resolve_verified(ctx.store.as_ref(), &t.digest.to_string())?;
    Ok((digest, manifest, t.source_ref))
}

fn plan_deploy(ctx: &EnvContext, target: &str, opts: &DeployOptions) -> Result<Plan, DeployError> {
    let passed = policy::check(ctx, opts, Action::Deploy)?;
    check_acks(opts)?;
    let (digest, manifest, source_ref) = resolve_target(ctx, target, opts)?;
    let to = ReleaseRef::of(digest, &manifest).map_err(|e| {
        refused(
            artifact::keys::blob(&digest),
            format!("manifest {digest}: {e}"),
            None,
        )
    })?;
    let commit = to.commit.to_string();
    let mut notes = override_notes(opts);
    notes.extend(passed.notes);
    gate(gates::signature(ctx, &to), &mut notes)?;
    let skipped = gate(gates::promotion(ctx, &to, opts), &mut notes)?;
    let (env_state, _) = records::load_state(ctx.store.as_ref(), &ctx.name)?;
    let mut manifests = BTreeMap::new();
    manifests.insert(digest, manifest);
    let base = baseline(ctx, &env_state, &to, opts, &mut manifests, &mut notes)?;
    let base_m: Vec<(ReleaseRef, &Manifest)> = base
        .iter()
        .map(|r| (r.clone(), &manifests[&r.manifest]))
        .collect();
    let (mut deploy_type, guard) = gate(
        gates::storage(ctx, &base_m, (&to, &manifests[&digest]), opts),
        &mut notes,
    )?;
    if let Some(from) = &opts.promoted_from {
        let (t, detail) = crate::promotion::reuse(from, &ctx.name, deploy_type, &guard)
            .map_err(|reason| {
                DeployError::Refused(Refusal {
                    record: format!(
                        "{} and the storage manifests of {digest}",
                        crate::keys::deploy_journal(&from.env, &from.deploy_id)
                    ),
                    reason,
                    way_out: Some(format!(
                        "compare with `applier diff {digest} --env {}`; deploy it here with its own acknowledgements (`applier deploy {digest} --env {} --ack ...`)",
                        ctx.name, ctx.name
                    )),
                })
            })?;
        deploy_type = t;
        notes.push(Note {
            step: records::Step::PromotionCheck,
            detail,
        });
    }
    // Each host's restore target as its records name it, asking the hosts a few at a time;
    // then each is verified (one manifest read per release, not per host).
    let names: Vec<String> = ctx
        .cfg
        .batches()
        .into_iter()
        .flat_map(|(_, hs)| hs)
        .collect();
    let found = super::run::bounded(ctx.cfg.prefetch_parallelism, &names, |h| {
        host_from(ctx, h, &env_state)
    });
    let mut targets = BTreeMap::new();
    let mut no_restore = BTreeMap::new();
    for (h, f) in names.into_iter().zip(found) {
        let from = restore_target(ctx, &h, f, &mut manifests, &mut notes, &mut no_restore);
        targets.insert(h, (from, to.clone()));
    }
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
    let mut overrides = passed.overrides;
    if skipped {
        overrides.push("skip-promotion-check".into());
    }
    let header = Header {
        kind: DeployKind::Deploy,
        artifact: Some(digest),
        commit: Some(commit.clone()),
        deploy_type,
        reason,
        notes,
        who_source: opts.who_source.clone(),
        source_ref,
        guard: Some(guard),
        overrides,
    };
    Ok(Plan {
        store_base: None,
        writer: JournalWriter::create(ctx.store.clone(), new_journal(ctx, header, targets)),
        manifests,
        mode: Mode::Fresh,
        lease_reason: format!("deploy {commit} ({})", opts.reason),
        break_own_lease: false,
        no_restore,
    })
}

fn plan_rollback(ctx: &EnvContext, opts: &DeployOptions) -> Result<Plan, DeployError> {
    let passed = policy::check(ctx, opts, Action::Rollback)?;
    // `--to`: one named release for every host, instead of each one's previous.
    let named = match &opts.rollback_to {
        Some(t) => {
            let (digest, m, r) = resolve_target(ctx, t, opts)?;
            let to = ReleaseRef::of(digest, &m).map_err(|e| {
                refused(
                    artifact::keys::blob(&digest),
                    format!("manifest {digest}: {e}"),
                    None,
                )
            })?;
            Some((to, r))
        }
        None => None,
    };
    let (env_state, _) = records::load_state(ctx.store.as_ref(), &ctx.name)?;
    let hist = records::read_history(ctx.store.as_ref(), &ctx.name)?;
    let mut notes = override_notes(opts);
    notes.extend(hist.unreadable.iter().map(|u| Note {
        step: records::Step::Skipped,
        detail: format!("{}: {} (not counted)", u.key, u.error),
    }));
    let last = hist
        .journals
        .iter()
        .rev()
        .find(|j| j.status == JournalStatus::Succeeded && j.kind == DeployKind::Deploy);
    let mut targets = BTreeMap::new();
    let mut manifests = BTreeMap::new();
    for n in ctx.cfg.batches().into_iter().flat_map(|(_, hs)| hs) {
        let (target, record) = match (&named, last) {
            (Some((r, _)), _) => (r.clone(), "the release --to names".to_string()),
            (None, Some(j)) => match j.hosts.get(&n).and_then(|e| e.from.clone()) {
                Some(t) => (t, crate::keys::deploy_journal(&ctx.name, &j.id)),
                None => continue,
            },
            (None, None) => match ctx
                .host(&n)
                .status()
                .ok()
                .and_then(|s| s.state.previous_good)
            {
                Some(t) => (t, format!("the state.json of host {n} (its previous good)")),
                None => continue,
            },
        };
        let target =
            trusted(ctx, &target, &record, &mut manifests).map_err(DeployError::Refused)?;
        let from = host_from(ctx, &n, &env_state)
            .and_then(|(f, rec)| trusted(ctx, &f, &rec, &mut manifests).ok());
        if from.as_ref() == Some(&target) {
            continue;
        }
        gate(gates::signature(ctx, &target), &mut notes)?;
        gate(gates::promotion_rollback(ctx, &target, &hist), &mut notes)?;
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
        artifact: named.as_ref().map(|(r, _)| r.manifest),
        commit: named.as_ref().map(|(r, _)| r.commit.to_string()),
        deploy_type: DeployType::Code,
        reason: opts.reason.clone(),
        notes,
        who_source: opts.who_source.clone(),
        source_ref: named.and_then(|(_, s)| s),
        guard: None,
        overrides: passed.overrides,
    };
    Ok(Plan {
        store_base: None,
        writer: JournalWriter::create(ctx.store.clone(), new_journal(ctx, header, targets)),
        manifests,
        mode: Mode::Fresh,
        lease_reason: format!("rollback ({})", opts.reason),
        break_own_lease: false,
        no_restore: BTreeMap::new(),
    })
}

fn plan_resume(
    ctx: &EnvContext,
    id: &str,
    rollback: bool,
    force: bool,
) -> Result<Plan, DeployError> {
    let mut writer = match JournalWriter::open(ctx.store.clone(), &ctx.name, id) {
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
    let key = crate::keys::deploy_journal(&ctx.name, id);
    if let Some(h) = writer
        .journal
        .hosts
        .keys()
        .find(|h| !ctx.hosts.contains_key(h.as_str()))
    {
        return Err(refused(
            key,
            format!(
                "it names host {h}, which is not in the {} inventory",
                ctx.name
            ),
            None,
        ));
    }
    // Every release the journal names, verified; the policies apply to what is switched to:
    // continuing installs the targets, rolling back the restore targets.
    let mut manifests = BTreeMap::new();
    let mut notes = Vec::new();
    let mut no_restore = BTreeMap::new();
    let hosts: Vec<String> = writer.journal.hosts.keys().cloned().collect();
    for h in hosts {
        let e = writer.journal.hosts[&h].clone();
        let to = trusted(ctx, &e.to, &key, &mut manifests).map_err(DeployError::Refused)?;
        let from = match &e.from {
            Some(f) => Some(trusted(ctx, f, &key, &mut manifests).map_err(DeployError::Refused)?),
            None => None,
        };
        if rollback {
            if let Some(f) = &from
                && let Err(why) = restorable(ctx, f, &mut notes)
            {
                notes.push(Note {
                    step: records::Step::Skipped,
                    detail: format!(
                        "{h}: not restored to {f}: {why}; it is taken out of the pool instead"
                    ),
                });
                no_restore.insert(h.clone(), why);
            }
        } else {
            gate(gates::signature(ctx, &to), &mut notes)?;
        }
        let entry = writer.journal.hosts.get_mut(&h).expect("host in journal");
        entry.to = to;
        entry.from = from;
    }
    for n in notes {
        writer.journal.step(None, n.step, true, Some(n.detail));
    }
    Ok(Plan {
        store_base: None,
        writer,
        manifests,
        mode: if rollback {
            Mode::RollBack
        } else {
            Mode::Continue
        },
        lease_reason: format!("resume {id}"),
        break_own_lease: force,
        no_restore,
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
        who_source: h.who_source,
        source_ref: h.source_ref,
        guard: h.guard,
        overrides: h.overrides,
        segments: 0,
        damaged: vec![],
    };
    for n in h.notes {
        j.step(None, n.step, true, Some(n.detail));
    }
    j
}

/// What the env runs, for the storage guard: the artifact most of its hosts are on.
pub fn env_current(env_state: &EnvState) -> Option<Digest> {
    most_common(
        env_state
            .hosts
            .values()
            .filter_map(|h| h.current.as_ref().map(|r| r.manifest)),
    )
}

fn most_common(it: impl Iterator<Item = Digest>) -> Option<Digest> {
    let mut counts: BTreeMap<Digest, usize> = BTreeMap::new();
    for d in it {
        *counts.entry(d).or_default() += 1;
    }
    counts.into_iter().max_by_key(|(_, n)| *n).map(|(d, _)| d)
}
