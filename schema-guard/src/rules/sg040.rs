//! SG040: `skip_resources` or `skip_schema_update` set: schema checks are skipped at start-up.

use super::{Context, RuleInfo, config_location};
use crate::report::{Finding, Severity};

pub const ID: &str = "SG040";
pub const INFO: RuleInfo = RuleInfo {
    id: ID,
    name: "schema-checks-skipped",
    summary: "skip_resources or skip_schema_update set: schema checks are skipped",
};

pub fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    for flag in &ctx.head.skip_flags {
        let mut f = Finding::new(ID, Severity::Info, false, flag);
        f.location = config_location(ctx.head);
        f.message = format!(
            "`{flag}` is set: the service skips its schema checks and runs against whatever is stored; \
             schema changes of this revision are not applied"
        );
        out.push(f);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::report::Backend;

    #[test]
    fn fires_when_set() {
        let r = run("sg040-skip-resources", Backend::Cassandra, false);
        let f = rule(&r, super::ID);
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        assert_eq!(f[0].subject, "skip_resources");
    }

    #[test]
    fn silent_when_unchanged() {
        silent_on_unchanged(super::ID);
    }
}
