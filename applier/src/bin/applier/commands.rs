//! One function per subcommand: resolve what it needs, call the library, render the result.

use std::io::IsTerminal;

use applier::engine::{self, DeployError, DeployOptions, EnvContext, HostReport, Outcome};
use applier::records::JournalStatus;

use crate::cli::{Cli, Cmd, Format};
use crate::context::{env_ctx, resolve_config};
use crate::exit::{Exit, Failure};
use crate::render::{Render, Sink, out, short};

pub fn run(cli: Cli) -> Result<Exit, Failure> {
    if cli.show_config {
        let r = resolve_config(&cli)?;
        out!("{}", r.show().trim_end());
        return Ok(Exit::Ok);
    }
    let Some(cmd) = &cli.cmd else {
        return Err(Failure::usage(anyhow::anyhow!("no command given")).hint("`applier --help`"));
    };
    let render = match cli.format {
        Format::Auto if std::io::stderr().is_terminal() => Render::Live,
        Format::Auto | Format::Plain => Render::Plain,
        Format::Json => Render::Json,
    };
    match cmd {
        Cmd::Host { root, op } => crate::host::run(root, op.as_deref()),
        Cmd::Deploy { target, env, flags } => {
            let opts = flags.options()?;
            let r = resolve_config(&cli)?;
            let ctx = env_ctx(&r, env)?;
            let sink = Sink::new(render);
            let res = engine::deploy(&ctx, &sink, target, &opts);
            finish(&sink, &ctx, res)
        }
        Cmd::Promote { from, to, flags } => {
            let opts = flags.options()?;
            let r = resolve_config(&cli)?;
            let ctx = env_ctx(&r, to)?;
            let from_hosts: Option<Vec<String>> = r
                .config
                .envs
                .get(from.as_str())
                .map(|e| e.hosts.keys().cloned().collect());
            let sink = Sink::new(render);
            let res = engine::promote(&ctx, &sink, from, from_hosts.as_deref(), &opts);
            finish(&sink, &ctx, res)
        }
        Cmd::Plan {
            target,
            env,
            acks,
            backend,
            skip_promotion_check,
        } => {
            let r = resolve_config(&cli)?;
            let ctx = env_ctx(&r, env)?;
            let opts = DeployOptions {
                reason: "plan".into(),
                dry_run: true,
                guard: applier::guard::GuardOptions {
                    backend: backend.into(),
                    acks: acks.clone(),
                },
                force_schema_rollback: false,
                skip_promotion_check: *skip_promotion_check,
                schema_baseline: None,
            };
            let p = engine::preview(&ctx, target, &opts).map_err(Failure::deploy)?;
            if render == Render::Json {
                out!("{}", serde_json::to_string(&p).expect("serialises"));
            } else {
                crate::render::out_text(&crate::plan::text(&p));
            }
            Ok(Exit::Ok)
        }
        Cmd::Rollback {
            env,
            reason,
            dry_run,
            force_schema_rollback,
            backend,
        } => {
            let r = resolve_config(&cli)?;
            let ctx = env_ctx(&r, env)?;
            let sink = Sink::new(render);
            let opts = DeployOptions {
                reason: reason.clone(),
                dry_run: *dry_run,
                guard: applier::guard::GuardOptions {
                    backend: backend.into(),
                    acks: vec![],
                },
                force_schema_rollback: *force_schema_rollback,
                skip_promotion_check: false,
                schema_baseline: None,
            };
            finish(&sink, &ctx, engine::rollback(&ctx, &sink, &opts))
        }
        Cmd::Resume {
            deploy_id,
            env,
            rollback,
            force,
        } => {
            let r = resolve_config(&cli)?;
            let env = crate::reports::env_of(&r, env.as_deref(), deploy_id)?;
            let ctx = env_ctx(&r, &env)?;
            let sink = Sink::new(render);
            finish(
                &sink,
                &ctx,
                engine::resume(&ctx, &sink, deploy_id, *rollback, *force),
            )
        }
        Cmd::Status { env } => {
            let r = resolve_config(&cli)?;
            let ctx = env_ctx(&r, env)?;
            let hosts = engine::status(&ctx).map_err(Failure::deploy)?;
            print_status(&hosts, render);
            let drift = hosts
                .iter()
                .any(|h| !h.drift.is_empty() || h.error.is_some());
            Ok(if drift { Exit::Failed } else { Exit::Ok })
        }
        Cmd::History {
            env,
            limit,
            since,
            status,
            host,
        } => {
            let r = resolve_config(&cli)?;
            let filter = crate::reports::filter(since.as_deref(), status.as_deref(), host)?;
            crate::reports::history(&r, env, *limit, &filter, render)
        }
        Cmd::Show { deploy_id, env } => {
            let r = resolve_config(&cli)?;
            crate::reports::show(&r, env.as_deref(), deploy_id, render)
        }
        Cmd::Report {
            deploy_id,
            env,
            latest,
            output,
        } => {
            let r = resolve_config(&cli)?;
            let id = if *latest { None } else { deploy_id.as_deref() };
            crate::reports::report(&r, env.as_deref(), id, output.as_deref())
        }
        Cmd::Unlock { env, reason } => {
            let r = resolve_config(&cli)?;
            let ctx = env_ctx(&r, env)?;
            let rep = engine::unlock(&ctx, reason).map_err(Failure::deploy)?;
            if render == Render::Json {
                out!("{}", serde_json::to_string(&rep).expect("serialises"));
            } else {
                out!(
                    "{} unlock: removed {}; fencing generation now {}",
                    rep.deploy_id,
                    rep.removed
                        .as_deref()
                        .unwrap_or("nothing (no lock was held)"),
                    rep.generation
                );
            }
            Ok(Exit::Ok)
        }
    }
}

