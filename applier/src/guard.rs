//! The storage-schema guard: what kind of deploy this is, and whether it (or a rollback) may go
//! ahead, from the storage manifests (`schema_guard::StorageManifest`, recorded in every
//! artifact manifest by `builder`) of what the environment runs and of the target release.
//!
//! - Deploy: `schema_guard::diff(current, new)`. An unacknowledged blocking finding refuses the
//!   deploy before any host is touched; acknowledgements come from `applier deploy --ack`
//!   (`SG002 <table> <from>-><to> <reason>`, the trailer syntax). The applier does not read
//!   commit trailers (it has the artifact, not the git history): a refusal prints the exact
//!   `--ack` of each blocking change, and every `--ack` given is recorded in the journal. Acknowledgements also come from the env's
//!   `schema_policy: acknowledge`, or from the staging deploy a promotion reuses; the
//!   [`GuardRecord`] keeps every change and the acknowledgement of each for the journal. A deploy whose stored schemas
//!   cannot be undone by redeploying the old code is of type `schema`: it is never rolled back
//!   automatically (the storage would refuse the old schema at start-up).
//! - Rollback: the forward diff from the rollback target to what runs now tells whether the old
//!   code would still start; if not, the rollback is refused with schema-guard's recipe (a new
//!   commit restoring the old content with a higher version), unless the operator overrides it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use schema_guard::{Ack, AckSource, Backend, Report, Severity, StorageManifest};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeployType {
    Code,
    Config,
    Schema,
}

/// Settings of the guard for one run.
#[derive(Clone, Debug, Default)]
pub struct GuardOptions {
    /// The table backend whose rules apply; `None`: the one the storage manifests name (the
    /// env config's storage module, as the builder recorded it), else Cassandra's.
    pub backend: Option<Backend>,
    /// Acknowledgements given on the command line (trailer syntax, without the key).
    pub acks: Vec<String>,
    /// Acknowledgements taken from another record (the staging deploy a promotion reuses):
    /// (where from, ack in trailer syntax).
    pub reused_acks: Vec<(String, String)>,
    /// `schema_policy: acknowledge`: every acknowledgeable blocking change is acknowledged by
    /// the policy named here (`envs.beta.schema_policy`).
    pub policy_ack: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GuardOutcome {
    pub deploy_type: DeployType,
    /// False: the deploy is refused (exit 3) for the reasons in `findings`.
    pub allowed: bool,
    /// One line per finding: `block[SG002] <subject>: <message>` (acknowledged ones marked).
    pub findings: Vec<String>,
    /// Rollback recipes of the non-rollbackable changes.
    pub recipes: Vec<String>,
    /// The `--ack` value (`SG002 <table> <from>-><to> <reason>`) of each blocking change that
    /// an acknowledgement lets pass and none was given for.
    #[serde(default)]
    pub acks_needed: Vec<String>,
    /// What the journal keeps of the decision.
    pub record: GuardRecord,
}

/// The storage guard's decision as the journal records it: every change it found, which
/// acknowledgement let each blocking one pass, and whether the old code would still start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GuardRecord {
    /// False when there was nothing to compare (a first deploy, an artifact without a
    /// storage manifest).
    pub compared: bool,
    /// Redeploying the previous release would start everywhere.
    pub rollback_safe: bool,
    pub changes: Vec<Change>,
}

/// One finding of the storage diff.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Change {
    pub rule: String,
    pub severity: String,
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The acknowledgement that let it pass (trailer syntax) and where it came from
    /// (`--ack`, `envs.beta.schema_policy`, `staging deploy <id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_source: Option<String>,
}

impl Change {
    /// `SG002 pages 1->2`: what the change is, without how it was acknowledged.
    pub fn key(&self) -> String {
        let mut s = format!("{} {}", self.rule, self.subject);
        if self.from.is_some() || self.to.is_some() {
            s.push_str(&format!(
                " {}->{}",
                self.from.as_deref().unwrap_or(""),
                self.to.as_deref().unwrap_or("")
            ));
        }
        s
    }
}

impl GuardRecord {
    /// The acknowledgements that let blocking changes pass, in trailer syntax.
    pub fn acks(&self) -> Vec<String> {
        self.changes.iter().filter_map(|c| c.ack.clone()).collect()
    }
}

/// The placeholder the acks a refusal prints carry where the operator's reason goes.
pub const REASON_PLACEHOLDER: &str = "<reason>";

