//! The repository's `.schema-guard.yaml`: which service config to read, extractor settings,
//! and acknowledgements.
//!
//! ```yaml
//! env: production                    # reads deploy/env/<env>.yaml (default production)
//! config: deploy/env/production.yaml # or name the service config directly
//! backend: cassandra                 # default --backend
//! backend_modules: [restbase-mod-table-cassandra, restbase-mod-table-sqlite]
//! capture:
//!   backend_key: services.0.conf.storage.backend  # config key replaced by the recorder
//!   backend_modules: []                           # module names a --require hook replaces
//!   timeout_secs: 60
//! acks:
//!   - {rule: SG002, table: pages, from: 2, to: 3, reason: "adds summary column"}
//! ```

use serde::Deserialize;

use crate::report::{Ack, AckSource};
use crate::{Error, Result};

/// File name of the repository config, at the repository root.
pub const REPO_CONFIG: &str = ".schema-guard.yaml";

/// Capture extractor settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    /// Dotted path of the config key naming the table backend module (replaced by the recorder).
    pub backend_key: String,
    /// Module names a `--require` hook replaces with the recorder wherever they are required.
    pub backend_modules: Vec<String>,
    /// How long to wait for the port (or the exit), in seconds.
    pub timeout_secs: u64,
    /// Memory limit of the service process, in MiB.
    pub memory_mb: u64,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            backend_key: "services.0.conf.storage.backend".into(),
            backend_modules: Vec::new(),
            timeout_secs: 60,
            memory_mb: 2048,
        }
    }
}

/// One acknowledgement entry.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AckEntry {
    pub rule: String,
    /// Table (or domain, group, module: the finding's subject).
    pub table: String,
    pub from: serde_norway::Value,
    pub to: serde_norway::Value,
    pub reason: String,
    /// Optional head content hash (`sha256:...`): the ack goes stale when the content changes.
    #[serde(default)]
    pub content_hash: Option<String>,
}

/// `.schema-guard.yaml`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RepoConfig {
    pub env: Option<String>,
    pub config: Option<String>,
    pub backend: Option<crate::report::Backend>,
    pub backend_modules: Option<Vec<String>>,
    pub capture: CaptureConfig,
    pub acks: Vec<AckEntry>,
}

fn scalar(v: &serde_norway::Value) -> String {
    match v {
        serde_norway::Value::String(s) => s.clone(),
        serde_norway::Value::Number(n) => n.to_string(),
        serde_norway::Value::Bool(b) => b.to_string(),
        serde_norway::Value::Null => "none".into(),
        other => serde_norway::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

impl RepoConfig {
    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<RepoConfig> {
        if text.trim().is_empty() {
            return Ok(RepoConfig::default());
        }
        serde_norway::from_str(text).map_err(|e| Error::Yaml {
            path: REPO_CONFIG.into(),
            message: e.to_string(),
        })
    }

    /// Reads it from a tree (absent = defaults).
    pub fn from_tree(tree: &dyn crate::extract::Tree) -> Result<RepoConfig> {
        match tree.read_text(REPO_CONFIG) {
            Some(t) => RepoConfig::parse(&t),
            None => Ok(RepoConfig::default()),
        }
    }

    /// The acks of this file.
    pub fn acks(&self) -> Vec<Ack> {
        self.acks
            .iter()
            .map(|a| Ack {
                rule: a.rule.clone(),
                subject: a.table.clone(),
                from: scalar(&a.from),
                to: scalar(&a.to),
                reason: a.reason.clone(),
                source: AckSource::Config {
                    path: REPO_CONFIG.into(),
                },
                content_hash: a.content_hash.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_acks_and_defaults() {
        let c = RepoConfig::parse(
            "env: staging\nacks:\n  - {rule: SG002, table: pages, from: 2, to: 3, reason: planned}\n",
        )
        .unwrap();
        assert_eq!(c.env.as_deref(), Some("staging"));
        assert_eq!(c.capture, CaptureConfig::default());
        let a = &c.acks()[0];
        assert_eq!(
            (a.from.as_str(), a.to.as_str(), a.subject.as_str()),
            ("2", "3", "pages")
        );
        assert!(RepoConfig::parse("nonsense_key: 1").is_err());
    }
}
