//! The per-environment lease lock (`envs/<env>/lock`) and its renewal.
//!
//! Taken with create-if-absent, so two deploys cannot both hold it. A lease carries its holder,
//! reason, deploy id and expiry; an expired lease can be taken over by compare-and-swap on the
//! stale lease's version, so two takeovers cannot both win. A running deploy holds it through a
//! [`LeaseKeeper`], which renews it beside the run and tells the run when it was lost.
//! [`break_held`] is the one way to remove a lease someone else holds (`resume --force`).
//!
//! Fencing: every acquire and takeover gets a new generation from the env's counter
//! (`envs/<env>/fence`, bumped by compare-and-swap while the lock is held, never reset by a
//! release or [`unlock`]), recorded in the lock record. The run sends it with every request
//! that changes a host ([`crate::protocol::Fence`]); a host refuses a generation older than
//! the newest it has seen. Before a pool driver or a host is asked to change anything, the run
//! asks [`LeaseKeeper::confirm`]: the lease must have been confirmed in the store within half
//! its TTL, else it is renewed there and then; a lease found lost stops the run.

// `LeaseError::Held` carries the holder's record by value (the agreed API); these calls are rare,
// so the large error variant costs nothing that matters.
#![allow(clippy::result_large_err)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use artifact::store::{ETag, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::keys;
use crate::protocol::Fence;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// `user@host` of the holder.
    pub holder: String,
    pub reason: String,
    #[serde(deserialize_with = "crate::records::de_deploy_id")]
    pub deploy_id: String,
    /// The fencing generation of this hold (0 in records written before fencing).
    #[serde(default)]
    pub generation: u64,
    /// RFC 3339.
    pub acquired_at: String,
    /// RFC 3339.
    pub expires_at: String,
}

/// A held lease.
#[derive(Debug, Clone)]
pub struct Lease {
    pub env: String,
    pub info: LeaseInfo,
    pub etag: ETag,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("environment {env} is locked by {} for deploy {} ({}) until {}", .info.holder, .info.deploy_id, .info.reason, .info.expires_at)]
    Held { env: String, info: LeaseInfo },
    #[error("the lease on {env} was lost (taken over or removed)")]
    Lost { env: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("lock record of {env} is unreadable: {detail}")]
    Corrupt { env: String, detail: String },
    #[error("the fencing counter {key} is unreadable: {detail}")]
    CorruptFence { key: String, detail: String },
}

/// `envs/<env>/fence`: the last fencing generation handed out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FenceRecord {
    pub generation: u64,
    /// The deploy it was handed to.
    #[serde(default)]
    pub deploy_id: String,
    #[serde(default)]
    pub at: String,
}

/// Reads the fencing counter (absent: generation 0).
pub fn fence_record(
    store: &dyn Store,
    env: &str,
) -> Result<(FenceRecord, Option<ETag>), LeaseError> {
    let key = keys::env_fence(env);
    match store.get_bytes(&key) {
        Ok((b, meta)) => {
            let r = serde_json::from_slice(&b).map_err(|e| LeaseError::CorruptFence {
                key: key.clone(),
                detail: e.to_string(),
            })?;
            Ok((r, Some(meta.etag)))
        }
        Err(StoreError::NotFound { .. }) => Ok((FenceRecord::default(), None)),
        Err(e) => Err(e.into()),
    }
}

