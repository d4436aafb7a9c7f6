//! SG031: datacenters / replication settings changed.

use super::{Context, RuleInfo, config_location};
use crate::report::{Finding, Severity};

pub const ID: &str = "SG031";
pub const INFO: RuleInfo = RuleInfo {
    id: ID,
    name: "replication-changed",
    summary: "Datacenters or replication settings changed",
};

pub fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    if ctx.base.replication == ctx.head.replication {
        return;
    }
    let show = |v: &Option<serde_json::Value>| {
        v.as_ref()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "none".into())
    };
    let mut f = Finding::new(ID, Severity::Flag, true, "replication");
    f.from = Some(show(&ctx.base.replication));
    f.to = Some(show(&ctx.head.replication));
    f.location = config_location(ctx.head);
    f.message = format!(
        "storage replication changes from {} to {}: keyspaces are altered at start-up and need a repair; \
         coordinate with the storage operators",
        f.from.as_deref().unwrap_or_default(),
        f.to.as_deref().unwrap_or_default()
    );
    out.push(f);
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::report::Backend;

    #[test]
    fn fires_on_datacenter_change() {
        let r = run("sg030-sg031-storage-config", Backend::Cassandra, false);
        let f = rule(&r, super::ID);
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        assert!(f[0].message.contains("codfw"), "{}", f[0].message);
    }

    #[test]
    fn silent_when_unchanged() {
        silent_on_unchanged(super::ID);
    }
}
