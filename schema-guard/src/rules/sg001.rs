//! SG001: content changed, version not higher. The deploy itself fails at start-up.

use super::{Context, RuleInfo};
use crate::report::{Backend, Finding, Severity};

pub const ID: &str = "SG001";
pub const INFO: RuleInfo = RuleInfo {
    id: ID,
    name: "schema-change-without-version-bump",
    summary: "Table content changed but its version is not higher: the backend refuses it and start-up fails",
};

pub fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    for p in &ctx.pairs {
        let Some((b, h)) = p.both() else { continue };
        if !p.delta.content_changed || h.version > b.version {
            continue;
        }
        let refusal = match ctx.opts.backend {
            Backend::Cassandra => "Schema change, but no version increment.",
            Backend::Sqlite => "new version must be higher than previous",
        };
        let mut f = ctx.table_finding(p, ID, Severity::Block, false);
        f.message = format!(
            "table {} changes its schema but its version stays at {} (base {}): the {} backend refuses it \
             (\"{refusal}\"), start-up fails on every host and the deploy cannot proceed; set `version: {}` \
             or higher in the schema",
            p.table,
            h.version,
            b.version,
            ctx.opts.backend.as_str(),
            b.version.max(h.version) + 1
        );
        out.push(f);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::report::Backend;

    #[test]
    fn fires_on_content_change_without_bump() {
        for backend in [Backend::Cassandra, Backend::Sqlite] {
            let r = run("sg001-no-bump", backend, false);
            let f = rule(&r, super::ID);
            assert_eq!(f.len(), 1, "{:?}", r.findings);
            assert_eq!(f[0].subject, "pages");
            assert!(!f[0].acknowledgeable);
            assert!(f[0].message.contains("version: 3"), "{}", f[0].message);
            assert!(r.is_blocking());
            assert!(
                r.tables
                    .iter()
                    .any(|t| t.table == "pages" && t.deploy_fails)
            );
        }
        let r = run("sg001-no-bump", Backend::Sqlite, false);
        assert!(
            rule(&r, super::ID)[0]
                .message
                .contains("new version must be higher")
        );
    }

    #[test]
    fn silent_when_unchanged() {
        silent_on_unchanged(super::ID);
    }
}