/// Bumps the fencing counter past both its value and `floor` (compare-and-swap, retried);
/// returns the new generation. A counter that does not parse is replaced only when
/// `repair` is set ([`unlock`]), else it is an error.
fn bump_fence(
    store: &dyn Store,
    env: &str,
    deploy_id: &str,
    floor: u64,
    repair: bool,
) -> Result<u64, LeaseError> {
    let key = keys::env_fence(env);
    for _ in 0..20 {
        let (cur, etag) = match fence_record(store, env) {
            Ok(x) => x,
            Err(LeaseError::CorruptFence { .. }) if repair => {
                let etag = store.head(&key)?.map(|m| m.etag);
                (FenceRecord::default(), etag)
            }
            Err(e) => return Err(e),
        };
        let next = cur.generation.max(floor) + 1;
        let rec = FenceRecord {
            generation: next,
            deploy_id: deploy_id.to_string(),
            at: rfc3339(SystemTime::now()),
        };
        let body = serde_json::to_vec_pretty(&rec).expect("serialises");
        match store.put_cas(&key, &body, etag.as_ref()) {
            Ok(_) => return Ok(next),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict { key }.into())
}

/// Takes the lease on `env` for `ttl`, taking over an expired one.
///
/// Creation is compare-and-swap on "absent", and a takeover is compare-and-swap on the expired
/// lease's version, so of two racing callers exactly one wins; the other gets
/// [`LeaseError::Held`] with the winner's record.
pub fn acquire(
    store: &dyn Store,
    env: &str,
    holder: &str,
    reason: &str,
    deploy_id: &str,
    ttl: Duration,
    now: SystemTime,
) -> Result<Lease, LeaseError> {
    let lease = take(store, env, holder, reason, deploy_id, ttl, now)?;
    let etag = lease.etag.clone();
    match generation(store, lease) {
        Ok(l) => Ok(l),
        Err(e @ LeaseError::Lost { .. }) => Err(e),
        Err(e) => {
            // No generation, no lease: give the lock back rather than hold it until it expires.
            let _ = store.delete_if(&keys::env_lock(env), &etag);
            Err(e)
        }
    }
}

/// The new hold's generation: the fencing counter is bumped while the lock is held, then the
/// lock record is rewritten with it (compare-and-swap on our own version: if the lock changed
/// hands in between, this hold is already lost).
fn generation(store: &dyn Store, mut lease: Lease) -> Result<Lease, LeaseError> {
    let gen_ = bump_fence(store, &lease.env, &lease.info.deploy_id, 0, false)?;
    let mut info = lease.info.clone();
    info.generation = gen_;
    match store.put_cas(
        &keys::env_lock(&lease.env),
        &encode(&info),
        Some(&lease.etag),
    ) {
        Ok(etag) => {
            lease.info = info;
            lease.etag = etag;
            Ok(lease)
        }
        Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound { .. }) => {
            Err(LeaseError::Lost { env: lease.env })
        }
        Err(e) => Err(e.into()),
    }
}

