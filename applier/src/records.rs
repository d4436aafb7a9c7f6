//! Environment records in the store: the env state (`envs/<env>/state.json`, compare-and-swap)
//! and one journal per deploy (`envs/<env>/deploys/<deploy-id>.json`, rewritten as each step
//! completes), which `status`, `history`, `rollback` and `resume` read.

use std::collections::BTreeMap;
use std::sync::Arc;

use artifact::Digest;
use artifact::store::{ETag, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::checks::CheckResult;
use crate::guard::DeployType;
use crate::keys;
use crate::protocol::ReleaseRef;
use crate::target::now_rfc3339;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{key} is unreadable: {detail}")]
    Corrupt { key: String, detail: String },
    #[error("{key} kept changing concurrently; gave up after {tries} tries")]
    Contended { key: String, tries: u32 },
}

/// What the environment runs, per host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EnvState {
    pub hosts: BTreeMap<String, HostRecord>,
    pub last_deploy: Option<String>,
    pub deploy_type: Option<DeployType>,
    #[serde(default)]
    pub updated_at: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    pub current: Option<ReleaseRef>,
    pub last_good: Option<ReleaseRef>,
    pub deploy_id: Option<String>,
    #[serde(default)]
    pub updated_at: String,
}

/// Reads the env state (empty if there is none yet) and its version.
pub fn load_state(store: &dyn Store, env: &str) -> Result<(EnvState, Option<ETag>), RecordError> {
    let key = keys::env_state(env);
    match store.get_bytes(&key) {
        Ok((b, meta)) => {
            let st = serde_json::from_slice(&b).map_err(|e| RecordError::Corrupt {
                key,
                detail: e.to_string(),
            })?;
            Ok((st, Some(meta.etag)))
        }
        Err(e) if e.is_not_found() => Ok((EnvState::default(), None)),
        Err(e) => Err(e.into()),
    }
}

