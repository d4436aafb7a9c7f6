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
//!   ([`MemoryHost::set_reachable`], [`MemoryHost::unreachable_after`]).
//!
//! Every call is recorded ([`MemoryHost::calls`]). One mutex per host, no thread: a thousand
//! hosts cost a thousand small maps.

use std::collections::BTreeMap;
use std::io;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use artifact::Digest;

use super::Host;
use crate::config::HostConfig;
use crate::protocol::{
    ErrorKind, ExecOutput, FetchReport, FileText, HealthReport, HostError, HostRequest,
    HostResponse, HostState, HostStatus, PreflightReport, PruneReport, ReadyReport, ReleaseRef,
    RenderReport, RenderRequest, RunInfo, StopReport, SwitchReport,
};
use crate::service::ServiceSpec;
use crate::target::{node_arch, node_os, now_rfc3339};

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
}

/// A target host held in memory.
#[derive(Debug)]
pub struct MemoryHost {
    name: String,
    cfg: HostConfig,
    mem: Mutex<Mem>,
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
            }),
        }
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
}

impl Mem {
    fn spec(&self, commit: &str) -> ServiceSpec {
        self.specs.get(commit).unwrap_or(&self.default_spec).clone()
    }

    fn fetched(&self, commit: &str) -> Result<&Release, HostError> {
        self.releases
            .get(commit)
            .ok_or_else(|| HostError::NotFetched(commit.to_string()))
    }

    fn running(&self) -> Option<RunInfo> {
        self.instance
            .as_ref()
            .filter(|i| i.alive)
            .map(|i| i.info.clone())
    }

    fn status(&self) -> HostStatus {
        HostStatus {
            current: self.current.clone(),
            state: self.state.clone(),
            running: self.running(),
            releases: self.releases.keys().cloned().collect(),
        }
    }

    fn touch(&mut self) {
        self.state.updated_at = now_rfc3339();
    }

