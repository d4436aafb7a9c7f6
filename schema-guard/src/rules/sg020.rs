//! SG020: a domain matching no storage group. Start-up aborts.

use super::{Context, RuleInfo, config_location};
use crate::report::{Backend, Finding, Severity};

pub const ID: &str = "SG020";
pub const INFO: RuleInfo = RuleInfo {
    id: ID,
    name: "domain-without-storage-group",
    summary: "Domain matching no storage group: start-up aborts",
};

pub fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    if ctx.head.storage_groups.is_none() {
        return;
    }
    for d in &ctx.head.domains {
        if ctx.head.group_of(d).is_some() {
            continue;
        }
        let msg = match ctx.opts.backend {
            Backend::Cassandra => format!("No storage group found for {d}"),
            Backend::Sqlite => format!("No storage group configured for {d}"),
        };
        let mut f = Finding::new(ID, Severity::Block, false, d);
        f.domains = vec![d.clone()];
        f.location = config_location(ctx.head);
        f.message = format!(
            "domain {d} matches no storage group: start-up aborts on every host (\"{msg}\"); add it (or a \
             matching /regex/) to a storage group's domains"
        );
        out.push(f);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::report::Backend;

    #[test]
    fn fires_on_unmapped_domain() {
        let r = run("sg020-sg021-domains", Backend::Cassandra, false);
        let f = rule(&r, super::ID);
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        assert_eq!(f[0].subject, "fr.example.net");
        assert!(f[0].message.contains("No storage group found"));
        let r = run("sg020-sg021-domains", Backend::Sqlite, false);
        assert!(
            rule(&r, super::ID)[0]
                .message
                .contains("No storage group configured")
        );
    }

    #[test]
    fn silent_when_unchanged() {
        silent_on_unchanged(super::ID);
    }
}
