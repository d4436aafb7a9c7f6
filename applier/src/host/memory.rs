//! An in-memory host: a target that answers the host protocol from a few maps, with no
//! processes, no disk and no network, for engine unit tests and many-host benchmarks.
//!
//! It keeps what a real target keeps: the fetched releases, `current`, a `state.json`-like
//! [`HostState`], a running instance with its pid and port, and files (start logs). The rules
//! that matter to the engine are the real ones: a release must be fetched before it is
//! rendered or switched to, a start needs a `current` and no running instance, readiness is
//! waited for on the instance's own port, mark-good shifts last good to previous good, prune
//! never removes `current`, the running or a known-good release.
//!
//! Injectable, at any time (the host is shared as `Arc<MemoryHost>`):
//! - latency per operation ([`MemoryHost::set_latency`]); no sleep at all when it is zero;
//! - an operation failing on its Nth call, or on every call, with a given [`ErrorKind`]
//!   ([`MemoryHost::fail_on_call`], [`MemoryHost::fail_always`]);
//! - per release: a start that never becomes ready, or that crashes right after starting
//!   ([`MemoryHost::set_startup`]), and its log text ([`MemoryHost::set_log`]);
//! - a crash of the running instance now ([`MemoryHost::crash`]);
//! - a host that is, or becomes after N more calls, unreachable
//!   ([`MemoryHost::set_reachable`], [`MemoryHost::unreachable_after`]);
//! - code run once at the next call of an operation, before it acts ([`MemoryHost::on_call`]),
//!   and a calling thread parked there for good, as if the applier died in that step
//!   ([`MemoryHost::park_on_call`]).
//!
//! Like a real target, the mutating operations (fetch, switch, start, stop) record the step in
//! progress in the host's state before they act and clear it when done, so a step interrupted
//! by a parked caller stays visible. [`MemoryHost::install`] puts a release on the host as an
//! earlier deploy would have. The load balancer beside these hosts is [`MemoryPool`] (`pool`).
//!
//! Every call is recorded ([`MemoryHost::calls`]). One mutex per host, no thread: a thousand
//! hosts cost a thousand small maps.

mod handle;
mod pool;

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use artifact::Digest;

pub use pool::MemoryPool;

use super::Host;
use crate::config::HostConfig;
use crate::protocol::{
    ErrorKind, ExecOutput, HostError, HostRequest, HostResponse, HostState, HostStatus, ReleaseRef,
    RenderRequest, RunInfo, StepInProgress,
};
use crate::service::ServiceSpec;
use crate::target::now_rfc3339;

/// How a started instance of a release behaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Startup {
    /// Ready on its port as soon as it is started.
    #[default]
    Ready,
    /// Runs, but never binds its port: the readiness wait times out (at once, no sleep).
    NeverReady,
    /// Exits right after it was started: the readiness wait reports it died.
    CrashAfterStart,
}

/// An injected failure.
#[derive(Clone, Debug)]
struct Fault {
    op: String,
    /// Fail only this call of `op` (1-based); `None`: every call.
    nth: Option<u32>,
    kind: ErrorKind,
    message: String,
}

#[derive(Clone, Debug)]
struct Release {
    manifest: Digest,
    /// Fetch order (for prune).
    seq: u64,
    rendered: Option<RenderRequest>,
}

#[derive(Clone, Debug)]
struct Instance {
    info: RunInfo,
    alive: bool,
    ready: bool,
}

#[derive(Debug)]
struct Mem {
    releases: BTreeMap<String, Release>,
    current: Option<String>,
    state: HostState,
    instance: Option<Instance>,
    files: BTreeMap<String, String>,
    calls: Vec<String>,
    counts: BTreeMap<String, u32>,
    faults: Vec<Fault>,
    latency: BTreeMap<String, Duration>,
    default_latency: Duration,
    reachable: bool,
    unreachable_after: Option<usize>,
    specs: BTreeMap<String, ServiceSpec>,
    default_spec: ServiceSpec,
    startups: BTreeMap<String, Startup>,
    logs: BTreeMap<String, String>,
    free_bytes: u64,
    node_abi: String,
    exec_output: ExecOutput,
    next_pid: i32,
    seq: u64,
    /// Every fencing token sent, in order (refused ones too).
    fences_seen: Vec<u64>,
}

