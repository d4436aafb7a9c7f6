//! Findings and the report of one comparison: what the rules found, per-table summaries, and
//! the decisions callers need (`is_blocking`, `changes_schema`).

use serde::{Deserialize, Serialize};

use crate::manifest::Location;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Flag,
    Block,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Flag => "flag",
            Severity::Block => "block",
        }
    }
}

/// The table backend whose behaviour the rules model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Cassandra,
    Sqlite,
}

impl Backend {
    /// Parses a flavour name as service configs write it (`sqlite`, `cassandra`).
    pub fn parse(s: &str) -> Option<Backend> {
        match s {
            "cassandra" => Some(Backend::Cassandra),
            "sqlite" => Some(Backend::Sqlite),
            _ => None,
        }
    }

    /// The backend whose rules apply to a change: an explicit override, else the flavour the
    /// head's service config names (else the base's), else the repository default.
    pub fn effective(
        flag: Option<Backend>,
        base: &crate::StorageManifest,
        head: &crate::StorageManifest,
        repo_default: Option<Backend>,
    ) -> Backend {
        flag.or_else(|| head.backend.as_deref().and_then(Backend::parse))
            .or_else(|| base.backend.as_deref().and_then(Backend::parse))
            .or(repo_default)
            .unwrap_or_default()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Cassandra => "cassandra",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// Which severity makes a check fail.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailOn {
    /// Only unacknowledged `block` findings fail.
    #[default]
    Block,
    /// Unacknowledged `flag` findings fail too.
    Flag,
}

/// Where an acknowledgement came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum AckSource {
    /// A `Schema-Change-Ack:` trailer in this commit.
    Trailer { commit: String },
    /// An entry of a repository config file.
    Config { path: String },
    /// Given by the caller (e.g. `applier deploy --ack`).
    Caller,
}

/// An explicit acknowledgement of one change: rule, subject (table, domain or module) and
/// the exact `from -> to` it was given for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub rule: String,
    pub subject: String,
    pub from: String,
    pub to: String,
    pub reason: String,
    pub source: AckSource,
    /// When set, the head content hash the ack was given for: a later content edit makes it stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
}

/// One finding of one rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable rule id, e.g. `SG002`.
    pub rule: String,
    pub severity: Severity,
    /// Whether an explicit ack can let this finding pass.
    pub acknowledgeable: bool,
    /// The ack that matched, if any (the finding is still reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<Ack>,
    /// What the finding is about: a table, a domain, a storage group or a module name.
    pub subject: String,
    /// Table name when the finding is about a table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storage_groups: Vec<String>,
    /// Base value (a version, a group name...) as an ack names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Head value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// What will happen in production and what to do.
    pub message: String,
    /// For non-rollbackable changes: how to get back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// Head content hash of the table, used to detect stale acks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
}

impl Finding {
    pub(crate) fn new(
        rule: &str,
        severity: Severity,
        acknowledgeable: bool,
        subject: &str,
    ) -> Finding {
        Finding {
            rule: rule.to_string(),
            severity,
            acknowledgeable,
            acknowledged: None,
            subject: subject.to_string(),
            table: None,
            domains: Vec::new(),
            storage_groups: Vec::new(),
            from: None,
            to: None,
            message: String::new(),
            recipe: None,
            location: None,
            content_hash: None,
        }
    }

    /// The `<from>-><to>` an ack must name, when the finding has one.
    pub fn change(&self) -> Option<String> {
        match (&self.from, &self.to) {
            (Some(f), Some(t)) => Some(format!("{f}->{t}")),
            _ => None,
        }
    }

    /// The ack trailer that would acknowledge this finding.
    pub fn ack_trailer(&self) -> Option<String> {
        if !self.acknowledgeable {
            return None;
        }
        Some(format!(
            "Schema-Change-Ack: {} {} {} <reason>",
            self.rule,
            self.subject,
            self.change().unwrap_or_else(|| "-".into())
        ))
    }

    /// The `--ack` argument that would acknowledge this finding, shell-quoted, with a
    /// `<reason>` placeholder to replace.
    pub fn ack_flag(&self) -> Option<String> {
        if !self.acknowledgeable {
            return None;
        }
        let spec = format!(
            "{} {} {} <reason>",
            self.rule,
            self.subject,
            self.change().unwrap_or_else(|| "-".into())
        );
        Some(format!("--ack {}", shell_quote(&spec)))
    }

    /// Whether this finding fails a check at the given threshold.
    pub fn fails(&self, fail_on: FailOn) -> bool {
        if self.acknowledged.is_some() {
            return false;
        }
        match fail_on {
            FailOn::Block => self.severity == Severity::Block,
            FailOn::Flag => self.severity >= Severity::Flag,
        }
    }
}

/// Quotes a word for a POSIX shell (single quotes; `'` as `'\''`).
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// What happens to one table (over all domains with the same change).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    New,
    Removed,
    Content,
    VersionOnly,
}

/// Per-table summary: what changes, whether the deploy fails, whether it can be rolled back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableChange {
    pub table: String,
    pub domains: Vec<String>,
    pub storage_groups: Vec<String>,
    pub change: ChangeKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_version: Option<i64>,
    /// The deploy will be refused at start-up.
    pub deploy_fails: bool,
    /// Redeploying the base revision after this one would start.
    pub rollbackable: bool,
}

/// The result of comparing two storage manifests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub backend: Backend,
    pub strict: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    pub findings: Vec<Finding>,
    pub tables: Vec<TableChange>,
}

impl Report {
    /// True when an unacknowledged `block` finding remains.
    pub fn is_blocking(&self) -> bool {
        self.fails(FailOn::Block)
    }

    /// True when an unacknowledged finding at or above the threshold remains.
    pub fn fails(&self, fail_on: FailOn) -> bool {
        self.findings.iter().any(|f| f.fails(fail_on))
    }

    /// True when a deploy would change stored schemas (a table is new, or its content or
    /// version changes). Such a deploy is of type "schema" and must not be rolled back blindly.
    pub fn changes_schema(&self) -> bool {
        self.tables.iter().any(|t| t.change != ChangeKind::Removed)
    }

    /// True when redeploying the base revision after the head would start everywhere.
    pub fn rollback_safe(&self) -> bool {
        self.tables.iter().all(|t| t.rollbackable)
    }

    /// Findings at a severity, in report order.
    pub fn by_severity(&self, s: Severity) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.severity == s)
    }

    /// Counts of (block, flag, info) findings, acknowledged ones included.
    pub fn counts(&self) -> (usize, usize, usize) {
        let c = |s| self.findings.iter().filter(|f| f.severity == s).count();
        (c(Severity::Block), c(Severity::Flag), c(Severity::Info))
    }
}
