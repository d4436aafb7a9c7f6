//! The commands that read deploys back: `history`, `show`, `report`, and the report a deploy
//! writes to its env's `report_dir` when it ends. Journals are read through
//! `applier::records`; what is shown is made by `applier::report`.

use std::path::Path;
use std::time::SystemTime;

use applier::config::Resolved;
use applier::engine::EnvContext;
use applier::records::{self, Journal, RecordError};
use applier::report::{self, history};

use crate::context::open_store;
use crate::exit::{Exit, Failure};
use crate::render::{Render, out, out_text};

/// The history filters from the flags.
pub fn filter(
    since: Option<&str>,
    status: Option<&str>,
    host: &Option<String>,
) -> Result<history::Filter, Failure> {
    let since = since
        .map(|s| history::parse_since(s, SystemTime::now()))
        .transpose()
        .map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
    let status = status
        .map(history::parse_status)
        .transpose()
        .map_err(|e| Failure::usage(anyhow::anyhow!(e)))?
        .unwrap_or_default();
    Ok(history::Filter {
        since,
        status,
        host: host.clone(),
    })
}

fn store_failure(e: RecordError) -> Failure {
    Failure::refused(anyhow::Error::new(e).context("reading the deploy records"))
}

/// `applier history`: the last `limit` deploys that pass `filter`, oldest first.
pub fn history(
    r: &Resolved,
    env: &str,
    limit: usize,
    filter: &history::Filter,
    render: Render,
) -> Result<Exit, Failure> {
    let store = open_store(r)?;
    let h = records::read_history(store.as_ref(), env).map_err(store_failure)?;
    for u in &h.unreadable {
        eprintln!("applier: skipped {} (unreadable): {}", u.key, u.error);
    }
    let all = h.journals;
    let now = SystemTime::now();
    let shown: Vec<&Journal> = all.iter().filter(|j| filter.accepts(j)).collect();
    let skip = shown.len().saturating_sub(limit);
    let rows: Vec<history::HistoryRow<'_>> = shown[skip..]
        .iter()
        .map(|j| history::HistoryRow::of(j, now))
        .collect();
    if render == Render::Json {
        for row in &rows {
            out!("{}", serde_json::to_string(row).expect("serialises"));
        }
    } else {
        out_text(&history::render_text(&rows));
    }
    Ok(Exit::Ok)
}

/// The environment holding deploy `id`: the one given, else the configured one that has it.
pub fn env_of(r: &Resolved, env: Option<&str>, id: &str) -> Result<String, Failure> {
    if let Some(e) = env {
        return Ok(e.to_string());
    }
    let store = open_store(r)?;
    let envs: Vec<String> = r.config.envs.keys().cloned().collect();
    records::find_journal(store.as_ref(), &envs, id)
        .map_err(store_failure)?
        .ok_or_else(|| {
            Failure::usage(anyhow::anyhow!(
                "no deploy {id} in any configured environment"
            ))
            .hint("`applier history --env <env>` lists an environment's deploys")
        })
}

/// Deploy `id` of `env` (the latest one when `id` is `None`).
fn journal(r: &Resolved, env: Option<&str>, id: Option<&str>) -> Result<Journal, Failure> {
    let store = open_store(r)?;
    let Some(id) = id else {
        let env = env.expect("clap requires --env with --latest");
        return records::history(store.as_ref(), env)
            .map_err(store_failure)?
            .pop()
            .ok_or_else(|| {
                Failure::usage(anyhow::anyhow!("no deploy in {env} yet"))
                    .hint("check the environment's name (`--show-config` lists them)")
            });
    };
    let env = env_of(r, env, id)?;
    records::read_journal(store.as_ref(), &env, id).map_err(|e| match &e {
        RecordError::Store(s) if s.is_not_found() => {
            Failure::usage(anyhow::anyhow!("no deploy {id} in {env}"))
                .hint(format!("`applier history --env {env}` lists its deploys"))
        }
        _ => store_failure(e),
    })
}

/// `applier show`: the steps of one deploy as text (its report model as JSON with
/// `--format json`).
pub fn show(r: &Resolved, env: Option<&str>, id: &str, render: Render) -> Result<Exit, Failure> {
    let j = journal(r, env, Some(id))?;
    let rep = report::of(&j);
    if render == Render::Json {
        out!("{}", serde_json::to_string(&rep).expect("serialises"));
    } else {
        out_text(&report::text::render(&rep));
    }
    Ok(Exit::Ok)
}

/// `applier report`: the HTML report on stdout, or into `out`.
pub fn report(
    r: &Resolved,
    env: Option<&str>,
    id: Option<&str>,
    out: Option<&Path>,
) -> Result<Exit, Failure> {
    let j = journal(r, env, id)?;
    let html = report::html_of(&j);
    match out {
        None => out_text(&html),
        Some(p) => {
            report::write_atomic(p, &html).map_err(|e| {
                Failure::usage(anyhow::Error::new(e).context(format!("writing {}", p.display())))
                    .hint("give -o a path in a directory that exists and is writable")
            })?;
            eprintln!("report of {} written to {}", j.id, p.display());
        }
    }
    Ok(Exit::Ok)
}

/// After a run: the report into the env's `report_dir`, if it has one. A report that cannot
/// be written is a warning; the run's outcome stands.
pub fn auto_write(ctx: &EnvContext, id: &str) {
    let Some(dir) = &ctx.cfg.report_dir else {
        return;
    };
    let r = records::read_journal(ctx.store.as_ref(), &ctx.name, id)
        .map_err(|e| e.to_string())
        .and_then(|j| report::write_to_dir(dir, &j).map_err(|e| e.to_string()));
    match r {
        Ok(p) => eprintln!("report: {}", p.display()),
        Err(e) => eprintln!(
            "applier: warning: the report of {id} was not written to {}: {e}",
            dir.display()
        ),
    }
}
