//! `applier cd`: what the run decided (up to date, or which commit it deployed and which it
//! skipped), then the deploy's own outcome.

use applier::cd::CdReport;
use applier::engine::DeployError;

use crate::commands::error_event;
use crate::exit::{Exit, Failure};
use crate::render::{Render, Sink, short};

pub fn finish(sink: &Sink, res: Result<CdReport, DeployError>) -> Result<Exit, Failure> {
    sink.done();
    let r = res.map_err(|e| error_event(sink, Failure::deploy(e)))?;
    if sink.render == Render::Json {
        let mut v = serde_json::to_value(&r).expect("serialises");
        v["event"] = "cd".into();
        sink.json(&v);
    } else if r.up_to_date {
        println!(
            "{} already runs {}, the newest built commit of {}: nothing to deploy",
            r.env,
            short(&r.newest),
            r.branch
        );
    } else {
        if !r.skipped.is_empty() {
            let s: Vec<&str> = r.skipped.iter().map(|c| short(c)).collect();
            eprintln!(
                "skipped (superseded by {}): {}",
                short(&r.newest),
                s.join(", ")
            );
        }
        if let Some(o) = &r.outcome {
            println!("{} {}: {}", o.deploy_id, o.status.as_str(), o.message);
        }
    }
    Ok(r.outcome
        .as_ref()
        .map(|o| Exit::of_status(o.status))
        .unwrap_or(Exit::Ok))
}
