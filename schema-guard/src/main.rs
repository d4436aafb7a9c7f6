//! The `schema-guard` command line: thin wrapper over the library.
//!
//! Exit codes, decided only in [`exit_code`]: 0 clean (or only findings below `--fail-on`),
//! 1 a failing finding, 2 a tool error (unreadable revision or config, capture failure or
//! refusal), 64 a usage error (bad arguments, a malformed `--ack`). A closed stdout
//! (`| head`) ends the output quietly.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use schema_guard::config::RepoConfig;
use schema_guard::extract::{self, CaptureOptions, StaticOptions};
use schema_guard::render::{self, Format, RenderOptions};
use schema_guard::{Backend, FailOn, Options, StorageManifest};

#[derive(Parser)]
#[command(
    name = "schema-guard",
    version,
    about = "Storage schema diff and rules for RESTBase-style services"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExtractorArg {
    Static,
    Capture,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    Cassandra,
    Sqlite,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Text,
    Json,
    Sarif,
    Gitlab,
    Github,
    Gerrit,
    Markdown,
}

#[derive(Clone, Copy, ValueEnum)]
enum FailOnArg {
    Block,
    Flag,
}

#[derive(clap::Args)]
struct ExtractArgs {
    /// Repository (any path inside it).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    #[arg(long, value_enum, default_value = "static")]
    extractor: ExtractorArg,
    /// Environment whose config is read (deploy/env/<env>.yaml); default from .schema-guard.yaml, else production.
    #[arg(long)]
    env: Option<String>,
    /// Service config path inside the revision (overrides --env).
    #[arg(long)]
    config: Option<String>,
    /// node_modules for capture runs (e.g. from a built artifact).
    #[arg(long)]
    node_modules: Option<PathBuf>,
    /// node binary for capture runs.
    #[arg(long, default_value = "node")]
    node: PathBuf,
    /// Copy the service's output of capture runs here (the last run's).
    #[arg(long)]
    capture_log: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Compare base and head of a repository and report findings.
    Check {
        #[command(flatten)]
        x: ExtractArgs,
        /// Base revision (e.g. the target branch).
        #[arg(long, default_value = "HEAD~1")]
        base: String,
        #[arg(long, default_value = "HEAD")]
        head: String,
        /// Table backend behaviour; default: the flavour the env config names (the table
        /// module's `backend`), else .schema-guard.yaml, else cassandra.
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
        #[arg(long, value_enum, default_value = "text")]
        format: FormatArg,
        #[arg(long, value_enum, default_value = "block")]
        fail_on: FailOnArg,
        /// Data-loss flags (SG005) block.
        #[arg(long)]
        strict: bool,
        /// Write the report here instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Acknowledge one change: 'SGnnn <subject> <from>-><to> <reason>' (repeatable).
        #[arg(long = "ack", value_name = "ACK")]
        acks: Vec<String>,
    },
    /// Print the storage manifest (JSON) of a revision.
    Manifest {
        rev: String,
        #[command(flatten)]
        x: ExtractArgs,
    },
    /// Compare two revisions or storage manifest JSON files.
    Diff {
        a: String,
        b: String,
        #[command(flatten)]
        x: ExtractArgs,
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
        #[arg(long, value_enum, default_value = "text")]
        format: FormatArg,
        #[arg(long, value_enum, default_value = "block")]
        fail_on: FailOnArg,
        #[arg(long)]
        strict: bool,
        /// Acknowledge one change: 'SGnnn <subject> <from>-><to> <reason>' (repeatable).
        #[arg(long = "ack", value_name = "ACK")]
        acks: Vec<String>,
    },
}

/// A usage error found after argument parsing (exit 64).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

fn cli_acks(specs: &[String]) -> Result<Vec<schema_guard::Ack>> {
    specs
        .iter()
        .map(|s| schema_guard::ack::parse_ack(s).map_err(|e| Usage(e.to_string()).into()))
        .collect()
}

