//! One function per subcommand: resolve what it needs, call the library, render the result.

use std::io::IsTerminal;
use std::time::Duration;

use applier::engine::{self, DeployError, DeployOptions, EnvContext, HostReport, Outcome};
use applier::events::EventSink;
use applier::notify::{NoticeBase, Notifier};
use applier::records::JournalStatus;

use crate::cli::{Cli, Cmd, Format, guard_options};
use crate::context::{env_ctx, identity, resolve_config};
use crate::exit::{Exit, Failure};
use crate::render::{Render, Sink, out, short};

/// How long a finished run waits for notifications still being delivered.
const NOTIFY_WAIT: Duration = Duration::from_secs(10);

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
    let id = identity(&cli);
    let with_who = |mut o: DeployOptions| {
        o.who_source = Some(id.source.clone());
        o
    };
    match cmd {
        Cmd::Host { root, op } => crate::host::run(root, op.as_deref()),
        Cmd::Deploy { target, env, flags } => {
            let r = resolve_config(&cli)?;
            let ctx = env_ctx(&r, env, &id.who)?;
            let opts = with_who(flags.options()?);
            notified(&ctx, render, &opts, |sink| {
                engine::deploy(&ctx, sink, target, &opts)
            })
        }
        Cmd::Promote {
            from,
            to,
            auto,
            flags,
        } => {
            let r = resolve_config(&cli)?;
            let ctx = env_ctx(&r, to, &id.who)?;
            let from_hosts: Option<Vec<String>> = r
                .config
                .envs
                .get(from.as_str())
                .map(|e| e.hosts.keys().cloned().collect());
            let mut opts = with_who(flags.options()?);
            opts.automatic = *auto;
            notified(&ctx, render, &opts, |sink| {
                engine::promote(&ctx, sink, from, from_hosts.as_deref(), &opts)
            })
        }
        Cmd::Plan {
            target,
            env,
            acks,
            backend,
            skip_promotion_check,
        } => {
            let r = resolve_config(&cli)?;
            let ctx = env_ctx(&r, env, &id.who)?;
            let opts = DeployOptions {
                reason: "plan".into(),
                dry_run: true,
                guard: guard_options(backend, acks),
                skip_promotion_check: *skip_promotion_check,
                ..Default::default()
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
            message,
            to,
            repo,
            dry_run,
            force_schema_rollback,
            backend,
        } => {
            let r = resolve_config(&cli)?;
            let ctx = env_ctx(&r, env, &id.who)?;
            let opts = with_who(DeployOptions {
                reason: message.clone(),
                dry_run: *dry_run,
                guard: guard_options(backend, &[]),
                force_schema_rollback: *force_schema_rollback,
                rollback_to: to.clone(),
                repo: repo.clone(),
                ..Default::default()
            });
            notified(&ctx, render, &opts, |sink| {
                engine::rollback(&ctx, sink, &opts)
            })
        }
        Cmd::Resume {
            deploy_id,
            env,
            rollback,
            force,
        } => {
            let r = resolve_config(&cli)?;
            let env = crate::reports::env_of(&r, env.as_deref(), deploy_id)?;
            let ctx = env_ctx(&r, &env, &id.who)?;
            let opts = with_who(DeployOptions {
                reason: format!("resume {deploy_id}"),
                ..Default::default()
            });
            notified(&ctx, render, &opts, |sink| {
                engine::resume(&ctx, sink, deploy_id, *rollback, *force)
            })
        }
        Cmd::Cd {
            env,
            branch,
            wait,
            message,
            acks,
            backend,
        } => {
            let r = resolve_config(&cli)?;
            let ctx = env_ctx(&r, env, &id.who)?;
            let branch = match (branch, &ctx.cfg.cd) {
                (Some(b), _) => b.clone(),
                (None, Some(cd)) => cd.branch.clone(),
                (None, None) => {
                    return Err(Failure::usage(anyhow::anyhow!(
                        "no branch: give --branch, or set envs.{env}.cd.branch"
                    )));
                }
            };
            let reason = if message.is_empty() {
                format!("continuous deployment of {branch}")
            } else {
                message.clone()
            };
            let opts = with_who(DeployOptions {
                reason,
                guard: guard_options(backend, acks),
                automatic: true,
                ..Default::default()
            });
            let sink = Sink::new(render);
            let wait: Duration = (*wait).into();
            let res = with_notifier(&ctx, &sink, &opts, |s| {
                applier::cd::run(&ctx, s, &branch, wait, &opts)
            });
            crate::cd::finish(&sink, res)
        }
        Cmd::Diff {
            target,
            env,
            host,
            acks,
            backend,
            repo,
        } => {
            let r = resolve_config(&cli)?;
            let ctx = env_ctx(&r, env, &id.who)?;
            let opts = DeployOptions {
                guard: guard_options(backend, acks),
                repo: repo.clone(),
                ..Default::default()
            };
            let report = applier::diff::diff(&ctx, target, &opts, host.as_deref())
                .map_err(Failure::deploy)?;
            crate::diff::print(&report, render);
            Ok(Exit::Ok)
        }
        Cmd::Status { env } => {
            let r = resolve_config(&cli)?;
            let ctx = env_ctx(&r, env, &id.who)?;
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
            let ctx = env_ctx(&r, env, &id.who)?;
            crate::unlock::run(&ctx, reason, render)
        }
    }
}

/// Runs `f` with the env's notification sinks beside the renderer, then ends it like any run.
fn notified(
    ctx: &EnvContext,
    render: Render,
    opts: &DeployOptions,
    f: impl FnOnce(&dyn EventSink) -> Result<Outcome, DeployError>,
) -> Result<Exit, Failure> {
    let sink = Sink::new(render);
    let res = with_notifier(ctx, &sink, opts, f);
    finish(&sink, ctx, res)
}

/// Runs `f` with `sink` wrapped by the env's notifier, then waits (at most `NOTIFY_WAIT`)
/// for the notifications still being delivered, warning about any that failed.
pub fn with_notifier<T>(
    ctx: &EnvContext,
    sink: &Sink,
    opts: &DeployOptions,
    f: impl FnOnce(&dyn EventSink) -> T,
) -> T {
    let n = Notifier::new(
        sink,
        &ctx.cfg.notify,
        NoticeBase {
            env: ctx.name.clone(),
            who: ctx.who.clone(),
            message: opts.reason.clone(),
        },
    );
    let res = f(&n);
    for d in n.finish(NOTIFY_WAIT).into_iter().filter(|d| !d.ok) {
        sink.warn(&format!(
            "notification {:?} to {} failed after {} attempt(s): {}",
            d.event, d.sink, d.attempts, d.detail
        ));
    }
    res
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
        Err(e) => Err(error_event(sink, Failure::deploy(e))),
    }
}

/// In JSON mode, the failure as an `error` event too.
pub fn error_event(sink: &Sink, f: Failure) -> Failure {
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
    f
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
