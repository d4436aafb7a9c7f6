//! The bed the engine tests run on (and the fleet benchmark, `examples/fleet.rs`): a store
//! holding small artifacts, the library's in-memory hosts ([`MemoryHost`]) and pool
//! ([`MemoryPool`]), and the environment context over them.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use applier::config::EnvConfig;
use applier::engine::EnvContext;
use applier::host::Host;
use applier::host::memory::{MemoryHost, MemoryPool};
use applier::protocol::ReleaseRef;
use applier::service::ServiceSpec;
use artifact::manifest::{BuildRecord, Layer, LayerKind, Manifest, SourceInfo};
use artifact::store::fs::FsStore;
use artifact::store::{PutBody, Store};
use artifact::{Digest, keys};

/// Every release's `deploy/service.yaml`: port 7000, one logs check (an `error` line fails it).
pub const SPEC: &str = "name: svc\nport: 7000\nchecks:\n  - {type: logs, level: error}\n";

/// A store, in-memory hosts and an in-memory pool.
pub struct Bed {
    _dir: Option<tempfile::TempDir>,
    pub store: Arc<dyn Store>,
    pub hosts: BTreeMap<String, Arc<MemoryHost>>,
    pub pool: MemoryPool,
}

impl Bed {
    /// `hosts` over a directory store in a fresh tempdir (on tmpfs where there is one: the
    /// store fsyncs every record, as it must, and on tmpfs that costs nothing).
    pub fn new(hosts: &[&str]) -> Self {
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let store: Arc<dyn Store> = Arc::new(FsStore::open(dir.path()).unwrap());
        Self::on_store(store, Some(dir), hosts.iter().map(|h| h.to_string()))
    }

    /// `hosts` over `store` (`dir`, if given, is kept until the bed is dropped).
    pub fn on_store(
        store: Arc<dyn Store>,
        dir: Option<tempfile::TempDir>,
        hosts: impl IntoIterator<Item = String>,
    ) -> Self {
        let spec = ServiceSpec::parse(SPEC).unwrap();
        let hosts = hosts
            .into_iter()
            .map(|h| {
                let m = MemoryHost::new(&h, &host_config(&h));
                m.set_spec(None, spec.clone());
                (h, Arc::new(m))
            })
            .collect();
        Bed {
            _dir: dir,
            store,
            hosts,
            pool: MemoryPool::new(),
        }
    }

    /// Stores a small artifact of `commit` (a 40-hex id) whose service logs `log` on every host.
    pub fn artifact(&self, commit: &str, log: &str) -> ReleaseRef {
        self.artifact_with(commit, log, None)
    }

    /// [`Bed::artifact`] with a storage manifest (schema-guard's format) in its manifest.
    pub fn artifact_with(
        &self,
        commit: &str,
        log: &str,
        storage: Option<serde_json::Value>,
    ) -> ReleaseRef {
        let (layer, diff_id) = source_layer(commit);
        let ld = Digest::of(&layer);
        put(&*self.store, &keys::blob(&ld), &layer);
        let m = Manifest {
            format: artifact::manifest::MANIFEST_FORMAT,
            service: "svc".into(),
            source: SourceInfo {
                commit: commit.into(),
                tree: "0".repeat(40),
                commit_time: 0,
                author: "a <a@example.org>".into(),
                subject: format!("release {}", &commit[..4]),
            },
            layers: vec![Layer {
                kind: LayerKind::Source,
                media_type: "application/vnd.restbase-deploy.layer.v1.tar+gzip".into(),
                digest: ld,
                size: layer.len() as u64,
                diff_id,
                entries: 2,
            }],
            platform: None,
            deps: None,
            storage,
            labels: Default::default(),
        };
        let bytes = m.to_canonical_json();
        let d = Digest::of(&bytes);
        put(&*self.store, &keys::blob(&d), &bytes);
        let rec = BuildRecord {
            commit: commit.into(),
            manifest: d,
            built_at: String::new(),
            builder_version: String::new(),
        };
        put(
            &*self.store,
            &keys::commit(commit),
            &serde_json::to_vec(&rec).unwrap(),
        );
        for h in self.hosts.values() {
            h.set_log(commit, log);
        }
        ReleaseRef::of(d, &m).unwrap()
    }

    /// The env `name` over this bed's hosts and store; `cfg` is merged over defaults (groups
    /// must be given).
    pub fn ctx(&self, name: &str, cfg: serde_json::Value) -> EnvContext {
        self.ctx_on(self.store.clone(), name, cfg)
    }

