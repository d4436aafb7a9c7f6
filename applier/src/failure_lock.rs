//! The failure lock: after a deploy was rolled back or left hosts that need a human, the
//! environment takes no more automatic deploys (continuous deployment, `promote --auto`) until
//! someone looked and ran `applier unlock --env <env> --reason <why>`. A person can still
//! deploy by hand with `--ignore-failure-lock <reason>`, which the journal records.
//!
//! The record is `envs/<env>/failure-lock.json`, written by compare-and-swap. Clearing it
//! keeps it, with who cleared it, when and why (so the last unlock stays auditable); a lock
//! is set while it has no `cleared`.
//!
//! This is not the lease (`envs/<env>/lock`, held while a deploy runs): `applier unlock`
//! clears both: this record, and a stuck lease (fencing its holder out).

use artifact::store::{ETag, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::keys;
use crate::records::{Journal, JournalStatus, RecordError};
use crate::target::now_rfc3339;

/// `envs/<env>/failure-lock.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureLock {
    pub env: String,
    /// The deploy that failed.
    pub deploy_id: String,
    /// Its final status (`rolled_back`, `needs_human`).
    pub status: JournalStatus,
    /// Its outcome message.
    pub reason: String,
    pub commit: Option<String>,
    pub who: String,
    pub at: String,
    #[serde(default)]
    pub cleared: Option<Cleared>,
}

/// Who cleared a lock, when and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cleared {
    pub by: String,
    pub reason: String,
    pub at: String,
}

impl FailureLock {
    pub fn is_set(&self) -> bool {
        self.cleared.is_none()
    }

    /// One line for refusals: what failed, and how to unlock.
    pub fn describe(&self) -> String {
        format!(
            "{} is locked since deploy {} ended {} at {} ({}): {}",
            self.env,
            self.deploy_id,
            self.status.as_str(),
            self.at,
            self.who,
            self.reason
        )
    }
}

/// The env's failure-lock record (set or cleared), if there is one.
pub fn read(store: &dyn Store, env: &str) -> Result<Option<(FailureLock, ETag)>, RecordError> {
    let key = keys::failure_lock(env);
    match store.get_bytes(&key) {
        Ok((b, meta)) => {
            let l: FailureLock = serde_json::from_slice(&b).map_err(|e| RecordError::Corrupt {
                key: key.clone(),
                detail: e.to_string(),
            })?;
            if l.env != env {
                return Err(RecordError::Corrupt {
                    key,
                    detail: format!("it names env {:?}", l.env),
                });
            }
            Ok(Some((l, meta.etag)))
        }
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The lock, if it is set.
pub fn active(store: &dyn Store, env: &str) -> Result<Option<FailureLock>, RecordError> {
    Ok(read(store, env)?
        .map(|(l, _)| l)
        .filter(FailureLock::is_set))
}

/// Locks the env after `journal` ended rolled back or needing a human; `None` for any other
/// ending (nothing is written).
pub fn lock_after(
    store: &dyn Store,
    journal: &Journal,
    message: &str,
) -> Result<Option<FailureLock>, RecordError> {
    if !matches!(
        journal.status,
        JournalStatus::RolledBack | JournalStatus::NeedsHuman
    ) {
        return Ok(None);
    }
    let lock = FailureLock {
        env: journal.env.clone(),
        deploy_id: journal.id.clone(),
        status: journal.status,
        reason: message.to_string(),
        commit: journal.commit.clone(),
        who: journal.who.clone(),
        at: now_rfc3339(),
        cleared: None,
    };
    write(store, &journal.env, &lock)?;
    Ok(Some(lock))
}

/// Writes `lock` over whatever is there (the newest failure wins), by compare-and-swap.
fn write(store: &dyn Store, env: &str, lock: &FailureLock) -> Result<(), RecordError> {
    let key = keys::failure_lock(env);
    let bytes = serde_json::to_vec_pretty(lock).expect("serialises");
    for _ in 0..10 {
        let etag = store.head(&key)?.map(|m| m.etag);
        match store.put_cas(&key, &bytes, etag.as_ref()) {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(RecordError::Contended { key, tries: 10 })
}

/// What `unlock` found and did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Unlocked {
    /// The lock was set and is cleared now.
    Cleared(FailureLock),
    /// There was no lock set (the record, if any, as it is).
    NotLocked(Option<FailureLock>),
}

/// Clears the env's failure lock, recording who and why. The reason must not be empty.
pub fn clear(
    store: &dyn Store,
    env: &str,
    by: &str,
    reason: &str,
) -> Result<Unlocked, RecordError> {
    let Some((mut lock, etag)) = read(store, env)? else {
        return Ok(Unlocked::NotLocked(None));
    };
    if !lock.is_set() {
        return Ok(Unlocked::NotLocked(Some(lock)));
    }
    lock.cleared = Some(Cleared {
        by: by.to_string(),
        reason: reason.to_string(),
        at: now_rfc3339(),
    });
    let bytes = serde_json::to_vec_pretty(&lock).expect("serialises");
    match store.put_cas(&keys::failure_lock(env), &bytes, Some(&etag)) {
        Ok(_) => Ok(Unlocked::Cleared(lock)),
        // A newer failure locked it again meanwhile: leave that one.
        Err(StoreError::Conflict { .. }) => Err(RecordError::Contended {
            key: keys::failure_lock(env),
            tries: 1,
        }),
        Err(e) => Err(e.into()),
    }
}