/// Creates the lock record, or takes an expired one over.
fn take(
    store: &dyn Store,
    env: &str,
    holder: &str,
    reason: &str,
    deploy_id: &str,
    ttl: Duration,
    now: SystemTime,
) -> Result<Lease, LeaseError> {
    let key = keys::env_lock(env);
    let info = LeaseInfo {
        holder: holder.to_string(),
        reason: reason.to_string(),
        deploy_id: deploy_id.to_string(),
        generation: 0,
        acquired_at: rfc3339(now),
        expires_at: rfc3339(now + ttl),
    };
    let body = encode(&info);
    // A few rounds: the record may vanish (released) between our attempts.
    for _ in 0..3 {
        match store.put_cas(&key, &body, None) {
            Ok(etag) => {
                return Ok(Lease {
                    env: env.to_string(),
                    info,
                    etag,
                });
            }
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let Some((held, etag)) = current(store, env)? else {
            continue;
        };
        if !is_expired(env, &held, now)? {
            return Err(LeaseError::Held {
                env: env.to_string(),
                info: held,
            });
        }
        match store.put_cas(&key, &body, Some(&etag)) {
            Ok(etag) => {
                return Ok(Lease {
                    env: env.to_string(),
                    info,
                    etag,
                });
            }
            Err(StoreError::Conflict { .. }) => {
                // Someone else took it over (or released it) first: report who holds it now.
                match current(store, env)? {
                    Some((winner, _)) if !is_expired(env, &winner, now)? => {
                        return Err(LeaseError::Held {
                            env: env.to_string(),
                            info: winner,
                        });
                    }
                    _ => continue,
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    match current(store, env)? {
        Some((held, _)) => Err(LeaseError::Held {
            env: env.to_string(),
            info: held,
        }),
        None => Err(StoreError::Conflict { key }.into()),
    }
}

/// Extends a held lease; [`LeaseError::Lost`] if it is no longer ours.
pub fn renew(
    store: &dyn Store,
    lease: &mut Lease,
    ttl: Duration,
    now: SystemTime,
) -> Result<(), LeaseError> {
    let mut info = lease.info.clone();
    info.expires_at = rfc3339(now + ttl);
    match store.put_cas(
        &keys::env_lock(&lease.env),
        &encode(&info),
        Some(&lease.etag),
    ) {
        Ok(etag) => {
            lease.info = info;
            lease.etag = etag;
            Ok(())
        }
        Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound { .. }) => {
            Err(LeaseError::Lost {
                env: lease.env.clone(),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Releases a held lease (only if it is still ours).
pub fn release(store: &dyn Store, lease: &Lease) -> Result<(), LeaseError> {
    match store.delete_if(&keys::env_lock(&lease.env), &lease.etag) {
        Ok(()) => Ok(()),
        Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound { .. }) => {
            Err(LeaseError::Lost {
                env: lease.env.clone(),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads the current lease, if any (expired or not).
pub fn current(store: &dyn Store, env: &str) -> Result<Option<(LeaseInfo, ETag)>, LeaseError> {
    let (bytes, meta) = match store.get_bytes(&keys::env_lock(env)) {
        Ok(x) => x,
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let info: LeaseInfo = serde_json::from_slice(&bytes).map_err(|e| LeaseError::Corrupt {
        env: env.to_string(),
        detail: e.to_string(),
    })?;
    Ok(Some((info, meta.etag)))
}

/// True if `info` has expired at `now`.
pub fn is_expired(env: &str, info: &LeaseInfo, now: SystemTime) -> Result<bool, LeaseError> {
    let expires = humantime::parse_rfc3339(&info.expires_at).map_err(|e| LeaseError::Corrupt {
        env: env.to_string(),
        detail: format!("expires_at {:?}: {e}", info.expires_at),
    })?;
    Ok(expires <= now)
}

/// Removes the lease on `env` if (and only if) it is held by `deploy_id`, by compare-and-swap
/// on the version read. Returns whether a lease was removed.
pub fn break_held(store: &dyn Store, env: &str, deploy_id: &str) -> Result<bool, LeaseError> {
    let Some((info, etag)) = current(store, env)? else {
        return Ok(false);
    };
    if info.deploy_id != deploy_id {
        return Err(LeaseError::Held {
            env: env.to_string(),
            info,
        });
    }
    match store.delete_if(&keys::env_lock(env), &etag) {
        Ok(()) => Ok(true),
        Err(StoreError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// What [`unlock`] did.
#[derive(Clone, Debug)]
pub struct Unlocked {
    /// The lock record removed: its lease, or why it did not parse; `None`: there was none.
    pub removed: Option<Result<LeaseInfo, String>>,
    /// The fencing generation the counter now stands at: every host-changing request of the
    /// removed holder is older, so a host a later deploy reaches refuses it.
    pub generation: u64,
}

/// Breaks the lock of `env`, whatever holds it and even when its record does not parse, and
/// bumps the fencing counter past `floor` (the newest generation the hosts report; a counter
/// that does not parse is rewritten). For a lock whose holder is surely gone; the caller
/// records who did it and why.
pub fn unlock(
    store: &dyn Store,
    env: &str,
    by_deploy: &str,
    floor: u64,
) -> Result<Unlocked, LeaseError> {
    let key = keys::env_lock(env);
    let removed = match store.get_bytes(&key) {
        Ok((b, meta)) => {
            let parsed = serde_json::from_slice::<LeaseInfo>(&b).map_err(|e| e.to_string());
            match store.delete_if(&key, &meta.etag) {
                Ok(()) | Err(StoreError::NotFound { .. }) => {}
                Err(StoreError::Conflict { .. }) => {
                    return Err(LeaseError::Lost {
                        env: env.to_string(),
                    });
                }
                Err(e) => return Err(e.into()),
            }
            Some(parsed)
        }
        Err(StoreError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let generation = bump_fence(store, env, by_deploy, floor, true)?;
    Ok(Unlocked {
        removed,
        generation,
    })
}

/// A held lease, renewed while a run works ([`LeaseKeeper::renew_until`]).
#[derive(Debug)]
pub struct LeaseKeeper {
    lease: Mutex<Lease>,
    ttl: Duration,
    fence: Fence,
    lost: AtomicBool,
    why_lost: Mutex<Option<String>>,
    /// When the lease was last confirmed in the store (acquired or renewed).
    confirmed: Mutex<Instant>,
}

impl LeaseKeeper {
    /// Keeps `lease` (just acquired). Its deploy id must be a valid one (it is sent to hosts).
    pub fn new(lease: Lease, ttl: Duration) -> Result<Self, LeaseError> {
        let deploy_id = model::names::DeployId::parse(&lease.info.deploy_id).map_err(|e| {
            LeaseError::Corrupt {
                env: lease.env.clone(),
                detail: e.to_string(),
            }
        })?;
        let env = model::names::Name::parse(&lease.env).map_err(|e| LeaseError::Corrupt {
            env: lease.env.clone(),
            detail: e.to_string(),
        })?;
        Ok(LeaseKeeper {
            fence: Fence {
                env,
                token: lease.info.generation,
                deploy_id,
            },
            lease: Mutex::new(lease),
            ttl,
            lost: AtomicBool::new(false),
            why_lost: Mutex::new(None),
            confirmed: Mutex::new(Instant::now()),
        })
    }

    /// The fencing token every host-changing request of this run carries.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// `Err` once the lease was lost (taken over or removed): the run must stop.
    pub fn held(&self) -> Result<(), String> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(self.why_lost());
        }
        Ok(())
    }

    fn why_lost(&self) -> String {
        self.why_lost
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| "the environment lease was lost".into())
    }

    /// True once the lease was lost.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Records that the lease is lost (a renewal failed, or a host refused our fence).
    pub fn mark_lost(&self, why: String) {
        let mut w = self.why_lost.lock().unwrap();
        if w.is_none() {
            *w = Some(why);
        }
        self.lost.store(true, Ordering::SeqCst);
    }

    /// The one question asked before a pool driver or a host is told to change anything: is
    /// the lease still ours? It must have been confirmed in the store within half its TTL;
    /// if not (a renewal failed, or this process was stopped), it is renewed now. `Err`: the
    /// step must not be taken (the lease is lost, or could not be confirmed).
    pub fn confirm(&self, store: &dyn Store) -> Result<(), String> {
        self.held()?;
        if self.confirmed.lock().unwrap().elapsed() < self.ttl / 2 {
            return Ok(());
        }
        let mut l = self.lease.lock().unwrap();
        match renew(store, &mut l, self.ttl, SystemTime::now()) {
            Ok(()) => {
                *self.confirmed.lock().unwrap() = Instant::now();
                Ok(())
            }
            Err(LeaseError::Lost { .. }) => {
                self.mark_lost(lost_to(store, &l));
                Err(self.why_lost())
            }
            Err(e) => Err(format!(
                "the environment lease could not be confirmed (its last renewal was over {}s ago): {e}",
                (self.ttl / 2).as_secs()
            )),
        }
    }

    /// Renews every third of the ttl (at least every 200 ms) until `stop` is set or the lease
    /// is lost. A transient store error is retried next round: the ttl leaves room for it.
    pub fn renew_until(&self, store: &dyn Store, stop: &AtomicBool) {
        let every = (self.ttl / 3).max(Duration::from_millis(200));
        let mut last = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
            if last.elapsed() < every {
                continue;
            }
            last = Instant::now();
            let mut l = self.lease.lock().unwrap();
            match renew(store, &mut l, self.ttl, SystemTime::now()) {
                Ok(()) => *self.confirmed.lock().unwrap() = Instant::now(),
                Err(LeaseError::Lost { .. }) => {
                    self.mark_lost(lost_to(store, &l));
                    return;
                }
                Err(_) => {}
            }
        }
    }

    /// Releases the lease unless it was lost (then it is someone else's now).
    pub fn release(&self, store: &dyn Store) {
        if !self.is_lost() {
            let _ = release(store, &self.lease.lock().unwrap());
        }
    }
}

/// Why `lease` is lost, naming who holds the env now if anyone does.
fn lost_to(store: &dyn Store, lease: &Lease) -> String {
    let now = match current(store, &lease.env) {
        Ok(Some((info, _))) => format!(
            "deploy {} of {} (fencing generation {}) holds it now",
            info.deploy_id, info.holder, info.generation
        ),
        Ok(None) => "it was removed (`applier unlock`?)".into(),
        Err(e) => format!("the lock record is unreadable: {e}"),
    };
    format!(
        "the lease on {} was lost: {now}; this deploy (generation {}) stopped at once and changes nothing more",
        lease.env, lease.info.generation
    )
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn encode(info: &LeaseInfo) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(info).expect("a lease record always serialises");
    v.push(b'\n');
    v
}

#[cfg(test)]
#[path = "lease_tests.rs"]
mod tests;
