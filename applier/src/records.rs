//! Environment records in the store: the env state (`envs/<env>/state.json`, compare-and-swap)
//! and one journal per deploy (a base `envs/<env>/deploys/<deploy-id>.json` and append-only
//! segments while it runs, [`segments`]), which `status`, `history`, `rollback` and `resume`
//! read through one reader, [`read_journal`] ([`read_history`] for all of an env's).
//!
//! Records are untrusted input: parsing one validates every name and id in it (deploy ids,
//! env, host and group names through `model::names`, commits and digests through their types),
//! so a record that parses holds no path, no shell text and no other env's name. A journal
//! that does not parse (or is filed under another env or id) is reported and skipped by
//! [`read_history`], never a reason for `history`, `rollback` or the promotion gate to fail.

pub mod segments;

use std::collections::BTreeMap;

use artifact::Digest;
use artifact::store::{ETag, Store, StoreError};
use model::names::{DeployId, Name};
use serde::{Deserialize, Deserializer, Serialize};

use crate::checks::CheckResult;
use crate::guard::DeployType;
use crate::keys;
use crate::protocol::ReleaseRef;
use crate::target::now_rfc3339;

pub use segments::{Delta, JournalWriter, Loaded, load};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{key} is unreadable: {detail}")]
    Corrupt { key: String, detail: String },
    #[error("{key} kept changing concurrently; gave up after {tries} tries")]
    Contended { key: String, tries: u32 },
}

/// A deploy id field, validated as it is parsed.
pub(crate) fn de_deploy_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    DeployId::parse(&s).map_err(serde::de::Error::custom)?;
    Ok(s)
}

fn de_opt_deploy_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    if let Some(s) = &s {
        DeployId::parse(s).map_err(serde::de::Error::custom)?;
    }
    Ok(s)
}

fn de_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    Name::parse(&s).map_err(serde::de::Error::custom)?;
    Ok(s)
}

fn de_opt_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    if let Some(s) = &s {
        Name::parse(s).map_err(serde::de::Error::custom)?;
    }
    Ok(s)
}

/// A batch name: a group name, with `#<n>` where the group was split into batches.
fn check_batch(s: &str) -> Result<(), String> {
    let (name, n) = match s.split_once('#') {
        Some((g, n)) => (g, Some(n)),
        None => (s, None),
    };
    Name::parse(name).map_err(|e| e.to_string())?;
    match n {
        Some(n) if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!("invalid batch {s:?}: expected <group>#<number>"))
        }
        _ => Ok(()),
    }
}

fn de_batch<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check_batch(&s).map_err(serde::de::Error::custom)?;
    Ok(s)
}

fn de_groups<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, Vec<String>)>, D::Error> {
    let v = Vec::<(String, Vec<String>)>::deserialize(d)?;
    for (g, hs) in &v {
        check_batch(g).map_err(serde::de::Error::custom)?;
        for h in hs {
            Name::parse(h).map_err(serde::de::Error::custom)?;
        }
    }
    Ok(v)
}

fn de_name_map<'de, D: Deserializer<'de>, V: Deserialize<'de>>(
    d: D,
) -> Result<BTreeMap<String, V>, D::Error> {
    let m = BTreeMap::<String, V>::deserialize(d)?;
    for k in m.keys() {
        Name::parse(k).map_err(serde::de::Error::custom)?;
    }
    Ok(m)
}

/// What the environment runs, per host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EnvState {
    #[serde(deserialize_with = "de_name_map")]
    pub hosts: BTreeMap<String, HostRecord>,
    #[serde(default, deserialize_with = "de_opt_deploy_id")]
    pub last_deploy: Option<String>,
    pub deploy_type: Option<DeployType>,
    #[serde(default)]
    pub updated_at: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    pub current: Option<ReleaseRef>,
    pub last_good: Option<ReleaseRef>,
    #[serde(default, deserialize_with = "de_opt_deploy_id")]
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
    /// `applier unlock`: a lock broken by hand (no host touched).
    Unlock,
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
    #[serde(deserialize_with = "de_batch")]
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
    /// The storage guard's decision: the deploy type and what it was compared with.
    StorageGuard,
    /// An acknowledgement or override the operator gave (`--ack`, `--schema-baseline`,
    /// `--force-schema-rollback`, `--skip-promotion-check`, `applier unlock`).
    Override,
    /// A record that could not be read and was skipped (a journal that does not parse).
    Skipped,
    /// `applier resume` continued the deploy.
    Resume,
    /// `applier resume --rollback` rolled it back.
    #[serde(alias = "resume-rollback")]
    ResumeRollback,
    /// The env lease was taken: its fencing generation.
    Lease,
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
    /// A freeze window was open and overridden.
    Freeze,
    /// The env's failure lock was set and overridden.
    FailureLock,
    /// The store requests the deploy made, by kind.
    StoreRequests,
}

