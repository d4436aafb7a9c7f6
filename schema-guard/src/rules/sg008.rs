//! SG008: the head schema is invalid for the table-spec validator (unknown attribute type, no
//! hash key, static without range key, index on an undeclared attribute): start-up fails.
//! (An addition to the rule table: same stable-id scheme.)

use super::{Context, RuleInfo};
use crate::report::{Finding, Severity};

pub const ID: &str = "SG008";
pub const INFO: RuleInfo = RuleInfo {
    id: ID,
    name: "invalid-table-schema",
    summary: "Schema the table-spec validator refuses (attribute types, hash key, static without range key)",
};

pub fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    for p in &ctx.pairs {
        let Some(h) = p.head else { continue };
        if h.problems.is_empty() {
            continue;
        }
        // A schema that was already deployed unchanged is evidently accepted.
        if p.base
            .is_some_and(|b| b.content_hash == h.content_hash && b.version == h.version)
        {
            continue;
        }
        let mut f = ctx.table_finding(p, ID, Severity::Block, false);
        f.message = format!(
            "table {}: the table-spec validator refuses this schema ({}); start-up fails on every host. Fix the schema",
            p.table,
            h.problems.join("; ")
        );
        out.push(f);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::report::Backend;

    #[test]
    fn fires_on_invalid_type() {
        let r = run("sg008-invalid", Backend::Cassandra, false);
        let f = rule(&r, super::ID);
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        assert!(f[0].message.contains("invalid type"), "{}", f[0].message);
        assert!(r.is_blocking());
    }

    #[test]
    fn silent_when_unchanged() {
        silent_on_unchanged(super::ID);
    }
}
