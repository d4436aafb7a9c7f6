//! The `applier` command line: resolves configuration, calls the library, renders events.
//!
//! Exit codes: 0 success; 1 failed but every touched host was rolled back; 2 failed and hosts
//! need a human; 3 refused before touching anything (lock held, preflight, verify, guard,
//! fetch); 64 usage or configuration error.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::Context;
use applier::config::{Layers, Resolved};
use applier::deploy::{self, DeployError, DeployOptions, EnvContext, Outcome};
use applier::events::{Event, EventSink};
use artifact::store::StoreOptions;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "applier",
    version,
    about = "Rolling, checked, reversible deploys of built artifacts"
)]
struct Cli {
    /// Config file(s) (YAML); default ./deploy.yaml if present.
    #[arg(long, global = true, env = "APPLIER_CONFIG")]
    config: Vec<PathBuf>,
    /// Store location (directory or s3://bucket/prefix); overrides config and APPLIER_STORE.
    #[arg(long, global = true)]
    store: Option<String>,
    /// Override a config value: --set envs.staging.group_size=2 (repeatable).
    #[arg(long = "set", global = true, value_name = "PATH=VALUE")]
    sets: Vec<String>,
    /// Output: auto (live view on a terminal, else plain), plain, json (JSON lines on stdout).
    #[arg(long, global = true, value_enum, default_value_t = Format::Auto)]
    format: Format,
    /// Print the resolved configuration and where each value came from, then exit.
    #[arg(long, global = true)]
    show_config: bool,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Auto,
    Plain,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Deploy an artifact (manifest digest, git commit, or a unique prefix of either).
    Deploy {
        target: String,
        #[arg(long)]
        env: String,
        #[command(flatten)]
        flags: DeployFlags,
    },
    /// Deploy to `--to` the artifact that `--from` runs (every host of `--from` on the same
    /// release, put there by a succeeded deploy).
    Promote {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[command(flatten)]
        flags: DeployFlags,
    },
    /// Roll every host back to the release it ran before the last successful deploy.
    Rollback {
        #[arg(long)]
        env: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long)]
        dry_run: bool,
        /// Roll back even where the storage guard says the old code would not start
        /// (e.g. Cassandra with identical content). Use only when you know the storage allows it.
        #[arg(long)]
        force_schema_rollback: bool,
        /// Table backend whose schema rules apply.
        #[arg(long, value_enum, default_value = "cassandra")]
        backend: BackendArg,
    },
    /// Continue a deploy whose applier died, or roll it back.
    Resume {
        deploy_id: String,
        /// The environment (searched in every configured one if omitted).
        #[arg(long)]
        env: Option<String>,
        #[arg(long)]
        rollback: bool,
        /// Break the lease still held by that deploy (only if its applier is surely gone).
        #[arg(long)]
        force: bool,
    },
    /// Every host's release and drift between the records and the hosts.
    Status {
        #[arg(long)]
        env: String,
    },
    /// Past deploys of an environment.
    History {
        #[arg(long)]
        env: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// The target side: host-protocol requests as JSON lines on stdin (a hello first), one
    /// JSON answer line each on stdout. Alone with no input, `applier host --root R stop`
    /// (or any request that needs no fields) runs that request.
    Host {
        /// The host's root directory.
        #[arg(long)]
        root: PathBuf,
        /// The request's op: names it in process listings; every request must be of it.
        op: Option<String>,
    },
}

/// The flags `deploy` and `promote` share.
#[derive(clap::Args)]
struct DeployFlags {
    #[arg(long, default_value = "")]
    reason: String,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Acknowledge one non-rollbackable storage change, exactly as schema-guard names it:
    /// `SG002 <table> <from>-><to> <reason>`. Repeatable.
    #[arg(long = "ack", value_name = "ACK")]
    acks: Vec<String>,
    /// Table backend whose schema rules apply.
    #[arg(long, value_enum, default_value = "cassandra")]
    backend: BackendArg,
    /// Emergency override: deploy even though the artifact has not passed the environments the
    /// target's `promotion.requires` names (recorded in the journal). One run only.
    #[arg(long)]
    skip_promotion_check: bool,
}

