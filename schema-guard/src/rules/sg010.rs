//! SG010: a new table. Created at start-up; a rollback leaves it in place, unused.

use super::{Context, RuleInfo};
use crate::report::{Finding, Severity};

pub const ID: &str = "SG010";
pub const INFO: RuleInfo = RuleInfo {
    id: ID,
    name: "new-table",
    summary: "New table created at start-up",
};

pub fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    for p in &ctx.pairs {
        let Some(h) = p.head else { continue };
        if p.base.is_some() || p.renamed_from.is_some() {
            continue;
        }
        // Tables of a newly added domain are reported once, by SG021.
        if !ctx.base.domains.is_empty() && !ctx.base.domains.iter().any(|d| d == p.domain) {
            continue;
        }
        let mut f = ctx.table_finding(p, ID, Severity::Flag, true);
        f.from = Some("none".into());
        f.message = format!(
            "new table {} (version {}) is created at start-up; a rollback leaves it in place, unused; check \
             its storage group and replication before the first deploy",
            p.table, h.version
        );
        out.push(f);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::report::Backend;

    #[test]
    fn fires_on_new_table() {
        let r = run("sg010-sg011-tables", Backend::Cassandra, false);
        let f = rule(&r, super::ID);
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        assert_eq!(f[0].subject, "summaries");
        assert_eq!(f[0].storage_groups, ["default"]);
    }

    #[test]
    fn silent_when_unchanged() {
        silent_on_unchanged(super::ID);
    }
}
