//! SG022: a storage group added (unless it replaces a renamed group: that is SG023).

use super::{Context, RuleInfo, config_location};
use crate::report::{Finding, Severity};

pub const ID: &str = "SG022";
pub const INFO: RuleInfo = RuleInfo {
    id: ID,
    name: "storage-group-added",
    summary: "Storage group added",
};

pub fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    let Some(head) = &ctx.head.storage_groups else {
        return;
    };
    let base: Vec<&str> = ctx
        .base
        .storage_groups
        .iter()
        .flatten()
        .map(|g| g.name.as_str())
        .collect();
    for g in head.iter().filter(|g| !base.contains(&g.name.as_str())) {
        // Domains that moved here from another group: a rename or re-mapping, reported by SG023.
        let took_over = ctx.base.domains.iter().any(|d| {
            ctx.head.group_of(d) == Some(g.name.as_str()) && ctx.base.group_of(d).is_some()
        });
        if took_over {
            continue;
        }
        let mut f = Finding::new(ID, Severity::Flag, true, &g.name);
        f.storage_groups = vec![g.name.clone()];
        f.from = Some("none".into());
        f.to = Some(g.name.clone());
        f.location = config_location(ctx.head);
        f.message = format!(
            "storage group {} is added (domains {}): its tables get new keyspaces; check replication",
            g.name,
            g.domains.join(", ")
        );
        out.push(f);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::report::Backend;

    #[test]
    fn fires_on_added_group() {
        let r = run("sg022-group-added", Backend::Cassandra, false);
        let f = rule(&r, super::ID);
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        assert_eq!(f[0].subject, "archive");
    }

    #[test]
    fn silent_when_unchanged() {
        silent_on_unchanged(super::ID);
    }
}