fn static_opts(x: &ExtractArgs) -> StaticOptions {
    StaticOptions {
        config: x.config.clone(),
        env: x.env.clone(),
    }
}

fn extract_rev(x: &ExtractArgs, rev: &str) -> Result<StorageManifest> {
    match x.extractor {
        ExtractorArg::Static => extract::static_manifest_with(&x.repo, rev, &static_opts(x))
            .with_context(|| format!("static extraction of {rev}")),
        ExtractorArg::Capture => {
            let opts = CaptureOptions {
                node: x.node.clone(),
                node_modules: x.node_modules.clone().or_else(|| {
                    let nm = x.repo.join("node_modules");
                    nm.is_dir().then_some(nm)
                }),
                config: static_opts(x),
                log_file: x.capture_log.clone(),
                ..CaptureOptions::default()
            };
            extract::capture_rev(&x.repo, rev, &opts).with_context(|| format!("capture of {rev}"))
        }
    }
}

fn load_side(x: &ExtractArgs, what: &str) -> Result<StorageManifest> {
    let p = Path::new(what);
    if p.is_file() {
        let bytes = std::fs::read(p).with_context(|| format!("reading {what}"))?;
        return StorageManifest::from_json(&bytes).with_context(|| format!("reading {what}"));
    }
    extract_rev(x, what)
}

fn repo_config(repo: &Path, rev: &str) -> Result<RepoConfig> {
    let r = git2::Repository::discover(repo).context("opening the repository")?;
    let tree = extract::GitTree::open(&r, rev)?;
    Ok(RepoConfig::from_tree(&tree)?)
}

fn backend(
    arg: Option<BackendArg>,
    cfg: &RepoConfig,
    base: &StorageManifest,
    head: &StorageManifest,
) -> Backend {
    let flag = arg.map(|a| match a {
        BackendArg::Cassandra => Backend::Cassandra,
        BackendArg::Sqlite => Backend::Sqlite,
    });
    Backend::effective(flag, base, head, cfg.backend)
}

fn format(f: FormatArg) -> Format {
    match f {
        FormatArg::Text => Format::Text,
        FormatArg::Json => Format::Json,
        FormatArg::Sarif => Format::Sarif,
        FormatArg::Gitlab => Format::Gitlab,
        FormatArg::Github => Format::Github,
        FormatArg::Gerrit => Format::Gerrit,
        FormatArg::Markdown => Format::Markdown,
    }
}

fn fail_on(f: FailOnArg) -> FailOn {
    match f {
        FailOnArg::Block => FailOn::Block,
        FailOnArg::Flag => FailOn::Flag,
    }
}

fn emit(text: &str, output: Option<&Path>) -> Result<()> {
    match output {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display())),
        None => {
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                // The reader went away (`| head`): nothing more to say.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                r => r.context("writing to stdout"),
            }
        }
    }
}

/// GitHub: also append the markdown report to the step summary file.
fn github_summary(report: &schema_guard::Report, ro: RenderOptions) -> Result<()> {
    if let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", Path::new(&path).display()))?;
        f.write_all(render::markdown(report, ro).as_bytes())?;
    }
    Ok(())
}

