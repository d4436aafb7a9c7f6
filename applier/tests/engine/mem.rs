//! A test-only in-memory fleet for the engine tests: hosts that implement `applier`'s `Host`
//! trait with state in memory (releases, `current`, the running instance, the host journal
//! with its step in progress), a pool that counts who is out, injectable failures, latencies,
//! hooks and crashes, and a directory store in a tempdir holding small artifacts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use applier::config::{EnvConfig, HostConfig};
use applier::engine::EnvContext;
use applier::host::Host;
use applier::pool::{Pool, PoolError};
use applier::protocol::{
    ExecOutput, FetchReport, HostError, HostState, HostStatus, PreflightReport, PreflightRequest,
    PruneReport, ReadyReport, ReadyRequest, ReleaseRef, RenderReport, RenderRequest, RunInfo,
    StartRequest, StepInProgress, StopReport, SwitchReport,
};
use applier::protocol::{HostRequest, HostResponse};
use applier::service::ServiceSpec;
use artifact::manifest::{BuildRecord, Layer, LayerKind, Manifest, SourceInfo};
use artifact::store::fs::FsStore;
use artifact::store::{PutBody, Store};
use artifact::{Digest, keys};

/// What a release does when it runs: the log it writes (an `error` line fails the logs check).
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    pub log: String,
}

type Hook = Box<dyn FnOnce() + Send>;

/// Everything the hosts of one test share.
#[derive(Default)]
pub struct Fleet {
    /// commit -> how it behaves.
    pub releases: Mutex<BTreeMap<String, Behaviour>>,
    /// (host, op) -> the error that op returns, once.
    pub failures: Mutex<BTreeMap<(String, String), String>>,
    /// op -> how long it takes.
    pub latency: Mutex<BTreeMap<String, Duration>>,
    /// (host, op) -> run once, before the op.
    pub hooks: Mutex<BTreeMap<(String, String), Hook>>,
    /// (host, op) at which the applier "dies": the op never returns (once).
    pub crash_at: Mutex<Option<(String, String)>>,
    crashed: (Mutex<bool>, Condvar),
    /// Host ops in call order: "host op".
    pub calls: Mutex<Vec<String>>,
}

impl Fleet {
    pub fn fail(&self, host: &str, op: &str, error: &str) {
        self.failures
            .lock()
            .unwrap()
            .insert((host.into(), op.into()), error.into());
    }

    pub fn hook(&self, host: &str, op: &str, f: impl FnOnce() + Send + 'static) {
        self.hooks
            .lock()
            .unwrap()
            .insert((host.into(), op.into()), Box::new(f));
    }

    /// Waits until the crash point was reached.
    pub fn wait_crashed(&self) {
        let (m, cv) = &self.crashed;
        let g = m.lock().unwrap();
        let (_g, t) = cv
            .wait_timeout_while(g, Duration::from_secs(5), |c| !*c)
            .unwrap();
        assert!(!t.timed_out(), "the crash point was never reached");
    }

    /// Runs before every op: records it, sleeps its latency, runs its hook, crashes or fails.
    fn enter(&self, host: &str, op: &str) -> Result<(), HostError> {
        self.calls.lock().unwrap().push(format!("{host} {op}"));
        if let Some(d) = self.latency.lock().unwrap().get(op).copied() {
            std::thread::sleep(d);
        }
        let key = (host.to_string(), op.to_string());
        let hook = self.hooks.lock().unwrap().remove(&key);
        if let Some(h) = hook {
            h();
        }
        let crash = {
            let mut c = self.crash_at.lock().unwrap();
            if c.as_ref() == Some(&key) {
                c.take()
            } else {
                None
            }
        };
        if crash.is_some() {
            let (m, cv) = &self.crashed;
            *m.lock().unwrap() = true;
            cv.notify_all();
            // The applier is gone: this thread never comes back.
            loop {
                std::thread::park();
            }
        }
        match self.failures.lock().unwrap().remove(&key) {
            Some(e) => Err(HostError::Remote {
                kind: applier::protocol::ErrorKind::Transport,
                message: e,
            }),
            None => Ok(()),
        }
    }
}