/// Parses one `--ack` value: `SG002 <table> <from>-><to> <reason>`, on one line, with a
/// reason (not the placeholder a refusal prints).
pub fn parse_ack(s: &str) -> Result<Ack, String> {
    let bad = |why: &str| {
        format!(
            "bad --ack {:?}: {why}; expected `SG0NN <table> <from>-><to> <reason>`",
            s.chars().take(200).collect::<String>()
        )
    };
    if s.contains(['\n', '\r']) {
        return Err(bad("more than one line"));
    }
    let acks = schema_guard::ack::parse_trailers(
        &format!("{}: {}", schema_guard::ack::TRAILER, s.trim()),
        "",
    );
    let mut ack = acks
        .into_iter()
        .next()
        .ok_or_else(|| bad("not an acknowledgement"))?;
    if ack.reason.is_empty() || ack.reason == REASON_PLACEHOLDER {
        return Err(bad("give your reason after the change"));
    }
    ack.source = AckSource::Caller;
    Ok(ack)
}

/// A recipe as the applier shows it: without schema-guard's advice to add a commit trailer,
/// which the applier does not read (its refusal prints the `--ack` to give instead).
fn applier_recipe(recipe: &str) -> String {
    match recipe.find(" Acknowledge with") {
        Some(i) => recipe[..i].to_string(),
        None => recipe.to_string(),
    }
}

/// The storage manifest of one environment out of an artifact's `storage` field. Builder
/// records one per shipped env config: `{"format": 1, "envs": {"<env>": <manifest>}}`; the env
/// named `service_env` is taken, else a lone `default`. A bare storage manifest is taken as is.
pub fn select<'a>(storage: Option<&'a Value>, service_env: &str) -> Option<&'a Value> {
    let s = storage?;
    match s.get("envs").and_then(Value::as_object) {
        Some(envs) => envs
            .get(service_env)
            .or_else(|| envs.get("default").filter(|_| envs.len() == 1)),
        None => Some(s),
    }
}

fn parse(v: Option<&Value>, what: &str) -> Result<Option<StorageManifest>, String> {
    v.map(|v| StorageManifest::from_value(v).map_err(|e| format!("{what} storage manifest: {e}")))
        .transpose()
}

fn lines(report: &Report) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut findings = Vec::new();
    let mut recipes = Vec::new();
    let mut acks = Vec::new();
    for f in &report.findings {
        let ack = if f.acknowledged.is_some() {
            " (acknowledged)"
        } else {
            ""
        };
        findings.push(format!(
            "{}[{}] {}: {}{ack}",
            f.severity.as_str(),
            f.rule,
            f.subject,
            f.message
        ));
        if let Some(r) = &f.recipe {
            recipes.push(applier_recipe(r));
        }
        if f.acknowledgeable
            && f.acknowledged.is_none()
            && f.severity == schema_guard::Severity::Block
        {
            acks.push(format!(
                "{} {} {} {REASON_PLACEHOLDER}",
                f.rule,
                f.subject,
                f.change().unwrap_or_else(|| "-".into())
            ));
        }
    }
    (findings, recipes, acks)
}

