//! The `builder` command line: parse arguments, resolve configuration, call the library,
//! render the result (data on stdout, progress and summaries on stderr). Failures become the
//! exit codes documented in docs/builder.md in one place, `cli::exit`.

mod cli;

use std::collections::HashMap;
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use artifact::sign::{self, PublicKey, SecretKey};
use artifact::store::Store;
use builder::Error;
use builder::build::{self, BuildOptions};
use builder::config::{self, StoreConfig, StoreFlags};
use builder::inspect;
use builder::progress::{Progress, Step};
use clap::{Parser, Subcommand, ValueEnum};
use cli::{exit, keys, outln, print_json, render};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "builder",
    version,
    about = "Build git commits into reproducible, content-addressed artifacts"
)]
struct Cli {
    /// Store location: a directory or s3://bucket[/prefix] [env: BUILDER_STORE, DEPLOY_STORE] [default: ./.artifacts]
    #[arg(long, global = true, value_name = "URL-or-PATH")]
    store: Option<String>,
    /// S3 endpoint for S3-compatible servers [env: AWS_ENDPOINT_URL]
    #[arg(long, global = true, value_name = "URL")]
    s3_endpoint: Option<String>,
    /// S3 region [env: AWS_REGION]
    #[arg(long, global = true)]
    s3_region: Option<String>,
    /// Path-style S3 addressing (most S3-compatible servers need it) [env: AWS_S3_FORCE_PATH_STYLE]
    #[arg(long, global = true)]
    s3_force_path_style: bool,
    /// Output format of the data written to stdout.
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Print the resolved configuration and where each value came from, then exit.
    #[arg(long, global = true)]
    show_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Build a commit into the store and print its artifact id.
    Build(BuildArgs),
    /// Show an artifact's manifest (by digest, unique digest prefix, or git commit/prefix).
    Show { hash: String },
    /// List built commits and their artifacts.
    Ls,
    /// Re-read every blob of an artifact and check its digests; with --trusted-key, also
    /// require a valid signature by one of those keys; with --repair, rebuild its commit and
    /// replace the blobs that are missing or do not match their digest.
    Verify {
        hash: String,
        /// A trusted public key file, or an inline `ed25519-public <base64>` (repeatable).
        #[arg(long = "trusted-key", value_name = "FILE")]
        trusted_keys: Vec<String>,
        /// Rebuild the artifact's commit from --repo and replace its bad or missing blobs.
        #[arg(long)]
        repair: bool,
        /// The git repository holding the artifact's commit (for --repair).
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        #[command(flatten)]
        tools: ToolArgs,
    },
    /// Generate an ed25519 signing key: PREFIX.key (secret, mode 0600) and PREFIX.pub.
    Keygen {
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
    /// Sign an existing artifact (idempotent: signing again with the same key changes nothing).
    Sign {
        hash: String,
        /// The secret key file.
        #[arg(long, env = "BUILDER_SIGN_KEY", value_name = "FILE")]
        sign_key: PathBuf,
    },
    /// Pack a directory as a layer and print its digests (for benchmarks).
    #[command(hide = true)]
    PackDir {
        dir: PathBuf,
        out: PathBuf,
        #[arg(long, default_value = "")]
        prefix: String,
        #[arg(long)]
        threads: Option<usize>,
        /// Layer compression: zstd or gzip.
        #[arg(long, default_value_t = artifact::pack::LayerCompression::default())]
        compression: artifact::pack::LayerCompression,
        /// Compression level [default: 3 for zstd, 6 for gzip]
        #[arg(long)]
        level: Option<u32>,
    },
}

#[derive(clap::Args)]
struct BuildArgs {
    /// The git repository.
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// The revision to build.
    #[arg(long, default_value = "HEAD")]
    rev: String,
    /// An npm argument (repeatable); replaces `build.npm_args` of deploy/service.yaml.
    #[arg(long = "npm-arg", value_name = "ARG", allow_hyphen_values = true)]
    npm_args: Vec<String>,
    /// Build this subdirectory of the commit's tree (a service inside a larger repository).
    #[arg(long, value_name = "SUBDIR")]
    service_dir: Option<String>,
    /// Build even if the commit was built already and run npm even if its dependency layer is
    /// recorded; fail (exit 5) if the result differs; replace stored blobs that do not match
    /// their digest.
    #[arg(long)]
    rebuild: bool,
    /// Sign the artifact with this secret key file (also when the commit was already built).
    #[arg(long, env = "BUILDER_SIGN_KEY", value_name = "FILE")]
    sign_key: Option<PathBuf>,
    /// Record every local branch and tag of the repository whose tip is the commit
    /// (`refs/branches/<name>`, `refs/tags/<name>` in the store), for `applier deploy <tag>`.
    #[arg(long)]
    record_refs: bool,
    /// Record that this branch is at the commit (repeatable; for detached CI checkouts).
    #[arg(long = "branch", value_name = "NAME")]
    branches: Vec<String>,
    /// Record that this tag names the commit (repeatable; refused if it names another).
    #[arg(long = "tag", value_name = "NAME")]
    tags: Vec<String>,
    #[command(flatten)]
    tools: ToolArgs,
}

/// How npm runs, for `build` and `verify --repair`.
#[derive(clap::Args)]
struct ToolArgs {
    /// npm cache directory to share between builds [default: a fresh one per build]
    #[arg(long, value_name = "DIR")]
    npm_cache: Option<PathBuf>,
    /// The node program.
    #[arg(long, default_value = "node")]
    node: PathBuf,
    /// The npm program.
    #[arg(long, default_value = "npm")]
    npm: PathBuf,
    /// Directory for temporary files and npm's build directory; native modules record its
    /// path, so builders that must agree use the same one.
    #[arg(long, value_name = "DIR", default_value = build::DEFAULT_WORK_DIR)]
    work_dir: PathBuf,
    /// Layer compression: zstd (layer format 2, the default) or gzip (format 1, readable by
    /// appliers that predate zstd). Part of the dependency key.
    #[arg(long, env = "BUILDER_COMPRESSION", default_value_t = artifact::pack::LayerCompression::default())]
    compression: artifact::pack::LayerCompression,
}

impl ToolArgs {
    fn options(&self, repo: &Path, rev: &str) -> anyhow::Result<BuildOptions> {
        let mut opts = BuildOptions::new(repo, rev);
        opts.node = self.node.clone();
        opts.npm = self.npm.clone();
        opts.compression = self.compression;
        opts.work_dir = std::path::absolute(&self.work_dir)?;
        if let Some(c) = &self.npm_cache {
            std::fs::create_dir_all(c)
                .with_context(|| format!("creating npm cache {}", c.display()))?;
            opts.npm_cache = Some(std::path::absolute(c)?);
        }
        Ok(opts)
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return exit::clap(e),
    };
    let terminal = std::io::stderr().is_terminal();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(terminal)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,aws_config=error")),
        )
        .init();
    run(cli, terminal).unwrap_or_else(exit::fail)
}

