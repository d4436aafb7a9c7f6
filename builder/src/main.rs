//! The `builder` command line: parse arguments, resolve configuration, call the library,
//! render the result (data on stdout, progress and summaries on stderr), map failures to the
//! exit codes documented in docs/builder.md.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use artifact::Digest;
use artifact::sign::{self, PublicKey, SecretKey};
use artifact::store::{PutOutcome, Store};
use builder::build::{self, BuildOptions, BuildReport, Outcome, human_bytes};
use builder::config::{self, StoreConfig, StoreFlags};
use builder::inspect;
use builder::progress::{Progress, Step};
use builder::{Error, ErrorKind};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

const EXIT_BUILD: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_STORE: u8 = 3;
const EXIT_VERIFY: u8 = 4;
const EXIT_NOT_REPRODUCIBLE: u8 = 5;

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
    /// require a valid signature by one of those keys.
    Verify {
        hash: String,
        /// A trusted public key file, or an inline `ed25519-public <base64>` (repeatable).
        #[arg(long = "trusted-key", value_name = "FILE")]
        trusted_keys: Vec<String>,
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
        #[arg(long, default_value_t = 6)]
        level: u32,
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
    /// npm cache directory to share between builds [default: a fresh one per build]
    #[arg(long, value_name = "DIR")]
    npm_cache: Option<PathBuf>,
    /// The node program.
    #[arg(long, default_value = "node")]
    node: PathBuf,
    /// The npm program.
    #[arg(long, default_value = "npm")]
    npm: PathBuf,
    /// Build even if the commit was built already, and fail (exit 5) if the result differs.
    #[arg(long)]
    rebuild: bool,
    /// Directory for temporary files [default: the system temp directory]
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    match run(cli, terminal) {
        Ok(code) => code,
        Err(err) => {
            let code = match err.downcast_ref::<Error>().map(Error::kind) {
                Some(ErrorKind::Usage) => EXIT_USAGE,
                Some(ErrorKind::Store) => EXIT_STORE,
                Some(ErrorKind::NotReproducible) => EXIT_NOT_REPRODUCIBLE,
                Some(ErrorKind::Build) | None => EXIT_BUILD,
            };
            eprintln!("error: {err:#}");
            ExitCode::from(code)
        }
    }
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
    if cli.show_config {
        print_config(&cfg, cli.format)?;
        return Ok(ExitCode::SUCCESS);
    }
    let Some(command) = &cli.command else {
        return Err(usage(
            "no command given (build, show, ls, verify, sign, keygen); see --help".into(),
        ));
    };
    if let Command::PackDir {
        dir,
        out,
        prefix,
        threads,
        level,
    } = command
    {
        return pack_dir(dir, out, prefix, *threads, *level);
    }
    if let Command::Keygen { out } = command {
        return cmd_keygen(out, cli.format);
    }
    let store = cfg.open()?;
    match command {
        Command::Build(args) => cmd_build(&*store, args, cli.format, terminal),
        Command::Show { hash } => cmd_show(&*store, hash, cli.format),
        Command::Ls => cmd_ls(&*store, cli.format),
        Command::Verify { hash, trusted_keys } => {
            cmd_verify(&*store, hash, trusted_keys, cli.format)
        }
        Command::Sign { hash, sign_key } => cmd_sign(&*store, hash, sign_key, cli.format),
        Command::PackDir { .. } | Command::Keygen { .. } => unreachable!("handled above"),
    }
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn print_config(cfg: &StoreConfig, format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        return print_json(cfg);
    }
    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unset)".into());
    println!(
        "store                {:<40} ({})",
        cfg.location.value, cfg.location.origin
    );
    println!(
        "s3-endpoint          {:<40} ({})",
        show(&cfg.s3_endpoint.value),
        cfg.s3_endpoint.origin
    );
    println!(
        "s3-region            {:<40} ({})",
        show(&cfg.s3_region.value),
        cfg.s3_region.origin
    );
    println!(
        "s3-force-path-style  {:<40} ({})",
        cfg.s3_force_path_style.value, cfg.s3_force_path_style.origin
    );
    Ok(())
}

fn cmd_build(
    store: &dyn Store,
    args: &BuildArgs,
    format: Format,
    terminal: bool,
) -> anyhow::Result<ExitCode> {
    let mut opts = BuildOptions::new(&args.repo, &args.rev);
    opts.service_dir = args.service_dir.clone();
    opts.npm_args = (!args.npm_args.is_empty()).then(|| args.npm_args.clone());
    opts.node = args.node.clone();
    opts.npm = args.npm.clone();
    opts.npm_cache = args.npm_cache.clone();
    opts.work_dir = args.work_dir.clone();
    opts.rebuild = args.rebuild;
    if let Some(c) = &opts.npm_cache {
        std::fs::create_dir_all(c)
            .with_context(|| format!("creating npm cache {}", c.display()))?;
        opts.npm_cache = Some(std::path::absolute(c)?);
    }
    // Read the key before building, so a bad key fails fast.
    let sign_key = args
        .sign_key
        .as_deref()
        .map(SecretKey::load)
        .transpose()
        .map_err(Error::from)?;
    let started = Instant::now();
    let report = if terminal {
        build::build(store, &opts, &BarProgress::new())?
    } else {
        build::build(store, &opts, &LogProgress)?
    };
    print_build_summary(&report, started.elapsed());
    let refs = record_refs(store, args, &report)?;
    let signature = match &sign_key {
        Some(key) => {
            let s = sign_and_report(store, &report.id, key)?;
            Some(s)
        }
        None => None,
    };
    if format == Format::Json {
        let mut v = serde_json::to_value(&report)?;
        v["signature"] = serde_json::to_value(&signature)?;
        v["refs"] = serde_json::to_value(&refs)?;
        print_json(&v)?;
    } else {
        println!("{}", report.id);
    }
    Ok(ExitCode::SUCCESS)
}