    /// The env `name` over this bed's hosts, reaching the store through `store`.
    pub fn ctx_on(&self, store: Arc<dyn Store>, name: &str, cfg: serde_json::Value) -> EnvContext {
        let hosts: serde_json::Map<String, serde_json::Value> = self
            .hosts
            .keys()
            .map(|h| (h.clone(), serde_json::to_value(host_config(h)).unwrap()))
            .collect();
        let mut v = serde_json::json!({"node": "", "hosts": hosts});
        for (k, x) in cfg.as_object().unwrap() {
            v[k] = x.clone();
        }
        let cfg: EnvConfig = serde_json::from_value(v).unwrap();
        EnvContext {
            name: name.into(),
            cfg,
            store,
            hosts: self
                .hosts
                .iter()
                .map(|(n, h)| (n.clone(), h.clone() as Arc<dyn Host>))
                .collect(),
            pool: Box::new(self.pool.clone()),
            lease_ttl: Duration::from_secs(30),
            who: "tester@bed".into(),
            meter: None,
        }
    }

    /// The directory of the store [`Bed::new`] made.
    pub fn dir(&self) -> Option<&std::path::Path> {
        self._dir.as_ref().map(|d| d.path())
    }

    pub fn host(&self, h: &str) -> &MemoryHost {
        &self.hosts[h]
    }

    /// What `h` runs and serves: (current, running release, pooled, step in progress).
    pub fn on(&self, h: &str) -> (Option<String>, Option<String>, bool, Option<String>) {
        let s = self.host(h).snapshot();
        (
            s.current,
            s.running.map(|r| r.release),
            !self.pool.is_out(h),
            s.state.step.map(|s| s.op),
        )
    }

    /// Asserts `h` runs `commit`, in the pool, with no step in progress.
    pub fn assert_serves(&self, h: &str, commit: &str) {
        assert_eq!(
            self.on(h),
            (Some(commit.into()), Some(commit.into()), true, None),
            "{h} should serve {commit}"
        );
    }
}

fn host_config(h: &str) -> applier::config::HostConfig {
    serde_json::from_value(serde_json::json!({"root": format!("/mem/{h}")})).unwrap()
}

/// A store whose every call blocks while it is paused: what a deployer stopped with SIGSTOP
/// looks like from the store (its lease renewals and journal writes stop too).
#[derive(Debug)]
pub struct PausableStore {
    inner: Arc<dyn Store>,
    paused: Mutex<bool>,
    cv: Condvar,
}

impl PausableStore {
    pub fn new(inner: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(PausableStore {
            inner,
            paused: Mutex::new(false),
            cv: Condvar::new(),
        })
    }

    pub fn set_paused(&self, p: bool) {
        *self.paused.lock().unwrap() = p;
        self.cv.notify_all();
    }

    fn gate(&self) {
        let g = self.paused.lock().unwrap();
        let _g = self.cv.wait_while(g, |p| *p).unwrap();
    }
}

impl Store for PausableStore {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn put_if_absent(
        &self,
        key: &str,
        body: PutBody,
        digest: Option<&Digest>,
    ) -> Result<artifact::store::PutOutcome, artifact::StoreError> {
        self.gate();
        self.inner.put_if_absent(key, body, digest)
    }
    fn put_cas(
        &self,
        key: &str,
        data: &[u8],
        expected: Option<&artifact::store::ETag>,
    ) -> Result<artifact::store::ETag, artifact::StoreError> {
        self.gate();
        self.inner.put_cas(key, data, expected)
    }
    fn get(&self, key: &str) -> Result<artifact::store::GetResult, artifact::StoreError> {
        self.gate();
        self.inner.get(key)
    }
    fn head(&self, key: &str) -> Result<Option<artifact::store::ObjectMeta>, artifact::StoreError> {
        self.gate();
        self.inner.head(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<artifact::store::ObjectMeta>, artifact::StoreError> {
        self.gate();
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), artifact::StoreError> {
        self.gate();
        self.inner.delete(key)
    }
    fn delete_if(
        &self,
        key: &str,
        expected: &artifact::store::ETag,
    ) -> Result<(), artifact::StoreError> {
        self.gate();
        self.inner.delete_if(key, expected)
    }
    fn presign_get(
        &self,
        key: &str,
        expires: Duration,
    ) -> Result<Option<String>, artifact::StoreError> {
        self.gate();
        self.inner.presign_get(key, expires)
    }
}

/// A gzipped tar holding `deploy/service.yaml` (what the plan reads its checks from), and the
/// digest of the tar before compression (the layer's diff id).
fn source_layer(commit: &str) -> (Vec<u8>, Digest) {
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, body: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, path, body).unwrap();
    };
    add("deploy/service.yaml", SPEC.as_bytes());
    add("REVISION", commit.as_bytes());
    let plain = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &plain).unwrap();
    (gz.finish().unwrap(), Digest::of(&plain))
}

fn put(store: &dyn Store, key: &str, bytes: &[u8]) {
    store
        .put_if_absent(key, PutBody::Bytes(bytes.to_vec()), None)
        .unwrap();
}
