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
use crate::records::Step;

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

/// The storage guard of a deploy: diffs the storage manifest of what the env runs now
/// (`current`, `None` on a first deploy) against the new one. Passes with the deploy type.
pub fn storage(
    ctx: &EnvContext,
    current: Option<(&Digest, &Manifest)>,
    new: (&Digest, &Manifest),
    opts: &DeployOptions,
) -> Decision<DeployType> {
    let service_env = ctx.service_env();
    let record = match current {
        Some((d, _)) => format!("the storage manifests of {d} (running) and {}", new.0),
        None => format!("the storage manifest of {}", new.0),
    };
    let current_storage = current.map_or(new.1.storage.as_ref(), |(_, m)| m.storage.as_ref());
    let g = match guard::check(
        guard::select(current_storage, service_env),
        guard::select(new.1.storage.as_ref(), service_env),
        &opts.guard,
    ) {
        Ok(g) => g,
        Err(e) => return Decision::refuse(record, format!("storage guard: {e}"), None),
    };
    if !g.allowed {
        let reason = format!("storage guard: {}", g.findings.join("; "));
        let way_out = (!g.recipes.is_empty()).then(|| {
            format!(
                "if you deploy it anyway (--ack), the way back is: {}",
                g.recipes.join(" ")
            )
        });
        return Decision::refuse(record, reason, way_out);
    }
    let mut deploy_type = g.deploy_type;
    if deploy_type == DeployType::Code
        && current.is_some_and(|(_, cur)| guard::config_only(cur, new.1))
    {
        deploy_type = DeployType::Config;
    }
    // Findings that did not block, and the acknowledgements given: one line each, for the
    // journal (the report shows them).
    let lines: Vec<String> = g
        .findings
        .iter()
        .cloned()
        .chain(opts.guard.acks.iter().map(|a| format!("ack: {a}")))
        .collect();
    if lines.is_empty() {
        return Decision::pass(deploy_type);
    }
    Decision::noted(deploy_type, Step::Guard, lines.join("\n"))
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
    if opts.force_schema_rollback {
        return Decision::pass(());
    }
    let service_env = ctx.service_env();
    match guard::check_rollback(
        guard::select(from.1.storage.as_ref(), service_env),
        guard::select(to.1.storage.as_ref(), service_env),
        opts.guard.backend,
    ) {
        Ok(()) => Decision::pass(()),
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
/// trusted keys. Passes with a note naming the key.
pub fn signature(ctx: &EnvContext, digest: &Digest, commit: &str) -> Decision {
    let Some(policy) = &ctx.cfg.require_signature else {
        return Decision::pass(());
    };
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
/// which deploys passed it (or what was skipped).
pub fn promotion(
    ctx: &EnvContext,
    digest: &Digest,
    commit: &str,
    opts: &DeployOptions,
) -> Decision<bool> {
    let Some(policy) = &ctx.cfg.promotion else {
        return Decision::pass(false);
    };
    let record = policy
        .requires
        .iter()
        .map(|e| crate::keys::deploys_prefix(e))
        .collect::<Vec<_>>()
        .join(", ");
    match promotion::check(ctx.store.as_ref(), &ctx.name, policy, digest, commit) {
        Ok(passed) => {
            let by: Vec<String> = passed
                .iter()
                .map(|(env, id)| format!("{env} (deploy {id})"))
                .collect();
            Decision::noted(
                false,
                Step::PromotionCheck,
                format!("passed {}", by.join(", ")),
            )
        }
        Err(PromotionError::NotPassed { missing, .. }) if opts.skip_promotion_check => {
            let missing = missing.join(", ");
            tracing::warn!("--skip-promotion-check: {commit} has not passed {missing}");
            Decision::noted(
                true,
                Step::PromotionCheck,
                format!("--skip-promotion-check; not passed: {missing}"),
            )
        }
        Err(PromotionError::NotPassed {
            message, way_out, ..
        }) => Decision::refuse(record, message, Some(way_out)),
        Err(e) => Decision::refuse(record, e.to_string(), None),
    }
}
