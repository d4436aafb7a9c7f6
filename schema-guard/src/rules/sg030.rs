//! SG030: the storage module config version lowered. The backend refuses to downgrade.

use super::{Context, RuleInfo, config_location};
use crate::report::{Finding, Severity};

pub const ID: &str = "SG030";
pub const INFO: RuleInfo = RuleInfo {
    id: ID,
    name: "storage-config-version-lowered",
    summary: "Storage module config version lowered: the backend refuses to start",
};

pub fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    let (Some(b), Some(h)) = (ctx.base.storage_version, ctx.head.storage_version) else {
        return;
    };
    if h >= b {
        return;
    }
    let mut f = Finding::new(ID, Severity::Block, false, "storage");
    f.from = Some(b.to_string());
    f.to = Some(h.to_string());
    f.location = config_location(ctx.head);
    f.message = format!(
        "the storage module config version goes down from {b} to {h}: the backend refuses it (\"Unable to \
         downgrade storage module configuration to version {h}\") and start-up fails; keep version {b} or higher"
    );
    out.push(f);
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::report::Backend;

    #[test]
    fn fires_on_lowered_version() {
        let r = run("sg030-sg031-storage-config", Backend::Cassandra, false);
        let f = rule(&r, super::ID);
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        assert!(f[0].message.contains("version 1"), "{}", f[0].message);
        assert!(!f[0].acknowledgeable);
    }

    #[test]
    fn silent_when_unchanged() {
        silent_on_unchanged(super::ID);
    }
}