/// Compares the storage manifest of what the environment runs (`current`) with the new one.
/// Missing manifests (an environment never deployed, an artifact built without one) make a
/// `code` deploy with a note: there is nothing to compare. A deploy that touches storage at
/// all (a table new or changed, a domain or storage group added, moved or refused) is of type
/// `schema`; whether its rollback is safe is in the record.
pub fn check(
    current: Option<&Value>,
    new: Option<&Value>,
    opts: &GuardOptions,
) -> Result<GuardOutcome, String> {
    let (cur, new) = (parse(current, "current")?, parse(new, "new")?);
    let (Some(cur), Some(new)) = (cur, new) else {
        return Ok(GuardOutcome {
            deploy_type: DeployType::Code,
            allowed: true,
            findings: vec!["no storage manifest to compare; schema guard skipped".into()],
            recipes: vec![],
            record: GuardRecord::default(),
            acks_needed: vec![],
        });
    };
    // Where each ack came from, keyed by the ack's own text.
    let mut sources: Vec<(Ack, String, String)> = Vec::new();
    for a in &opts.acks {
        sources.push((parse_ack(a)?, a.trim().to_string(), "--ack".into()));
    }
    for (from, a) in &opts.reused_acks {
        sources.push((parse_ack(a)?, a.trim().to_string(), from.clone()));
    }
    let diff = |acks: Vec<Ack>| {
        schema_guard::diff(
            &cur,
            &new,
            &schema_guard::Options {
                backend: Backend::effective(opts.backend, &cur, &new, None),
                acks,
                base_label: Some("current".into()),
                head_label: Some("new".into()),
                ..Default::default()
            },
        )
    };
    let mut report = diff(sources.iter().map(|(a, _, _)| a.clone()).collect());
    if let Some(policy) = &opts.policy_ack {
        let extra: Vec<(Ack, String, String)> = report
            .findings
            .iter()
            .filter(|f| {
                f.severity == Severity::Block && f.acknowledgeable && f.acknowledged.is_none()
            })
            .map(|f| {
                let ack = Ack {
                    rule: f.rule.clone(),
                    subject: f.subject.clone(),
                    from: f.from.clone().unwrap_or_default(),
                    to: f.to.clone().unwrap_or_default(),
                    reason: format!("acknowledged by {policy}"),
                    source: AckSource::Config {
                        path: policy.clone(),
                    },
                    content_hash: None,
                };
                let text = format!(
                    "{} {} {}->{} acknowledged by {policy}",
                    ack.rule, ack.subject, ack.from, ack.to
                );
                (ack, text, policy.clone())
            })
            .collect();
        if !extra.is_empty() {
            sources.extend(extra);
            report = diff(sources.iter().map(|(a, _, _)| a.clone()).collect());
        }
    }
    let (findings, recipes, acks_needed) = lines(&report);
    let changes = report
        .findings
        .iter()
        .map(|f| {
            let matched = f.acknowledged.as_ref().and_then(|a| {
                sources.iter().find(|(s, _, _)| {
                    s.rule == a.rule && s.subject == a.subject && s.from == a.from && s.to == a.to
                })
            });
            Change {
                rule: f.rule.clone(),
                severity: f.severity.as_str().into(),
                subject: f.subject.clone(),
                from: f.from.clone(),
                to: f.to.clone(),
                ack: matched.map(|(_, text, _)| text.clone()),
                ack_source: matched.map(|(_, _, src)| src.clone()),
            }
        })
        .collect();
    let touches =
        report.changes_schema() || report.findings.iter().any(|f| f.severity >= Severity::Flag);
    let deploy_type = if touches {
        DeployType::Schema
    } else {
        DeployType::Code
    };
    Ok(GuardOutcome {
        deploy_type,
        allowed: !report.is_blocking(),
        findings,
        recipes,
        record: GuardRecord {
            compared: true,
            rollback_safe: report.rollback_safe(),
            changes,
        },
        acks_needed,
    })
}

/// True when `new` differs from `current` only in its deploy config (`deploy/`: service
/// definition and per-environment config): same code, same dependency layer. Builder records
/// the digests as the manifest labels `content.code` and `content.config`; artifacts without
/// them are never called config-only.
pub fn config_only(current: &artifact::Manifest, new: &artifact::Manifest) -> bool {
    let label = |m: &artifact::Manifest, k: &str| m.labels.get(k).cloned();
    let deps = |m: &artifact::Manifest| {
        m.layer(artifact::manifest::LayerKind::Deps)
            .map(|l| l.diff_id)
    };
    let (code, config) = ("content.code", "content.config");
    label(current, code).is_some()
        && label(current, code) == label(new, code)
        && label(current, config).is_some()
        && label(current, config) != label(new, config)
        && deps(current) == deps(new)
}

