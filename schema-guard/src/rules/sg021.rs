//! SG021: a domain added.

use super::{Context, RuleInfo, config_location};
use crate::report::{Finding, Severity};

pub const ID: &str = "SG021";
pub const INFO: RuleInfo = RuleInfo {
    id: ID,
    name: "domain-added",
    summary: "Domain added: its tables are created at start-up",
};

pub fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    for d in ctx
        .head
        .domains
        .iter()
        .filter(|d| !ctx.base.domains.contains(d))
    {
        let mut f = Finding::new(ID, Severity::Flag, true, d);
        f.domains = vec![d.clone()];
        f.storage_groups = ctx
            .head
            .group_of(d)
            .map(str::to_string)
            .into_iter()
            .collect();
        f.from = Some("none".into());
        f.to = f.storage_groups.first().cloned().or(Some("none".into()));
        f.location = config_location(ctx.head);
        let tables: Vec<&str> = ctx
            .head
            .tables
            .iter()
            .filter(|t| &t.domain == d)
            .map(|t| t.table.as_str())
            .collect();
        f.message = format!(
            "domain {d} is added: {} table(s) are created for it at start-up in storage group {}{}",
            tables.len(),
            f.to.as_deref().unwrap_or("none"),
            if tables.is_empty() {
                String::new()
            } else {
                format!(" ({})", tables.join(", "))
            }
        );
        out.push(f);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::report::Backend;

    #[test]
    fn fires_on_added_domains() {
        let r = run("sg020-sg021-domains", Backend::Cassandra, false);
        let subjects: Vec<&str> = rule(&r, super::ID)
            .iter()
            .map(|f| f.subject.as_str())
            .collect();
        assert_eq!(
            subjects,
            ["de.example.org", "fr.example.net"],
            "{:?}",
            r.findings
        );
    }

    #[test]
    fn silent_when_unchanged() {
        silent_on_unchanged(super::ID);
    }
}
