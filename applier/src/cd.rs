//! Continuous deployment: `applier cd --env beta` deploys the newest built commit of the
//! branch the env follows, and nothing older.
//!
//! The builder records a branch's newest built commit (`refs/branches/<name>`, moved forward
//! only, with the commits it passed). Every CI run of the hook calls `cd` after its build; a
//! run that finds a deploy under way waits for its lease (up to `wait`), then deploys what the
//! branch names *then*. So when commits land faster than deploys, the ones in between are
//! superseded: never deployed, and reported as skipped; a run that finds the env already on
//! the newest commit does nothing. The deploy itself is an ordinary one with `automatic` set:
//! the failure lock and freeze windows refuse it, with no override.

use std::time::{Duration, Instant};

use artifact::refs::{self, RefKind};
use model::names::RefName;
use serde::Serialize;

use crate::engine::gates::Refusal;
use crate::engine::lease::{self, LeaseError};
use crate::engine::{self, DeployError, DeployOptions, EnvContext, Outcome};
use crate::events::EventSink;
use crate::records;

/// What a `cd` run did.
#[derive(Clone, Debug, Serialize)]
pub struct CdReport {
    pub env: String,
    pub branch: String,
    /// The newest built commit of the branch, when the run decided.
    pub newest: String,
    /// The env already ran it: nothing was deployed.
    pub up_to_date: bool,
    /// Built commits of the branch newer than what the env ran, passed over for `newest`.
    pub skipped: Vec<String>,
    /// How long the run waited for another deploy's lease.
    pub waited_s: f64,
    pub outcome: Option<Outcome>,
}

/// Deploys the newest built commit of `branch` to `ctx`'s env, waiting up to `wait` for a
/// deploy under way.
pub fn run(
    ctx: &EnvContext,
    sink: &dyn EventSink,
    branch: &str,
    wait: Duration,
    opts: &DeployOptions,
) -> Result<CdReport, DeployError> {
    let name = RefName::parse(branch).map_err(|e| DeployError::Usage {
        message: format!("--branch: {e}"),
        way_out: None,
    })?;
    let mut opts = opts.clone();
    opts.automatic = true;
    let t0 = Instant::now();
    loop {
        let rec = refs::read(ctx.store.as_ref(), RefKind::Branch, &name)
            .map_err(|e| refused(&name, e.to_string(), None))?
            .ok_or_else(|| {
                refused(
                    &name,
                    format!("no built commit of branch {name} is recorded"),
                    Some(format!(
                        "build with `builder build --branch {name}` (or --record-refs) first"
                    )),
                )
            })?;
        let newest = rec.head.commit.to_string();
        let (state, _) = records::load_state(ctx.store.as_ref(), &ctx.name)?;
        let on_newest = !ctx.hosts.is_empty()
            && ctx.hosts.keys().all(|h| {
                state
                    .hosts
                    .get(h)
                    .and_then(|r| r.current.as_ref())
                    .is_some_and(|c| c.commit.as_str() == newest)
            });
        let running: Vec<String> = state
            .hosts
            .values()
            .filter_map(|r| r.current.as_ref().map(|c| c.commit.to_string()))
            .collect();
        let report = |up_to_date, outcome| CdReport {
            env: ctx.name.clone(),
            branch: name.to_string(),
            newest: newest.clone(),
            up_to_date,
            skipped: if up_to_date {
                vec![]
            } else {
                rec.history
                    .iter()
                    .map(|e| e.commit.to_string())
                    .take_while(|c| !running.contains(c))
                    .collect()
            },
            waited_s: t0.elapsed().as_secs_f64(),
            outcome,
        };
        if on_newest {
            return Ok(report(true, None));
        }
        // A deploy under way: wait for it (quietly), then look at the branch again.
        let held = lease::current(ctx.store.as_ref(), &ctx.name)?.is_some_and(|(info, _)| {
            !lease::is_expired(&ctx.name, &info, std::time::SystemTime::now()).unwrap_or(false)
        });
        if held && t0.elapsed() < wait {
            std::thread::sleep(Duration::from_millis(500).min(wait.saturating_sub(t0.elapsed())));
            continue;
        }
        match engine::deploy(ctx, sink, &format!("branch:{name}"), &opts) {
            Err(DeployError::Lease(l))
                if matches!(l.as_ref(), LeaseError::Held { .. }) && t0.elapsed() < wait =>
            {
                std::thread::sleep(
                    Duration::from_millis(500).min(wait.saturating_sub(t0.elapsed())),
                );
            }
            Err(e) => return Err(e),
            Ok(o) => return Ok(report(false, Some(o))),
        }
    }
}

fn refused(name: &RefName, reason: String, way_out: Option<String>) -> DeployError {
    DeployError::Refused(Refusal {
        record: artifact::keys::branch(name),
        reason,
        way_out,
    })
}
