//! SG090: something the static extractor could not resolve. It blocks unless acknowledged:
//! the check cannot tell what the deploy does to that storage. An unresolved value that is
//! the same in base, with the same inputs (its file and the service config unchanged), is
//! reported as info: base was deployed with it and nothing it depends on changed.

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
        let before = ctx
            .base
            .unresolved
            .iter()
            .find(|b| b.location.path == u.location.path && b.what == u.what);
        let unchanged = before.is_some_and(|b| b.inputs.is_some() && b.inputs == u.inputs);
        let severity = if unchanged {
            Severity::Info
        } else {
            Severity::Block
        };
        let mut f = Finding::new(ID, severity, !unchanged, &u.location.path);
        f.location = Some(u.location.clone());
        f.from = Some(
            before
                .and_then(|b| b.inputs.clone())
                .unwrap_or_else(|| "new".into()),
        );
        f.to = Some(u.inputs.clone().unwrap_or_else(|| "unknown".into()));
        f.message = if unchanged {
            format!(
                "could not resolve {} statically (unchanged since base)",
                u.what
            )
        } else {
            format!(
                "could not resolve {} statically, so what this deploy does to that storage is not checked; \
                 run with --extractor capture, or acknowledge after reviewing it",
                u.what
            )
        };
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
        assert_eq!(f[0].severity, crate::report::Severity::Block);
        assert!(f[0].acknowledgeable);
        assert_eq!(f[0].from.as_deref(), Some("new"));
        assert!(r.is_blocking());
    }

    #[test]
    fn silent_when_unchanged() {
        silent_on_unchanged(super::ID);
    }
}
