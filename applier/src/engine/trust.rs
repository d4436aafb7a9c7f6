//! Records made trustworthy before the planner acts on them. A release named by a record (a
//! journal, the env state, a host's `state.json`) is only a pointer: its manifest is loaded
//! and verified from the store and its commit taken from that manifest ([`trusted`]); a record
//! whose commit disagrees names two releases at once and is not acted on. The storage guard's
//! baseline and each host's restore target are found here.

use std::collections::BTreeMap;

use artifact::manifest::Manifest;
use artifact::{Digest, resolve};

use super::gates::{self, Note, Refusal};
use super::plan::{note_once, refused};
use super::{DeployError, DeployOptions, EnvContext};
use crate::protocol::ReleaseRef;
use crate::records::{self, EnvState};

/// The release a record names, made trustworthy: its manifest loaded from the store and
/// verified, and its commit taken from that manifest. A record whose commit is not its
/// manifest's names two releases at once and is refused (`record` says where it came from).
pub(super) fn trusted(
    ctx: &EnvContext,
    r: &ReleaseRef,
    record: &str,
    manifests: &mut BTreeMap<Digest, Manifest>,
) -> Result<ReleaseRef, Refusal> {
    let refuse = |reason: String| Refusal {
        record: record.to_string(),
        reason,
        way_out: None,
    };
    if let std::collections::btree_map::Entry::Vacant(slot) = manifests.entry(r.manifest) {
        let m = resolve::load_verified(ctx.store.as_ref(), &r.manifest).map_err(|e| {
            refuse(format!(
                "the release it names, {} (commit {}), cannot be verified: {e}",
                r.manifest,
                r.commit.short()
            ))
        })?;
        slot.insert(m);
    }
    let real = ReleaseRef::of(r.manifest, &manifests[&r.manifest])
        .map_err(|e| refuse(format!("manifest {}: {e}", r.manifest)))?;
    if real.commit != r.commit {
        return Err(refuse(format!(
            "it pairs manifest {} with commit {}, but that manifest is of commit {}: the record is inconsistent (forged or corrupt) and is not acted on",
            r.manifest, r.commit, real.commit
        )));
    }
    Ok(real)
}

/// What the storage guard compares the new release with: the release `--schema-baseline`
/// names, else every distinct current release of the env's records, each verified. One that
/// cannot be read or verified is a refusal naming it: the guard cannot see what the storage
/// holds.
pub(super) fn baseline(
    ctx: &EnvContext,
    env_state: &EnvState,
    to: &ReleaseRef,
    opts: &DeployOptions,
    manifests: &mut BTreeMap<Digest, Manifest>,
    notes: &mut Vec<Note>,
) -> Result<Vec<ReleaseRef>, DeployError> {
    if let Some(q) = &opts.schema_baseline {
        let (d, m) = resolve::resolve_verified(ctx.store.as_ref(), q).map_err(|e| {
            refused(
                format!("--schema-baseline {q}"),
                format!("the schema baseline cannot be resolved and verified: {e}"),
                None,
            )
        })?;
        let r = ReleaseRef::of(d, &m)
            .map_err(|e| refused(format!("--schema-baseline {q}"), e.to_string(), None))?;
        manifests.insert(d, m);
        notes.push(Note {
            step: records::Step::Override,
            detail: format!(
                "--schema-baseline {d} (commit {}): the storage guard compared with it instead of what the env's records say runs",
                r.commit
            ),
        });
        return Ok(if r == *to { vec![] } else { vec![r] });
    }
    let key = crate::keys::env_state(&ctx.name);
    let mut by: BTreeMap<&ReleaseRef, Vec<&str>> = BTreeMap::new();
    for (h, rec) in &env_state.hosts {
        if let Some(c) = &rec.current
            && c != to
        {
            by.entry(c).or_default().push(h);
        }
    }
    let mut out = Vec::new();
    for (c, hosts) in by {
        let record = format!(
            "{} (the current release of {} in {key})",
            artifact::keys::blob(&c.manifest),
            hosts.join(", ")
        );
        let r = trusted(ctx, c, &record, manifests).map_err(|mut r| {
            r.reason = format!(
                "the storage guard cannot read what the env runs: {}",
                r.reason
            );
            r.way_out = Some(format!(
                "restore the record, or, if you know what the storage holds, name the release whose schemas it has: `applier deploy {} --env {} --schema-baseline <digest or commit>` (recorded in the journal)",
                to.manifest, ctx.name
            ));
            DeployError::Refused(r)
        })?;
        out.push(r);
    }
    Ok(out)
}

/// A host's restore target: the release it reports (else the env's records say) it last ran
/// well, verified. One that cannot be verified is left out; one the signature policy refuses
/// stays the journal's `from` (what the host ran) but goes into `no_restore` with the reason:
/// on failure that host is taken out of the pool instead of being switched to it. Either way
/// the journal says why.
pub(super) fn restore_target(
    ctx: &EnvContext,
    host: &str,
    found: Option<(ReleaseRef, String)>,
    manifests: &mut BTreeMap<Digest, Manifest>,
    notes: &mut Vec<Note>,
    no_restore: &mut BTreeMap<String, String>,
) -> Option<ReleaseRef> {
    let (from, record) = found?;
    let skip = |notes: &mut Vec<Note>, why: String| {
        notes.push(Note {
            step: records::Step::Skipped,
            detail: format!(
                "{host}: restore target {why}; if {host} fails it is taken out of the pool instead"
            ),
        });
    };
    let r = match trusted(ctx, &from, &record, manifests) {
        Ok(r) => r,
        Err(refusal) => {
            skip(
                notes,
                format!("from {}: {}", refusal.record, refusal.reason),
            );
            return None;
        }
    };
    if let Err(why) = restorable(ctx, &r, notes) {
        skip(notes, format!("{r}: {why}"));
        no_restore.insert(host.to_string(), why);
    }
    Some(r)
}

/// Whether `release` may be switched back to under the env's policies (signature).
pub(super) fn restorable(
    ctx: &EnvContext,
    release: &ReleaseRef,
    notes: &mut Vec<Note>,
) -> Result<(), String> {
    match gates::signature(ctx, release).into_result() {
        Ok((_, n)) => {
            note_once(notes, n);
            Ok(())
        }
        Err(refusal) => Err(refusal.reason),
    }
}

/// The restore target of a host, as a record names it (with where it came from): its own last
/// known good release as the host reports it, else as the env records say. Untrusted until
/// [`trusted`].
pub(super) fn host_from(
    ctx: &EnvContext,
    host: &str,
    env_state: &EnvState,
) -> Option<(ReleaseRef, String)> {
    let reported = ctx
        .host(host)
        .status()
        .ok()
        .and_then(|s| s.state.last_good.or(s.state.current));
    if let Some(r) = reported {
        return Some((r, format!("the state.json of host {host}")));
    }
    env_state
        .hosts
        .get(host)
        .and_then(|r| r.last_good.clone().or(r.current.clone()))
        .map(|r| (r, crate::keys::env_state(&ctx.name)))
}
