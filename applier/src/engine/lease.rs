//! The per-environment lease lock (`envs/<env>/lock`) and its renewal.
//!
//! Taken with create-if-absent, so two deploys cannot both hold it. A lease carries its holder,
//! reason, deploy id and expiry; an expired lease can be taken over by compare-and-swap on the
//! stale lease's version, so two takeovers cannot both win. A running deploy holds it through a
//! [`LeaseKeeper`], which renews it beside the run and tells the run when it was lost.
//! [`break_held`] is the one way to remove a lease someone else holds (`resume --force`).
//!
//! Fencing: [`LeaseKeeper::held`] is the one question the engine asks before each batch and
//! while it waits; a fencing token (a counter bumped on every acquire, checked by the writes
//! the engine makes) belongs in [`LeaseInfo`] and in that check.

// `LeaseError::Held` carries the holder's record by value (the agreed API); these calls are rare,
// so the large error variant costs nothing that matters.
#![allow(clippy::result_large_err)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use artifact::store::{ETag, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::keys;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// `user@host` of the holder.
    pub holder: String,
    pub reason: String,
    pub deploy_id: String,
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
    let key = keys::env_lock(env);
    let info = LeaseInfo {
        holder: holder.to_string(),
        reason: reason.to_string(),
        deploy_id: deploy_id.to_string(),
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

/// A held lease, renewed while a run works ([`LeaseKeeper::renew_until`]).
#[derive(Debug)]
pub struct LeaseKeeper {
    lease: Mutex<Lease>,
    ttl: Duration,
    lost: AtomicBool,
}

impl LeaseKeeper {
    pub fn new(lease: Lease, ttl: Duration) -> Self {
        LeaseKeeper {
            lease: Mutex::new(lease),
            ttl,
            lost: AtomicBool::new(false),
        }
    }

    /// `Err` once the lease was lost (taken over or removed): the run must stop.
    pub fn held(&self) -> Result<(), String> {
        if self.lost.load(Ordering::SeqCst) {
            return Err("the environment lease was lost".into());
        }
        Ok(())
    }

    /// True once the lease was lost.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
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
            if let Err(LeaseError::Lost { .. }) = renew(store, &mut l, self.ttl, SystemTime::now())
            {
                self.lost.store(true, Ordering::SeqCst);
                return;
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

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn encode(info: &LeaseInfo) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(info).expect("a lease record always serialises");
    v.push(b'\n');
    v
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::*;
    use artifact::store::fs::FsStore;

    const TTL: Duration = Duration::from_secs(600);

    fn store() -> (tempfile::TempDir, Arc<FsStore>) {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(FsStore::open(dir.path()).unwrap());
        (dir, s)
    }

    #[test]
    fn acquire_held_renew_release() {
        let (_d, s) = store();
        let now = SystemTime::now();
        let mut lease = acquire(&*s, "prod", "a@h1", "deploy", "d1", TTL, now).unwrap();
        assert_eq!(lease.info.holder, "a@h1");
        match acquire(&*s, "prod", "b@h2", "deploy", "d2", TTL, now) {
            Err(LeaseError::Held { info, .. }) => assert_eq!(info.deploy_id, "d1"),
            other => panic!("expected Held, got {other:?}"),
        }
        let before = lease.info.expires_at.clone();
        renew(&*s, &mut lease, TTL * 2, now + Duration::from_secs(60)).unwrap();
        assert_ne!(lease.info.expires_at, before);
        let (cur, etag) = current(&*s, "prod").unwrap().unwrap();
        assert_eq!(cur, lease.info);
        assert_eq!(etag, lease.etag);
        release(&*s, &lease).unwrap();
        assert!(current(&*s, "prod").unwrap().is_none());
        // Another env is independent, and the lock is free again.
        acquire(&*s, "prod", "b@h2", "deploy", "d2", TTL, now).unwrap();
        acquire(&*s, "staging", "b@h2", "deploy", "d3", TTL, now).unwrap();
    }

    #[test]
    fn expired_lease_is_taken_over_and_old_holder_loses_it() {
        let (_d, s) = store();
        let t0 = SystemTime::now();
        let mut old = acquire(&*s, "prod", "a@h1", "r", "d1", Duration::from_secs(10), t0).unwrap();
        let later = t0 + Duration::from_secs(11);
        let new = acquire(&*s, "prod", "b@h2", "r", "d2", TTL, later).unwrap();
        assert_eq!(current(&*s, "prod").unwrap().unwrap().0.deploy_id, "d2");
        assert!(matches!(
            renew(&*s, &mut old, TTL, later),
            Err(LeaseError::Lost { .. })
        ));
        assert!(matches!(release(&*s, &old), Err(LeaseError::Lost { .. })));
        // The new holder still holds it.
        assert_eq!(current(&*s, "prod").unwrap().unwrap().1, new.etag);
    }

    #[test]
    fn corrupt_record_is_reported() {
        let (_d, s) = store();
        s.put_cas(&keys::env_lock("prod"), b"not json", None)
            .unwrap();
        assert!(matches!(
            acquire(&*s, "prod", "a", "r", "d", TTL, SystemTime::now()),
            Err(LeaseError::Corrupt { .. })
        ));
    }

    /// Runs `n` threads that call `acquire` at the same moment; returns the winners' deploy ids.
    fn race(s: &Arc<FsStore>, n: usize, now: SystemTime) -> Vec<String> {
        let barrier = Arc::new(Barrier::new(n));
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (s, barrier) = (s.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    match acquire(
                        &*s,
                        "prod",
                        &format!("u{i}@h"),
                        "race",
                        &format!("d{i}"),
                        TTL,
                        now,
                    ) {
                        Ok(l) => Some(l.info.deploy_id),
                        Err(LeaseError::Held { .. }) => None,
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect()
    }

    #[test]
    fn racing_acquires_have_exactly_one_winner() {
        for _ in 0..20 {
            let (_d, s) = store();
            let winners = race(&s, 8, SystemTime::now());
            assert_eq!(winners.len(), 1, "winners: {winners:?}");
            assert_eq!(
                current(&*s, "prod").unwrap().unwrap().0.deploy_id,
                winners[0]
            );
        }
    }

    #[test]
    fn racing_takeovers_of_an_expired_lease_have_exactly_one_winner() {
        for _ in 0..20 {
            let (_d, s) = store();
            let t0 = SystemTime::now();
            acquire(&*s, "prod", "old@h", "r", "old", Duration::from_secs(1), t0).unwrap();
            let winners = race(&s, 8, t0 + Duration::from_secs(5));
            assert_eq!(winners.len(), 1, "winners: {winners:?}");
            assert_eq!(
                current(&*s, "prod").unwrap().unwrap().0.deploy_id,
                winners[0]
            );
        }
    }

    #[test]
    fn break_held_removes_only_the_named_deploys_lease() {
        let (_d, s) = store();
        let now = SystemTime::now();
        acquire(&*s, "prod", "a@h1", "r", "d1", TTL, now).unwrap();
        assert!(matches!(
            break_held(&*s, "prod", "d2"),
            Err(LeaseError::Held { info, .. }) if info.deploy_id == "d1"
        ));
        assert!(current(&*s, "prod").unwrap().is_some());
        assert!(break_held(&*s, "prod", "d1").unwrap());
        assert!(current(&*s, "prod").unwrap().is_none());
        assert!(!break_held(&*s, "prod", "d1").unwrap());
    }
}
