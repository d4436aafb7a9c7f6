//! The target side: what happens on one host, under its root directory.
//!
//! ```text
//! <root>/releases/<git-sha>/           unpacked layers + rendered config.yaml + .release.json
//! <root>/cache/blobs/sha256/<hex>      downloaded layers, verified
//! <root>/current -> releases/<git-sha> switched by rename(2) of a temp symlink
//! <root>/state.json                    current, last good, previous good, step in progress
//! <root>/run/service.json              the running instance: pid, release, log, start time
//! <root>/logs/<sha>-<start>.log        stdout+stderr of one start
//! ```
//!
//! Every operation records the step it is in (`state.json` `step`) before it acts and clears it
//! when done, so an interrupted operation is visible. Fetch streams each layer from the store
//! through the digest check into [`artifact::unpack::Unpacker`] (tee'd into the blob cache) in
//! one pass; a mismatch or hostile archive leaves no release directory and `current` untouched.
//! The same functions serve the local transport in-process and `applier host <op>` remotely.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use artifact::manifest::Manifest;
use artifact::store::Store;
use artifact::unpack::{Expected, UnpackError, UnpackLimits, Unpacker};
use artifact::{Digest, StoreError, keys};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::service::{ServiceSpec, ServiceSpecError, signal_number};

/// A release: a git commit and the manifest it was deployed from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRef {
    pub commit: String,
    pub manifest: Digest,
}

impl std::fmt::Display for ReleaseRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", &self.commit[..self.commit.len().min(12)])
    }
}

/// This host's journal.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostState {
    pub current: Option<ReleaseRef>,
    pub last_good: Option<ReleaseRef>,
    pub previous_good: Option<ReleaseRef>,
    pub step: Option<StepInProgress>,
    #[serde(default)]
    pub updated_at: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepInProgress {
    pub op: String,
    pub release: Option<String>,
    pub started_at: String,
}

