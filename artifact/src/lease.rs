//! The per-environment lease lock (`envs/<env>/lock`).
//!
//! Taken with create-if-absent, so two deploys cannot both hold it. A lease carries its holder,
//! reason, deploy id and expiry; an expired lease can be taken over by compare-and-swap on the
//! stale lease's version, so two takeovers cannot both win. The holder renews it while working.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::store::{ETag, Store, StoreError};

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
pub fn acquire(
    store: &dyn Store,
    env: &str,
    holder: &str,
    reason: &str,
    deploy_id: &str,
    ttl: Duration,
    now: SystemTime,
) -> Result<Lease, LeaseError> {
    let _ = (store, env, holder, reason, deploy_id, ttl, now);
    todo!("lease::acquire")
}

/// Extends a held lease; [`LeaseError::Lost`] if it is no longer ours.
pub fn renew(store: &dyn Store, lease: &mut Lease, ttl: Duration, now: SystemTime) -> Result<(), LeaseError> {
    let _ = (store, lease, ttl, now);
    todo!("lease::renew")
}

/// Releases a held lease (only if it is still ours).
pub fn release(store: &dyn Store, lease: &Lease) -> Result<(), LeaseError> {
    let _ = (store, lease);
    todo!("lease::release")
}

/// Reads the current lease, if any (expired or not).
pub fn current(store: &dyn Store, env: &str) -> Result<Option<(LeaseInfo, ETag)>, LeaseError> {
    let _ = (store, env);
    todo!("lease::current")
}