/// One in-memory host.
#[derive(Debug, Default)]
pub struct HostMem {
    pub fetched: BTreeSet<String>,
    pub current: Option<String>,
    pub running: Option<RunInfo>,
    pub state: HostState,
}

pub struct MemHost {
    name: String,
    cfg: HostConfig,
    fleet: Arc<Fleet>,
    pub mem: Mutex<HostMem>,
}

impl std::fmt::Debug for MemHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemHost({})", self.name)
    }
}

const SPEC: &str = "name: svc\nport: 7000\nchecks:\n  - {type: logs, level: error}\n";

impl MemHost {
    pub fn new(name: &str, fleet: Arc<Fleet>) -> Self {
        MemHost {
            name: name.into(),
            cfg: serde_json::from_value(serde_json::json!({"root": format!("/mem/{name}")}))
                .unwrap(),
            fleet,
            mem: Mutex::new(HostMem::default()),
        }
    }

    /// Puts `release` on the host as if an earlier deploy had: fetched, current, running, good.
    pub fn install(&self, release: &ReleaseRef) {
        let mut m = self.mem.lock().unwrap();
        m.fetched.insert(release.commit.clone());
        m.current = Some(release.commit.clone());
        m.state.current = Some(release.clone());
        m.state.last_good = Some(release.clone());
        m.running = Some(self.run_info(&release.commit));
    }

    /// The service dies (as if it crashed).
    pub fn kill(&self) {
        self.mem.lock().unwrap().running = None;
    }

    fn run_info(&self, commit: &str) -> RunInfo {
        RunInfo {
            pid: 4242,
            release: commit.into(),
            port: Some(7000),
            log: format!("logs/{commit}.log"),
            started_at: "2026-01-01T00:00:00.000Z".into(),
            started_unix_ms: 0,
        }
    }

    /// Records `op` as the step in progress (as `HostRoot` does), runs it, clears it.
    fn op<T>(
        &self,
        op: &str,
        release: Option<&str>,
        f: impl FnOnce(&mut HostMem) -> Result<T, HostError>,
    ) -> Result<T, HostError> {
        self.mem.lock().unwrap().state.step = Some(StepInProgress {
            op: op.into(),
            release: release.map(str::to_string),
            started_at: String::new(),
        });
        self.fleet.enter(&self.name, op)?;
        let mut m = self.mem.lock().unwrap();
        let r = f(&mut m)?;
        m.state.step = None;
        Ok(r)
    }

    fn fetched(m: &HostMem, commit: &str) -> Result<(), HostError> {
        if m.fetched.contains(commit) {
            Ok(())
        } else {
            Err(HostError::NotFetched(commit.into()))
        }
    }
}

