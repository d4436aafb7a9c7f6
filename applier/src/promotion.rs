//! Promotion: what passed one environment is what the next one gets.
//!
//! An environment with `promotion: {requires: [staging]}` takes only artifacts that a succeeded
//! deploy already put on every required environment ([`check`], run by
//! [`crate::engine::deploy`] before the storage guard and the lease). [`source_release`] finds
//! the one artifact an environment runs, for `applier promote`. Both read only the store's
//! records (`envs/<env>/state.json` and the deploy journals), so the required environments need
//! not be configured in the same file. [`reuse`] makes `promote` repeat the source env's
//! deploy: its deploy type and acknowledgements, refused when the storage diffs differ.

use std::collections::BTreeMap;

use artifact::Digest;
use artifact::store::Store;
use model::names::CommitId;

use crate::config::PromotionPolicy;
use crate::guard::{DeployType, GuardRecord};
use crate::protocol::ReleaseRef;
use crate::records::{self, DeployKind, Journal, JournalStatus, RecordError};

#[derive(Debug, thiserror::Error)]
pub enum PromotionError {
    #[error(transparent)]
    Records(#[from] RecordError),
    /// The artifact has not passed every required environment (`missing`); `message` names
    /// the artifact and those environments, `way_out` what to do.
    #[error("{message}")]
    NotPassed {
        missing: Vec<String>,
        message: String,
        way_out: String,
    },
    /// The source environment does not run one artifact that a succeeded deploy put there.
    #[error("cannot promote from {env}: {detail}")]
    NoSingleRelease { env: String, detail: String },
}

/// The succeeded deploy of `artifact` in `env`'s history, newest first, if there is one.
pub fn passed_in(
    store: &dyn Store,
    env: &str,
    artifact: &Digest,
) -> Result<Option<Journal>, RecordError> {
    Ok(records::history(store, env)?.into_iter().rev().find(|j| {
        j.kind == DeployKind::Deploy
            && j.status == JournalStatus::Succeeded
            && j.artifact.as_ref() == Some(artifact)
    }))
}

/// Refuses `artifact` for `env` unless every environment `policy` requires has a succeeded
/// deploy of it. On success: each required env with the id of the deploy that passed it.
pub fn check(
    store: &dyn Store,
    env: &str,
    policy: &PromotionPolicy,
    artifact: &Digest,
    commit: &str,
) -> Result<Vec<(String, String)>, PromotionError> {
    let mut passed = Vec::new();
    let mut missing = Vec::new();
    for req in &policy.requires {
        match passed_in(store, req, artifact)? {
            Some(j) => passed.push((req.clone(), j.id)),
            None => missing.push(req.clone()),
        }
    }
    if missing.is_empty() {
        return Ok(passed);
    }
    let first = &missing[0];
    let message = format!(
        "{env} requires artifacts to pass {required} first; {artifact} (commit {commit}) has no succeeded deploy in {}",
        missing.join(", "),
        required = policy.requires.join(", "),
    );
    let way_out = format!(
        "deploy it there first (`applier deploy {artifact} --env {first}`), or promote what {first} runs (`applier promote --from {first} --to {env}`); in an emergency, `--skip-promotion-check` lifts this for one run and is recorded in the journal"
    );
    Err(PromotionError::NotPassed {
        missing,
        message,
        way_out,
    })
}

/// What `from` runs, ready to promote: the one release every host is on, and the succeeded
/// deploy that put it there.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SourceRelease {
    pub env: String,
    pub release: ReleaseRef,
    pub deploy_id: String,
    pub hosts: Vec<String>,
}

