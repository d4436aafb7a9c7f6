//! The command line: every subcommand and flag of `applier` (clap).

use std::path::PathBuf;

use applier::engine::DeployOptions;
use clap::{Parser, Subcommand, ValueEnum};
use model::names::{DeployId, Name};

#[derive(Parser)]
#[command(
    name = "applier",
    version,
    about = "Rolling, checked, reversible deploys of built artifacts"
)]
pub struct Cli {
    /// Config file(s) (YAML); default ./deploy.yaml if present.
    #[arg(long, global = true, env = "APPLIER_CONFIG")]
    pub config: Vec<PathBuf>,
    /// Store location (directory or s3://bucket/prefix); overrides config and APPLIER_STORE.
    #[arg(long, global = true)]
    pub store: Option<String>,
    /// Override a config value: --set envs.staging.group_size=2 (repeatable).
    #[arg(long = "set", global = true, value_name = "PATH=VALUE")]
    pub sets: Vec<String>,
    /// Output: auto (live view on a terminal, else plain), plain, json (JSON lines on stdout).
    #[arg(long, global = true, value_enum, default_value_t = Format::Auto)]
    pub format: Format,
    /// Print the resolved configuration and where each value came from, then exit.
    #[arg(long, global = true)]
    pub show_config: bool,
    /// Who is deploying, for the lease, the journal and notifications (default: SUDO_USER,
    /// a CI job's variables, then USER; see docs/applier.md, "Who and why").
    #[arg(long, global = true)]
    pub who: Option<String>,
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Auto,
    Plain,
    Json,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Deploy an artifact (manifest digest, git commit, or a unique prefix of either).
    Deploy {
        target: String,
        #[arg(long)]
        env: Name,
        #[command(flatten)]
        flags: DeployFlags,
    },
    /// Deploy to `--to` the artifact that `--from` runs (every host of `--from` on the same
    /// release, put there by a succeeded deploy), with the deploy type and acknowledgements
    /// recorded there; refused when this env's storage diff differs.
    Promote {
        #[arg(long)]
        from: Name,
        #[arg(long)]
        to: Name,
        /// Run by automation: refused while either env's failure lock is set or a freeze
        /// window is open, with no override.
        #[arg(long)]
        auto: bool,
        #[command(flatten)]
        flags: DeployFlags,
    },
    /// What a deploy would do, changing nothing: the batches in order, the hosts of each, the
    /// waves the capacity guard cuts them into (given who is out of the pool now), and an ETA
    /// from the environment's recent succeeded runs. The gates are checked as for a deploy.
    Plan {
        target: String,
        #[arg(long)]
        env: String,
        /// As for `deploy`.
        #[arg(long = "ack", value_name = "ACK")]
        acks: Vec<String>,
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
        #[arg(long)]
        skip_promotion_check: bool,
    },
    /// Roll every host back to the release it ran before the last successful deploy (or, with
    /// `--to`, to a named artifact, tag or branch).
    Rollback {
        #[arg(long)]
        env: Name,
        /// Why (`--reason` is the same).
        #[arg(short = 'm', long = "message", alias = "reason", default_value = "")]
        message: String,
        /// Roll every host back to this digest, commit, tag or branch.
        #[arg(long, value_name = "TARGET")]
        to: Option<String>,
        /// A git repository to resolve `--to` names through.
        #[arg(long)]
        repo: Option<PathBuf>,
        #[arg(long)]
        dry_run: bool,
        /// Roll back even where the storage guard says the old code would not start
        /// (e.g. Cassandra with identical content). Use only when you know the storage allows it.
        #[arg(long)]
        force_schema_rollback: bool,
        /// Table backend whose schema rules apply (default: the one the env config names, from the
        /// storage manifests; else cassandra).
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
    },
    /// Continue a deploy whose applier died, or roll it back.
    Resume {
        deploy_id: DeployId,
        /// The environment (searched in every configured one if omitted).
        #[arg(long)]
        env: Option<Name>,
        #[arg(long)]
        rollback: bool,
        /// Break the lease still held by that deploy (only if its applier is surely gone).
        #[arg(long)]
        force: bool,
    },
    /// Every host's release and drift between the records and the hosts.
    Status {
        #[arg(long)]
        env: Name,
    },
    /// What deploying a target would change: each host's rendered config (its ops values
    /// masked), the code (commits, files), the dependencies (lockfiles) and the storage
    /// (schema guard). Changes nothing.
    Diff {
        target: String,
        #[arg(long)]
        env: String,
        /// Only this host's config.
        #[arg(long)]
        host: Option<String>,
        /// As for deploy: acknowledgements the storage guard should count.
        #[arg(long = "ack", value_name = "ACK")]
        acks: Vec<String>,
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
        /// A git repository to resolve tag and branch names through.
        #[arg(long)]
        repo: Option<PathBuf>,
    },
    /// Deploy the newest built commit of a branch (continuous deployment; superseded commits
    /// are skipped). An automatic deploy: the failure lock and freeze windows refuse it.
    Cd {
        #[arg(long)]
        env: String,
        /// The branch (default: the env's `cd.branch`).
        #[arg(long)]
        branch: Option<String>,
        /// How long to wait for a deploy under way before giving up.
        #[arg(long, default_value = "10m")]
        wait: humantime::Duration,
        #[arg(short = 'm', long = "message", default_value = "")]
        message: String,
        #[arg(long = "ack", value_name = "ACK")]
        acks: Vec<String>,
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
    },
    /// Past deploys of an environment: who, why, type, outcome, duration, hosts changed.
    History {
        #[arg(long)]
        env: Name,
        /// Show at most the last N that pass the filters.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Only deploys started since: a time (2026-12-01T10:00:00Z), a date (2026-12-01) or a
        /// span back from now (2h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Only these outcomes (comma-separated): succeeded, rolled_back, needs_human,
        /// refused, running, or failed (rolled_back and needs_human).
        #[arg(long)]
        status: Option<String>,
        /// Only deploys that touched this host.
        #[arg(long)]
        host: Option<String>,
    },
    /// The steps of one deploy as text.
    Show {
        deploy_id: String,
        /// The environment (searched in every configured one if omitted).
        #[arg(long)]
        env: Option<String>,
    },
    /// One deploy as a self-contained HTML report (on stdout, or into `-o FILE`).
    Report {
        /// The deploy (or `--latest`).
        #[arg(required_unless_present = "latest", conflicts_with = "latest")]
        deploy_id: Option<String>,
        /// The environment (searched in every configured one if omitted; needed with --latest).
        #[arg(long, required_if_eq("latest", "true"))]
        env: Option<String>,
        /// The environment's most recent deploy.
        #[arg(long)]
        latest: bool,
        /// Write the report to this file instead of stdout.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// After a failure or a stuck deploy: clear the failure lock a rolled-back or needs-human
    /// deploy left (automatic deploys resume), and break a stuck or corrupt env lock, fencing
    /// its holder out; both recorded with the reason (the env's history, the lock record).
    Unlock {
        #[arg(long)]
        env: Name,
        /// Why (recorded in the env's history).
        #[arg(long)]
        reason: String,
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
pub struct DeployFlags {
    /// Why: recorded in the journal, shown by `history`, sent with notifications; required
    /// where the env says `require_message` (`--reason` is the same).
    #[arg(short = 'm', long = "message", alias = "reason", default_value = "")]
    pub message: String,
    /// Deploy although the env's failure lock is set (by hand only); the reason is recorded.
    #[arg(long, value_name = "REASON")]
    pub ignore_failure_lock: Option<String>,
    /// Deploy inside an open freeze window (by hand only); the reason is recorded.
    #[arg(long, value_name = "REASON")]
    pub override_freeze: Option<String>,
    /// A git repository to resolve tag and branch names through (besides the store's ref
    /// records).
    #[arg(long)]
    pub repo: Option<PathBuf>,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Acknowledge one non-rollbackable storage change, exactly as schema-guard names it:
    /// `SG002 <table> <from>-><to> <reason>`. Repeatable.
    #[arg(long = "ack", value_name = "ACK")]
    pub acks: Vec<String>,
    /// Table backend whose schema rules apply (default: the one the env config names, from the
    /// storage manifests; else cassandra).
    #[arg(long, value_enum)]
    pub backend: Option<BackendArg>,
    /// Emergency override: deploy even though the artifact has not passed the environments the
    /// target's `promotion.requires` names (recorded in the journal). One run only.
    #[arg(long)]
    pub skip_promotion_check: bool,
    /// Compare the storage schemas with this release (digest, commit or prefix) instead of
    /// what the env's records say runs, when those cannot be read (recorded in the journal).
    #[arg(long, value_name = "HASH")]
    pub schema_baseline: Option<String>,
}

impl DeployFlags {
    /// The engine's options; a malformed `--ack` is a usage error (exit 64).
    pub fn options(&self) -> Result<DeployOptions, crate::exit::Failure> {
        for a in &self.acks {
            applier::guard::parse_ack(a).map_err(|e| {
                crate::exit::Failure::usage(anyhow::anyhow!(e)).hint(
                    "give each change exactly as the refusal printed it, with your reason: --ack 'SG002 <table> <from>-><to> <reason>'",
                )
            })?;
        }
        Ok(DeployOptions {
            reason: self.message.clone(),
            dry_run: self.dry_run,
            guard: guard_options(&self.backend, &self.acks),
            skip_promotion_check: self.skip_promotion_check,
            ignore_failure_lock: self.ignore_failure_lock.clone(),
            override_freeze: self.override_freeze.clone(),
            repo: self.repo.clone(),
            schema_baseline: self.schema_baseline.clone(),
            ..Default::default()
        })
    }
}

/// The storage guard's settings from `--backend` and `--ack`.
pub fn guard_options(
    backend: &Option<BackendArg>,
    acks: &[String],
) -> applier::guard::GuardOptions {
    applier::guard::GuardOptions {
        backend: backend.as_ref().map(Into::into),
        acks: acks.to_vec(),
        ..Default::default()
    }
}

/// `--backend` values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum BackendArg {
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
