//! Acknowledgements from git history: `Schema-Change-Ack:` trailers in the commits between
//! base and head.
//!
//! A trailer names one change exactly: `Schema-Change-Ack: SG002 <table> <from>-><to> <reason>`.
//! With `pin_content`, each trailer ack also records the table's content hash at the commit
//! that carries it (static read), so a later edit of the same table (a different version, or
//! the same version with other content) no longer matches: the ack is stale.

use std::path::Path;

use regex::Regex;

use crate::Result;
use crate::extract::{StaticOptions, static_manifest_with};
use crate::report::{Ack, AckSource};

/// The trailer key.
pub const TRAILER: &str = "Schema-Change-Ack";

/// Parses every ack trailer of one commit message.
pub fn parse_trailers(message: &str, commit: &str) -> Vec<Ack> {
    let re = Regex::new(r"^Schema-Change-Ack:\s*(SG\d{3})\s+(\S+)\s+(\S+?)->(\S+)\s*(.*)$")
        .expect("valid regex");
    message
        .lines()
        .filter_map(|l| re.captures(l.trim()))
        .map(|c| Ack {
            rule: c[1].to_string(),
            subject: c[2].to_string(),
            from: c[3].to_string(),
            to: c[4].to_string(),
            reason: c[5].trim().to_string(),
            source: AckSource::Trailer {
                commit: commit.to_string(),
            },
            content_hash: None,
        })
        .collect()
}

/// Why an `--ack` value is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "malformed ack {0:?}: expected 'SGnnn <subject> <from>-><to> <reason>', e.g. 'SG002 pages 2->3 adds summaries'"
)]
pub struct AckSyntax(pub String);

/// Parses one acknowledgement as given on a command line: `SG002 <subject> <from>-><to> <reason>`.
pub fn parse_ack(spec: &str) -> Result<Ack, AckSyntax> {
    let mut acks = parse_trailers(&format!("{TRAILER}: {}", spec.trim()), "");
    match (acks.pop(), acks.is_empty()) {
        (Some(mut a), true) if !a.reason.is_empty() && !spec.contains('\n') => {
            a.source = AckSource::Caller;
            Ok(a)
        }
        _ => Err(AckSyntax(spec.to_string())),
    }
}

/// Acks in the commits reachable from `head` but not from `base`, newest first.
pub fn acks_from_commits(
    repo_path: &Path,
    base: &str,
    head: &str,
    pin_content: bool,
    opts: &StaticOptions,
) -> Result<Vec<Ack>> {
    let repo = git2::Repository::discover(repo_path)?;
    let head_c = crate::extract::resolve_commit(&repo, head)?;
    let base_c = crate::extract::resolve_commit(&repo, base)?;
    let mut walk = repo.revwalk()?;
    walk.push(head_c.id())?;
    walk.hide(base_c.id())?;
    let mut out = Vec::new();
    for oid in walk {
        let oid = oid?;
        let commit = repo.find_commit(oid)?;
        let mut acks = parse_trailers(commit.message().unwrap_or_default(), &oid.to_string());
        if pin_content
            && !acks.is_empty()
            && let Ok(m) = static_manifest_with(repo_path, &oid.to_string(), opts)
        {
            {
                for a in &mut acks {
                    a.content_hash = m
                        .tables
                        .iter()
                        .find(|t| t.table == a.subject)
                        .map(|t| t.content_hash.clone());
                }
            }
        }
        out.extend(acks);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_trailers() {
        let msg = "Add summary column\n\nBody text.\n\nSchema-Change-Ack: SG002 pages 2->3 adds summaries, rollback plan in T123\nSigned-off-by: X\nSchema-Change-Ack: SG023 en.example.org old->new moving\n";
        let a = parse_trailers(msg, "abc");
        assert_eq!(a.len(), 2);
        assert_eq!(
            (
                a[0].rule.as_str(),
                a[0].subject.as_str(),
                a[0].from.as_str(),
                a[0].to.as_str()
            ),
            ("SG002", "pages", "2", "3")
        );
        assert_eq!(a[0].reason, "adds summaries, rollback plan in T123");
        assert_eq!(a[1].from, "old");
        assert!(parse_trailers("Schema-Change-Ack: pages 2->3", "x").is_empty());
        let a = parse_ack("SG002 title_revisions-ng 2->3 adds a column").unwrap();
        assert_eq!(
            (a.subject.as_str(), a.reason.as_str()),
            ("title_revisions-ng", "adds a column")
        );
        assert_eq!(a.source, AckSource::Caller);
        for bad in [
            "SG002 t 2->3",
            "pages 2->3 r",
            "SG002 t 23 r",
            "",
            "SG002 t 2->3 r\nSG002 u 1->2 r",
        ] {
            assert!(parse_ack(bad).is_err(), "{bad:?}");
        }
    }
}