impl Host for MemHost {
    fn name(&self) -> &str {
        &self.name
    }
    /// This test host overrides every typed operation the engine uses (so it can park a
    /// thread at any step to simulate a dead applier); raw requests are not part of it.
    fn call(&self, req: HostRequest) -> Result<HostResponse, HostError> {
        Err(HostError::Remote {
            kind: applier::protocol::ErrorKind::Protocol,
            message: format!("the engine-test host takes typed calls only, not {req:?}"),
        })
    }
    fn address(&self) -> &str {
        "127.0.0.1"
    }
    fn config(&self) -> &HostConfig {
        &self.cfg
    }
    fn preflight(&self, _: &PreflightRequest) -> Result<PreflightReport, HostError> {
        self.fleet.enter(&self.name, "preflight")?;
        let m = self.mem.lock().unwrap();
        Ok(PreflightReport {
            root: format!("/mem/{}", self.name),
            free_bytes: 1 << 30,
            node_abi: None,
            os: "linux".into(),
            arch: "x64".into(),
            current: m.current.clone(),
        })
    }
    fn fetch(&self, _: &Digest, manifest: &Manifest) -> Result<FetchReport, HostError> {
        let commit = &manifest.source.commit;
        self.op("fetch", Some(commit), |m| {
            let cached = !m.fetched.insert(commit.clone());
            Ok(FetchReport {
                release: commit.clone(),
                cached,
                downloaded: if cached { 0 } else { 100 },
                entries: 1,
            })
        })
    }
    fn service_spec(&self, commit: &str) -> Result<ServiceSpec, HostError> {
        self.fleet.enter(&self.name, "service_spec")?;
        Self::fetched(&self.mem.lock().unwrap(), commit)?;
        Ok(ServiceSpec::parse(SPEC).unwrap())
    }
    fn render(&self, req: &RenderRequest) -> Result<RenderReport, HostError> {
        self.op("render", Some(&req.commit), |m| {
            Self::fetched(m, &req.commit)?;
            Ok(RenderReport {
                config: format!("releases/{}/config.yaml", req.commit),
                port: req.port,
            })
        })
    }
    fn switch(&self, commit: &str) -> Result<SwitchReport, HostError> {
        self.op("switch", Some(commit), |m| {
            Self::fetched(m, commit)?;
            let from = m.current.replace(commit.to_string());
            Ok(SwitchReport {
                from,
                to: commit.into(),
            })
        })
    }
    fn start(&self, _: &StartRequest) -> Result<RunInfo, HostError> {
        let current = self.mem.lock().unwrap().current.clone();
        self.op("start", current.as_deref(), |m| {
            let commit = m.current.clone().ok_or(HostError::Remote {
                kind: applier::protocol::ErrorKind::NotFetched,
                message: "no current".into(),
            })?;
            let info = self.run_info(&commit);
            m.running = Some(info.clone());
            Ok(info)
        })
    }
    fn wait_ready(&self, _: &ReadyRequest) -> Result<ReadyReport, HostError> {
        self.op("wait_ready", None, |m| match m.running {
            Some(_) => Ok(ReadyReport {
                after_ms: 0,
                detail: None,
            }),
            None => Err(HostError::Died("not running".into())),
        })
    }
    fn stop(&self) -> Result<StopReport, HostError> {
        self.op("stop", None, |m| {
            Ok(StopReport {
                stopped: m.running.take().map(|r| r.pid),
                killed: false,
            })
        })
    }
    fn status(&self) -> Result<HostStatus, HostError> {
        self.fleet.enter(&self.name, "status")?;
        let m = self.mem.lock().unwrap();
        Ok(HostStatus {
            current: m.current.clone(),
            state: m.state.clone(),
            running: m.running.clone(),
            releases: m.fetched.iter().cloned().collect(),
        })
    }
    fn mark_good(&self, release: &ReleaseRef) -> Result<HostState, HostError> {
        self.op("mark_good", Some(&release.commit), |m| {
            if m.state.last_good.as_ref() != Some(release) {
                m.state.previous_good = m.state.last_good.replace(release.clone());
            }
            m.state.current = Some(release.clone());
            Ok(m.state.clone())
        })
    }
    fn prune(&self, _: usize) -> Result<PruneReport, HostError> {
        self.fleet.enter(&self.name, "prune")?;
        Ok(PruneReport {
            removed: vec![],
            kept: vec![],
        })
    }
    fn read_file(&self, path: &str) -> Result<Vec<u8>, HostError> {
        self.fleet.enter(&self.name, "read_file")?;
        let commit = path
            .strip_prefix("logs/")
            .and_then(|p| p.strip_suffix(".log"))
            .unwrap_or_default();
        let log = self
            .fleet
            .releases
            .lock()
            .unwrap()
            .get(commit)
            .map(|b| b.log.clone())
            .unwrap_or_default();
        Ok(log.into_bytes())
    }
    fn exec(&self, _: &str, _: Duration) -> Result<ExecOutput, HostError> {
        Err(HostError::Remote {
            kind: applier::protocol::ErrorKind::Protocol,
            message: "no exec on an in-memory host".into(),
        })
    }
}

/// A load balancer in memory: who is out, and the most that were ever out at once.
#[derive(Debug, Default)]
pub struct MemPool {
    pub out: Mutex<BTreeSet<String>>,
    pub max_seen: Mutex<usize>,
}

impl MemPool {
    fn set(&self, host: &str, out: bool) {
        let mut o = self.out.lock().unwrap();
        if out {
            o.insert(host.into());
        } else {
            o.remove(host);
        }
        let mut m = self.max_seen.lock().unwrap();
        *m = (*m).max(o.len());
    }
}

