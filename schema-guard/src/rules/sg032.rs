//! SG032: table backend module downgraded (block) or changed version (flag).

use std::cmp::Ordering;

use super::{Context, RuleInfo};
use crate::manifest::Location;
use crate::report::{Finding, Severity};

pub const ID: &str = "SG032";
pub const INFO: RuleInfo = RuleInfo {
    id: ID,
    name: "backend-module-version",
    summary: "Table backend module downgraded (block) or changed version (flag)",
};

/// Compares dotted versions numerically (`1.10.0` > `1.9.2`); pre-release tags sort before.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let parts = |s: &str| -> (Vec<u64>, bool) {
        let s = s.trim_start_matches(['v', '=', '^', '~']);
        let (core, pre) = match s.split_once('-') {
            Some((c, _)) => (c, true),
            None => (s, false),
        };
        (
            core.split('.').map(|p| p.parse().unwrap_or(0)).collect(),
            pre,
        )
    };
    let ((av, ap), (bv, bp)) = (parts(a), parts(b));
    av.cmp(&bv).then(bp.cmp(&ap))
}

pub fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    let loc = Some(Location {
        path: "package.json".into(),
        line: None,
    });
    for (name, to) in &ctx.head.backend_modules {
        let Some(from) = ctx.base.backend_modules.get(name) else {
            continue;
        };
        let (severity, what) = match compare_versions(to, from) {
            Ordering::Equal => continue,
            Ordering::Less => (
                Severity::Block,
                "is downgraded: stored schemas and config written by the newer module may be refused or misread; \
                 upgrade instead, or acknowledge after checking its changelog",
            ),
            Ordering::Greater => (
                Severity::Flag,
                "changes version: check its changelog for schema migration changes; a rollback runs the old module \
                 against what the new one wrote",
            ),
        };
        let mut f = Finding::new(ID, severity, true, name);
        f.from = Some(from.clone());
        f.to = Some(to.clone());
        f.location = loc.clone();
        f.message = format!("table backend module {name} {from} -> {to} {what}");
        out.push(f);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::compare_versions;
    use crate::report::{Backend, Severity};
    use std::cmp::Ordering;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("1.10.0", "1.9.2"), Ordering::Greater);
        assert_eq!(compare_versions("1.2.1", "1.2.1"), Ordering::Equal);
        assert_eq!(compare_versions("1.2.0-beta", "1.2.0"), Ordering::Less);
    }

    #[test]
    fn fires_on_downgrade_and_upgrade() {
        let r = run("sg032-backend-module", Backend::Cassandra, false);
        let f = rule(&r, super::ID);
        let cass = f
            .iter()
            .find(|f| f.subject == "restbase-mod-table-cassandra")
            .unwrap();
        let sqlite = f
            .iter()
            .find(|f| f.subject == "restbase-mod-table-sqlite")
            .unwrap();
        assert_eq!(cass.severity, Severity::Block);
        assert_eq!(sqlite.severity, Severity::Flag);
    }

    #[test]
    fn silent_when_unchanged() {
        silent_on_unchanged(super::ID);
    }
}