fn run(cli: Cli) -> Result<bool> {
    match cli.cmd {
        Cmd::Manifest { rev, x } => {
            let m = extract_rev(&x, &rev)?;
            let mut s = serde_json::to_string_pretty(&m.to_value())?;
            s.push('\n');
            emit(&s, None)?;
            Ok(false)
        }
        Cmd::Check {
            x,
            base,
            head,
            backend: b,
            format: f,
            fail_on: fo,
            strict,
            output,
            acks: cli,
        } => {
            let cli = cli_acks(&cli)?;
            let cfg = repo_config(&x.repo, &head)?;
            let start = std::time::Instant::now();
            let base_m = extract_rev(&x, &base)?;
            let head_m = extract_rev(&x, &head)?;
            let mut acks = cli;
            acks.extend(cfg.acks());
            acks.extend(schema_guard::ack::acks_from_commits(
                &x.repo,
                &base,
                &head,
                true,
                &static_opts(&x),
            )?);
            let opts = Options {
                backend: backend(b, &cfg, &base_m, &head_m),
                strict,
                acks,
                base_label: Some(base.clone()),
                head_label: Some(head.clone()),
            };
            let report = schema_guard::diff(&base_m, &head_m, &opts);
            tracing::info!(
                elapsed_ms = start.elapsed().as_millis() as u64,
                findings = report.findings.len(),
                "checked"
            );
            let ro = RenderOptions {
                fail_on: fail_on(fo),
            };
            emit(&render::render(&report, format(f), ro), output.as_deref())?;
            if matches!(f, FormatArg::Github) {
                github_summary(&report, ro)?;
            }
            Ok(report.fails(ro.fail_on))
        }
        Cmd::Diff {
            a,
            b,
            x,
            backend: be,
            format: f,
            fail_on: fo,
            strict,
            acks: cli,
        } => {
            let mut acks = cli_acks(&cli)?;
            let cfg = if Path::new(&b).is_file() {
                RepoConfig::default()
            } else {
                repo_config(&x.repo, &b)?
            };
            let (base_m, head_m) = (load_side(&x, &a)?, load_side(&x, &b)?);
            acks.extend(cfg.acks());
            let opts = Options {
                backend: backend(be, &cfg, &base_m, &head_m),
                strict,
                acks,
                base_label: Some(a.clone()),
                head_label: Some(b.clone()),
            };
            let report = schema_guard::diff(&base_m, &head_m, &opts);
            let ro = RenderOptions {
                fail_on: fail_on(fo),
            };
            emit(&render::render(&report, format(f), ro), None)?;
            if matches!(f, FormatArg::Github) {
                github_summary(&report, ro)?;
            }
            Ok(report.fails(ro.fail_on))
        }
    }
}

/// Exit codes (documented in docs/schema-guard.md and the README).
const EXIT_BLOCKING: u8 = 1;
const EXIT_TOOL: u8 = 2;
const EXIT_USAGE: u8 = 64;

/// The one place where errors become exit codes, with a `hint:` where the user can act.
fn exit_code(e: &anyhow::Error) -> (u8, Option<String>) {
    if e.downcast_ref::<Usage>().is_some() {
        return (EXIT_USAGE, Some("see `schema-guard check --help`".into()));
    }
    let lib = e
        .chain()
        .find_map(|c| c.downcast_ref::<schema_guard::Error>());
    let hint = match lib {
        Some(schema_guard::Error::RevNotFound(rev)) => Some(format!(
            "is {rev} fetched here? CI checkouts are often shallow: `git fetch origin <branch>` first"
        )),
        Some(schema_guard::Error::Capture(m)) if m.contains("--node-modules") => Some(
            "pass --node-modules DIR: the revision's installed dependencies (npm ci, or a built artifact's layer)".into(),
        ),
        Some(schema_guard::Error::CaptureUnsafe(_)) => Some(
            "capture runs only where it can isolate the service (util-linux `unshare`, network namespaces); \
             use --extractor static there"
                .into(),
        ),
        Some(schema_guard::Error::Config(_)) => {
            Some("name the service config with --env ENV (deploy/env/ENV.yaml) or --config PATH".into())
        }
        _ => None,
    };
    (EXIT_TOOL, hint)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SCHEMA_GUARD_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(false) => ExitCode::SUCCESS,
        Ok(true) => ExitCode::from(EXIT_BLOCKING),
        Err(e) => {
            let (code, hint) = exit_code(&e);
            eprintln!("schema-guard: error: {e:#}");
            if let Some(h) = hint {
                eprintln!("hint: {h}");
            }
            ExitCode::from(code)
        }
    }
}