/// The pool a context owns, sharing state with the test; its ops go through the fleet's
/// failures, hooks and crashes too.
pub struct SharedPool(pub Arc<MemPool>, pub Arc<Fleet>);

impl std::fmt::Debug for SharedPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedPool")
    }
}

impl Pool for SharedPool {
    fn depool(&self, host: &dyn Host, _: Option<u16>) -> Result<(), PoolError> {
        self.pool_op(host, "depool", true)
    }
    fn repool(&self, host: &dyn Host, _: Option<u16>) -> Result<(), PoolError> {
        self.pool_op(host, "repool", false)
    }
    fn out_of_pool(&self, hosts: &[String]) -> Result<Vec<String>, PoolError> {
        let o = self.0.out.lock().unwrap();
        Ok(hosts.iter().filter(|h| o.contains(*h)).cloned().collect())
    }
}

impl SharedPool {
    fn pool_op(&self, host: &dyn Host, op: &'static str, out: bool) -> Result<(), PoolError> {
        self.1.enter(host.name(), op).map_err(|e| PoolError {
            action: op,
            host: host.name().into(),
            detail: e.to_string(),
        })?;
        self.0.set(host.name(), out);
        Ok(())
    }
}

/// A directory store, a fleet of in-memory hosts and a pool.
pub struct Bed {
    pub _dir: tempfile::TempDir,
    pub store: Arc<dyn Store>,
    pub fleet: Arc<Fleet>,
    pub hosts: BTreeMap<String, Arc<MemHost>>,
    pub pool: Arc<MemPool>,
}

impl Bed {
    pub fn new(hosts: &[&str]) -> Self {
        // The store fsyncs every record, as it must; on tmpfs that costs nothing, which keeps
        // these tests in milliseconds.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let store: Arc<dyn Store> = Arc::new(FsStore::open(dir.path()).unwrap());
        let fleet = Arc::new(Fleet::default());
        let hosts = hosts
            .iter()
            .map(|h| (h.to_string(), Arc::new(MemHost::new(h, fleet.clone()))))
            .collect();
        Bed {
            _dir: dir,
            store,
            fleet,
            hosts,
            pool: Arc::new(MemPool::default()),
        }
    }

    /// Stores a small artifact of `commit` (a 40-hex id) whose service logs `log`.
    pub fn artifact(&self, commit: &str, log: &str) -> ReleaseRef {
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
            storage: None,
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
        self.fleet.releases.lock().unwrap().insert(
            commit.into(),
            Behaviour {
                log: log.to_string(),
            },
        );
        ReleaseRef {
            commit: commit.into(),
            manifest: d,
        }
    }

    /// The env `name` over this bed's hosts; `cfg` is merged over defaults (groups must be given).
    pub fn ctx(&self, name: &str, cfg: serde_json::Value) -> EnvContext {
        let mut v = serde_json::json!({
            "node": "",
            "hosts": self.hosts.keys().map(|h| (h.clone(), serde_json::json!({"root": format!("/mem/{h}")}))).collect::<serde_json::Map<_, _>>(),
        });
        for (k, x) in cfg.as_object().unwrap() {
            v[k] = x.clone();
        }
        let cfg: EnvConfig = serde_json::from_value(v).unwrap();
        EnvContext {
            name: name.into(),
            cfg,
            store: self.store.clone(),
            hosts: self
                .hosts
                .iter()
                .map(|(n, h)| (n.clone(), h.clone() as Arc<dyn Host>))
                .collect(),
            pool: Box::new(SharedPool(self.pool.clone(), self.fleet.clone())),
            lease_ttl: Duration::from_secs(30),
            who: "tester@bed".into(),
        }
    }

    pub fn host(&self, h: &str) -> &MemHost {
        &self.hosts[h]
    }

    /// What `h` runs and serves: (current, running release, pooled, step in progress).
    pub fn on(&self, h: &str) -> (Option<String>, Option<String>, bool, Option<String>) {
        let m = self.host(h).mem.lock().unwrap();
        (
            m.current.clone(),
            m.running.as_ref().map(|r| r.release.clone()),
            !self.pool.out.lock().unwrap().contains(h),
            m.state.step.as_ref().map(|s| s.op.clone()),
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
