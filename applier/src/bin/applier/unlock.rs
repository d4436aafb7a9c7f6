//! `applier unlock --env E --reason R [--break-lease <deploy-id>]`: clears the failure lock a
//! failed deploy left (recording who and why), and breaks the env's lease only when asked to,
//! naming the deploy that holds it.

use applier::engine::lease;
use applier::failure_lock::{self, Unlocked};
use artifact::Store;

use crate::exit::{Exit, Failure};
use crate::render::Render;

pub fn run(
    store: &dyn Store,
    env: &str,
    who: &str,
    reason: &str,
    break_lease: Option<&str>,
    render: Render,
) -> Result<Exit, Failure> {
    if reason.trim().is_empty() {
        return Err(Failure::usage(anyhow::anyhow!(
            "--reason must say what was looked at or fixed"
        )));
    }
    let lease_broken = match break_lease {
        Some(id) => Some(lease::break_held(store, env, id).map_err(|e| {
            Failure::refused(anyhow::Error::new(e).context(format!("breaking the lease of {env}")))
                .hint("`--break-lease` takes the id of the deploy that holds the lease (the refusal names it)")
        })?),
        None => None,
    };
    let u = failure_lock::clear(store, env, who, reason).map_err(|e| {
        Failure::refused(
            anyhow::Error::new(e).context(format!("clearing the failure lock of {env}")),
        )
    })?;
    if render == Render::Json {
        println!(
            "{}",
            serde_json::json!({"event": "unlock", "env": env, "result": u, "lease_broken": lease_broken})
        );
        return Ok(Exit::Ok);
    }
    match &u {
        Unlocked::Cleared(l) => println!(
            "{env} unlocked (it was locked by deploy {} ending {}); recorded: {who}: {reason}",
            l.deploy_id,
            l.status.as_str()
        ),
        Unlocked::NotLocked(_) => println!("{env} has no failure lock set; nothing to clear"),
    }
    match lease_broken {
        Some(true) => println!(
            "the lease of {env} held by {} was broken",
            break_lease.unwrap_or("")
        ),
        Some(false) => println!("{env} had no lease to break"),
        None => {}
    }
    Ok(Exit::Ok)
}
