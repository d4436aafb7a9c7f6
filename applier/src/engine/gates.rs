//! The gates a plan passes before anything is touched: the storage guard (deploy and
//! rollback), the signature policy and the promotion policy.
//!
//! Each gate is a function that reads what it needs from the store and returns a [`Decision`]:
//! pass, with an optional note for the journal, or refuse, naming the record it read and the
//! way out. The planner turns a refusal into [`super::DeployError::Refused`]; nothing was
//! touched by then.

use artifact::manifest::Manifest;
use artifact::{Digest, sign};

use super::{DeployOptions, EnvContext};
use crate::guard::{self, DeployType};
use crate::promotion::{self, PromotionError};
use crate::protocol::ReleaseRef;
use crate::records::{self, Step};

/// What a gate decided.
#[derive(Clone, Debug)]
pub enum Decision<T = ()> {
    /// Go ahead with `value`; `note` goes into the journal.
    Pass {
        value: T,
        note: Option<Note>,
    },
    Refuse(Refusal),
}

/// A journal note of a gate that passed.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    pub step: Step,
    pub detail: String,
}

/// Why a gate refused: the record it read, what is wrong, and what the operator can do.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{reason}")]
pub struct Refusal {
    /// The store record (or records) the decision was made on.
    pub record: String,
    pub reason: String,
    /// What would let it pass, if anything would.
    pub way_out: Option<String>,
}

impl<T> Decision<T> {
    fn pass(value: T) -> Self {
        Decision::Pass { value, note: None }
    }

    fn noted(value: T, step: Step, detail: String) -> Self {
        Decision::Pass {
            value,
            note: Some(Note { step, detail }),
        }
    }

    fn refuse(record: impl Into<String>, reason: String, way_out: Option<String>) -> Self {
        Decision::Refuse(Refusal {
            record: record.into(),
            reason,
            way_out,
        })
    }

    /// The value and note of a pass; the refusal otherwise.
    pub fn into_result(self) -> Result<(T, Option<Note>), Refusal> {
        match self {
            Decision::Pass { value, note } => Ok((value, note)),
            Decision::Refuse(r) => Err(r),
        }
    }
}

/// The storage guard of a deploy: diffs the storage manifest of each release the env runs now
/// (`baseline`: every distinct current release, or the one `--schema-baseline` named; empty on
/// a first deploy) against the new one. Passes with the deploy type and the guard's record (with the env's `schema_policy`), and a note saying what
/// it was compared with. Where one side has a storage manifest for the env and the other has
/// none, the guard cannot tell what changes: it refuses.
pub fn storage(
    ctx: &EnvContext,
    baseline: &[(ReleaseRef, &Manifest)],
    new: (&ReleaseRef, &Manifest),
    opts: &DeployOptions,
) -> Decision<(DeployType, guard::GuardRecord)> {
    let service_env = ctx.service_env();
    let new_storage = guard::select(new.1.storage.as_ref(), service_env);
    // A first deploy: the new release against itself (nothing stored yet to compare with).
    let pairs: Vec<(Option<&ReleaseRef>, Option<&serde_json::Value>)> = if baseline.is_empty() {
        vec![(None, new_storage)]
    } else {
        baseline
            .iter()
            .map(|(r, m)| (Some(r), guard::select(m.storage.as_ref(), service_env)))
            .collect()
    };
    let gopts = guard_options(ctx, opts);
    let mut grec = guard::GuardRecord {
        rollback_safe: true,
        ..Default::default()
    };
    let mut deploy_type = DeployType::Code;
    let mut config_only = !baseline.is_empty();
    let mut compared = Vec::new();
    let mut findings: Vec<String> = Vec::new();
    for (cur, cur_storage) in pairs {
        let record = match cur {
            Some(c) => format!(
                "the storage manifests of {} (running, commit {}) and {} (commit {})",
                c.manifest,
                c.commit.short(),
                new.0.manifest,
                new.0.commit.short()
            ),
            None => format!("the storage manifest of {}", new.0.manifest),
        };
        if cur_storage.is_some() != new_storage.is_some() {
            let (has, lacks) = match cur {
                Some(c) if cur_storage.is_some() => (c.manifest, new.0.manifest),
                Some(c) => (new.0.manifest, c.manifest),
                None => unreachable!("a first deploy compares the new release with itself"),
            };
            return Decision::refuse(
                record,
                format!(
                    "storage guard: {has} has a storage manifest for env {service_env} and {lacks} has none, so what this deploy changes in the storage cannot be told"
                ),
                Some(
                    "deploy an artifact built with its storage manifest, or, if you know what the storage holds, name the release whose schemas it has: --schema-baseline <digest or commit> (recorded in the journal)".into(),
                ),
            );
        }
        let current_storage = if cur.is_some() {
            cur_storage
        } else {
            new_storage
        };
        let g = match guard::check(current_storage, new_storage, &gopts) {
            Ok(g) => g,
            Err(e) => return Decision::refuse(record, format!("storage guard: {e}"), None),
        };
        if !g.allowed {
            return Decision::refuse(
                record,
                format!("storage guard: {}", g.findings.join("; ")),
                Some(ack_way_out(&g)),
            );
        }
        if g.deploy_type == DeployType::Schema {
            deploy_type = DeployType::Schema;
        }
        grec.compared |= g.record.compared;
        grec.rollback_safe &= g.record.rollback_safe;
        for c in g.record.changes {
            if !grec.changes.contains(&c) {
                grec.changes.push(c);
            }
        }
        for f in g.findings {
            if !findings.contains(&f) {
                findings.push(f);
            }
        }
        if let Some((c, m)) = cur.and_then(|c| baseline.iter().find(|(r, _)| r == c)) {
            config_only &= guard::config_only(m, new.1);
            compared.push(format!("{} (commit {})", c.manifest, c.commit.short()));
        }
        if cur_storage.is_none() {
            compared.push("(no storage manifests for this env: nothing to compare)".into());
        }
    }
    if deploy_type == DeployType::Code && config_only {
        deploy_type = DeployType::Config;
    }
    let with = if baseline.is_empty() {
        "first deploy: no running release to compare with".to_string()
    } else {
        format!("compared with {}", compared.join(", "))
    };
    // One line of decision, then the findings that did not block and the acknowledgements
    // given, one line each (the report reads them back).
    let lines: Vec<String> = std::iter::once(format!("{} deploy; {with}", type_name(deploy_type)))
        .chain(findings)
        .chain(gopts.acks.iter().map(|a| format!("ack: {a}")))
        .chain(gopts.policy_ack.iter().map(|p| format!("policy: {p}")))
        .collect();
    Decision::noted((deploy_type, grec), Step::StorageGuard, lines.join("\n"))
}