type Hook = Box<dyn FnOnce() + Send>;

/// Code to run once at the next call of an operation (by its wire name).
#[derive(Default)]
pub(crate) struct Hooks(Mutex<Vec<(String, Hook)>>);

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ops: Vec<String> = self.lock().iter().map(|(op, _)| op.clone()).collect();
        f.debug_tuple("Hooks").field(&ops).finish()
    }
}

impl Hooks {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, Hook)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn add(&self, op: &str, f: Hook) {
        self.lock().push((op.to_string(), f));
    }

    /// Runs (and removes) the first hook of `op`, if there is one. The hook runs on the
    /// caller's thread with no lock held.
    pub(crate) fn run(&self, op: &str) {
        let hook = {
            let mut hs = self.lock();
            hs.iter().position(|(o, _)| o == op).map(|i| hs.remove(i).1)
        };
        if let Some(h) = hook {
            h();
        }
    }

    /// A hook that parks the calling thread for good; the [`Parked`] tells when it got there.
    pub(crate) fn park(&self, op: &str) -> Parked {
        let parked = Parked::default();
        let p = parked.clone();
        self.add(
            op,
            Box::new(move || {
                let (m, cv) = &*p.0;
                *m.lock().unwrap_or_else(|e| e.into_inner()) = true;
                cv.notify_all();
                // The caller is gone: this thread never comes back.
                loop {
                    std::thread::park();
                }
            }),
        );
        parked
    }
}

/// A caller parked at an operation by [`MemoryHost::park_on_call`] or
/// [`MemoryPool::park_on_call`].
#[derive(Clone, Debug, Default)]
pub struct Parked(Arc<(Mutex<bool>, Condvar)>);

impl Parked {
    /// Waits until a caller is parked; `false` if none got there within `timeout`.
    pub fn wait(&self, timeout: Duration) -> bool {
        let (m, cv) = &*self.0;
        let g = m.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = cv
            .wait_timeout_while(g, timeout, |reached| !*reached)
            .unwrap_or_else(|e| e.into_inner());
        *g
    }
}

/// A target host held in memory.
#[derive(Debug)]
pub struct MemoryHost {
    name: String,
    cfg: HostConfig,
    mem: Mutex<Mem>,
    hooks: Hooks,
}

impl MemoryHost {
    /// An empty, reachable host with no latency and no faults.
    pub fn new(name: &str, cfg: &HostConfig) -> Self {
        MemoryHost {
            name: name.to_string(),
            cfg: cfg.clone(),
            mem: Mutex::new(Mem {
                releases: BTreeMap::new(),
                current: None,
                state: HostState::default(),
                instance: None,
                files: BTreeMap::new(),
                calls: Vec::new(),
                counts: BTreeMap::new(),
                faults: Vec::new(),
                latency: BTreeMap::new(),
                default_latency: Duration::ZERO,
                reachable: true,
                unreachable_after: None,
                specs: BTreeMap::new(),
                default_spec: ServiceSpec::default(),
                startups: BTreeMap::new(),
                logs: BTreeMap::new(),
                free_bytes: 1 << 40,
                node_abi: "115".into(),
                exec_output: ExecOutput {
                    status: 0,
                    stdout: String::new(),
                    stderr: String::new(),
                },
                next_pid: 1000,
                seq: 0,
                fences_seen: Vec::new(),
            }),
            hooks: Hooks::default(),
        }
    }

    /// Puts `release` on the host as an earlier deploy would have left it: fetched, `current`,
    /// last known good, and running (ready) on the host's port.
    pub fn install(&self, release: &ReleaseRef) {
        let mut m = self.mem();
        m.seq += 1;
        let seq = m.seq;
        let commit = release.commit.to_string();
        m.releases.insert(
            commit.clone(),
            Release {
                manifest: release.manifest,
                seq,
                rendered: None,
            },
        );
        m.current = Some(commit.clone());
        m.state.current = Some(release.clone());
        m.state.last_good = Some(release.clone());
        m.touch();
        let port = self.cfg.port.or(m.spec(release.commit.as_str()).port);
        m.next_pid += 1;
        let info = RunInfo {
            pid: m.next_pid,
            release: commit.clone(),
            port,
            log: format!("{}/logs/{}-0.log", self.cfg.root.display(), release.commit),
            started_at: now_rfc3339(),
            started_unix_ms: 0,
        };
        let text = m.logs.get(&commit).cloned().unwrap_or_default();
        m.files.insert(info.log.clone(), text);
        m.instance = Some(Instance {
            info,
            alive: true,
            ready: true,
        });
    }