/// Whether going back from `current` to `target` is safe for the storage: the old code's
/// schemas must still be accepted. `Err` carries the reasons and the recipe.
pub fn check_rollback(
    current: Option<&Value>,
    target: Option<&Value>,
    backend: Option<Backend>,
) -> Result<(), String> {
    let (cur, target) = (parse(current, "current")?, parse(target, "target")?);
    let (Some(cur), Some(target)) = (cur, target) else {
        return Ok(());
    };
    // Forward: from the rollback target to what runs now. Non-rollbackable changes there are
    // exactly what the storage would refuse when the target's code starts again.
    let forward = schema_guard::diff(
        &target,
        &cur,
        &schema_guard::Options {
            backend: Backend::effective(backend, &target, &cur, None),
            ..Default::default()
        },
    );
    if forward.rollback_safe() {
        return Ok(());
    }
    let tables: Vec<String> = forward
        .tables
        .iter()
        .filter(|t| !t.rollbackable)
        .map(|t| t.table.clone())
        .collect();
    let (_, recipes, _) = lines(&forward);
    let mut msg = format!(
        "the running release changed storage schemas ({}) and the storage refuses the older schema, so the old code would not start on any host",
        tables.join(", ")
    );
    if !recipes.is_empty() {
        msg.push_str(". Remedy: ");
        msg.push_str(&recipes.join(" "));
    } else {
        msg.push_str(
            ". Remedy: a new commit that restores the old schema content with a version higher than the current one",
        );
    }
    Err(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A one-table storage manifest built through schema-guard's own API.
    fn manifest(version: i64, attrs: Value) -> Value {
        let mut m = StorageManifest::new("manual");
        m.domains = vec!["en.wikipedia.org".into()];
        m.add_table(
            "en.wikipedia.org",
            &json!({
                "table": "pages",
                "version": version,
                "attributes": attrs,
                "index": [{"attribute": "title", "type": "hash"}]
            }),
            None,
        );
        m.finish();
        m.to_value()
    }

    #[test]
    fn select_picks_the_env() {
        let a = manifest(1, json!({"title": "string"}));
        let b = manifest(2, json!({"title": "string"}));
        let per_env = json!({"format": 1, "envs": {"staging": a, "production": b}});
        assert_eq!(select(Some(&per_env), "production"), Some(&b));
        assert_eq!(select(Some(&per_env), "beta"), None);
        let single = json!({"format": 1, "envs": {"default": a}});
        assert_eq!(select(Some(&single), "beta"), Some(&a));
        assert_eq!(select(Some(&a), "beta"), Some(&a));
        assert_eq!(select(None, "beta"), None);
    }

    #[test]
    fn ack_parses_trailer_syntax() {
        let a = parse_ack("SG002 pages 1->2 adds a column").unwrap();
        assert_eq!((a.rule.as_str(), a.subject.as_str()), ("SG002", "pages"));
        assert_eq!((a.from.as_str(), a.to.as_str()), ("1", "2"));
        assert!(parse_ack("pages 1->2").is_err());
    }

    #[test]
    fn identical_manifests_are_a_code_deploy_and_missing_ones_skip() {
        let a = manifest(1, json!({"title": "string"}));
        let g = check(Some(&a), Some(&a), &GuardOptions::default()).unwrap();
        assert_eq!(g.deploy_type, DeployType::Code);
        assert!(g.allowed);
        let g = check(None, Some(&a), &GuardOptions::default()).unwrap();
        assert_eq!(g.deploy_type, DeployType::Code);
        assert!(g.findings[0].contains("skipped"));
    }

    #[test]
    fn a_bump_is_blocked_until_acked_and_then_refuses_rollback() {
        let old = manifest(1, json!({"title": "string"}));
        let new = manifest(2, json!({"title": "string", "body": "blob"}));
        let g = check(Some(&old), Some(&new), &GuardOptions::default()).unwrap();
        assert!(!g.allowed, "{:?}", g.findings);
        assert!(
            g.findings.iter().any(|f| f.contains("SG002")),
            "{:?}",
            g.findings
        );
        assert_eq!(g.deploy_type, DeployType::Schema);
        let acked = GuardOptions {
            acks: vec!["SG002 pages 1->2 adds body".into()],
            ..Default::default()
        };
        let g = check(Some(&old), Some(&new), &acked).unwrap();
        assert!(g.allowed, "{:?}", g.findings);
        assert!(g.findings.iter().any(|f| f.contains("acknowledged")));
        // A stale ack (other versions) does not pass.
        let stale = GuardOptions {
            acks: vec!["SG002 pages 1->3 adds body".into()],
            ..Default::default()
        };
        assert!(!check(Some(&old), Some(&new), &stale).unwrap().allowed);
        // Going back from new to old is refused, with a recipe naming a higher version.
        let err = check_rollback(Some(&new), Some(&old), Some(Backend::Cassandra)).unwrap_err();
        assert!(err.contains("pages"), "{err}");
        assert!(check_rollback(Some(&old), Some(&old), Some(Backend::Cassandra)).is_ok());
    }
}