/// The guard's settings for a deploy to `ctx`'s env: the run's, plus the env's
/// `schema_policy`.
pub fn guard_options(ctx: &EnvContext, opts: &DeployOptions) -> guard::GuardOptions {
    let mut g = opts.guard.clone();
    if ctx.cfg.schema_policy == crate::config::policy::SchemaPolicy::Acknowledge {
        g.policy_ack = Some(format!("envs.{}.schema_policy", ctx.name));
    }
    g
}

fn type_name(t: DeployType) -> &'static str {
    match t {
        DeployType::Code => "code",
        DeployType::Config => "config",
        DeployType::Schema => "schema",
    }
}

/// The way out of a guard refusal: the exact `--ack` of every blocking change, and the way
/// back once it is deployed. The applier reads acknowledgements only from `--ack` (it does
/// not see commit messages), so that is what it tells the operator to type.
fn ack_way_out(g: &guard::GuardOutcome) -> String {
    let mut out = String::new();
    if !g.acks_needed.is_empty() {
        out.push_str("to deploy it anyway, acknowledge each change (with your reason): ");
        out.push_str(
            &g.acks_needed
                .iter()
                .map(|a| format!("--ack {}", crate::shell::shell_quote(a)))
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    if !g.recipes.is_empty() {
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str("once deployed, the way back is: ");
        out.push_str(&g.recipes.join(" "));
    }
    out
}

/// The storage guard of a rollback of `host` from `from` to `to`: the old code must still
/// start on the storage the running release left behind.
pub fn storage_rollback(
    ctx: &EnvContext,
    host: &str,
    from: (&Digest, &Manifest),
    to: (&Digest, &Manifest),
    opts: &DeployOptions,
) -> Decision {
    let service_env = ctx.service_env();
    match guard::check_rollback(
        guard::select(from.1.storage.as_ref(), service_env),
        guard::select(to.1.storage.as_ref(), service_env),
        opts.guard.backend,
    ) {
        Ok(()) => Decision::pass(()),
        Err(e) if opts.force_schema_rollback => Decision::noted(
            (),
            Step::Override,
            format!(
                "--force-schema-rollback: {host} goes back to {} although {e}",
                to.0
            ),
        ),
        Err(e) => Decision::refuse(
            format!("the storage manifests of {} and {}", from.0, to.0),
            format!(
                "rollback of {host} refused by the storage guard: {e} (override: --force-schema-rollback)"
            ),
            Some(
                "only if you know the storage accepts the old schema: --force-schema-rollback"
                    .into(),
            ),
        ),
    }
}

/// With `require_signature` set, refuses an artifact that has no valid signature by one of the
/// trusted keys; an error while checking is a refusal too. Passes with a note naming the key.
pub fn signature(ctx: &EnvContext, release: &ReleaseRef) -> Decision {
    let Some(policy) = &ctx.cfg.require_signature else {
        return Decision::pass(());
    };
    let (digest, commit) = (&release.manifest, &release.commit);
    let record = artifact::keys::signatures_prefix(digest);
    let trusted = match policy
        .trusted_keys
        .iter()
        .map(|k| sign::PublicKey::from_spec(k))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(t) => t,
        Err(e) => {
            return Decision::refuse(
                format!("envs.{}.require_signature.trusted_keys", ctx.name),
                format!("{}: require_signature.trusted_keys: {e}", ctx.name),
                Some(
                    "fix the key in the configuration (`--show-config` shows where it comes from)"
                        .into(),
                ),
            );
        }
    };
    match sign::require_signature(ctx.store.as_ref(), digest, &trusted) {
        Ok(key_id) => Decision::noted(
            (),
            Step::Signature,
            format!("{digest} (commit {commit}) is signed by trusted key {key_id}"),
        ),
        Err(e @ sign::SignError::Store(_)) => Decision::refuse(
            record,
            format!("checking the signatures of {digest}: {e}"),
            None,
        ),
        Err(e) => Decision::refuse(
            record,
            format!(
                "{} requires a signed artifact; commit {commit}: {e} (sign it with `builder sign`)",
                ctx.name
            ),
            Some(format!(
                "sign it with a trusted key: `builder sign {digest} --key <secret key file>`"
            )),
        ),
    }
}

/// With `promotion` set, refuses an artifact that has not passed every required env, unless
/// `--skip-promotion-check`. Passes with `true` when the check was skipped, and a note saying
/// which deploys passed it (or what was skipped). Journals of the required envs that cannot be
/// read are not counted, and the note (or the refusal) says so.
pub fn promotion(ctx: &EnvContext, release: &ReleaseRef, opts: &DeployOptions) -> Decision<bool> {
    let Some(policy) = &ctx.cfg.promotion else {
        return Decision::pass(false);
    };
    let (digest, commit) = (&release.manifest, release.commit.as_str());
    let record = policy
        .requires
        .iter()
        .map(|e| crate::keys::deploys_prefix(e))
        .collect::<Vec<_>>()
        .join(", ");
    let mut unreadable = Vec::new();
    for env in &policy.requires {
        match records::read_history(ctx.store.as_ref(), env) {
            Ok(h) => unreadable.extend(h.unreadable.into_iter().map(|u| u.key)),
            Err(e) => return Decision::refuse(record, e.to_string(), None),
        }
    }
    let not_counted = if unreadable.is_empty() {
        String::new()
    } else {
        format!(
            " ({} unreadable journal(s) not counted: {})",
            unreadable.len(),
            unreadable.join(", ")
        )
    };
    match promotion::check(ctx.store.as_ref(), &ctx.name, policy, digest, commit) {
        Ok(passed) => {
            let by: Vec<String> = passed
                .iter()
                .map(|(env, id)| format!("{env} (deploy {id})"))
                .collect();
            Decision::noted(
                false,
                Step::PromotionCheck,
                format!("passed {}{not_counted}", by.join(", ")),
            )
        }
        Err(PromotionError::NotPassed { missing, .. }) if opts.skip_promotion_check => {
            let missing = missing.join(", ");
            tracing::warn!("--skip-promotion-check: {commit} has not passed {missing}");
            Decision::noted(
                true,
                Step::PromotionCheck,
                format!("--skip-promotion-check; not passed: {missing}{not_counted}"),
            )
        }
        Err(PromotionError::NotPassed {
            message, way_out, ..
        }) => Decision::refuse(record, format!("{message}{not_counted}"), Some(way_out)),
        Err(e) => Decision::refuse(record, e.to_string(), None),
    }
}

/// The promotion policy for a release a rollback goes back to: it passes if it passed the
/// required envs, or if a succeeded deploy of this env (in `own`, its readable journals) put
/// it on a host here.
pub fn promotion_rollback(
    ctx: &EnvContext,
    release: &ReleaseRef,
    own: &records::History,
) -> Decision {
    if ctx.cfg.promotion.is_none() {
        return Decision::pass(());
    }
    if let Some(j) = own.journals.iter().rev().find(|j| {
        j.status == records::JournalStatus::Succeeded && j.hosts.values().any(|e| e.to == *release)
    }) {
        return Decision::noted(
            (),
            Step::PromotionCheck,
            format!("{release} was deployed here by {}", j.id),
        );
    }
    match promotion(ctx, release, &DeployOptions::default()) {
        Decision::Pass { note, .. } => Decision::Pass { value: (), note },
        Decision::Refuse(r) => Decision::Refuse(r),
    }
}
