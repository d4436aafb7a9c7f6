//! `applier unlock --env E --reason R`: breaks a stuck or corrupt env lock (fencing its holder
//! out; an `unlock` entry in the env's history) and clears the failure lock a failed deploy
//! left (recording who and why), so automatic deploys go again.

use applier::engine::{self, EnvContext};
use applier::failure_lock::{self, Unlocked};

use crate::exit::{Exit, Failure};
use crate::render::{Render, out};

pub fn run(ctx: &EnvContext, reason: &str, render: Render) -> Result<Exit, Failure> {
    let env = ctx.name.as_str();
    let rep = engine::unlock(ctx, reason).map_err(Failure::deploy)?;
    let u = failure_lock::clear(ctx.store.as_ref(), env, &ctx.who, reason).map_err(|e| {
        Failure::refused(
            anyhow::Error::new(e).context(format!("clearing the failure lock of {env}")),
        )
    })?;
    if render == Render::Json {
        let mut v = serde_json::to_value(&rep).expect("serialises");
        v["event"] = "unlock".into();
        v["env"] = env.into();
        v["result"] = serde_json::to_value(&u).expect("serialises");
        out!("{v}");
        return Ok(Exit::Ok);
    }
    out!(
        "{} unlock: removed {}; fencing generation now {}",
        rep.deploy_id,
        rep.removed
            .as_deref()
            .unwrap_or("nothing (no lock was held)"),
        rep.generation
    );
    match &u {
        Unlocked::Cleared(l) => out!(
            "{env}: failure lock cleared (set by deploy {} ending {}); recorded: {}: {reason}",
            l.deploy_id,
            l.status.as_str(),
            ctx.who
        ),
        Unlocked::NotLocked(_) => out!("{env}: no failure lock was set"),
    }
    Ok(Exit::Ok)
}
