//! The rules (SG001...SG090): the comparison of two storage manifests, one module per rule.
//!
//! [`diff`] pairs the tables of base and head by (table, domain), computes the structural
//! delta of each changed schema once ([`SchemaDelta`]), runs every rule, merges findings that
//! differ only by domain, applies acknowledgements and builds the per-table summary.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::manifest::{Location, StorageManifest, TableEntry, content_hash};
use crate::report::{Ack, Backend, ChangeKind, Finding, Report, TableChange};

pub mod sg001;
pub mod sg002;
pub mod sg003;
pub mod sg004;
pub mod sg005;
pub mod sg006;
pub mod sg007;
pub mod sg008;
pub mod sg010;
pub mod sg011;
pub mod sg020;
pub mod sg021;
pub mod sg022;
pub mod sg023;
pub mod sg030;
pub mod sg031;
pub mod sg032;
pub mod sg040;
pub mod sg090;

/// How to compare.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The table backend whose behaviour applies.
    pub backend: Backend,
    /// `--strict`: data-loss flags (SG005) block.
    pub strict: bool,
    /// Acknowledgements to apply.
    pub acks: Vec<Ack>,
    /// Labels for the report (e.g. the base and head revisions).
    pub base_label: Option<String>,
    pub head_label: Option<String>,
}

/// A rule's static description (for SARIF rule metadata and docs).
#[derive(Clone, Copy, Debug)]
pub struct RuleInfo {
    pub id: &'static str,
    pub name: &'static str,
    pub summary: &'static str,
}

/// Every rule, in id order.
pub const RULES: &[RuleInfo] = &[
    sg001::INFO,
    sg002::INFO,
    sg003::INFO,
    sg004::INFO,
    sg005::INFO,
    sg006::INFO,
    sg007::INFO,
    sg008::INFO,
    sg010::INFO,
    sg011::INFO,
    sg020::INFO,
    sg021::INFO,
    sg022::INFO,
    sg023::INFO,
    sg030::INFO,
    sg031::INFO,
    sg032::INFO,
    sg040::INFO,
    sg090::INFO,
];

/// Structural difference of two normalised schemas of the same table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SchemaDelta {
    pub content_changed: bool,
    pub added_attributes: Vec<String>,
    /// Removed attributes that were not part of the hash/range/proj index.
    pub removed_attributes: Vec<String>,
    /// Removed attributes that were hash/range/proj keys.
    pub removed_key_attributes: Vec<String>,
    /// (attribute, base type, head type).
    pub type_changes: Vec<(String, String, String)>,
    /// hash/range/proj keys differ as a set of (attribute, type, order): the backends match
    /// index entries so, so a key that changes or gains a direction is a key change.
    pub key_index_changed: bool,
    /// The same keys in other places (the backends accept it and do not apply it).
    pub range_reordered: bool,
    /// Static index added or removed on a column present in both.
    pub static_on_existing: Vec<String>,
    /// Static columns added together with their column.
    pub static_added: Vec<String>,
    pub ttl_changed: bool,
    /// Option keys other than `default_time_to_live` that changed.
    pub other_options_changed: Vec<String>,
}

impl SchemaDelta {
    /// Whether the backend refuses the change even with a higher version.
    pub fn refused_even_with_bump(&self) -> bool {
        self.key_index_changed
            || !self.static_on_existing.is_empty()
            || !self.removed_key_attributes.is_empty()
    }

    /// Whether part of the change is silently not applied.
    pub fn silently_ignored(&self) -> bool {
        !self.type_changes.is_empty()
            || self.range_reordered
            || !self.other_options_changed.is_empty()
    }
}