/// The running instance (`run/service.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    pub pid: i32,
    pub release: String,
    pub port: Option<u16>,
    pub log: String,
    pub started_at: String,
    pub started_unix_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("fetch: {0}")]
    Unpack(#[from] UnpackError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("release {0} is not on this host (fetch it first)")]
    NotFetched(String),
    #[error("{0}")]
    Spec(#[from] ServiceSpecError),
    #[error("rendering config: {0}")]
    Render(String),
    #[error("the service exited before binding its port: {0}")]
    Died(String),
    #[error("the service did not bind port {port} within {secs}s: {detail}")]
    Timeout {
        port: u16,
        secs: u64,
        detail: String,
    },
    #[error("the service (pid {pid}) did not stop: {detail}")]
    StopFailed { pid: i32, detail: String },
    #[error("preflight: {0}")]
    Preflight(String),
    #[error("transport: {0}")]
    Transport(String),
    /// An operation that failed on a remote host, as it reported it.
    #[error("{0}")]
    Remote(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> HostError {
    let context = context.into();
    move |source| HostError::Io { context, source }
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PreflightRequest {
    pub min_free_bytes: u64,
    /// The node binary whose ABI to report (`None`: skip).
    pub node: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PreflightReport {
    pub root: String,
    pub free_bytes: u64,
    pub node_abi: Option<String>,
    pub os: String,
    pub arch: String,
    pub current: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FetchReport {
    pub release: String,
    /// True when the release was already unpacked.
    pub cached: bool,
    /// Bytes downloaded from the store (0 for cache hits).
    pub downloaded: u64,
    pub entries: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RenderRequest {
    pub commit: String,
    pub env: String,
    pub port: Option<u16>,
    /// Dotted path -> value, applied after the port.
    #[serde(default)]
    pub values: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RenderReport {
    pub config: String,
    pub port: Option<u16>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SwitchReport {
    pub from: Option<String>,
    pub to: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StartRequest {
    pub port: Option<u16>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReadyRequest {
    pub address: String,
    pub port: u16,
    pub timeout_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReadyReport {
    pub after_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StopReport {
    /// The pid that was stopped, if one was running.
    pub stopped: Option<i32>,
    /// True when it had to be killed after the stop timeout.
    pub killed: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostStatus {
    /// The release `current` points at.
    pub current: Option<String>,
    pub state: HostState,
    pub running: Option<RunInfo>,
    pub releases: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PruneReport {
    pub removed: Vec<String>,
    pub kept: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExecOutput {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// What `.release.json` in a release directory records.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ReleaseMeta {
    commit: String,
    manifest: Digest,
    fetched_at: String,
}

/// One host's root directory.
#[derive(Clone, Debug)]
pub struct HostRoot {
    root: PathBuf,
}

impl HostRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        HostRoot { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn release_dir(&self, commit: &str) -> PathBuf {
        self.root.join("releases").join(commit)
    }

    fn state_path(&self) -> PathBuf {
        self.root.join("state.json")
    }

    fn run_path(&self) -> PathBuf {
        self.root.join("run/service.json")
    }

    fn ensure_dirs(&self) -> Result<(), HostError> {
        for d in ["releases", "cache/blobs/sha256", "logs", "run"] {
            let p = self.root.join(d);
            fs::create_dir_all(&p).map_err(io_err(format!("creating {}", p.display())))?;
        }
        Ok(())
    }

    pub fn state(&self) -> Result<HostState, HostError> {
        match fs::read(self.state_path()) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| HostError::Io {
                context: format!("reading {}", self.state_path().display()),
                source: io::Error::new(io::ErrorKind::InvalidData, e),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(HostState::default()),
            Err(e) => Err(io_err(format!("reading {}", self.state_path().display()))(
                e,
            )),
        }
    }

    fn save_state(&self, st: &mut HostState) -> Result<(), HostError> {
        st.updated_at = now_rfc3339();
        let bytes = serde_json::to_vec_pretty(st).expect("state serialises");
        write_atomic(&self.state_path(), &bytes)
    }

    fn update_state(&self, f: impl FnOnce(&mut HostState)) -> Result<HostState, HostError> {
        self.ensure_dirs()?;
        let mut st = self.state()?;
        f(&mut st);
        self.save_state(&mut st)?;
        Ok(st)
    }

    fn begin(&self, op: &str, release: Option<&str>) -> Result<(), HostError> {
        self.update_state(|s| {
            s.step = Some(StepInProgress {
                op: op.into(),
                release: release.map(str::to_string),
                started_at: now_rfc3339(),
            })
        })?;
        Ok(())
    }

    fn end(&self) -> Result<HostState, HostError> {
        self.update_state(|s| s.step = None)
    }

    /// The release `current` points at.
    pub fn current(&self) -> Option<String> {
        let target = fs::read_link(self.root.join("current")).ok()?;
        target.file_name().map(|n| n.to_string_lossy().into_owned())
    }

    pub fn preflight(&self, req: &PreflightRequest) -> Result<PreflightReport, HostError> {
        self.ensure_dirs()?;
        let probe = self.root.join(".preflight-probe");
        fs::write(&probe, b"ok")
            .map_err(io_err(format!("{} is not writable", self.root.display())))?;
        let _ = fs::remove_file(&probe);
        let st = rustix::fs::statvfs(&self.root)
            .map_err(|e| io_err(format!("statvfs {}", self.root.display()))(e.into()))?;
        let free_bytes = st.f_bavail.saturating_mul(st.f_frsize);
        if free_bytes < req.min_free_bytes {
            return Err(HostError::Preflight(format!(
                "{} has {} MiB free, needs {} MiB",
                self.root.display(),
                free_bytes >> 20,
                req.min_free_bytes >> 20
            )));
        }
        let node_abi = match &req.node {
            None => None,
            Some(node) => {
                let out = Command::new(node)
                    .args(["-p", "process.versions.modules"])
                    .stdin(Stdio::null())
                    .output()
                    .map_err(|e| HostError::Preflight(format!("running {node}: {e}")))?;
                if !out.status.success() {
                    return Err(HostError::Preflight(format!(
                        "{node} -p process.versions.modules failed"
                    )));
                }
                Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
            }
        };
        Ok(PreflightReport {
            root: self.root.display().to_string(),
            free_bytes,
            node_abi,
            os: node_os().into(),
            arch: node_arch().into(),
            current: self.current(),
        })
    }

    /// Fetches and unpacks an artifact into `releases/<commit>` (no-op if already there).
    pub fn fetch(
        &self,
        store: &dyn Store,
        digest: &Digest,
        manifest: &Manifest,
        limits: UnpackLimits,
    ) -> Result<FetchReport, HostError> {
        let commit = manifest.source.commit.clone();
        self.ensure_dirs()?;
        let dest = self.release_dir(&commit);
        if dest.exists() {
            let meta: Option<ReleaseMeta> = fs::read(dest.join(".release.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            if meta.as_ref().map(|m| &m.manifest) == Some(digest) {
                return Ok(FetchReport {
                    release: commit,
                    cached: true,
                    downloaded: 0,
                    entries: 0,
                });
            }
            if self.current().as_deref() == Some(commit.as_str()) {
                return Err(HostError::Preflight(format!(
                    "release {commit} is current but holds a different build; refusing to replace it"
                )));
            }
            let trash = self.root.join("releases").join(format!(
                ".trash-{}-{}",
                commit,
                rand::random::<u32>()
            ));
            fs::rename(&dest, &trash)
                .map_err(io_err(format!("moving aside {}", dest.display())))?;
            let _ = fs::remove_dir_all(&trash);
        }
        self.begin("fetch", Some(&commit))?;
        let r = self.fetch_into(store, digest, manifest, &dest, limits);
        self.end()?;
        r
    }

    fn fetch_into(
        &self,
        store: &dyn Store,
        digest: &Digest,
        manifest: &Manifest,
        dest: &Path,
        limits: UnpackLimits,
    ) -> Result<FetchReport, HostError> {
        let commit = manifest.source.commit.clone();
        let mut up = Unpacker::new(dest, limits)?;
        let mut downloaded = 0;
        for layer in &manifest.layers {
            let expected = Expected {
                digest: Some(layer.digest),
                size: Some(layer.size),
                diff_id: Some(layer.diff_id),
            };
            let cache = self
                .root
                .join("cache/blobs/sha256")
                .join(layer.digest.hex());
            let cached_ok = cache.is_file()
                && matches!(Digest::of_file(&cache), Ok((d, n)) if d == layer.digest && n == layer.size);
            if cached_ok {
                let f = fs::File::open(&cache)
                    .map_err(io_err(format!("opening {}", cache.display())))?;
                up.layer(io::BufReader::new(f), &expected)?;
                continue;
            }
            let _ = fs::remove_file(&cache);
            let got = store.get(&keys::blob(&layer.digest))?;
            let tmp = cache.with_extension(format!("tmp-{}", rand::random::<u32>()));
            let file =
                fs::File::create(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
            let mut tee = Tee {
                inner: got.reader,
                out: io::BufWriter::new(file),
                failed: None,
            };
            let res = up.layer(&mut tee, &expected);
            let Tee { out, failed, .. } = tee;
            match (res, failed) {
                (Ok(_), None) => {
                    let f = out
                        .into_inner()
                        .map_err(|e| io_err("writing blob cache")(e.into_error()))?;
                    f.sync_all().map_err(io_err("syncing blob cache"))?;
                    fs::rename(&tmp, &cache)
                        .map_err(io_err(format!("renaming into {}", cache.display())))?;
                    downloaded += layer.size;
                }
                (Ok(_), Some(_)) => {
                    // The release is fine; only the cache copy failed.
                    let _ = fs::remove_file(&tmp);
                    downloaded += layer.size;
                }
                (Err(e), _) => {
                    let _ = fs::remove_file(&tmp);
                    return Err(e.into());
                }
            }
        }
        let stats = up.finish()?;
        let meta = ReleaseMeta {
            commit: commit.clone(),
            manifest: *digest,
            fetched_at: now_rfc3339(),
        };
        write_atomic(
            &dest.join(".release.json"),
            &serde_json::to_vec_pretty(&meta).expect("serialises"),
        )?;
        Ok(FetchReport {
            release: commit,
            cached: false,
            downloaded,
            entries: stats.entries,
        })
    }

    fn release_meta(&self, commit: &str) -> Result<ReleaseMeta, HostError> {
        let p = self.release_dir(commit).join(".release.json");
        let b = fs::read(&p).map_err(|_| HostError::NotFetched(commit.to_string()))?;
        serde_json::from_slice(&b).map_err(|_| HostError::NotFetched(commit.to_string()))
    }

    pub fn service_spec(&self, commit: &str) -> Result<ServiceSpec, HostError> {
        let dir = self.release_dir(commit);
        if !dir.is_dir() {
            return Err(HostError::NotFetched(commit.to_string()));
        }
        Ok(ServiceSpec::load(&dir)?)
    }

    /// Renders `deploy/env/<env>.yaml` of the release plus host-local values into
    /// `<release>/config.yaml`.
    pub fn render(&self, req: &RenderRequest) -> Result<RenderReport, HostError> {
        let spec = self.service_spec(&req.commit)?;
        let dir = self.release_dir(&req.commit);
        let env_file = dir.join(spec.config.env_file.replace("{env}", &req.env));
        let mut tree: Value = match fs::read_to_string(&env_file) {
            Ok(t) if t.trim().is_empty() => Value::Object(Default::default()),
            Ok(t) => serde_norway::from_str(&t)
                .map_err(|e| HostError::Render(format!("{}: {e}", env_file.display())))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(HostError::Render(format!(
                    "the release has no config for env {} ({})",
                    req.env,
                    spec.config.env_file.replace("{env}", &req.env)
                )));
            }
            Err(e) => return Err(io_err(format!("reading {}", env_file.display()))(e)),
        };
        let port = req.port.or(spec.port);
        if let Some(port) = port {
            crate::config::set_value_path(&mut tree, &spec.config.port_path, port.into())
                .map_err(HostError::Render)?;
        }
        for (path, v) in &req.values {
            crate::config::set_value_path(&mut tree, path, v.clone()).map_err(HostError::Render)?;
        }
        let text = serde_norway::to_string(&tree).map_err(|e| HostError::Render(e.to_string()))?;
        let out = dir.join("config.yaml");
        write_atomic(&out, text.as_bytes())?;
        Ok(RenderReport {
            config: out.display().to_string(),
            port,
        })
    }

    /// Points `current` at the release, atomically.
    pub fn switch(&self, commit: &str) -> Result<SwitchReport, HostError> {
        let meta = self.release_meta(commit)?;
        self.begin("switch", Some(commit))?;
        let from = self.current();
        let tmp = self
            .root
            .join(format!(".current-{}", rand::random::<u32>()));
        std::os::unix::fs::symlink(Path::new("releases").join(commit), &tmp)
            .map_err(io_err(format!("creating {}", tmp.display())))?;
        fs::rename(&tmp, self.root.join("current")).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err("switching current")(e)
        })?;
        sync_dir(&self.root);
        let release = ReleaseRef {
            commit: commit.to_string(),
            manifest: meta.manifest,
        };
        self.update_state(|s| {
            s.current = Some(release);
            s.step = None;
        })?;
        Ok(SwitchReport {
            from,
            to: commit.to_string(),
        })
    }

    /// Starts the current release as a detached process (own process group), stdout and
    /// stderr into `logs/<sha>-<start>.log`.
    pub fn start(&self, req: &StartRequest) -> Result<(StartedChild, RunInfo), HostError> {
        let commit = self
            .current()
            .ok_or_else(|| HostError::NotFetched("(no current release)".into()))?;
        if let Some(run) = self.running()? {
            return Err(HostError::Preflight(format!(
                "the service is already running (pid {})",
                run.pid
            )));
        }
        let spec = self.service_spec(&commit)?;
        // A port already bound by a process that is not our service would answer the readiness
        // wait and the checks in its place: refuse rather than test the wrong process.
        if let Some(port) = req.port.or(spec.port)
            && TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_millis(250),
            )
            .is_ok()
        {
            return Err(HostError::Preflight(format!(
                "port {port} is already in use by a process that is not this service; refusing to start (its readiness and checks would test that process)"
            )));
        }
        self.begin("start", Some(&commit))?;
        let r = self.spawn_service(&commit, &spec, req);
        self.end()?;
        r
    }

    fn spawn_service(
        &self,
        commit: &str,
        spec: &ServiceSpec,
        req: &StartRequest,
    ) -> Result<(StartedChild, RunInfo), HostError> {
        let commit = commit.to_string();
        let dir =
            fs::canonicalize(self.release_dir(&commit)).map_err(io_err("resolving release dir"))?;
        let config = dir.join("config.yaml");
        let started = SystemTime::now();
        let ms = unix_ms(started);
        let log = self.root.join("logs").join(format!("{commit}-{ms}.log"));
        let logf = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io_err(format!("opening {}", log.display())))?;
        let logf2 = logf.try_clone().map_err(io_err("duplicating log fd"))?;
        let port = req.port.map(|p| p.to_string()).unwrap_or_default();
        let argv: Vec<String> = spec
            .start
            .iter()
            .map(|a| {
                a.replace("{config}", &config.display().to_string())
                    .replace("{port}", &port)
                    .replace("{release}", &commit)
            })
            .collect();
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .current_dir(&dir)
            .envs(&req.env)
            .stdin(Stdio::null())
            .stdout(Stdio::from(logf))
            .stderr(Stdio::from(logf2))
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(io_err(format!("starting {:?}", argv)))?;
        let info = RunInfo {
            pid: child.id() as i32,
            release: commit,
            port: req.port,
            log: log.display().to_string(),
            started_at: humantime::format_rfc3339_millis(started).to_string(),
            started_unix_ms: ms,
        };
        write_atomic(
            &self.run_path(),
            &serde_json::to_vec_pretty(&info).expect("serialises"),
        )?;
        Ok((StartedChild(Some(child)), info))
    }

    /// The running instance, if its process is alive (stale records are removed).
    pub fn running(&self) -> Result<Option<RunInfo>, HostError> {
        let b = match fs::read(self.run_path()) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading run/service.json")(e)),
        };
        let Ok(info) = serde_json::from_slice::<RunInfo>(&b) else {
            let _ = fs::remove_file(self.run_path());
            return Ok(None);
        };
        if self.is_ours(info.pid) {
            Ok(Some(info))
        } else {
            let _ = fs::remove_file(self.run_path());
            Ok(None)
        }
    }

    /// True if `pid` is alive (not a zombie) and runs from one of this root's releases.
    fn is_ours(&self, pid: i32) -> bool {
        if !pid_alive(pid) {
            return false;
        }
        let Ok(cwd) = fs::read_link(format!("/proc/{pid}/cwd")) else {
            return false;
        };
        let Ok(releases) = fs::canonicalize(self.root.join("releases")) else {
            return false;
        };
        cwd.starts_with(releases)
    }

    /// Waits until the port accepts connections; fails early if the process dies.
    pub fn wait_ready(&self, req: &ReadyRequest) -> Result<ReadyReport, HostError> {
        let t0 = Instant::now();
        let timeout = Duration::from_millis(req.timeout_ms);
        let info = self.running()?;
        let Some(info) = info else {
            return Err(HostError::Died(self.last_log_tail()));
        };
        let addr = (req.address.as_str(), req.port)
            .to_socket_addrs()
            .map_err(io_err(format!("resolving {}", req.address)))?
            .next()
            .ok_or_else(|| HostError::Transport(format!("no address for {}", req.address)))?;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(250)).is_ok() {
                if !self.is_ours(info.pid) {
                    return Err(HostError::Died(format!(
                        "port {} answers but the service exited: {}",
                        req.port,
                        tail(&info.log)
                    )));
                }
                return Ok(ReadyReport {
                    after_ms: t0.elapsed().as_millis() as u64,
                });
            }
            if !self.is_ours(info.pid) {
                return Err(HostError::Died(tail(&info.log)));
            }
            if t0.elapsed() >= timeout {
                return Err(HostError::Timeout {
                    port: req.port,
                    secs: timeout.as_secs(),
                    detail: tail(&info.log),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn last_log_tail(&self) -> String {
        fs::read(self.run_path())
            .ok()
            .and_then(|b| serde_json::from_slice::<RunInfo>(&b).ok())
            .map(|i| tail(&i.log))
            .unwrap_or_else(|| "(no log)".into())
    }

    /// Stops the running instance: its stop signal to the process group, then SIGKILL after
    /// the stop timeout.
    pub fn stop(&self) -> Result<StopReport, HostError> {
        let Some(info) = self.running()? else {
            let _ = fs::remove_file(self.run_path());
            return Ok(StopReport {
                stopped: None,
                killed: false,
            });
        };
        self.begin("stop", Some(&info.release))?;
        let spec = self.service_spec(&info.release).unwrap_or_default();
        let sig = signal_number(&spec.stop.signal).unwrap_or(15);
        let signal =
            rustix::process::Signal::from_named_raw(sig).unwrap_or(rustix::process::Signal::TERM);
        let pid =
            rustix::process::Pid::from_raw(info.pid).ok_or_else(|| HostError::StopFailed {
                pid: info.pid,
                detail: "bad pid".into(),
            })?;
        let _ = rustix::process::kill_process_group(pid, signal);
        let _ = rustix::process::kill_process(pid, signal);
        let deadline = Instant::now() + spec.stop.timeout.0;
        let mut killed = false;
        while pid_alive(info.pid) {
            if Instant::now() >= deadline {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                killed = true;
                let hard = Instant::now() + Duration::from_secs(5);
                while pid_alive(info.pid) {
                    if Instant::now() >= hard {
                        return Err(HostError::StopFailed {
                            pid: info.pid,
                            detail: "survived SIGKILL".into(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = fs::remove_file(self.run_path());
        self.end()?;
        Ok(StopReport {
            stopped: Some(info.pid),
            killed,
        })
    }

    pub fn status(&self) -> Result<HostStatus, HostError> {
        let mut releases: Vec<String> = match fs::read_dir(self.root.join("releases")) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect(),
            Err(_) => Vec::new(),
        };
        releases.sort();
        Ok(HostStatus {
            current: self.current(),
            state: self.state()?,
            running: self.running()?,
            releases,
        })
    }

    /// Records `release` as this host's last known good release.
    pub fn mark_good(&self, release: &ReleaseRef) -> Result<HostState, HostError> {
        self.update_state(|s| {
            if s.last_good.as_ref() != Some(release) {
                s.previous_good = s.last_good.take();
                s.last_good = Some(release.clone());
            }
        })
    }

    /// Removes old releases (and cached blobs no kept release uses), keeping `current`, the
    /// last and previous known good, and the `keep` most recently fetched.
    pub fn prune(&self, keep: usize) -> Result<PruneReport, HostError> {
        let st = self.state()?;
        let mut protect: Vec<String> = Vec::new();
        protect.extend(self.current());
        for r in [&st.current, &st.last_good, &st.previous_good]
            .into_iter()
            .flatten()
        {
            protect.push(r.commit.clone());
        }
        if let Some(run) = self.running()? {
            protect.push(run.release);
        }
        let mut all: Vec<(SystemTime, String)> = Vec::new();
        if let Ok(rd) = fs::read_dir(self.root.join("releases")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(".trash-") {
                    let _ = fs::remove_dir_all(e.path());
                    continue;
                }
                if name.starts_with('.') {
                    continue;
                }
                let t = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                all.push((t, name));
            }
        }
        all.sort_by(|a, b| b.cmp(a));
        let mut kept = Vec::new();
        let mut removed = Vec::new();
        for (i, (_, name)) in all.into_iter().enumerate() {
            if i < keep || protect.contains(&name) {
                kept.push(name);
            } else {
                let p = self.release_dir(&name);
                fs::remove_dir_all(&p).map_err(io_err(format!("removing {}", p.display())))?;
                removed.push(name);
            }
        }
        Ok(PruneReport { removed, kept })
    }

    /// Reads a file under this root (logs).
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>, HostError> {
        let p = Path::new(path);
        let root = fs::canonicalize(&self.root).map_err(io_err("resolving root"))?;
        let real = fs::canonicalize(p).map_err(io_err(format!("resolving {path}")))?;
        if !real.starts_with(&root) {
            return Err(HostError::Transport(format!(
                "{path} is outside the host root"
            )));
        }
        fs::read(&real).map_err(io_err(format!("reading {path}")))
    }
}

/// The child of an in-process start. Dropping it reaps the process in the background, so a
/// dead service never lingers as a zombie that looks alive.
#[derive(Debug)]
pub struct StartedChild(Option<std::process::Child>);

impl Drop for StartedChild {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            std::thread::spawn(move || {
                let _ = c.wait();
            });
        }
    }
}

struct Tee<R, W: Write> {
    inner: R,
    out: W,
    failed: Option<io::Error>,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.failed.is_none()
            && let Err(e) = self.out.write_all(&buf[..n])
        {
            self.failed = Some(e);
        }
        Ok(n)
    }
}

/// True if the process exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    let Some(p) = rustix::process::Pid::from_raw(pid) else {
        return false;
    };
    if rustix::process::test_kill_process(p).is_err() {
        return false;
    }
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().chars().next())
                .unwrap_or(None);
            !matches!(state, Some('Z') | Some('X'))
        }
        Err(_) => false,
    }
}

fn tail(path: &str) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(5);
    let t = lines[start..].join("\n");
    if t.is_empty() {
        format!("(log {path} is empty)")
    } else {
        format!("log {path}:\n{t}")
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), HostError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        rand::random::<u32>()
    ));
    let mut f = fs::File::create(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
    f.write_all(data)
        .map_err(io_err(format!("writing {}", tmp.display())))?;
    f.sync_all()
        .map_err(io_err(format!("syncing {}", tmp.display())))?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err(format!("renaming into {}", path.display()))(e)
    })
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Node's `process.platform` for this build.
pub fn node_os() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    }
}

/// Node's `process.arch` for this build.
pub fn node_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        "x86" => "ia32",
        other => other,
    }
}

/// Runs `sh -c cmd` with a timeout, capturing output.
pub fn exec(cmd: &str, timeout: Duration) -> Result<ExecOutput, HostError> {
    let mut child = Command::new("sh")
        .args(["-c", cmd])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(io_err(format!("running {cmd:?}")))?;
    match wait_output(&mut child, timeout, true).map_err(io_err(format!("waiting for {cmd:?}")))? {
        Some(out) => Ok(out),
        None => Err(HostError::Transport(format!(
            "{cmd:?} timed out after {}s",
            timeout.as_secs()
        ))),
    }
}

/// Reads a spawned child's stdout and stderr (both piped) to the end while waiting for it, up
/// to `timeout`. On timeout the child (with `kill_group`: its whole process group) is killed
/// and `Ok(None)` returned.
pub fn wait_output(
    child: &mut std::process::Child,
    timeout: Duration,
    kill_group: bool,
) -> io::Result<Option<ExecOutput>> {
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut s);
            }
            s
        })
    };
    let t1 = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let t2 = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait()? {
            Some(s) => break s,
            None if Instant::now() >= deadline => {
                if kill_group && let Some(p) = rustix::process::Pid::from_raw(child.id() as i32) {
                    let _ = rustix::process::kill_process_group(p, rustix::process::Signal::KILL);
                }
                let _ = child.kill();
                let _ = child.wait();
                return Ok(None);
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    Ok(Some(ExecOutput {
        status: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&t1.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&t2.join().unwrap_or_default()).into_owned(),
    }))
}