impl DeployFlags {
    fn options(&self) -> DeployOptions {
        DeployOptions {
            reason: self.reason.clone(),
            dry_run: self.dry_run,
            guard: applier::guard::GuardOptions {
                backend: (&self.backend).into(),
                acks: self.acks.clone(),
            },
            force_schema_rollback: false,
            skip_promotion_check: self.skip_promotion_check,
        }
    }
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("APPLIER_LOG")
        .unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 64 } else { 0 });
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(Failure(code, e)) => {
            eprintln!("applier: {e:#}");
            ExitCode::from(code as u8)
        }
    }
}

struct Failure(i32, anyhow::Error);

fn usage(e: impl Into<anyhow::Error>) -> Failure {
    Failure(64, e.into())
}

fn resolve_config(cli: &Cli) -> Result<Resolved, Failure> {
    let mut files = cli.config.clone();
    if files.is_empty()
        && let Some(f) = std::env::current_dir()
            .ok()
            .and_then(|d| applier::config::default_file(&d))
    {
        files.push(f);
    }
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("APPLIER_"))
        .collect();
    Layers {
        files,
        env,
        store_flag: cli.store.clone(),
        sets: cli.sets.clone(),
    }
    .resolve()
    .map_err(usage)
}

fn who() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}")
}

fn open_store(r: &Resolved) -> Result<std::sync::Arc<dyn artifact::Store>, Failure> {
    let so = &r.config.store_options;
    let opts = StoreOptions {
        s3_endpoint: so.s3_endpoint.clone(),
        s3_region: so.s3_region.clone(),
        s3_force_path_style: so.s3_force_path_style,
        ..Default::default()
    };
    artifact::store::open(&r.config.store, &opts)
        .map_err(|e| Failure(3, anyhow::Error::new(e).context("opening the store")))
}

fn env_ctx(r: &Resolved, env: &str) -> Result<EnvContext, Failure> {
    let cfg = r.env(env).map_err(usage)?;
    let store = open_store(r)?;
    Ok(EnvContext::new(
        env,
        cfg,
        store,
        r.config.lease_ttl.0,
        &who(),
    ))
}

