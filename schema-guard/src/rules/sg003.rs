//! SG003: a change the backend refuses even with a version bump: hash/range/proj index changes,
//! a static index on an existing column, a key attribute removed, a table renamed.

use super::{Context, RuleInfo};
use crate::report::{Finding, Severity};

pub const ID: &str = "SG003";
pub const INFO: RuleInfo = RuleInfo {
    id: ID,
    name: "unsupported-schema-migration",
    summary: "Change refused by the backend even with a version bump (key index change, static index on an existing column, key attribute removed, table rename)",
};

pub fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    for p in &ctx.pairs {
        if let (Some(from), Some(_)) = (p.renamed_from, p.head) {
            let mut f = ctx.table_finding(p, ID, Severity::Block, false);
            f.from = Some(from.to_string());
            f.to = Some(p.table.to_string());
            f.message = format!(
                "table {from} is renamed to {}: the backend does not migrate tables (\"table migrations are \
                 unsupported\"); the new name gets a new empty table and the data of {from} is orphaned. \
                 Keep the old name, or create the new table alongside and migrate the data explicitly",
                p.table
            );
            out.push(f);
            continue;
        }
        let Some((_, h)) = p.both() else { continue };
        let d = &p.delta;
        if !d.content_changed || !d.refused_even_with_bump() {
            continue;
        }
        let mut why = Vec::new();
        let mut refusal = "Only static index additions and removals supported";
        if d.key_index_changed {
            why.push(
                "its hash/range/proj index changes (a key added, removed, or changing or gaining a direction)"
                    .to_string(),
            );
        }
        if !d.removed_key_attributes.is_empty() {
            why.push(format!(
                "key attribute(s) {} are removed",
                d.removed_key_attributes.join(", ")
            ));
        }
        if !d.static_on_existing.is_empty() {
            why.push(format!(
                "a static index is added or removed on existing column(s) {}",
                d.static_on_existing.join(", ")
            ));
            if !d.key_index_changed {
                refusal = "Changing index on existing column not supported";
            }
        }
        let mut f = ctx.table_finding(p, ID, Severity::Block, false);
        f.message = format!(
            "table {}: {}; the backend refuses this even with a version bump (\"{refusal}\"): start-up fails \
             with HTTP 400 \"The table already exists, and it cannot be upgraded to the requested schema\" \
             on every host (version {}). Create a new table under a new name and migrate the data instead",
            p.table,
            why.join("; "),
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
    fn fires_on_index_change_static_on_existing_and_rename() {
        let r = run("sg003-refused", Backend::Cassandra, false);
        let f = rule(&r, super::ID);
        let subjects: Vec<&str> = f.iter().map(|f| f.subject.as_str()).collect();
        assert!(subjects.contains(&"pages"), "{:?}", r.findings);
        assert!(subjects.contains(&"revisions"), "{:?}", r.findings);
        assert!(subjects.contains(&"titles_v2"), "{:?}", r.findings);
        assert!(f.iter().all(|f| !f.acknowledgeable));
        let rev = f.iter().find(|f| f.subject == "revisions").unwrap();
        assert!(
            rev.message.contains("Changing index on existing column"),
            "{}",
            rev.message
        );
        // Refused: no rollback finding and no "new table"/"removed table" noise for the rename.
        assert!(rule(&r, "SG002").is_empty());
        assert!(rule(&r, "SG010").is_empty() && rule(&r, "SG011").is_empty());
        assert!(r.is_blocking());
    }

    #[test]
    fn silent_when_unchanged() {
        silent_on_unchanged(super::ID);
    }
}