impl Step {
    /// The spelling used in the journal and the event stream.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::PromotionCheck => "promotion_check",
            Step::Signature => "signature",
            Step::StorageGuard => "storage_guard",
            Step::Override => "override",
            Step::Skipped => "skipped",
            Step::Resume => "resume",
            Step::ResumeRollback => "resume_rollback",
            Step::Lease => "lease",
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
            Step::Freeze => "freeze",
            Step::FailureLock => "failure_lock",
            Step::StoreRequests => "store_requests",
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
            DeployKind::Unlock => "unlock",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub at: String,
    #[serde(default, deserialize_with = "de_opt_name")]
    pub host: Option<String>,
    pub step: Step,
    pub ok: bool,
    pub detail: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Journal {
    #[serde(deserialize_with = "de_deploy_id")]
    pub id: String,
    #[serde(deserialize_with = "de_name")]
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
    #[serde(deserialize_with = "de_groups")]
    pub groups: Vec<(String, Vec<String>)>,
    #[serde(deserialize_with = "de_name_map")]
    pub hosts: BTreeMap<String, HostEntry>,
    pub steps: Vec<StepRecord>,
    pub abort_reason: Option<String>,
    #[serde(default)]
    pub needs_human: Vec<String>,
    /// Every canary analysis, with its numbers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analysis: Vec<crate::analysis::AnalysisReport>,
    /// Where `who` came from (`--who`, `SUDO_USER`, `USER`, a CI system's variables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub who_source: Option<String>,
    /// The tag or branch the deploy was asked for by name, and the commit it resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<SourceRef>,
    /// The storage guard's decision: every change, and how each blocking one was acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<crate::guard::GuardRecord>,
    /// Every override this deploy ran with (`--override-freeze`, `--ignore-failure-lock`,
    /// `--skip-promotion-check`), with its reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<String>,
    /// The segments this record already holds (`envs/<env>/segments/<id>/` up to this number);
    /// 0 for a journal without segments.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub segments: u64,
    /// What the reader could not verify (a torn or corrupt segment) and left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub damaged: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A ref the operator named: `tag v1.4.2`, `branch main`, and the commit it pointed at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRef {
    /// `tag` or `branch`.
    pub kind: String,
    pub name: String,
    pub commit: String,
    /// Where it was resolved: the store's ref records, or a git repository.
    pub via: String,
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

/// Parses the journal stored at `key` of `env`: it must parse (every name and id valid), be
/// of `env`, and carry the id its key names.
pub fn parse_journal(bytes: &[u8], key: &str, env: &str) -> Result<Journal, RecordError> {
    let corrupt = |detail: String| RecordError::Corrupt {
        key: key.to_string(),
        detail,
    };
    let j: Journal = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if j.env != env {
        return Err(corrupt(format!(
            "a journal of env {:?} filed under {env}",
            j.env
        )));
    }
    if keys::deploy_journal(env, &j.id) != key {
        return Err(corrupt(format!(
            "a journal of deploy {} filed under another id",
            j.id
        )));
    }
    for (h, e) in &j.hosts {
        if !j
            .groups
            .iter()
            .any(|(g, hs)| *g == e.group && hs.contains(h))
        {
            return Err(corrupt(format!("host {h} is in no batch of the journal")));
        }
    }
    Ok(j)
}

/// Deploy `id` of `env` as the store holds it (base and segments; see [`segments`]), the base
/// verified like [`parse_journal`].
pub fn read_journal(store: &dyn Store, env: &str, id: &str) -> Result<Journal, RecordError> {
    Ok(segments::load(store, env, id)?.journal)
}

/// A record that could not be read, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    pub key: String,
    pub error: String,
}

/// An environment's journals, oldest first, and those that could not be read.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub journals: Vec<Journal>,
    pub unreadable: Vec<Unreadable>,
}

/// Every journal of an environment that can be read and verified, oldest first; the others
/// are listed in [`History::unreadable`]. Only a store that cannot be listed is an error.
pub fn read_history(store: &dyn Store, env: &str) -> Result<History, RecordError> {
    let mut h = History::default();
    let prefix = keys::deploys_prefix(env);
    for meta in store.list(&prefix)? {
        let Some(id) = meta
            .key
            .strip_prefix(prefix.as_str())
            .and_then(|k| k.strip_suffix(".json"))
            .filter(|id| !id.contains('/'))
        else {
            continue;
        };
        match read_journal(store, env, id) {
            Ok(j) => h.journals.push(j),
            Err(e) => h.unreadable.push(Unreadable {
                key: meta.key.clone(),
                error: e.to_string(),
            }),
        }
    }
    h.journals
        .sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
    Ok(h)
}

/// Every journal of an environment that can be read, oldest first ([`read_history`] without
/// the list of those that cannot).
pub fn history(store: &dyn Store, env: &str) -> Result<Vec<Journal>, RecordError> {
    Ok(read_history(store, env)?.journals)
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
#[path = "records_tests.rs"]
mod tests;
