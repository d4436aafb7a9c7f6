//! The applier's one door to the store: every request it makes goes through a
//! [`MeteredStore`], which
//!
//! - caps the requests in flight at once, across every host of the deploy (and every env
//!   sharing the meter): `store_options.max_concurrent_requests`. A request holds its place
//!   from its start until the store answered (for a GET, until the answer's headers arrived; the
//!   body is streamed outside the cap, so a reader kept open never blocks another request);
//! - counts them by kind ([`StoreRequests`]: `get blob`, `put journal`, `presign blob`, ...),
//!   which a deploy reports in its journal, its summary and `--format json`;
//! - signs one presigned URL per blob and hands the same one to every host that asks (an HTTP
//!   cache in front of the store can then serve them all). A URL asked for with lifetime `t`
//!   is signed for `2t` and handed out while at least `t` of it is left, then signed again:
//!   every URL handed out is good for at least `t`, however long the deploy runs.
//!
//! The meter changes no answer: a target still verifies every digest of what it fetched.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use artifact::Digest;
use artifact::store::{ETag, GetResult, ObjectMeta, PutBody, PutOutcome, Store, StoreError};
use serde::Serialize;

/// The default cap on store requests in flight at once.
pub const DEFAULT_MAX_CONCURRENT: usize = 32;

/// Store requests by kind (`<request> <record>`: `get blob`, `put state`, `put journal`,
/// `presign blob`, `list journal`, ...), and their total.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StoreRequests {
    pub total: u64,
    pub by_kind: BTreeMap<String, u64>,
}

impl StoreRequests {
    /// What was counted since `before` (an earlier reading of the same meter).
    pub fn since(&self, before: &StoreRequests) -> StoreRequests {
        let by_kind: BTreeMap<String, u64> = self
            .by_kind
            .iter()
            .map(|(k, n)| (k.clone(), n - before.by_kind.get(k).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect();
        StoreRequests {
            total: by_kind.values().sum(),
            by_kind,
        }
    }

    /// Requests of one kind.
    pub fn of(&self, kind: &str) -> u64 {
        self.by_kind.get(kind).copied().unwrap_or(0)
    }

    /// `41 (get blob 3, put journal 20, ...)`.
    pub fn summary(&self) -> String {
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        format!("{} ({})", self.total, kinds.join(", "))
    }
}

/// The record a key is of, for [`StoreRequests`]: `blob`, `state`, `journal` (base and
/// segments), `lease` (lock and fence), `failure-lock`, else the key's first segment.
fn record_of(key: &str) -> String {
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        ["envs", _, "state.json"] => "state".into(),
        ["envs", _, "deploys" | "segments", ..] => "journal".into(),
        ["envs", _, "lock" | "fence"] => "lease".into(),
        ["envs", _, "failure-lock.json"] => "failure-lock".into(),
        ["blobs", ..] => "blob".into(),
        [first, ..] => first.to_string(),
        [] => String::new(),
    }
}

/// A presigned URL (`None`: the store has none) and until when it may be handed out.
#[derive(Debug)]
struct Signed {
    url: Option<String>,
    hand_out_until: Instant,
}

/// The cap, the counts and the presigned URLs one deploy shares.
#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    cap: usize,
    in_flight: Mutex<usize>,
    freed: Condvar,
    counts: Mutex<BTreeMap<String, u64>>,
    signed: Mutex<HashMap<String, Signed>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A place among the requests in flight, given back when dropped.
struct Permit<'a>(&'a MeteredStore);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *lock(&self.0.in_flight) -= 1;
        self.0.freed.notify_one();
    }
}

impl MeteredStore {
    /// `inner` with at most `cap` requests in flight at once (at least 1).
    pub fn new(inner: Arc<dyn Store>, cap: usize) -> Arc<Self> {
        Arc::new(MeteredStore {
            inner,
            cap: cap.max(1),
            in_flight: Mutex::new(0),
            freed: Condvar::new(),
            counts: Mutex::new(BTreeMap::new()),
            signed: Mutex::new(HashMap::new()),
        })
    }

    /// Every request counted so far.
    pub fn requests(&self) -> StoreRequests {
        let by_kind = lock(&self.counts).clone();
        StoreRequests {
            total: by_kind.values().sum(),
            by_kind,
        }
    }

    fn permit(&self) -> Permit<'_> {
        let mut n = lock(&self.in_flight);
        while *n >= self.cap {
            n = self.freed.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += 1;
        Permit(self)
    }

    fn call<T>(
        &self,
        req: &str,
        key: &str,
        f: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        *lock(&self.counts)
            .entry(format!("{req} {}", record_of(key)))
            .or_default() += 1;
        let _p = self.permit();
        f()
    }
}

impl Store for MeteredStore {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn put_if_absent(
        &self,
        key: &str,
        body: PutBody,
        sha256: Option<&Digest>,
    ) -> Result<PutOutcome, StoreError> {
        self.call("put", key, || self.inner.put_if_absent(key, body, sha256))
    }
    fn put_cas(&self, key: &str, data: &[u8], expected: Option<&ETag>) -> Result<ETag, StoreError> {
        self.call("put", key, || self.inner.put_cas(key, data, expected))
    }
    fn get(&self, key: &str) -> Result<GetResult, StoreError> {
        self.call("get", key, || self.inner.get(key))
    }
    fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        self.call("head", key, || self.inner.head(key))
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.call("list", prefix, || self.inner.list(prefix))
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.call("delete", key, || self.inner.delete(key))
    }
    fn delete_if(&self, key: &str, expected: &ETag) -> Result<(), StoreError> {
        self.call("delete", key, || self.inner.delete_if(key, expected))
    }
    /// The URL already signed for `key` while at least `expires` of it is left; else a new
    /// one, signed for twice `expires` (see the module doc).
    fn presign_get(&self, key: &str, expires: Duration) -> Result<Option<String>, StoreError> {
        let mut signed = lock(&self.signed);
        if let Some(s) = signed.get(key)
            && Instant::now() <= s.hand_out_until
        {
            return Ok(s.url.clone());
        }
        let asked = Instant::now();
        let url = self.call("presign", key, || {
            self.inner.presign_get(key, expires.saturating_mul(2))
        })?;
        // A store without presigned URLs has none later either.
        let hand_out_until = match url {
            Some(_) => asked + expires,
            None => asked + Duration::from_secs(365 * 24 * 3600),
        };
        signed.insert(
            key.to_string(),
            Signed {
                url: url.clone(),
                hand_out_until,
            },
        );
        Ok(url)
    }
}

#[cfg(test)]
#[path = "store_meter_tests.rs"]
mod tests;
