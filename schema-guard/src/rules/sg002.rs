//! SG002: content changed with a higher version. It deploys, but cannot be rolled back: the
//! stored schema carries the new version and the previous revision is refused at start-up.
//! The finding carries the rollback recipe.

use super::{Context, RuleInfo};
use crate::report::{Backend, Finding, Severity};

pub const ID: &str = "SG002";
pub const INFO: RuleInfo = RuleInfo {
    id: ID,
    name: "non-rollbackable-schema-change",
    summary: "Table content changed with a higher version: the deploy cannot be rolled back by redeploying the previous revision",
};

fn list(v: &[String]) -> String {
    v.join(", ")
}

pub fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    for p in &ctx.pairs {
        let Some((b, h)) = p.both() else { continue };
        let d = &p.delta;
        if !d.content_changed || h.version <= b.version || d.refused_even_with_bump() {
            continue;
        }
        let mut what = Vec::new();
        if !d.added_attributes.is_empty() {
            what.push(format!("adds {}", list(&d.added_attributes)));
        }
        if !d.removed_attributes.is_empty() {
            what.push(format!("removes {}", list(&d.removed_attributes)));
        }
        if !d.type_changes.is_empty() {
            what.push("changes attribute types".to_string());
        }
        if d.ttl_changed {
            what.push("changes default_time_to_live".to_string());
        }
        if !d.other_options_changed.is_empty() {
            what.push(format!("changes {}", list(&d.other_options_changed)));
        }
        if d.range_reordered {
            what.push("reorders range keys".to_string());
        }
        if what.is_empty() {
            what.push("changes its content".to_string());
        }
        let mut f = ctx.table_finding(p, ID, Severity::Block, true);
        f.message = format!(
            "table {} {} (version {} -> {}): once any host starts this revision the stored schema is at \
             version {}, and redeploying the previous revision is refused at start-up on every host, so \
             this deploy cannot be rolled back; acknowledge it explicitly if that is intended",
            p.table,
            what.join(", "),
            b.version,
            h.version,
            h.version
        );
        let restore = h.version + 1;
        let mut recipe = format!(
            "To roll back, do not redeploy the previous revision: commit a change that restores table {} \
             to its previous content with `version: {restore}` (any version > {}, not {}).",
            p.table, h.version, b.version
        );
        match ctx.opts.backend {
            Backend::Cassandra => {
                if !d.added_attributes.is_empty() {
                    recipe.push_str(&format!(
                        " On Cassandra that restoring commit drops the columns {} (their data is lost).",
                        list(&d.added_attributes)
                    ));
                }
                if !d.removed_attributes.is_empty() {
                    recipe.push_str(&format!(
                        " Columns {} come back empty (this revision dropped their data).",
                        list(&d.removed_attributes)
                    ));
                }
            }
            Backend::Sqlite => {
                if !d.added_attributes.is_empty() {
                    recipe.push_str(&format!(
                        " On SQLite the columns {} stay in the stored table.",
                        list(&d.added_attributes)
                    ));
                }
            }
        }
        recipe.push_str(
            " Emergency only: `skip_resources: true` in the service config skips every schema check and lets \
             old code run against the newer storage.",
        );
        recipe.push_str(&format!(
            " Acknowledge with `--ack 'SG002 {t} {}->{} <reason>'` or the commit trailer \
             `Schema-Change-Ack: {ID} {t} {}->{} <reason>`.",
            b.version,
            h.version,
            b.version,
            h.version,
            t = p.table,
        ));
        f.recipe = Some(recipe);
        out.push(f);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::report::Backend;

    #[test]
    fn fires_with_recipe() {
        let r = run("sg002-content-bump", Backend::Cassandra, false);
        let f = rule(&r, super::ID);
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        assert!(f[0].acknowledgeable);
        assert_eq!(
            (f[0].from.as_deref(), f[0].to.as_deref()),
            (Some("2"), Some("3"))
        );
        let recipe = f[0].recipe.as_deref().unwrap();
        assert!(recipe.contains("table pages"), "{recipe}");
        assert!(recipe.contains("`version: 4`"), "{recipe}");
        assert!(recipe.contains("drops the columns summary"), "{recipe}");
        assert!(
            recipe.contains("Schema-Change-Ack: SG002 pages 2->3"),
            "{recipe}"
        );
        assert!(r.is_blocking());
        let r = run("sg002-content-bump", Backend::Sqlite, false);
        let recipe = rule(&r, super::ID)[0].recipe.clone().unwrap();
        assert!(recipe.contains("columns summary stay"), "{recipe}");
    }

    #[test]
    fn silent_when_unchanged() {
        silent_on_unchanged(super::ID);
    }
}