/// Records the refs `--record-refs`, `--branch` and `--tag` ask for; prints each on stderr.
fn record_refs(
    store: &dyn Store,
    args: &BuildArgs,
    report: &BuildReport,
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

/// What signing an artifact did, for the JSON output.
#[derive(serde::Serialize)]
struct SignReport {
    key_id: String,
    key: String,
    /// False if the store already held this signature.
    created: bool,
}

fn sign_and_report(store: &dyn Store, id: &Digest, key: &SecretKey) -> anyhow::Result<SignReport> {
    let (record, outcome) = sign::sign_artifact(store, id, key).map_err(Error::from)?;
    let created = outcome == PutOutcome::Created;
    eprintln!(
        "  signed by key {}{}",
        record.key_id,
        if created {
            ""
        } else {
            " (signature already stored)"
        }
    );
    Ok(SignReport {
        key: artifact::keys::signature(id, &record.key_id),
        key_id: record.key_id,
        created,
    })
}

fn cmd_sign(
    store: &dyn Store,
    hash: &str,
    key_file: &std::path::Path,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let key = SecretKey::load(key_file).map_err(Error::from)?;
    let (id, _) = inspect::show(store, hash)?;
    eprintln!("{id}:");
    let s = sign_and_report(store, &id, &key)?;
    if format == Format::Json {
        print_json(&serde_json::json!({ "id": id, "signature": s }))?;
    } else {
        println!("{}", s.key_id);
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_keygen(prefix: &std::path::Path, format: Format) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let with_ext = |ext: &str| {
        let mut p = prefix.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p)
    };
    let (secret_path, public_path) = (with_ext(".key"), with_ext(".pub"));
    let key = SecretKey::generate();
    let public = key.public();
    let write = |path: &std::path::Path, mode: u32, text: &str| -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map_err(|e| {
                usage(format!(
                    "creating {}: {e} (keygen never overwrites a key)",
                    path.display()
                ))
            })?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", path.display()))
    };
    write(&secret_path, 0o600, &key.to_text())?;
    write(&public_path, 0o644, &public.to_text())?;
    eprintln!(
        "wrote {} (secret, keep it private) and {}",
        secret_path.display(),
        public_path.display()
    );
    if format == Format::Json {
        print_json(&serde_json::json!({
            "key_id": public.key_id(),
            "secret_key_file": secret_path,
            "public_key_file": public_path,
        }))?;
    } else {
        println!("{}", public.key_id());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_build_summary(r: &BuildReport, total: Duration) {
    let what = match r.outcome {
        Outcome::Built => "built",
        Outcome::Identical => "built (identical to the existing build of this commit)",
        Outcome::AlreadyBuilt => {
            "already built; nothing to do (use --rebuild to check reproducibility)"
        }
    };
    eprintln!(
        "{} {} at {}: {what}",
        r.service,
        r.id,
        &r.commit[..12.min(r.commit.len())]
    );
    for l in &r.layers {
        let kind = match l.kind {
            artifact::manifest::LayerKind::Source => "source",
            artifact::manifest::LayerKind::Deps => "deps",
        };
        let mut notes = vec![
            if l.uploaded {
                "uploaded"
            } else {
                "already in store"
            }
            .to_string(),
        ];
        if kind == "deps"
            && let Some(d) = &r.deps
        {
            notes.push(
                if d.reused {
                    "reused, npm not run"
                } else {
                    "built with npm"
                }
                .into(),
            );
            if d.native {
                notes.push("native modules".into());
            }
            if d.lockfile_generated {
                notes.push("lockfile generated".into());
            }
        }
        eprintln!(
            "  {kind:<6} {}  {:>9}  {:>7} entries  {}",
            l.digest.short(16),
            human_bytes(l.size),
            l.entries,
            notes.join(", ")
        );
    }
    if !r.timings.is_empty() {
        let t: Vec<String> = r
            .timings
            .iter()
            .map(|t| format!("{} {:.2}s", t.step, t.seconds))
            .collect();
        eprintln!(
            "  timings: {}; total {:.2}s",
            t.join(", "),
            total.as_secs_f64()
        );
    }
}

fn cmd_show(store: &dyn Store, hash: &str, format: Format) -> anyhow::Result<ExitCode> {
    let (id, m) = inspect::show(store, hash)?;
    if format == Format::Json {
        print_json(&serde_json::json!({ "id": id, "manifest": m }))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("artifact  {id}");
    println!("service   {}", m.service);
    println!("commit    {}  {}", m.source.commit, m.source.subject);
    println!("author    {}", m.source.author);
    println!("committed {}", fmt_time(m.source.commit_time));
    println!("tree      {}", m.source.tree);
    for l in &m.layers {
        println!(
            "layer     {:<6} {}  {}  {} entries  diff_id {}",
            format!("{:?}", l.kind).to_lowercase(),
            l.digest,
            human_bytes(l.size),
            l.entries,
            l.diff_id
        );
    }
    if let Some(d) = &m.deps {
        println!(
            "deps      key {}  node {}  npm {}  npm {}",
            d.key,
            d.node_version,
            d.npm_version,
            d.npm_args.join(" ")
        );
        println!(
            "lockfile  {}{}",
            d.lockfile_blob,
            if d.lockfile_generated {
                "  (generated by npm: the commit has none)"
            } else {
                ""
            }
        );
    }
    match &m.platform {
        Some(p) => println!(
            "platform  {}-{}-{} (node ABI {})",
            p.os, p.arch, p.libc, p.node_abi
        ),
        None => println!("platform  any (no native modules)"),
    }
    println!(
        "storage   {}",
        if m.storage.is_some() {
            "recorded"
        } else {
            "not recorded"
        }
    );
    for (k, v) in &m.labels {
        println!("label     {k}={v}");
    }
    Ok(ExitCode::SUCCESS)
}

fn fmt_time(secs: i64) -> String {
    if secs < 0 {
        return secs.to_string();
    }
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs as u64))
        .to_string()
}

fn cmd_ls(store: &dyn Store, format: Format) -> anyhow::Result<ExitCode> {
    let entries = inspect::list(store)?;
    if format == Format::Json {
        print_json(&entries)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<12}  {:<19}  {:<20}  {:<20}  {:<16}  SUBJECT",
        "COMMIT", "ARTIFACT", "COMMITTED", "BUILT", "SERVICE"
    );
    for e in entries {
        println!(
            "{:<12}  sha256:{:<12}  {:<20}  {:<20}  {:<16}  {}",
            &e.commit[..12.min(e.commit.len())],
            e.manifest.short(12),
            e.commit_time.map(fmt_time).unwrap_or_else(|| "?".into()),
            e.built_at,
            e.service.as_deref().unwrap_or("?"),
            e.subject.as_deref().unwrap_or("(manifest unreadable)")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_verify(
    store: &dyn Store,
    hash: &str,
    trusted_keys: &[String],
    format: Format,
) -> anyhow::Result<ExitCode> {
    let trusted = trusted_keys
        .iter()
        .map(|k| PublicKey::from_spec(k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::from)?;
    let id = inspect::resolve(store, hash)?;
    let report = inspect::verify(store, &id)?;
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
    if format == Format::Json {
        let sig_json = signature.as_ref().map(|s| match s {
            Ok(key_id) => serde_json::json!({ "ok": true, "key_id": key_id }),
            Err(problem) => serde_json::json!({ "ok": false, "problem": problem }),
        });
        print_json(&serde_json::json!({
            "id": report.id,
            "ok": report.ok() && sig_ok,
            "checks": report.checks,
            "signature": sig_json,
        }))?;
    } else {
        for c in &report.checks {
            match &c.problem {
                None => println!("ok   {:<13} {}", c.what, c.key),
                Some(p) => println!("BAD  {:<13} {}: {p}", c.what, c.key),
            }
        }
        match &signature {
            Some(Ok(key_id)) => println!("ok   {:<13} signed by trusted key {key_id}", "signature"),
            Some(Err(p)) => println!("BAD  {:<13} {p}", "signature"),
            None => {}
        }
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
        Ok(ExitCode::SUCCESS)
    } else if report.ok() {
        Ok(ExitCode::from(EXIT_VERIFY))
    } else {
        for c in report.bad() {
            eprintln!(
                "error: bad blob {} ({}): {}",
                c.key,
                c.what,
                c.problem.as_deref().unwrap_or("")
            );
        }
        Ok(ExitCode::from(EXIT_VERIFY))
    }
}

fn pack_dir(
    dir: &std::path::Path,
    out: &std::path::Path,
    prefix: &str,
    threads: Option<usize>,
    level: u32,
) -> anyhow::Result<ExitCode> {
    let mut opts = artifact::pack::PackOptions {
        mtime: 0,
        level,
        ..Default::default()
    };
    if let Some(t) = threads {
        opts.threads = t.max(1);
    }
    let started = Instant::now();
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let info =
        artifact::pack::pack_dir(dir, prefix, &opts, &mut w).map_err(|source| Error::Pack {
            what: "directory",
            source,
        })?;
    std::io::Write::flush(&mut w)?;
    print_json(&serde_json::json!({
        "layer": info,
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
