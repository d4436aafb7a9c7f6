//! SG007: version-only change (same content). Cassandra accepts either direction silently;
//! SQLite refuses a lower version, so on SQLite a bump cannot be rolled back and a lowering
//! fails the deploy.

use super::{Context, RuleInfo};
use crate::report::{Backend, Finding, Severity};

pub const ID: &str = "SG007";
pub const INFO: RuleInfo = RuleInfo {
    id: ID,
    name: "version-only-change",
    summary: "Version changed with the same content (info; flag for SQLite, block there when lowered)",
};

pub fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    for p in &ctx.pairs {
        let Some((b, h)) = p.both() else { continue };
        if p.delta.content_changed || b.version == h.version {
            continue;
        }
        let lowered = h.version < b.version;
        let (severity, ackable, message) = match (ctx.opts.backend, lowered) {
            (Backend::Cassandra, _) => (
                Severity::Info,
                true,
                format!(
                    "table {}: only the version changes ({} -> {}); Cassandra accepts this and a rollback",
                    p.table, b.version, h.version
                ),
            ),
            (Backend::Sqlite, false) => (
                Severity::Flag,
                true,
                format!(
                    "table {}: only the version changes ({} -> {}); SQLite stores version {} and refuses the \
                     previous revision's lower version, so this cannot be rolled back by redeploying",
                    p.table, b.version, h.version, h.version
                ),
            ),
            (Backend::Sqlite, true) => (
                Severity::Block,
                false,
                format!(
                    "table {}: the version is lowered ({} -> {}); SQLite refuses it (\"new version must be higher \
                     than previous\") and start-up fails; keep version {}",
                    p.table, b.version, h.version, b.version
                ),
            ),
        };
        let mut f = ctx.table_finding(p, ID, severity, ackable);
        f.message = message;
        out.push(f);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::report::{Backend, Severity};

    #[test]
    fn info_on_cassandra_flag_or_block_on_sqlite() {
        let r = run("sg007-version-only", Backend::Cassandra, false);
        let f = rule(&r, super::ID);
        assert_eq!(f.len(), 2, "{:?}", r.findings);
        assert!(f.iter().all(|f| f.severity == Severity::Info));
        assert!(!r.is_blocking());
        assert!(r.rollback_safe());
        let r = run("sg007-version-only", Backend::Sqlite, false);
        let f = rule(&r, super::ID);
        let bumped = f.iter().find(|f| f.subject == "pages").unwrap();
        let lowered = f.iter().find(|f| f.subject == "revisions").unwrap();
        assert_eq!(bumped.severity, Severity::Flag);
        assert_eq!(lowered.severity, Severity::Block);
        assert!(r.is_blocking());
        assert!(!r.rollback_safe());
    }

    #[test]
    fn silent_when_unchanged() {
        silent_on_unchanged(super::ID);
    }
}
