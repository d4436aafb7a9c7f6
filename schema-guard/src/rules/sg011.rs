//! SG011: a table no longer requested. The backend keeps it and its data.

use super::{Context, RuleInfo};
use crate::report::{Finding, Severity};

pub const ID: &str = "SG011";
pub const INFO: RuleInfo = RuleInfo {
    id: ID,
    name: "table-no-longer-requested",
    summary: "Table no longer requested (its data is kept)",
};

pub fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    for p in &ctx.pairs {
        if p.head.is_some() || p.renamed_to.is_some() {
            continue;
        }
        let mut f = ctx.table_finding(p, ID, Severity::Info, false);
        f.to = Some("none".into());
        f.message = format!(
            "table {} is no longer requested; the backend keeps the table and its data (drop it by hand once \
             no revision that uses it can be deployed again)",
            p.table
        );
        out.push(f);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::report::Backend;

    #[test]
    fn fires_on_removed_table() {
        let r = run("sg010-sg011-tables", Backend::Cassandra, false);
        let f = rule(&r, super::ID);
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        assert_eq!(f[0].subject, "legacy_pages");
    }

    #[test]
    fn silent_when_unchanged() {
        silent_on_unchanged(super::ID);
    }
}
