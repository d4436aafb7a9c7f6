//! SG004: a change the backend silently does not apply (attribute type change, range-key
//! reorder (keys changing places; a key changing direction is refused, SG003), options other
//! than `default_time_to_live`): the stored schema diverges.

use super::{Context, RuleInfo};
use crate::report::{Backend, Finding, Severity};

pub const ID: &str = "SG004";
pub const INFO: RuleInfo = RuleInfo {
    id: ID,
    name: "schema-change-not-applied",
    summary: "Change the backend silently does not apply (type change, range-key reorder, options other than TTL)",
};

pub fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    for p in &ctx.pairs {
        let Some((b, h)) = p.both() else { continue };
        let d = &p.delta;
        if !d.content_changed
            || h.version <= b.version
            || d.refused_even_with_bump()
            || !d.silently_ignored()
        {
            continue;
        }
        let mut what = Vec::new();
        for (a, from, to) in &d.type_changes {
            what.push(format!("attribute {a} changes type {from} -> {to}"));
        }
        if d.range_reordered {
            what.push("keys change places (the backend keeps them where they were)".to_string());
        }
        if !d.other_options_changed.is_empty() {
            let tail = if ctx.opts.backend == Backend::Cassandra {
                " (Cassandra fails to apply option changes other than default_time_to_live)"
            } else {
                ""
            };
            what.push(format!(
                "{} change{tail}",
                d.other_options_changed.join(", ")
            ));
        }
        let mut f = ctx.table_finding(p, ID, Severity::Block, true);
        f.message = format!(
            "table {}: {}; the backend records version {} but does not apply this, so the stored table no \
             longer matches the schema the code expects. Create a new table for the new layout, or \
             acknowledge that the divergence is harmless",
            p.table,
            what.join("; "),
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
    fn fires_on_type_change_reorder_and_options() {
        let r = run("sg004-not-applied", Backend::Cassandra, false);
        let f = rule(&r, super::ID);
        let subjects: Vec<&str> = f.iter().map(|f| f.subject.as_str()).collect();
        assert_eq!(subjects, ["pages", "revisions"], "{:?}", r.findings);
        assert!(
            f[0].message.contains("changes type string -> json"),
            "{}",
            f[0].message
        );
        assert!(f[1].message.contains("compression"), "{}", f[1].message);
        assert!(f.iter().all(|f| f.acknowledgeable));
    }

    #[test]
    fn silent_when_unchanged() {
        silent_on_unchanged(super::ID);
    }
}