fn usage(msg: String) -> anyhow::Error {
    Error::Config(msg).into()
}

fn store_config(cli: &Cli) -> anyhow::Result<StoreConfig> {
    let flags = StoreFlags {
        store: cli.store.clone(),
        s3_endpoint: cli.s3_endpoint.clone(),
        s3_region: cli.s3_region.clone(),
        s3_force_path_style: cli.s3_force_path_style.then_some(true),
    };
    let env = |k: &str| std::env::var(k).ok();
    Ok(config::resolve_store(&flags, &env)?)
}

fn run(cli: Cli, terminal: bool) -> anyhow::Result<ExitCode> {
    let cfg = store_config(&cli)?;
    let json = cli.format == Format::Json;
    if cli.show_config {
        print_config(&cfg, json)?;
        return Ok(ExitCode::SUCCESS);
    }
    let Some(command) = &cli.command else {
        return Err(usage(
            "no command given (build, show, ls, verify, sign, keygen); see --help".into(),
        ));
    };
    match command {
        Command::PackDir {
            dir,
            out,
            prefix,
            threads,
            compression,
            level,
        } => return pack_dir(dir, out, prefix, *threads, *compression, *level),
        Command::Keygen { out } => return keys::cmd_keygen(out, json),
        _ => {}
    }
    let store = cfg.open()?;
    let progress: Box<dyn Progress> = if terminal {
        Box::new(BarProgress::new())
    } else {
        Box::new(LogProgress)
    };
    match command {
        Command::Build(args) => cmd_build(&*store, args, json, &*progress),
        Command::Show { hash } => {
            let (id, m) = inspect::show(&*store, hash)?;
            if json {
                print_json(&serde_json::json!({ "id": id, "manifest": m }))?;
            } else {
                render::manifest(&id, &m)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ls => {
            let entries = inspect::list(&*store)?;
            if json {
                print_json(&entries)?;
            } else {
                render::list(&entries)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            hash,
            trusted_keys,
            repair,
            repo,
            tools,
        } => {
            let repair = repair.then(|| tools.options(repo, "HEAD")).transpose()?;
            cmd_verify(&*store, hash, trusted_keys, repair, json, &*progress)
        }
        Command::Sign { hash, sign_key } => keys::cmd_sign(&*store, hash, sign_key, json),
        Command::PackDir { .. } | Command::Keygen { .. } => unreachable!("handled above"),
    }
}

fn print_config(cfg: &StoreConfig, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(cfg);
    }
    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unset)".into());
    outln!(
        "store                {:<40} ({})",
        cfg.location.value,
        cfg.location.origin
    );
    outln!(
        "s3-endpoint          {:<40} ({})",
        show(&cfg.s3_endpoint.value),
        cfg.s3_endpoint.origin
    );
    outln!(
        "s3-region            {:<40} ({})",
        show(&cfg.s3_region.value),
        cfg.s3_region.origin
    );
    outln!(
        "s3-force-path-style  {:<40} ({})",
        cfg.s3_force_path_style.value,
        cfg.s3_force_path_style.origin
    );
    Ok(())
}

fn cmd_build(
    store: &dyn Store,
    args: &BuildArgs,
    json: bool,
    progress: &dyn Progress,
) -> anyhow::Result<ExitCode> {
    let mut opts = args.tools.options(&args.repo, &args.rev)?;
    opts.service_dir = args.service_dir.clone();
    opts.npm_args = (!args.npm_args.is_empty()).then(|| args.npm_args.clone());
    opts.rebuild = args.rebuild;
    // Read the key before building, so a bad key fails fast.
    let sign_key = args
        .sign_key
        .as_deref()
        .map(SecretKey::load)
        .transpose()
        .map_err(Error::from)?;
    let started = Instant::now();
    let report = build::build(store, &opts, progress)?;
    render::build_summary(&report, started.elapsed());
    let refs = record_refs(store, args, &report)?;
    let signature = sign_key
        .map(|key| keys::sign_and_report(store, &report.id, &key))
        .transpose()?;
    if json {
        let mut v = serde_json::to_value(&report)?;
        v["signature"] = serde_json::to_value(&signature)?;
        v["refs"] = serde_json::to_value(&refs)?;
        print_json(&v)?;
    } else {
        outln!("{}", report.id);
    }
    Ok(ExitCode::SUCCESS)
}

/// Records the refs `--record-refs`, `--branch` and `--tag` ask for; prints each on stderr.
fn record_refs(
    store: &dyn Store,
    args: &BuildArgs,
    report: &builder::build::BuildReport,
) -> anyhow::Result<Vec<builder::refs::RefReport>> {
    let parse = |names: &[String]| -> anyhow::Result<Vec<model::names::RefName>> {
        names
            .iter()
            .map(|n| model::names::RefName::parse(n).map_err(|e| usage(e.to_string())))
            .collect()
    };
    let opts = builder::refs::RefOptions {
        scan: args.record_refs,
        branches: parse(&args.branches)?,
        tags: parse(&args.tags)?,
    };
    if opts.is_empty() {
        return Ok(vec![]);
    }
    let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let refs = builder::refs::record(store, &args.repo, &report.commit, &report.id, &opts, &at)?;
    for r in &refs {
        eprintln!("  ref {} {}: {}", r.kind.as_str(), r.name, r.outcome);
    }
    Ok(refs)
}

fn cmd_verify(
    store: &dyn Store,
    hash: &str,
    trusted_keys: &[String],
    repair: Option<BuildOptions>,
    json: bool,
    progress: &dyn Progress,
) -> anyhow::Result<ExitCode> {
    let trusted = trusted_keys
        .iter()
        .map(|k| PublicKey::from_spec(k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::from)?;
    let id = inspect::resolve(store, hash)?;
    let (report, repaired) = match &repair {
        None => (inspect::verify(store, &id)?, None),
        Some(template) => {
            let r = inspect::repair(store, &id, template, progress)?;
            for c in r.before.bad() {
                eprintln!(
                    "found bad blob {} ({}): {}",
                    c.key,
                    c.what,
                    c.problem.as_deref().unwrap_or("")
                );
            }
            let repaired = r.rebuild.as_ref().map(|b| b.repaired.clone());
            (r.after, repaired)
        }
    };
    // Ok(key id) of a valid trusted signature, Err(why none counts); None: not asked.
    let signature = if trusted.is_empty() {
        None
    } else {
        match sign::require_signature(store, &id, &trusted) {
            Ok(key_id) => Some(Ok(key_id)),
            Err(e @ sign::SignError::NoValidSignature { .. }) => Some(Err(e.to_string())),
            Err(e) => return Err(Error::from(e).into()),
        }
    };
    let sig_ok = signature.as_ref().is_none_or(|s| s.is_ok());
    if json {
        let sig_json = signature.as_ref().map(|s| match s {
            Ok(key_id) => serde_json::json!({ "ok": true, "key_id": key_id }),
            Err(problem) => serde_json::json!({ "ok": false, "problem": problem }),
        });
        print_json(&serde_json::json!({
            "id": report.id,
            "ok": report.ok() && sig_ok,
            "checks": report.checks,
            "signature": sig_json,
            "repaired": repaired,
        }))?;
    } else {
        render::checks(&report)?;
        match &signature {
            Some(Ok(key_id)) => outln!("ok   {:<13} signed by trusted key {key_id}", "signature"),
            Some(Err(p)) => outln!("BAD  {:<13} {p}", "signature"),
            None => {}
        }
    }
    for k in repaired.iter().flatten() {
        eprintln!("repaired {k}");
    }
    if let Some(Err(p)) = &signature {
        eprintln!("error: {p}");
    }
    if report.ok() && sig_ok {
        match &signature {
            Some(Ok(key_id)) => {
                eprintln!("{id}: every blob verified; signed by trusted key {key_id}")
            }
            _ => eprintln!("{id}: every blob verified"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    for c in report.bad() {
        eprintln!(
            "error: bad blob {} ({}): {}",
            c.key,
            c.what,
            c.problem.as_deref().unwrap_or("")
        );
    }
    if !report.ok() && repair.is_none() {
        eprintln!(
            "hint: `builder verify --repair {hash} --repo <repository>` rebuilds the commit and replaces the bad blobs"
        );
    }
    Ok(ExitCode::from(exit::INTEGRITY))
}

fn pack_dir(
    dir: &Path,
    out: &Path,
    prefix: &str,
    threads: Option<usize>,
    compression: artifact::pack::LayerCompression,
    level: Option<u32>,
) -> anyhow::Result<ExitCode> {
    let mut opts = artifact::pack::PackOptions::with_compression(compression);
    opts.mtime = 0;
    if let Some(l) = level {
        opts.level = l;
    }
    if let Some(t) = threads {
        opts.threads = t.max(1);
    }
    let started = Instant::now();
    let mut info = None;
    cli::write_file(out, 0o644, false, |f| {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        let i = artifact::pack::pack_dir(dir, prefix, &opts, &mut w)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        w.flush()?;
        info = Some(i);
        Ok(())
    })
    .with_context(|| format!("packing {} into {}", dir.display(), out.display()))?;
    print_json(&serde_json::json!({
        "layer": info,
        "media_type": compression.media_type(),
        "threads": opts.threads,
        "seconds": started.elapsed().as_secs_f64(),
    }))?;
    Ok(ExitCode::SUCCESS)
}

/// Progress as log lines, for logs and CI.
struct LogProgress;
impl Progress for LogProgress {
    fn begin(&self, step: Step, _total: Option<u64>) {
        tracing::info!("{}: started", step.label());
    }
    fn end(&self, step: Step, summary: &str) {
        tracing::info!("{}: {summary}", step.label());
    }
    fn warn(&self, message: &str) {
        tracing::warn!("{message}");
    }
}

/// Progress as bars on a terminal.
struct BarProgress {
    multi: MultiProgress,
    bars: Mutex<HashMap<Step, ProgressBar>>,
}

impl BarProgress {
    fn new() -> Self {
        BarProgress {
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
        }
    }
}

impl Progress for BarProgress {
    fn begin(&self, step: Step, total: Option<u64>) {
        let bar = match total {
            Some(t) => ProgressBar::new(t).with_style(
                ProgressStyle::with_template(
                    "{prefix:>18} [{bar:30}] {bytes}/{total_bytes} {elapsed}",
                )
                .expect("template")
                .progress_chars("=> "),
            ),
            None => {
                let template = match step {
                    Step::PackSource | Step::PackDeps => "{prefix:>18} {spinner} {bytes} {elapsed}",
                    _ => "{prefix:>18} {spinner} {elapsed}",
                };
                ProgressBar::new_spinner()
                    .with_style(ProgressStyle::with_template(template).expect("template"))
            }
        };
        let bar = self.multi.add(bar.with_prefix(step.label()));
        bar.enable_steady_tick(Duration::from_millis(120));
        if let Some(old) = self.bars.lock().expect("bars").insert(step, bar) {
            old.finish_and_clear();
        }
    }
    fn advance(&self, step: Step, n: u64) {
        if let Some(b) = self.bars.lock().expect("bars").get(&step) {
            b.inc(n);
        }
    }
    fn end(&self, step: Step, summary: &str) {
        if let Some(b) = self.bars.lock().expect("bars").remove(&step) {
            b.finish_and_clear();
        }
        let _ = self
            .multi
            .println(format!("{:>18} {summary}", step.label()));
    }
    fn warn(&self, message: &str) {
        let _ = self.multi.println(format!("warning: {message}"));
    }
}
