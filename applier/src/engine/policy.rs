//! The environment's own policies, checked first, before the gates: a deploy message where
//! the env requires one (`require_message`), the failure lock a failed deploy left
//! ([`crate::failure_lock`]) and the freeze windows ([`crate::freeze`]).
//!
//! Automatic deploys (continuous deployment, `promote --auto`) have no overrides: a set lock
//! or an open window refuses them. A person overrides with a reason (`--ignore-failure-lock`,
//! `--override-freeze`), which the journal records as a step and in its `overrides`.
//! Rollbacks and resumes are not held by the lock or a freeze (going back is always allowed);
//! a message, where required, is required for them too. A policy that cannot be evaluated
//! (an unreadable lock record, a window that does not parse) refuses.

use std::time::SystemTime;

use super::gates::{Note, Refusal};
use super::{DeployError, DeployOptions, EnvContext};
use crate::failure_lock;
use crate::keys;
use crate::records::Step;

/// What the policies are asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    Deploy,
    Rollback,
}

/// What passing took: journal notes and the overrides used.
#[derive(Debug, Default)]
pub(super) struct Passed {
    pub notes: Vec<Note>,
    pub overrides: Vec<String>,
}

fn refuse(record: String, reason: String, way_out: Option<String>) -> DeployError {
    DeployError::Refused(Refusal {
        record,
        reason,
        way_out,
    })
}

pub(super) fn check(
    ctx: &EnvContext,
    opts: &DeployOptions,
    action: Action,
) -> Result<Passed, DeployError> {
    let env = &ctx.name;
    if ctx.cfg.require_message && opts.reason.trim().is_empty() {
        return Err(DeployError::Usage {
            message: format!("{env} requires a deploy message"),
            way_out: Some("say why with -m/--message '<what and why>'".into()),
        });
    }
    let mut passed = Passed::default();
    if action == Action::Rollback {
        return Ok(passed);
    }
    let who = if opts.automatic {
        "an automatic deploy"
    } else {
        "a deploy"
    };
    let lock = failure_lock::active(ctx.store.as_ref(), env).map_err(|e| {
        refuse(
            keys::failure_lock(env),
            format!("cannot read the failure lock of {env}: {e}"),
            None,
        )
    })?;
    if let Some(l) = lock {
        let unlock = format!(
            "`applier unlock --env {env} --reason '<what was fixed>'` once it is understood"
        );
        match (&opts.ignore_failure_lock, opts.automatic) {
            (Some(reason), false) => {
                passed.notes.push(Note {
                    step: Step::FailureLock,
                    detail: format!("--ignore-failure-lock ({reason}): {}", l.describe()),
                });
                passed
                    .overrides
                    .push(format!("ignore-failure-lock: {reason}"));
            }
            (_, automatic) => {
                let way_out = if automatic {
                    unlock
                } else {
                    format!(
                        "{unlock}; or deploy by hand anyway with --ignore-failure-lock '<reason>'"
                    )
                };
                return Err(refuse(
                    keys::failure_lock(env),
                    format!("{who} refused: {}", l.describe()),
                    Some(way_out),
                ));
            }
        }
    }
    let now = opts.now.unwrap_or_else(SystemTime::now);
    let frozen = crate::freeze::check(&ctx.cfg.freeze, now)
        .map_err(|e| refuse(format!("envs.{env}.freeze"), format!("{env}: {e}"), None))?;
    if let Some(f) = frozen {
        match (&opts.override_freeze, opts.automatic) {
            (Some(reason), false) => {
                passed.notes.push(Note {
                    step: Step::Freeze,
                    detail: format!("--override-freeze ({reason}): {f}"),
                });
                passed.overrides.push(format!("override-freeze: {reason}"));
            }
            (_, automatic) => {
                return Err(refuse(
                    format!("envs.{env}.freeze"),
                    format!("{who} to {env} refused: {f}"),
                    (!automatic).then(|| {
                        "wait for the window to close, or, for an emergency, --override-freeze '<reason>' (recorded)".to_string()
                    }),
                ));
            }
        }
    }
    Ok(passed)
}