/// Finds the artifact `from` runs: every host's current release in `envs/<from>/state.json`
/// must be the same (and every host in `expected_hosts`, when given, must have one), and that
/// artifact must have a succeeded deploy in `from`'s history.
pub fn source_release(
    store: &dyn Store,
    from: &str,
    expected_hosts: Option<&[String]>,
) -> Result<SourceRelease, PromotionError> {
    let fail = |detail: String| PromotionError::NoSingleRelease {
        env: from.to_string(),
        detail,
    };
    let (state, _) = records::load_state(store, from)?;
    // Keyed by (manifest, commit): a release is the pair.
    let mut by_release: BTreeMap<Option<(Digest, &CommitId)>, Vec<&str>> = BTreeMap::new();
    for (h, rec) in &state.hosts {
        by_release
            .entry(rec.current.as_ref().map(|r| (r.manifest, &r.commit)))
            .or_default()
            .push(h.as_str());
    }
    if let Some(expected) = expected_hosts {
        for h in expected {
            if !state.hosts.contains_key(h) {
                by_release.entry(None).or_default().push(h.as_str());
            }
        }
    }
    if by_release.is_empty() {
        return Err(fail(format!(
            "no host has a recorded release (envs/{from}/state.json is empty or missing)"
        )));
    }
    if by_release.len() > 1 {
        let parts: Vec<String> = by_release
            .iter()
            .map(|(r, hosts)| {
                let what = r.map_or("no release".to_string(), |(d, c)| {
                    format!("{} ({d})", short(c))
                });
                format!("{} on {what}", hosts.join(", "))
            })
            .collect();
        return Err(fail(format!(
            "its hosts differ: {}. Finish or roll back the deploy there first",
            parts.join("; ")
        )));
    }
    let (release, hosts) = by_release.into_iter().next().expect("one entry");
    let Some((manifest, commit)) = release else {
        return Err(fail(format!(
            "{} have no recorded release",
            hosts.join(", ")
        )));
    };
    let Some(j) = passed_in(store, from, &manifest)? else {
        return Err(fail(format!(
            "its hosts run {} ({manifest}), which no succeeded deploy put there",
            short(commit)
        )));
    };
    Ok(SourceRelease {
        env: from.to_string(),
        release: ReleaseRef {
            commit: commit.clone(),
            manifest,
        },
        deploy_id: j.id,
        hosts: hosts.into_iter().map(str::to_string).collect(),
    })
}

fn short(s: &str) -> &str {
    &s[..s.len().min(12)]
}

/// The source env's deploy a promotion repeats: its deploy type and the storage guard's
/// record (the changes it saw and the acknowledgements that let them pass).
#[derive(Clone, Debug, PartialEq)]
pub struct PromotedFrom {
    pub env: String,
    pub deploy_id: String,
    pub deploy_type: Option<DeployType>,
    pub guard: Option<GuardRecord>,
}

/// Production as staging did it: the storage diff this env sees (`here`) must be the one the
/// source deploy saw and acknowledged; then its deploy type is reused (a `config` deploy
/// there is `code` here when this env's own diff says code changed). `Ok` carries the deploy
/// type and a journal note; `Err` names every difference.
pub fn reuse(
    from: &PromotedFrom,
    env: &str,
    computed: DeployType,
    here: &GuardRecord,
) -> Result<(DeployType, String), String> {
    let src = format!("{} deploy {}", from.env, from.deploy_id);
    let Some(there) = &from.guard else {
        return Err(format!(
            "{src} recorded no storage guard decision, so {env}'s storage diff cannot be compared with what it acknowledged"
        ));
    };
    let keys = |g: &GuardRecord| -> std::collections::BTreeSet<String> {
        g.changes
            .iter()
            .map(|c| format!("{}[{}]", c.key(), c.severity))
            .collect()
    };
    let (a, b) = (keys(there), keys(here));
    let mut diffs: Vec<String> = Vec::new();
    if there.compared != here.compared {
        diffs.push(format!(
            "{} compared storage manifests and {} did not",
            if here.compared { env } else { &from.env },
            if here.compared { &from.env } else { env },
        ));
    }
    let only_here: Vec<&String> = b.difference(&a).collect();
    let only_there: Vec<&String> = a.difference(&b).collect();
    if !only_here.is_empty() {
        diffs.push(format!(
            "{env} would see {} that {src} did not",
            only_here
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !only_there.is_empty() {
        diffs.push(format!(
            "{src} saw {} that {env} would not",
            only_there
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !diffs.is_empty() {
        return Err(format!(
            "the environments have drifted: {}",
            diffs.join("; ")
        ));
    }
    let reused = from.deploy_type.unwrap_or(computed);
    let deploy_type = if reused == DeployType::Config && computed != DeployType::Config {
        computed
    } else {
        reused
    };
    let acks = there.acks().len();
    Ok((
        deploy_type,
        format!(
            "as {src}: deploy type {}, its storage diff ({} change{}) and {acks} acknowledgement{}",
            format!("{deploy_type:?}").to_lowercase(),
            there.changes.len(),
            if there.changes.len() == 1 { "" } else { "s" },
            if acks == 1 { "" } else { "s" },
        ),
    ))
}