    fn handle(&mut self, root: &str, req: HostRequest) -> Result<HostResponse, HostError> {
        Ok(match req {
            HostRequest::Hello(h) => HostResponse::Hello(h.answer()?),
            HostRequest::Preflight(r) => {
                if self.free_bytes < r.min_free_bytes {
                    return Err(HostError::Preflight(format!(
                        "{root} has {} MiB free, needs {} MiB",
                        self.free_bytes >> 20,
                        r.min_free_bytes >> 20
                    )));
                }
                HostResponse::Preflight(PreflightReport {
                    root: root.to_string(),
                    free_bytes: self.free_bytes,
                    node_abi: r.node.map(|_| self.node_abi.clone()),
                    os: node_os().into(),
                    arch: node_arch().into(),
                    current: self.current.clone(),
                })
            }
            HostRequest::FetchUrls(r) => {
                let m = r.verified_manifest()?;
                let commit = m.source.commit.clone();
                let report = |cached: bool| FetchReport {
                    release: commit.clone(),
                    cached,
                    downloaded: if cached {
                        0
                    } else {
                        m.layers.iter().map(|l| l.size).sum()
                    },
                    entries: if cached {
                        0
                    } else {
                        m.layers.iter().map(|l| l.entries).sum()
                    },
                };
                match self.releases.get(&commit) {
                    Some(rel) if rel.manifest == r.digest => HostResponse::FetchUrls(report(true)),
                    Some(_) if self.current.as_deref() == Some(commit.as_str()) => {
                        return Err(HostError::Preflight(format!(
                            "release {commit} is current but holds a different build; refusing to replace it"
                        )));
                    }
                    _ => {
                        self.seq += 1;
                        let rel = Release {
                            manifest: r.digest,
                            seq: self.seq,
                            rendered: None,
                        };
                        self.releases.insert(commit.clone(), rel);
                        HostResponse::FetchUrls(report(false))
                    }
                }
            }
            HostRequest::ServiceSpec(r) => {
                self.fetched(&r.commit)?;
                HostResponse::ServiceSpec(self.spec(&r.commit))
            }
            HostRequest::Render(r) => {
                self.fetched(&r.commit)?;
                let port = r.port.or(self.spec(&r.commit).port);
                let config = format!("{root}/releases/{}/config.yaml", r.commit);
                if let Some(rel) = self.releases.get_mut(&r.commit) {
                    rel.rendered = Some(r);
                }
                HostResponse::Render(RenderReport { config, port })
            }
            HostRequest::Switch(r) => {
                let manifest = self.fetched(&r.commit)?.manifest;
                let from = self.current.replace(r.commit.clone());
                self.state.current = Some(ReleaseRef {
                    commit: r.commit.clone(),
                    manifest,
                });
                self.touch();
                HostResponse::Switch(SwitchReport { from, to: r.commit })
            }
            HostRequest::Start(r) => {
                let commit = self
                    .current
                    .clone()
                    .ok_or_else(|| HostError::NotFetched("(no current release)".into()))?;
                if let Some(run) = self.running() {
                    return Err(HostError::Preflight(format!(
                        "the service is already running (pid {})",
                        run.pid
                    )));
                }
                let startup = self
                    .startups
                    .get(&commit)
                    .or_else(|| self.startups.get(""))
                    .copied()
                    .unwrap_or_default();
                let now = SystemTime::now();
                let ms = now
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                let log = format!("{root}/logs/{commit}-{ms}.log");
                let text = self.logs.get(&commit).cloned().unwrap_or_default();
                self.files.insert(log.clone(), text);
                self.next_pid += 1;
                let info = RunInfo {
                    pid: self.next_pid,
                    release: commit,
                    port: r.port,
                    log,
                    started_at: humantime::format_rfc3339_millis(now).to_string(),
                    started_unix_ms: ms,
                };
                self.instance = Some(Instance {
                    info: info.clone(),
                    alive: startup != Startup::CrashAfterStart,
                    ready: startup == Startup::Ready,
                });
                HostResponse::Start(info)
            }
            HostRequest::WaitReady(r) => {
                let secs = r.timeout_ms / 1000;
                match &self.instance {
                    Some(i) if !i.alive => {
                        return Err(HostError::Died(format!(
                            "log {}: (memory host: the instance exited)",
                            i.info.log
                        )));
                    }
                    None => return Err(HostError::Died("(no log)".into())),
                    Some(i) if i.info.port != Some(r.port) || !i.ready => {
                        return Err(HostError::Timeout {
                            port: r.port,
                            secs,
                            detail: format!(
                                "(memory host: the instance on port {:?} never became ready on {})",
                                i.info.port, r.port
                            ),
                        });
                    }
                    Some(_) => HostResponse::WaitReady(ReadyReport {
                        after_ms: 0,
                        detail: None,
                    }),
                }
            }
            HostRequest::Stop => {
                let stopped = self.running().map(|i| i.pid);
                self.instance = None;
                HostResponse::Stop(StopReport {
                    stopped,
                    killed: false,
                })
            }
            HostRequest::Status => HostResponse::Status(self.status()),
            HostRequest::MarkGood(release) => {
                if self.state.last_good.as_ref() != Some(&release) {
                    self.state.previous_good = self.state.last_good.take();
                    self.state.last_good = Some(release);
                }
                self.touch();
                HostResponse::MarkGood(self.state.clone())
            }
            HostRequest::Prune(r) => HostResponse::Prune(self.prune(r.keep)),
            HostRequest::ReadFile(r) => match self.files.get(&r.path) {
                Some(text) => HostResponse::ReadFile(FileText { text: text.clone() }),
                None => {
                    return Err(HostError::Io {
                        context: format!("resolving {}", r.path),
                        source: io::ErrorKind::NotFound.into(),
                    });
                }
            },
            HostRequest::Exec(_) => HostResponse::Exec(self.exec_output.clone()),
            HostRequest::Health => {
                let run = self.running();
                let port = run.as_ref().and_then(|r| r.port);
                let ready = self.instance.as_ref().is_some_and(|i| i.alive && i.ready);
                HostResponse::Health(HealthReport {
                    current: self.current.clone(),
                    pid: run.map(|r| r.pid),
                    port,
                    port_bound: port.map(|_| ready),
                    free_bytes: self.free_bytes,
                })
            }
        })
    }

    fn prune(&mut self, keep: usize) -> PruneReport {
        let mut protect: Vec<String> = self.current.iter().cloned().collect();
        for r in [
            &self.state.current,
            &self.state.last_good,
            &self.state.previous_good,
        ]
        .into_iter()
        .flatten()
        {
            protect.push(r.commit.clone());
        }
        protect.extend(self.running().map(|r| r.release));
        let mut all: Vec<(u64, String)> = self
            .releases
            .iter()
            .map(|(c, r)| (r.seq, c.clone()))
            .collect();
        all.sort_by(|a, b| b.cmp(a));
        let (mut kept, mut removed) = (Vec::new(), Vec::new());
        for (i, (_, name)) in all.into_iter().enumerate() {
            if i < keep || protect.contains(&name) {
                kept.push(name);
            } else {
                self.releases.remove(&name);
                removed.push(name);
            }
        }
        PruneReport { removed, kept }
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
        let latency = self.admit(&req.op())?;
        if !latency.is_zero() {
            std::thread::sleep(latency);
        }
        let root = self.cfg.root.display().to_string();
        self.mem().handle(&root, req)
    }
}

#[cfg(test)]
#[path = "memory_tests.rs"]
mod tests;