    /// Runs `f` once, at the next call of `op` (its wire name), before the operation acts
    /// (after a mutating one recorded its step in progress). Hooks of one op run in the order
    /// they were added, one per call.
    pub fn on_call(&self, op: &str, f: impl FnOnce() + Send + 'static) {
        self.hooks.add(op, Box::new(f));
    }

    /// The next caller of `op` is parked there for good, its step in progress left recorded:
    /// what an applier that died in that step leaves behind.
    pub fn park_on_call(&self, op: &str) -> Parked {
        self.hooks.park(op)
    }

    fn mem(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.mem.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Latency of one operation (by its wire name, `fetch-urls`, `wait-ready`, ...); `None`
    /// sets the latency of every operation without its own.
    pub fn set_latency(&self, op: Option<&str>, latency: Duration) {
        let mut m = self.mem();
        match op {
            Some(op) => {
                m.latency.insert(op.to_string(), latency);
            }
            None => m.default_latency = latency,
        }
    }

    /// `op` fails on its `nth` call (1-based, counted from the host's creation).
    pub fn fail_on_call(&self, op: &str, nth: u32, kind: ErrorKind, message: &str) {
        self.add_fault(op, Some(nth), kind, message);
    }

    /// The next call of `op` fails.
    pub fn fail_next(&self, op: &str, kind: ErrorKind, message: &str) {
        let nth = self.count(op) + 1;
        self.add_fault(op, Some(nth), kind, message);
    }

    /// `op` fails on every call from now on.
    pub fn fail_always(&self, op: &str, kind: ErrorKind, message: &str) {
        self.add_fault(op, None, kind, message);
    }

    fn add_fault(&self, op: &str, nth: Option<u32>, kind: ErrorKind, message: &str) {
        self.mem().faults.push(Fault {
            op: op.to_string(),
            nth,
            kind,
            message: message.to_string(),
        });
    }

    /// Removes every injected failure.
    pub fn clear_faults(&self) {
        self.mem().faults.clear();
    }

    /// How instances of `commit` (`None`: of every release without its own) behave.
    pub fn set_startup(&self, commit: Option<&str>, startup: Startup) {
        let mut m = self.mem();
        match commit {
            Some(c) => {
                m.startups.insert(c.to_string(), startup);
            }
            None => {
                m.startups.clear();
                m.startups.insert(String::new(), startup);
            }
        }
    }

    /// The text of the log of every start of `commit`.
    pub fn set_log(&self, commit: &str, text: &str) {
        self.mem().logs.insert(commit.to_string(), text.to_string());
    }

    /// The `deploy/service.yaml` of `commit` (`None`: of every release without its own).
    pub fn set_spec(&self, commit: Option<&str>, spec: ServiceSpec) {
        let mut m = self.mem();
        match commit {
            Some(c) => {
                m.specs.insert(c.to_string(), spec);
            }
            None => m.default_spec = spec,
        }
    }

    /// Free bytes preflight reports.
    pub fn set_free_bytes(&self, bytes: u64) {
        self.mem().free_bytes = bytes;
    }

    /// What every `exec` answers.
    pub fn set_exec_output(&self, out: ExecOutput) {
        self.mem().exec_output = out;
    }

    /// Reachable or not, from now on.
    pub fn set_reachable(&self, reachable: bool) {
        let mut m = self.mem();
        m.reachable = reachable;
        m.unreachable_after = None;
    }

    /// The host answers `calls` more calls, then becomes unreachable.
    pub fn unreachable_after(&self, calls: usize) {
        let mut m = self.mem();
        let n = m.calls.len();
        m.unreachable_after = Some(n + calls);
    }

    /// The running instance dies now.
    pub fn crash(&self) {
        if let Some(i) = &mut self.mem().instance {
            i.alive = false;
        }
    }

    /// Every call so far, by operation, in order (refused and failed calls included).
    pub fn calls(&self) -> Vec<String> {
        self.mem().calls.clone()
    }

    /// How many times `op` was called.
    pub fn count(&self, op: &str) -> u32 {
        self.mem().counts.get(op).copied().unwrap_or(0)
    }

    /// The host as `status` would report it, without a call (no latency, no faults).
    pub fn snapshot(&self) -> HostStatus {
        self.mem().status()
    }

    /// What the last render of `commit` asked for.
    pub fn rendered(&self, commit: &str) -> Option<RenderRequest> {
        self.mem().releases.get(commit)?.rendered.clone()
    }

    /// The latency to apply to this call, or the refusal of an unreachable host or injected
    /// failure. Records the call.
    fn admit(&self, op: &str) -> Result<Duration, HostError> {
        let mut m = self.mem();
        m.calls.push(op.to_string());
        let n = {
            let c = m.counts.entry(op.to_string()).or_insert(0);
            *c += 1;
            *c
        };
        if m.unreachable_after
            .is_some_and(|after| m.calls.len() > after)
        {
            m.reachable = false;
        }
        if !m.reachable {
            return Err(HostError::Transport(format!(
                "memory host {}: unreachable",
                self.name
            )));
        }
        if let Some(f) = m
            .faults
            .iter()
            .find(|f| f.op == op && f.nth.is_none_or(|k| k == n))
        {
            return Err(HostError::Remote {
                kind: f.kind,
                message: f.message.clone(),
            });
        }
        Ok(m.latency.get(op).copied().unwrap_or(m.default_latency))
    }

    /// Records the step in progress of a mutating request, as a target does before it acts;
    /// `Some(what was recorded before)` if one was recorded (the caller clears it when the
    /// request is done, or puts the earlier one back when the request is refused).
    fn begin(&self, req: &HostRequest) -> Option<Option<StepInProgress>> {
        let mut m = self.mem();
        let (op, release) = match req {
            HostRequest::FetchUrls(r) => {
                ("fetch", r.verified_manifest().ok().map(|m| m.source.commit))
            }
            HostRequest::Switch(r) => ("switch", Some(r.release.commit.to_string())),
            HostRequest::Start(_) => ("start", m.current.clone()),
            HostRequest::Stop(_) => match m.running() {
                Some(run) => ("stop", Some(run.release)),
                None => return None,
            },
            _ => return None,
        };
        Some(m.state.step.replace(StepInProgress {
            op: op.to_string(),
            release,
            started_at: now_rfc3339(),
        }))
    }

    /// Edits the host's `state.json` in place, as a damaged or tampered target would hold it.
    pub fn edit_state(&self, f: impl FnOnce(&mut HostState)) {
        f(&mut self.mem().state);
    }

    /// Every fencing token this host was sent, in order (refused ones too).
    pub fn fences(&self) -> Vec<u64> {
        self.mem().fences_seen.clone()
    }
}

impl Host for MemoryHost {
    fn name(&self) -> &str {
        &self.name
    }
    fn config(&self) -> &HostConfig {
        &self.cfg
    }
    fn call(&self, req: HostRequest) -> Result<HostResponse, HostError> {
        // A batch is its requests' own calls (their latencies, faults and counts), in order,
        // until the first that fails: what a target does with one.
        if let HostRequest::Batch(b) = req {
            return Ok(HostResponse::Batch(b.run(|r| {
                self.call(r)
                    .unwrap_or_else(|e| HostResponse::Error(e.to_remote()))
            })?));
        }
        let op = req.op();
        let latency = self.admit(&op)?;
        let before = self.begin(&req);
        self.hooks.run(&op);
        if !latency.is_zero() {
            std::thread::sleep(latency);
        }
        let root = self.cfg.root.display().to_string();
        let mut m = self.mem();
        // The target's fence check, after the hooks (where a test parks a "stopped" deployer):
        // a refused request changes nothing, not even the step in progress.
        if let Some(f) = req.fence()
            && let Err(e) = m.admit_fence(f)
        {
            if let Some(prev) = before {
                m.state.step = prev;
            }
            return Err(e);
        }
        let r = m.handle(&root, req);
        if before.is_some() {
            m.state.step = None;
        }
        r
    }
}

#[cfg(test)]
#[path = "memory_tests.rs"]
pub(crate) mod tests;