/// Ends a run: the report (when the env has a `report_dir`), the outcome line (or JSON error
/// event) and the exit code.
fn finish(
    sink: &Sink,
    ctx: &EnvContext,
    res: Result<Outcome, DeployError>,
) -> Result<Exit, Failure> {
    sink.done();
    match res {
        Ok(o) => {
            if o.status != JournalStatus::Running {
                crate::reports::auto_write(ctx, &o.deploy_id);
            }
            if sink.render != Render::Json {
                out!("{} {}: {}", o.deploy_id, o.status.as_str(), o.message);
            }
            Ok(Exit::of_status(o.status))
        }
        Err(e) => {
            let f = Failure::deploy(e);
            if sink.render == Render::Json {
                let mut v = serde_json::json!({
                    "event": "error",
                    "exit_code": f.exit.code(),
                    "message": f.error.to_string(),
                });
                if let Some(h) = &f.hint {
                    v["hint"] = h.clone().into();
                }
                if let Some(DeployError::Refused(r)) = f.error.downcast_ref::<DeployError>() {
                    v["record"] = r.record.clone().into();
                }
                sink.json(&v);
            }
            Err(f)
        }
    }
}

fn print_status(hosts: &[HostReport], render: Render) {
    if render == Render::Json {
        out!("{}", serde_json::to_string(hosts).expect("serialises"));
        return;
    }
    out!(
        "{:<16} {:<12} {:<12} {:<12} {:<8} drift",
        "host",
        "current",
        "recorded",
        "last-good",
        "pid"
    );
    for h in hosts {
        let s = |o: &Option<String>| o.as_deref().map(short).unwrap_or("-").to_string();
        let d = if let Some(e) = &h.error {
            format!("error: {e}")
        } else if h.drift.is_empty() {
            "-".into()
        } else {
            h.drift.join("; ")
        };
        out!(
            "{:<16} {:<12} {:<12} {:<12} {:<8} {d}",
            h.host,
            s(&h.current),
            s(&h.recorded_current),
            s(&h.last_good),
            h.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into())
        );
    }
}
