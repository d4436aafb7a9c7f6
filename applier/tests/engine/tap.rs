//! A store wrapper for the engine tests and the fleet benchmark: counts every request by kind
//! and key area and the bytes written, and can be cut off (`kill`) as the store looks to an
//! applier process that died: nothing it sends after that arrives.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use artifact::Digest;
use artifact::store::{ETag, GetResult, ObjectMeta, PutBody, PutOutcome, Store, StoreError};

/// Requests and bytes written, by `<request> <area>`: the key's first segment, and for env
/// records the record kind (`put_cas envs/state.json`, `put_cas envs/segments`, `get blobs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: BTreeMap<String, u64>,
    pub bytes_written: BTreeMap<String, u64>,
}

impl Counts {
    /// Requests in `area` or under it (`envs` counts `envs/state.json` too).
    pub fn requests_in(&self, area: &str) -> u64 {
        sum_in(&self.requests, area)
    }

    pub fn bytes_in(&self, area: &str) -> u64 {
        sum_in(&self.bytes_written, area)
    }
}

fn sum_in(m: &BTreeMap<String, u64>, area: &str) -> u64 {
    m.iter()
        .filter(|(k, _)| {
            let a = k.split_once(' ').map(|(_, a)| a).unwrap_or("");
            a == area || a.starts_with(&format!("{area}/"))
        })
        .map(|(_, n)| n)
        .sum()
}

/// `envs/<env>/deploys/x.json` -> `envs/deploys`; `blobs/sha256/..` -> `blobs`.
fn area(key: &str) -> String {
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        ["envs", _, kind, ..] => format!("envs/{kind}"),
        [first, ..] => first.to_string(),
        [] => String::new(),
    }
}

#[derive(Debug)]
pub struct TapStore {
    inner: Arc<dyn Store>,
    counts: Mutex<Counts>,
    /// Read-held by every request; `kill` takes it for writing, so requests in flight finish
    /// first and none starts after.
    alive: RwLock<bool>,
}

impl TapStore {
    pub fn new(inner: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(TapStore {
            inner,
            counts: Mutex::new(Counts::default()),
            alive: RwLock::new(true),
        })
    }

    pub fn counts(&self) -> Counts {
        self.counts.lock().unwrap().clone()
    }

    /// Counts from zero again (the fleet example, after setting up its artifacts).
    #[allow(dead_code)]
    pub fn reset(&self) {
        *self.counts.lock().unwrap() = Counts::default();
    }

    /// From now on every request fails as if the store were unreachable; waits for the
    /// requests in flight.
    pub fn kill(&self) {
        *self.alive.write().unwrap() = false;
    }

    fn tap<T>(
        &self,
        req: &str,
        key: &str,
        written: usize,
        f: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let alive = self.alive.read().unwrap();
        if !*alive {
            return Err(StoreError::Unavailable {
                store: self.inner.location(),
                detail: "cut off (the applier is gone)".into(),
            });
        }
        let k = format!("{req} {}", area(key));
        {
            let mut c = self.counts.lock().unwrap();
            *c.requests.entry(k.clone()).or_default() += 1;
            if written > 0 {
                *c.bytes_written.entry(k).or_default() += written as u64;
            }
        }
        f()
    }
}

impl Store for TapStore {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn put_if_absent(
        &self,
        key: &str,
        body: PutBody,
        sha256: Option<&Digest>,
    ) -> Result<PutOutcome, StoreError> {
        let n = match &body {
            PutBody::Bytes(b) => b.len(),
            PutBody::File(p) => std::fs::metadata(p).map(|m| m.len() as usize).unwrap_or(0),
        };
        self.tap("put_if_absent", key, n, || {
            self.inner.put_if_absent(key, body, sha256)
        })
    }
    fn put_cas(&self, key: &str, data: &[u8], expected: Option<&ETag>) -> Result<ETag, StoreError> {
        self.tap("put_cas", key, data.len(), || {
            self.inner.put_cas(key, data, expected)
        })
    }
    fn get(&self, key: &str) -> Result<GetResult, StoreError> {
        self.tap("get", key, 0, || self.inner.get(key))
    }
    fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        self.tap("head", key, 0, || self.inner.head(key))
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.tap("list", prefix, 0, || self.inner.list(prefix))
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.tap("delete", key, 0, || self.inner.delete(key))
    }
    fn delete_if(&self, key: &str, expected: &ETag) -> Result<(), StoreError> {
        self.tap("delete_if", key, 0, || self.inner.delete_if(key, expected))
    }
    fn presign_get(&self, key: &str, expires: Duration) -> Result<Option<String>, StoreError> {
        self.tap("presign_get", key, 0, || {
            self.inner.presign_get(key, expires)
        })
    }
}
