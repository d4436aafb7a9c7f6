//! SG006: attribute or static column added, or TTL changed: applied by the backend, but not
//! rollbackable (see SG002 for the recipe).

use super::{Context, RuleInfo};
use crate::report::{Finding, Severity};

pub const ID: &str = "SG006";
pub const INFO: RuleInfo = RuleInfo {
    id: ID,
    name: "column-added-or-ttl-changed",
    summary: "Attribute or static column added, or default_time_to_live changed (applied; not rollbackable, see SG002)",
};

pub fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    for p in &ctx.pairs {
        let Some((b, h)) = p.both() else { continue };
        let d = &p.delta;
        if h.version <= b.version || d.refused_even_with_bump() {
            continue;
        }
        let mut what = Vec::new();
        if !d.added_attributes.is_empty() {
            what.push(format!(
                "adds column(s) {} (ALTER ADD)",
                d.added_attributes.join(", ")
            ));
        }
        if !d.static_added.is_empty() {
            what.push(format!(
                "makes new column(s) {} static",
                d.static_added.join(", ")
            ));
        }
        if d.ttl_changed {
            what.push("changes default_time_to_live".to_string());
        }
        if what.is_empty() {
            continue;
        }
        let mut f = ctx.table_finding(p, ID, Severity::Flag, true);
        f.message = format!(
            "table {} {} (version {} -> {}): applied at start-up; rolling back needs a new commit (see SG002)",
            p.table,
            what.join(", "),
            b.version,
            h.version
        );
        out.push(f);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::report::Backend;

    #[test]
    fn fires_on_added_column_static_and_ttl() {
        let r = run("sg006-added", Backend::Cassandra, false);
        let f = rule(&r, super::ID);
        let subjects: Vec<&str> = f.iter().map(|f| f.subject.as_str()).collect();
        assert_eq!(subjects, ["pages", "revisions"], "{:?}", r.findings);
        assert!(f[0].message.contains("static"), "{}", f[0].message);
        assert!(
            f[1].message.contains("default_time_to_live"),
            "{}",
            f[1].message
        );
        // Both also carry the SG002 rollback finding.
        assert_eq!(rule(&r, "SG002").len(), 2);
    }

    #[test]
    fn silent_when_unchanged() {
        silent_on_unchanged(super::ID);
    }
}
