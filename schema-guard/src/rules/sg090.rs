//! SG090: a schema value the static extractor could not resolve (new in head).

use super::{Context, RuleInfo};
use crate::report::{Finding, Severity};

pub const ID: &str = "SG090";
pub const INFO: RuleInfo = RuleInfo {
    id: ID,
    name: "unresolved-schema-value",
    summary: "A schema value could not be resolved statically",
};

pub fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    for u in &ctx.head.unresolved {
        let known = ctx
            .base
            .unresolved
            .iter()
            .any(|b| b.location.path == u.location.path && b.what == u.what);
        if known {
            continue;
        }
        let mut f = Finding::new(ID, Severity::Info, false, &u.location.path);
        f.location = Some(u.location.clone());
        f.message = format!(
            "could not resolve {} statically; this schema is not checked: run with --extractor capture",
            u.what
        );
        out.push(f);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::report::Backend;

    #[test]
    fn fires_on_new_unresolved_value() {
        let r = run("sg090-unresolved", Backend::Cassandra, false);
        let f = rule(&r, super::ID);
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        let loc = f[0].location.clone().unwrap();
        assert_eq!(loc.path, "sys/dynamic.js");
        assert!(loc.line.is_some());
    }

    #[test]
    fn silent_when_unchanged() {
        silent_on_unchanged(super::ID);
    }
}
