//! SG023: a storage group renamed, or a domain moved to another group. On Cassandra the
//! service then reads new, empty keyspaces and the old data is orphaned.

use super::{Context, RuleInfo, config_location};
use crate::report::{Finding, Severity};

pub const ID: &str = "SG023";
pub const INFO: RuleInfo = RuleInfo {
    id: ID,
    name: "domain-changes-storage-group",
    summary: "Storage group renamed, or domain moved to another group: new empty keyspaces, old data orphaned",
};

pub fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    for d in ctx
        .head
        .domains
        .iter()
        .filter(|d| ctx.base.domains.contains(d))
    {
        let (Some(from), Some(to)) = (ctx.base.group_of(d), ctx.head.group_of(d)) else {
            continue;
        };
        if from == to {
            continue;
        }
        let renamed = ctx
            .head
            .storage_groups
            .iter()
            .flatten()
            .all(|g| g.name != from);
        let mut f = Finding::new(ID, Severity::Block, true, d);
        f.domains = vec![d.clone()];
        f.storage_groups = vec![from.to_string(), to.to_string()];
        f.from = Some(from.to_string());
        f.to = Some(to.to_string());
        f.location = config_location(ctx.head);
        let how = if renamed {
            format!("storage group {from} is renamed to {to}")
        } else {
            format!("domain {d} moves from storage group {from} to {to}")
        };
        f.message = format!(
            "{how}: the backend keeps one keyspace per (group, table), so {d} is served from new, empty \
             tables and its data under {from} is orphaned (a rollback finds it again); migrate the data \
             first or keep the mapping"
        );
        out.push(f);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::report::Backend;

    #[test]
    fn fires_on_group_rename() {
        let r = run("sg023-group-renamed", Backend::Cassandra, false);
        let f = rule(&r, super::ID);
        assert_eq!(f.len(), 2, "{:?}", r.findings);
        assert!(
            f.iter()
                .all(|f| f.acknowledgeable && f.message.contains("renamed"))
        );
        assert!(rule(&r, "SG022").is_empty(), "{:?}", r.findings);
        assert!(r.is_blocking());
    }

    #[test]
    fn silent_when_unchanged() {
        silent_on_unchanged(super::ID);
    }
}
