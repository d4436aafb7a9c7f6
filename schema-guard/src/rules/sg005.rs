//! SG005: a non-key attribute removed. Cassandra drops the column and its data; SQLite keeps it.

use super::{Context, RuleInfo};
use crate::report::{Backend, Finding, Severity};

pub const ID: &str = "SG005";
pub const INFO: RuleInfo = RuleInfo {
    id: ID,
    name: "column-removed",
    summary: "Non-key attribute removed: Cassandra drops the column and its data (blocks with --strict)",
};

pub fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    for p in &ctx.pairs {
        let Some((b, h)) = p.both() else { continue };
        let d = &p.delta;
        if d.removed_attributes.is_empty() || h.version <= b.version || d.refused_even_with_bump() {
            continue;
        }
        let cols = d.removed_attributes.join(", ");
        let (severity, message) = match ctx.opts.backend {
            Backend::Cassandra => (
                if ctx.opts.strict {
                    Severity::Block
                } else {
                    Severity::Flag
                },
                format!(
                    "table {}: column(s) {cols} removed (version {} -> {}): Cassandra runs ALTER DROP at start-up \
                     and their data is lost for good, also for a later rollback; export the data first, or keep \
                     the column(s) unused",
                    p.table, b.version, h.version
                ),
            ),
            Backend::Sqlite => (
                Severity::Info,
                format!(
                    "table {}: column(s) {cols} removed (version {} -> {}): SQLite keeps them in the stored table \
                     (Cassandra would drop their data)",
                    p.table, b.version, h.version
                ),
            ),
        };
        let mut f = ctx.table_finding(p, ID, severity, true);
        f.message = message;
        out.push(f);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::report::{Backend, Severity};

    #[test]
    fn fires_flag_block_with_strict_info_on_sqlite() {
        let r = run("sg005-column-removed", Backend::Cassandra, false);
        let f = rule(&r, super::ID);
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        assert_eq!(f[0].severity, Severity::Flag);
        assert!(f[0].message.contains("legacy"), "{}", f[0].message);
        let r = run("sg005-column-removed", Backend::Cassandra, true);
        assert_eq!(rule(&r, super::ID)[0].severity, Severity::Block);
        let r = run("sg005-column-removed", Backend::Sqlite, true);
        assert_eq!(rule(&r, super::ID)[0].severity, Severity::Info);
    }

    #[test]
    fn silent_when_unchanged() {
        silent_on_unchanged(super::ID);
    }
}