/// Read-modify-write of the env state by compare-and-swap, re-reading on conflict.
pub fn update_state(
    store: &dyn Store,
    env: &str,
    f: impl Fn(&mut EnvState),
) -> Result<EnvState, RecordError> {
    let key = keys::env_state(env);
    const TRIES: u32 = 20;
    for i in 0..TRIES {
        let (mut st, etag) = load_state(store, env)?;
        f(&mut st);
        st.updated_at = now_rfc3339();
        let bytes = serde_json::to_vec_pretty(&st).expect("state serialises");
        match store.put_cas(&key, &bytes, etag.as_ref()) {
            Ok(_) => return Ok(st),
            Err(StoreError::Conflict { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(10 * (i as u64 + 1)));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(RecordError::Contended { key, tries: TRIES })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployKind {
    Deploy,
    Rollback,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalStatus {
    /// In progress (or its applier died: `applier resume`).
    Running,
    Succeeded,
    /// Failed; every touched host is back on its last known good release.
    RolledBack,
    /// Failed; some hosts could not be restored and need a human.
    NeedsHuman,
    /// Refused before any host was touched.
    Refused,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostPhase {
    Pending,
    Fetched,
    /// Being switched (depooled, maybe stopped): `resume` redoes it.
    InProgress,
    Done,
    Failed,
    RollingBack,
    RolledBack,
    /// Could not be restored; left depooled.
    NeedsHuman,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostEntry {
    pub group: String,
    /// The host's last known good release before this deploy: its rollback target.
    pub from: Option<ReleaseRef>,
    pub to: ReleaseRef,
    pub phase: HostPhase,
    /// Order in which hosts were touched (for reverse-order rollback).
    pub touched: Option<u32>,
    pub detail: Option<String>,
    #[serde(default)]
    pub checks: Vec<CheckResult>,
}

/// Every step a deploy records in its journal and reports as an event, in one spelling
/// (snake_case) for the journal, the event stream, the renderers and the benchmark. Journals
/// written before this spelling (`mark-good`, `promotion-check`, `resume-rollback`) still read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// The `promotion` gate passed (or was skipped with `--skip-promotion-check`).
    #[serde(alias = "promotion-check")]
    PromotionCheck,
    /// The `require_signature` gate passed.
    Signature,
    /// The storage guard's findings and acknowledgements, when it had any.
    Guard,
    /// `applier resume` continued the deploy.
    Resume,
    /// `applier resume --rollback` rolled it back.
    #[serde(alias = "resume-rollback")]
    ResumeRollback,
    Preflight,
    Fetch,
    /// The capacity guard waited for, or counted, hosts out of the pool.
    Capacity,
    Abort,
    Prune,
    /// Writing the env state failed.
    Record,
    // The per-host path, in order (engine::path).
    Spec,
    Port,
    Depool,
    Stop,
    Render,
    Switch,
    Start,
    Ready,
    Checks,
    #[serde(alias = "mark-good")]
    MarkGood,
    Repool,
    /// The checks again, after the canary bake.
    Recheck,
    /// A host's thread panicked.
    Panic,
    /// The canary analysis of a group against its baseline.
    Analysis,
    /// The fleet-wide watch: a trip, or its summary at the end.
    Watch,
    /// The k-of-n rule: a lone host-level failure recorded as a suspicion, or hosts agreeing.
    Quorum,
    /// A rollback's fast path: what it skipped and what it kept.
    FastRollback,
}

impl Step {
    /// The spelling used in the journal and the event stream.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::PromotionCheck => "promotion_check",
            Step::Signature => "signature",
            Step::Guard => "guard",
            Step::Resume => "resume",
            Step::ResumeRollback => "resume_rollback",
            Step::Preflight => "preflight",
            Step::Fetch => "fetch",
            Step::Capacity => "capacity",
            Step::Abort => "abort",
            Step::Prune => "prune",
            Step::Record => "record",
            Step::Spec => "spec",
            Step::Port => "port",
            Step::Depool => "depool",
            Step::Stop => "stop",
            Step::Render => "render",
            Step::Switch => "switch",
            Step::Start => "start",
            Step::Ready => "ready",
            Step::Checks => "checks",
            Step::MarkGood => "mark_good",
            Step::Repool => "repool",
            Step::Recheck => "recheck",
            Step::Panic => "panic",
            Step::Analysis => "analysis",
            Step::Watch => "watch",
            Step::Quorum => "quorum",
            Step::FastRollback => "fast_rollback",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl JournalStatus {
    /// The spelling used in the journal and the event stream.
    pub fn as_str(self) -> &'static str {
        match self {
            JournalStatus::Running => "running",
            JournalStatus::Succeeded => "succeeded",
            JournalStatus::RolledBack => "rolled_back",
            JournalStatus::NeedsHuman => "needs_human",
            JournalStatus::Refused => "refused",
        }
    }
}

impl DeployKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeployKind::Deploy => "deploy",
            DeployKind::Rollback => "rollback",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub at: String,
    pub host: Option<String>,
    pub step: Step,
    pub ok: bool,
    pub detail: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Journal {
    pub id: String,
    pub env: String,
    pub kind: DeployKind,
    /// The artifact being deployed (a rollback has per-host targets instead).
    pub artifact: Option<Digest>,
    pub commit: Option<String>,
    pub who: String,
    pub reason: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub status: JournalStatus,
    pub deploy_type: Option<DeployType>,
    /// Batches in rollout order.
    pub groups: Vec<(String, Vec<String>)>,
    pub hosts: BTreeMap<String, HostEntry>,
    pub steps: Vec<StepRecord>,
    pub abort_reason: Option<String>,
    #[serde(default)]
    pub needs_human: Vec<String>,
    /// Every canary analysis, with its numbers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analysis: Vec<crate::analysis::AnalysisReport>,
}

impl Journal {
    pub fn step(&mut self, host: Option<&str>, step: Step, ok: bool, detail: Option<String>) {
        self.steps.push(StepRecord {
            at: now_rfc3339(),
            host: host.map(str::to_string),
            step,
            ok,
            detail,
        });
    }
}

/// A journal and the version of it last written.
#[derive(Debug)]
pub struct JournalWriter {
    store: Arc<dyn Store>,
    key: String,
    etag: Option<ETag>,
    pub journal: Journal,
}

impl JournalWriter {
    /// A new journal (written by the first [`JournalWriter::save`]).
    pub fn create(store: Arc<dyn Store>, journal: Journal) -> Self {
        let key = keys::deploy_journal(&journal.env, &journal.id);
        JournalWriter {
            store,
            key,
            etag: None,
            journal,
        }
    }

    /// Opens an existing journal to continue it.
    pub fn open(store: Arc<dyn Store>, env: &str, id: &str) -> Result<Self, RecordError> {
        let key = keys::deploy_journal(env, id);
        let (b, meta) = store.get_bytes(&key)?;
        let journal = serde_json::from_slice(&b).map_err(|e| RecordError::Corrupt {
            key: key.clone(),
            detail: e.to_string(),
        })?;
        Ok(JournalWriter {
            store,
            key,
            etag: Some(meta.etag),
            journal,
        })
    }

    pub fn save(&mut self) -> Result<(), RecordError> {
        let bytes = serde_json::to_vec_pretty(&self.journal).expect("journal serialises");
        self.save_bytes(&bytes)
    }

    /// Writes an already serialised journal (a snapshot taken by the caller, so the journal can
    /// keep changing while the write is in flight).
    pub fn save_bytes(&mut self, bytes: &[u8]) -> Result<(), RecordError> {
        let etag = match self.store.put_cas(&self.key, bytes, self.etag.as_ref()) {
            Ok(e) => e,
            // Only the lease holder writes its journal: a conflict means our last write landed
            // without us learning its version (an error after the write). Re-read and retry once.
            Err(StoreError::Conflict { .. }) => {
                let current = self.store.head(&self.key)?.map(|m| m.etag);
                self.store.put_cas(&self.key, bytes, current.as_ref())?
            }
            Err(e) => return Err(e.into()),
        };
        self.etag = Some(etag);
        Ok(())
    }
}

/// Deploy `id` of `env` as the store holds it.
pub fn read_journal(store: &dyn Store, env: &str, id: &str) -> Result<Journal, RecordError> {
    let key = keys::deploy_journal(env, id);
    let (b, _) = store.get_bytes(&key)?;
    serde_json::from_slice(&b).map_err(|e| RecordError::Corrupt {
        key,
        detail: e.to_string(),
    })
}

/// Every journal of an environment, oldest first.
pub fn history(store: &dyn Store, env: &str) -> Result<Vec<Journal>, RecordError> {
    let prefix = keys::deploys_prefix(env);
    let mut out = Vec::new();
    for meta in store.list(&prefix)? {
        let Some(id) = meta
            .key
            .strip_prefix(prefix.as_str())
            .and_then(|k| k.strip_suffix(".json"))
            .filter(|id| !id.contains('/'))
        else {
            continue;
        };
        out.push(read_journal(store, env, id)?);
    }
    out.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// Finds a journal by id in any of `envs`.
pub fn find_journal(
    store: &dyn Store,
    envs: &[String],
    id: &str,
) -> Result<Option<String>, RecordError> {
    for env in envs {
        if store.head(&keys::deploy_journal(env, id))?.is_some() {
            return Ok(Some(env.clone()));
        }
    }
    Ok(None)
}

/// A new deploy id: UTC time plus random bits, so ids sort by start time.
pub fn new_deploy_id() -> String {
    let t = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let compact: String = t.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    format!("{compact}-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEPS: &[Step] = &[
        Step::PromotionCheck,
        Step::Signature,
        Step::Guard,
        Step::Resume,
        Step::ResumeRollback,
        Step::Preflight,
        Step::Fetch,
        Step::Capacity,
        Step::Abort,
        Step::Prune,
        Step::Record,
        Step::Spec,
        Step::Port,
        Step::Depool,
        Step::Stop,
        Step::Render,
        Step::Switch,
        Step::Start,
        Step::Ready,
        Step::Checks,
        Step::MarkGood,
        Step::Repool,
        Step::Recheck,
        Step::Panic,
        Step::Analysis,
        Step::Watch,
        Step::Quorum,
        Step::FastRollback,
    ];

    #[test]
    fn one_spelling_for_steps_and_statuses() {
        for s in STEPS {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str(), "{s:?}");
        }
        for s in [
            JournalStatus::Running,
            JournalStatus::Succeeded,
            JournalStatus::RolledBack,
            JournalStatus::NeedsHuman,
            JournalStatus::Refused,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str(), "{s:?}");
        }
        assert_eq!(JournalStatus::RolledBack.as_str(), "rolled_back");
    }

    #[test]
    fn journals_with_the_old_step_spellings_still_read() {
        for (old, new) in [
            ("mark-good", Step::MarkGood),
            ("promotion-check", Step::PromotionCheck),
            ("resume-rollback", Step::ResumeRollback),
        ] {
            let s: Step = serde_json::from_value(serde_json::json!(old)).unwrap();
            assert_eq!(s, new);
        }
    }
}
