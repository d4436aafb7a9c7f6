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
    /// release, put there by a succeeded deploy).
    Promote {
        #[arg(long)]
        from: Name,
        #[arg(long)]
        to: Name,
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
        #[arg(long, value_enum, default_value = "cassandra")]
        backend: BackendArg,
        #[arg(long)]
        skip_promotion_check: bool,
    },
    /// Roll every host back to the release it ran before the last successful deploy.
    Rollback {
        #[arg(long)]
        env: Name,
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
    /// Break a stuck or corrupt env lock (its holder must be gone) and fence its holder out;
    /// recorded in the env's history with the reason.
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
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Acknowledge one non-rollbackable storage change, exactly as schema-guard names it:
    /// `SG002 <table> <from>-><to> <reason>`. Repeatable.
    #[arg(long = "ack", value_name = "ACK")]
    pub acks: Vec<String>,
    /// Table backend whose schema rules apply.
    #[arg(long, value_enum, default_value = "cassandra")]
    pub backend: BackendArg,
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
            reason: self.reason.clone(),
            dry_run: self.dry_run,
            guard: applier::guard::GuardOptions {
                backend: (&self.backend).into(),
                acks: self.acks.clone(),
            },
            force_schema_rollback: false,
            skip_promotion_check: self.skip_promotion_check,
            schema_baseline: self.schema_baseline.clone(),
        })
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
