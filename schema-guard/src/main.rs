//! The `schema-guard` command line: thin wrapper over the library.
//!
//! Exit codes: 0 clean (or only findings below `--fail-on`), 1 a failing finding, 2 a tool
//! error (bad arguments, unreadable revision, capture failure).

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
        /// Table backend behaviour (default from .schema-guard.yaml, else cassandra).
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
    },
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

fn backend(arg: Option<BackendArg>, cfg: &RepoConfig) -> Backend {
    match arg {
        Some(BackendArg::Cassandra) => Backend::Cassandra,
        Some(BackendArg::Sqlite) => Backend::Sqlite,
        None => cfg.backend.unwrap_or_default(),
    }
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
            std::io::stdout().write_all(text.as_bytes())?;
            Ok(())
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
        } => {
            let cfg = repo_config(&x.repo, &head)?;
            let start = std::time::Instant::now();
            let base_m = extract_rev(&x, &base)?;
            let head_m = extract_rev(&x, &head)?;
            let mut acks = cfg.acks();
            acks.extend(schema_guard::ack::acks_from_commits(
                &x.repo,
                &base,
                &head,
                true,
                &static_opts(&x),
            )?);
            let opts = Options {
                backend: backend(b, &cfg),
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
        } => {
            let cfg = if Path::new(&b).is_file() {
                RepoConfig::default()
            } else {
                repo_config(&x.repo, &b)?
            };
            let (base_m, head_m) = (load_side(&x, &a)?, load_side(&x, &b)?);
            let opts = Options {
                backend: backend(be, &cfg),
                strict,
                acks: cfg.acks(),
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
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(false) => ExitCode::SUCCESS,
        Ok(true) => ExitCode::from(1),
        Err(e) => {
            eprintln!("schema-guard: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