fn attrs(s: &Value) -> BTreeMap<String, String> {
    s.get("attributes")
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn index(s: &Value) -> Vec<(String, String, String)> {
    s.get("index")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| {
                    let g = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                    (g("attribute"), g("type"), g("order"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Computes the delta between a base and a head schema (both normalised).
pub fn schema_delta(base: &Value, head: &Value) -> SchemaDelta {
    let mut d = SchemaDelta {
        content_changed: content_hash(base) != content_hash(head),
        ..SchemaDelta::default()
    };
    if !d.content_changed {
        return d;
    }
    let (ba, ha) = (attrs(base), attrs(head));
    let (bi, hi) = (index(base), index(head));
    let keyed = |i: &[(String, String, String)]| -> Vec<(String, String, String)> {
        i.iter()
            .filter(|(_, t, _)| t != "static")
            .cloned()
            .collect()
    };
    let keys = |i: &[(String, String, String)]| -> BTreeSet<(String, String, String)> {
        keyed(i).into_iter().collect()
    };
    let base_keys: BTreeSet<String> = keys(&bi).into_iter().map(|(a, _, _)| a).collect();
    for (name, ty) in &ha {
        match ba.get(name) {
            None => d.added_attributes.push(name.clone()),
            Some(bt) if bt != ty => d.type_changes.push((name.clone(), bt.clone(), ty.clone())),
            _ => {}
        }
    }
    for name in ba.keys().filter(|n| !ha.contains_key(*n)) {
        if base_keys.contains(name) {
            d.removed_key_attributes.push(name.clone());
        } else {
            d.removed_attributes.push(name.clone());
        }
    }
    d.key_index_changed = keys(&bi) != keys(&hi);
    d.range_reordered = !d.key_index_changed && keyed(&bi) != keyed(&hi);
    let statics = |i: &[(String, String, String)]| -> BTreeSet<String> {
        i.iter()
            .filter(|(_, t, _)| t == "static")
            .map(|(a, _, _)| a.clone())
            .collect()
    };
    let (bs, hs) = (statics(&bi), statics(&hi));
    for a in hs.symmetric_difference(&bs) {
        if ba.contains_key(a) && ha.contains_key(a) {
            d.static_on_existing.push(a.clone());
        } else if hs.contains(a) {
            d.static_added.push(a.clone());
        }
    }
    let opts = |s: &Value| s.get("options").cloned().unwrap_or(Value::Null);
    let (bo, ho) = (opts(base), opts(head));
    let empty = serde_json::Map::new();
    let (bo, ho) = (
        bo.as_object().unwrap_or(&empty),
        ho.as_object().unwrap_or(&empty),
    );
    let okeys: BTreeSet<&String> = bo.keys().chain(ho.keys()).collect();
    for k in okeys {
        if bo.get(k) != ho.get(k) {
            if k == "default_time_to_live" {
                d.ttl_changed = true;
            } else {
                d.other_options_changed.push(k.clone());
            }
        }
    }
    // Anything else outside attributes/index/options that differs counts as an option change
    // the backend cannot apply (e.g. secondary indexes, retention policies).
    let rest = |s: &Value| -> BTreeMap<String, Value> {
        s.as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| {
                        !matches!(
                            k.as_str(),
                            "attributes" | "index" | "options" | "version" | "table"
                        )
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (br, hr) = (rest(base), rest(head));
    for k in br.keys().chain(hr.keys()).collect::<BTreeSet<_>>() {
        if br.get(k) != hr.get(k) {
            d.other_options_changed.push(k.clone());
        }
    }
    d
}

/// A table of one domain in base and/or head.
#[derive(Clone, Debug)]
pub struct TablePair<'a> {
    pub table: &'a str,
    pub domain: &'a str,
    pub base: Option<&'a TableEntry>,
    pub head: Option<&'a TableEntry>,
    pub delta: SchemaDelta,
    /// For a new table: the removed table it looks renamed from (same content otherwise).
    pub renamed_from: Option<&'a str>,
    /// For a removed table: the new table it looks renamed to.
    pub renamed_to: Option<&'a str>,
}

impl TablePair<'_> {
    /// (base, head) when the table exists in both.
    pub fn both(&self) -> Option<(&TableEntry, &TableEntry)> {
        Some((self.base?, self.head?))
    }
}

/// A table's entry in base and in head.
type Sides<'a> = (Option<&'a TableEntry>, Option<&'a TableEntry>);

/// What every rule sees.
#[derive(Debug)]
pub struct Context<'a> {
    pub base: &'a StorageManifest,
    pub head: &'a StorageManifest,
    pub opts: &'a Options,
    pub pairs: Vec<TablePair<'a>>,
}

impl<'a> Context<'a> {
    pub fn new(base: &'a StorageManifest, head: &'a StorageManifest, opts: &'a Options) -> Self {
        let mut map: BTreeMap<(&str, &str), Sides<'a>> = BTreeMap::new();
        for t in &base.tables {
            map.entry((&t.table, &t.domain)).or_default().0 = Some(t);
        }
        for t in &head.tables {
            map.entry((&t.table, &t.domain)).or_default().1 = Some(t);
        }
        let mut pairs: Vec<TablePair<'a>> = map
            .into_iter()
            .map(|((table, domain), (b, h))| TablePair {
                table,
                domain,
                base: b,
                head: h,
                delta: match (b, h) {
                    (Some(b), Some(h)) => schema_delta(&b.schema, &h.schema),
                    _ => SchemaDelta::default(),
                },
                renamed_from: None,
                renamed_to: None,
            })
            .collect();
        // Rename detection: a table gone and a table new in the same domain with the same
        // content apart from the name.
        let shape = |e: &TableEntry| {
            let mut s = e.schema.clone();
            if let Some(o) = s.as_object_mut() {
                o.remove("table");
            }
            content_hash(&s)
        };
        let gone: Vec<(usize, String)> = pairs
            .iter()
            .enumerate()
            .filter(|(_, p)| p.head.is_none())
            .map(|(i, p)| (i, shape(p.base.expect("base side"))))
            .collect();
        for (gi, gshape) in gone {
            let domain = pairs[gi].domain;
            let found = pairs.iter().position(|p| {
                p.base.is_none()
                    && p.domain == domain
                    && p.renamed_from.is_none()
                    && shape(p.head.expect("head side")) == gshape
            });
            if let Some(ni) = found {
                let (from, to) = (pairs[gi].table, pairs[ni].table);
                pairs[ni].renamed_from = Some(from);
                pairs[gi].renamed_to = Some(to);
            }
        }
        Context {
            base,
            head,
            opts,
            pairs,
        }
    }

    /// Storage group of a domain in head (else base).
    pub fn group(&self, domain: &str) -> Option<String> {
        self.head
            .group_of(domain)
            .or_else(|| self.base.group_of(domain))
            .map(str::to_string)
    }

    /// A finding about a table of one domain, with subject, domain, group and location filled.
    pub fn table_finding(
        &self,
        p: &TablePair<'_>,
        rule: &str,
        severity: crate::report::Severity,
        acknowledgeable: bool,
    ) -> Finding {
        let mut f = Finding::new(rule, severity, acknowledgeable, p.table);
        f.table = Some(p.table.to_string());
        f.domains = vec![p.domain.to_string()];
        f.storage_groups = self.group(p.domain).into_iter().collect();
        f.location = p
            .head
            .and_then(|h| h.location.clone())
            .or_else(|| p.base.and_then(|b| b.location.clone()));
        f.from = p.base.map(|b| b.version.to_string());
        f.to = p.head.map(|h| h.version.to_string());
        f.content_hash = p.head.map(|h| h.content_hash.clone());
        f
    }
}

/// Declaring file of the config, used as location for config-level findings.
pub(crate) fn config_location(m: &StorageManifest) -> Option<Location> {
    m.config.as_ref().map(|c| Location {
        path: c.clone(),
        line: None,
    })
}

/// Runs every rule. Findings are not yet merged or acknowledged.
pub fn run_rules(ctx: &Context<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    sg001::check(ctx, &mut out);
    sg002::check(ctx, &mut out);
    sg003::check(ctx, &mut out);
    sg004::check(ctx, &mut out);
    sg005::check(ctx, &mut out);
    sg006::check(ctx, &mut out);
    sg007::check(ctx, &mut out);
    sg008::check(ctx, &mut out);
    sg010::check(ctx, &mut out);
    sg011::check(ctx, &mut out);
    sg020::check(ctx, &mut out);
    sg021::check(ctx, &mut out);
    sg022::check(ctx, &mut out);
    sg023::check(ctx, &mut out);
    sg030::check(ctx, &mut out);
    sg031::check(ctx, &mut out);
    sg032::check(ctx, &mut out);
    sg040::check(ctx, &mut out);
    sg090::check(ctx, &mut out);
    out
}

/// Merges findings that differ only in their domains / storage groups.
fn merge(findings: Vec<Finding>) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::new();
    for f in findings {
        let same = out.iter_mut().find(|o| {
            o.rule == f.rule
                && o.subject == f.subject
                && o.from == f.from
                && o.to == f.to
                && o.message == f.message
                && o.recipe == f.recipe
                && o.content_hash == f.content_hash
        });
        match same {
            Some(o) => {
                for d in f.domains {
                    if !o.domains.contains(&d) {
                        o.domains.push(d);
                    }
                }
                for g in f.storage_groups {
                    if !o.storage_groups.contains(&g) {
                        o.storage_groups.push(g);
                    }
                }
            }
            None => out.push(f),
        }
    }
    for f in &mut out {
        f.domains.sort();
        f.storage_groups.sort();
    }
    out
}

/// Marks acknowledgeable findings that an ack names exactly (rule, subject, from, to and, when
/// the ack carries one, the head content hash).
pub fn apply_acks(findings: &mut [Finding], acks: &[Ack]) {
    for f in findings.iter_mut().filter(|f| f.acknowledgeable) {
        let hit = acks.iter().find(|a| {
            a.rule == f.rule
                && a.subject == f.subject
                && Some(a.from.as_str()) == f.from.as_deref()
                && Some(a.to.as_str()) == f.to.as_deref()
                && match (&a.content_hash, &f.content_hash) {
                    (Some(a), Some(f)) => a == f,
                    (Some(_), None) => false,
                    (None, _) => true,
                }
        });
        f.acknowledged = hit.cloned();
    }
}

fn summary(ctx: &Context<'_>, findings: &[Finding]) -> Vec<TableChange> {
    let mut out: Vec<TableChange> = Vec::new();
    for p in &ctx.pairs {
        let (change, from, to) = match (p.base, p.head) {
            (None, Some(h)) => (ChangeKind::New, None, Some(h.version)),
            (Some(b), None) => (ChangeKind::Removed, Some(b.version), None),
            (Some(b), Some(h)) if b.content_hash != h.content_hash => {
                (ChangeKind::Content, Some(b.version), Some(h.version))
            }
            (Some(b), Some(h)) if b.version != h.version => {
                (ChangeKind::VersionOnly, Some(b.version), Some(h.version))
            }
            _ => continue,
        };
        let about = |rule: &str| {
            findings.iter().any(|f| {
                f.rule == rule
                    && f.table.as_deref() == Some(p.table)
                    && f.domains.iter().any(|d| d == p.domain)
            })
        };
        let unmapped = findings
            .iter()
            .any(|f| f.rule == sg020::ID && f.subject == p.domain);
        let deploy_fails = unmapped
            || about(sg001::ID)
            || about(sg003::ID)
            || about(sg008::ID)
            || (about(sg007::ID)
                && ctx.opts.backend == Backend::Sqlite
                && matches!((from, to), (Some(f), Some(t)) if t < f));
        let rollbackable = deploy_fails
            || match change {
                ChangeKind::New | ChangeKind::Removed => true,
                ChangeKind::Content => false,
                // Cassandra accepts the old version with the same content; SQLite refuses it.
                ChangeKind::VersionOnly => ctx.opts.backend == Backend::Cassandra || to < from,
            };
        let group = ctx.group(p.domain);
        if let Some(o) = out.iter_mut().find(|o| {
            o.table == p.table
                && o.change == change
                && o.from_version == from
                && o.to_version == to
                && o.deploy_fails == deploy_fails
                && o.rollbackable == rollbackable
        }) {
            o.domains.push(p.domain.to_string());
            if let Some(g) = group
                && !o.storage_groups.contains(&g)
            {
                o.storage_groups.push(g);
            }
            continue;
        }
        out.push(TableChange {
            table: p.table.to_string(),
            domains: vec![p.domain.to_string()],
            storage_groups: group.into_iter().collect(),
            change,
            from_version: from,
            to_version: to,
            deploy_fails,
            rollbackable,
        });
    }
    out
}

/// Compares two storage manifests under the given options.
pub fn diff(base: &StorageManifest, head: &StorageManifest, opts: &Options) -> Report {
    let ctx = Context::new(base, head, opts);
    let mut findings = merge(run_rules(&ctx));
    apply_acks(&mut findings, &opts.acks);
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.rule.cmp(&b.rule))
            .then_with(|| a.subject.cmp(&b.subject))
    });
    let tables = summary(&ctx, &findings);
    Report {
        backend: opts.backend,
        strict: opts.strict,
        base: opts.base_label.clone(),
        head: opts.head_label.clone(),
        findings,
        tables,
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Loads rule fixture cases from `fixtures/schemas/<case>/{base,head}/`.
    use super::*;
    use std::path::PathBuf;

    pub fn case_dir(case: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/schemas")
            .join(case)
    }

    fn load_side(case: &str, side: &str) -> StorageManifest {
        let dir = case_dir(case).join(side);
        let json = dir.join("storage.json");
        if json.exists() {
            StorageManifest::from_json(&std::fs::read(&json).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", json.display()))
        } else {
            crate::extract::static_manifest_dir(&dir, &crate::extract::StaticOptions::default())
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        }
    }

    pub fn run(case: &str, backend: Backend, strict: bool) -> Report {
        let base = load_side(case, "base");
        let head = load_side(case, "head");
        diff(
            &base,
            &head,
            &Options {
                backend,
                strict,
                ..Options::default()
            },
        )
    }

    pub fn rule<'r>(r: &'r Report, id: &str) -> Vec<&'r Finding> {
        r.findings.iter().filter(|f| f.rule == id).collect()
    }

    /// Asserts the rule stays silent on the unchanged case.
    pub fn silent_on_unchanged(id: &str) {
        for backend in [Backend::Cassandra, Backend::Sqlite] {
            let r = run("unchanged", backend, true);
            assert!(
                rule(&r, id).is_empty(),
                "{id} fired on unchanged: {:?}",
                r.findings
            );
        }
    }
}

#[cfg(test)]
mod tests;