fn run(cli: Cli) -> Result<i32, Failure> {
    if cli.show_config {
        let r = resolve_config(&cli)?;
        print!("{}", r.show());
        return Ok(0);
    }
    let Some(cmd) = &cli.cmd else {
        return Err(usage(anyhow::anyhow!("no command given (try --help)")));
    };
    let format = match cli.format {
        Format::Auto if std::io::stderr().is_terminal() => Render::Live,
        Format::Auto | Format::Plain => Render::Plain,
        Format::Json => Render::Json,
    };
    match cmd {
        Cmd::Host { root, op } => host_cmd(root, op.as_deref()),
        Cmd::Deploy { target, env, flags } => {
            let r = resolve_config(&cli)?;
            let ctx = env_ctx(&r, env)?;
            let sink = Sink::new(format);
            let res = deploy::deploy(&ctx, &sink, target, &flags.options());
            finish(&sink, res)
        }
        Cmd::Promote { from, to, flags } => {
            let r = resolve_config(&cli)?;
            let ctx = env_ctx(&r, to)?;
            let expected: Option<Vec<String>> = r
                .config
                .envs
                .get(from)
                .map(|e| e.hosts.keys().cloned().collect());
            let src = applier::promotion::source_release(
                ctx.store.as_ref(),
                from,
                expected.as_deref(),
            )
            .map_err(|e| {
                let e = DeployError::from(e);
                if format == Render::Json {
                    println!(
                        "{}",
                        serde_json::json!({"event": "error", "exit_code": e.exit_code(), "message": e.to_string()})
                    );
                }
                Failure(e.exit_code(), e.into())
            })?;
            if format == Render::Json {
                println!(
                    "{}",
                    serde_json::json!({
                        "event": "promote",
                        "from": from,
                        "to": to,
                        "commit": src.release.commit,
                        "artifact": src.release.manifest.to_string(),
                        "from_deploy": src.deploy_id,
                        "from_hosts": src.hosts,
                        "dry_run": flags.dry_run,
                        "ts": applier::hostops::now_rfc3339(),
                    })
                );
            } else {
                println!(
                    "promote {} ({}) from {from} (deploy {}) to {to}",
                    short(&src.release.commit),
                    src.release.manifest,
                    src.deploy_id
                );
            }
            let sink = Sink::new(format);
            let res = deploy::deploy(
                &ctx,
                &sink,
                &src.release.manifest.to_string(),
                &flags.options(),
            );
            finish(&sink, res)
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
            let sink = Sink::new(format);
            let res = deploy::rollback(
                &ctx,
                &sink,
                &DeployOptions {
                    reason: reason.clone(),
                    dry_run: *dry_run,
                    guard: applier::guard::GuardOptions {
                        backend: backend.into(),
                        acks: vec![],
                    },
                    force_schema_rollback: *force_schema_rollback,
                    skip_promotion_check: false,
                },
            );
            finish(&sink, res)
        }
        Cmd::Resume {
            deploy_id,
            env,
            rollback,
            force,
        } => {
            let r = resolve_config(&cli)?;
            let env = match env {
                Some(e) => e.clone(),
                None => {
                    let store = open_store(&r)?;
                    let envs: Vec<String> = r.config.envs.keys().cloned().collect();
                    applier::records::find_journal(store.as_ref(), &envs, deploy_id)
                        .map_err(|e| Failure(3, e.into()))?
                        .ok_or_else(|| {
                            usage(anyhow::anyhow!(
                                "no deploy {deploy_id} in any configured environment"
                            ))
                        })?
                }
            };
            let ctx = env_ctx(&r, &env)?;
            let sink = Sink::new(format);
            let res = deploy::resume(&ctx, &sink, deploy_id, *rollback, *force);
            finish(&sink, res)
        }
        Cmd::Status { env } => {
            let r = resolve_config(&cli)?;
            let ctx = env_ctx(&r, env)?;
            let hosts = deploy::status(&ctx).map_err(|e| Failure(e.exit_code(), e.into()))?;
            let drift = hosts
                .iter()
                .any(|h| !h.drift.is_empty() || h.error.is_some());
            if format == Render::Json {
                println!("{}", serde_json::to_string(&hosts).expect("serialises"));
            } else {
                println!(
                    "{:<16} {:<12} {:<12} {:<12} {:<8} drift",
                    "host", "current", "recorded", "last-good", "pid"
                );
                for h in &hosts {
                    let s = |o: &Option<String>| {
                        o.as_deref()
                            .map(|x| x[..x.len().min(12)].to_string())
                            .unwrap_or_else(|| "-".into())
                    };
                    let d = if let Some(e) = &h.error {
                        format!("error: {e}")
                    } else if h.drift.is_empty() {
                        "-".into()
                    } else {
                        h.drift.join("; ")
                    };
                    println!(
                        "{:<16} {:<12} {:<12} {:<12} {:<8} {d}",
                        h.host,
                        s(&h.current),
                        s(&h.recorded_current),
                        s(&h.last_good),
                        h.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into())
                    );
                }
            }
            Ok(if drift { 1 } else { 0 })
        }
        Cmd::History { env, limit } => {
            let r = resolve_config(&cli)?;
            let store = open_store(&r)?;
            let all =
                applier::records::history(store.as_ref(), env).map_err(|e| Failure(3, e.into()))?;
            let skip = all.len().saturating_sub(*limit);
            let shown = &all[skip..];
            if format == Render::Json {
                for j in shown {
                    println!("{}", serde_json::to_string(j).expect("serialises"));
                }
            } else {
                for j in shown {
                    println!(
                        "{}  {:<8} {:<11} {:<12} {}  by {}{}",
                        j.id,
                        format!("{:?}", j.kind).to_lowercase(),
                        format!("{:?}", j.status).to_lowercase(),
                        j.commit
                            .as_deref()
                            .map(|c| &c[..c.len().min(12)])
                            .unwrap_or("-"),
                        j.started_at,
                        j.who,
                        j.abort_reason
                            .as_deref()
                            .map(|r| format!("  aborted: {r}"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(0)
        }
    }
}

fn finish(sink: &Sink, res: Result<Outcome, DeployError>) -> Result<i32, Failure> {
    sink.done();
    match res {
        Ok(o) => {
            if sink.render != Render::Json {
                println!(
                    "{} {}: {}",
                    o.deploy_id,
                    format!("{:?}", o.status).to_lowercase(),
                    o.message
                );
            }
            Ok(o.exit_code())
        }
        Err(e) => {
            if sink.render == Render::Json {
                println!(
                    "{}",
                    serde_json::json!({"event": "error", "exit_code": e.exit_code(), "message": e.to_string()})
                );
            }
            Err(Failure(e.exit_code(), e.into()))
        }
    }
}

/// `applier host`: one host-protocol session on stdin/stdout (see `applier::target::serve`).
/// Exit 0 when every request succeeded, 1 when one failed, 64 when the session was refused
/// (not a request, no hello, another protocol version).
fn host_cmd(root: &std::path::Path, op: Option<&str>) -> Result<i32, Failure> {
    let target = applier::target::HostRoot::new(root);
    let stdin = std::io::stdin();
    let input: Box<dyn std::io::BufRead> = if stdin.is_terminal() {
        Box::new(std::io::empty())
    } else {
        Box::new(stdin.lock())
    };
    let sum = applier::target::serve(&target, input, std::io::stdout().lock(), op)
        .context("host protocol session on stdin/stdout")
        .map_err(|e| Failure(1, e))?;
    Ok(if sum.refused {
        64
    } else if sum.failed > 0 {
        1
    } else {
        0
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Render {
    Live,
    Plain,
    Json,
}

/// Renders events: a live view (indicatif) on a terminal, plain lines on stderr, or JSON
/// lines on stdout.
struct Sink {
    render: Render,
    live: Option<Live>,
    out: Mutex<()>,
}

struct Live {
    multi: indicatif::MultiProgress,
    bars: Mutex<std::collections::BTreeMap<String, indicatif::ProgressBar>>,
}

impl Sink {
    fn new(render: Render) -> Self {
        let live = (render == Render::Live).then(|| Live {
            multi: indicatif::MultiProgress::new(),
            bars: Mutex::new(Default::default()),
        });
        Sink {
            render,
            live,
            out: Mutex::new(()),
        }
    }

    fn done(&self) {
        if let Some(l) = &self.live {
            for b in l.bars.lock().unwrap().values() {
                b.finish();
            }
        }
    }

    fn bar(&self, host: &str) -> Option<indicatif::ProgressBar> {
        let l = self.live.as_ref()?;
        let mut bars = l.bars.lock().unwrap();
        Some(
            bars.entry(host.to_string())
                .or_insert_with(|| {
                    let b = l.multi.add(indicatif::ProgressBar::new_spinner());
                    b.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{spinner} {prefix:<14} {wide_msg}",
                        )
                        .expect("template"),
                    );
                    b.set_prefix(host.to_string());
                    b.enable_steady_tick(std::time::Duration::from_millis(120));
                    b
                })
                .clone(),
        )
    }

    fn line(&self, s: String) {
        match &self.live {
            Some(l) => {
                let _ = l.multi.println(s);
            }
            None => {
                let _g = self.out.lock().unwrap();
                eprintln!("{s}");
            }
        }
    }
}

fn short(s: &str) -> &str {
    &s[..s.len().min(12)]
}

impl EventSink for Sink {
    fn emit(&self, e: &Event) {
        if self.render == Render::Json {
            let mut v = serde_json::to_value(e).expect("event serialises");
            v["ts"] = applier::hostops::now_rfc3339().into();
            let _g = self.out.lock().unwrap();
            let mut so = std::io::stdout().lock();
            let _ = writeln!(so, "{v}");
            let _ = so.flush();
            return;
        }
        let ok = |b: bool| if b { "ok" } else { "FAILED" };
        match e {
            Event::Plan {
                deploy_id,
                env,
                kind,
                commit,
                groups,
                dry_run,
                deploy_type,
                ..
            } => {
                self.line(format!(
                    "{}{kind} {deploy_id} to {env}{} ({})",
                    if *dry_run { "plan: " } else { "" },
                    commit
                        .as_deref()
                        .map(|c| format!(": {}", short(c)))
                        .unwrap_or_default(),
                    deploy_type.as_deref().unwrap_or("code")
                ));
                for g in groups {
                    self.line(format!("  group {}", g.name));
                    for h in &g.hosts {
                        self.line(format!(
                            "    {:<14} {} -> {}  checks: {}",
                            h.host,
                            h.from.as_deref().map(short).unwrap_or("-"),
                            short(&h.to),
                            if h.checks.is_empty() {
                                "-".into()
                            } else {
                                h.checks.join(", ")
                            }
                        ));
                    }
                }
            }
            Event::Preflight {
                host,
                ok: o,
                detail,
            } => self.line(format!("[{host}] preflight {}: {detail}", ok(*o))),
            Event::Fetch {
                host,
                ok: o,
                detail,
            } => self.line(format!("[{host}] fetch {}: {detail}", ok(*o))),
            Event::Group { group, hosts } => {
                self.line(format!("== group {group}: {}", hosts.join(", ")))
            }
            Event::Step {
                host,
                step,
                ok: o,
                detail,
            } => {
                let msg = format!(
                    "{step} {}{}",
                    ok(*o),
                    detail
                        .as_deref()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default()
                );
                match self.bar(host) {
                    Some(b) => b.set_message(msg),
                    None => self.line(format!("[{host}] {msg}")),
                }
            }
            Event::Check { host, result } => {
                let msg = format!(
                    "check {} {:?}: {}",
                    result.name, result.outcome, result.detail
                )
                .to_string();
                match self.bar(host) {
                    Some(b) => b.set_message(msg),
                    None => self.line(format!("[{host}] {msg}")),
                }
            }
            Event::HostDone {
                host,
                release,
                ok: o,
                detail,
            } => {
                let msg = format!(
                    "{} {}{}",
                    short(release),
                    ok(*o),
                    detail
                        .as_deref()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default()
                );
                match self.bar(host) {
                    Some(b) => b.finish_with_message(msg),
                    None => self.line(format!("[{host}] done {msg}")),
                }
            }
            Event::Bake { group, seconds } => self.line(format!("baking {group} for {seconds}s")),
            Event::Abort { reason } => self.line(format!("ABORT: {reason}")),
            Event::Rollback {
                host,
                to,
                ok: o,
                detail,
            } => self.line(format!(
                "[{host}] rollback to {} {}{}",
                to.as_deref().map(short).unwrap_or("nothing"),
                ok(*o),
                detail
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            )),
            Event::Finished { .. } => {}
        }
    }
}

/// `--backend` values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum BackendArg {
    Cassandra,
    Sqlite,
}

impl From<&BackendArg> for schema_guard::Backend {
    fn from(b: &BackendArg) -> Self {
        match b {
            BackendArg::Cassandra => schema_guard::Backend::Cassandra,
            BackendArg::Sqlite => schema_guard::Backend::Sqlite,
        }
    }
}
