//! The target side: what happens on one host, under its root directory.
//!
//! ```text
//! <root>/releases/<git-sha>/           the layers' files (hard links into layers/) + rendered
//!                                      config.yaml + .release.json (written last)
//! <root>/layers/<hex>/                 one layer unpacked, shared by the releases using it
//! <root>/layers/<hex>.json             its record, written last (see [`layers`])
//! <root>/cache/blobs/sha256/<hex>      downloaded layers, verified
//! <root>/current -> releases/<git-sha> switched by rename(2) of a temp symlink
//! <root>/state.json                    current, last good, previous good, step in progress
//! <root>/run/service.json              the running instance: pid, release, log, start time
//! <root>/logs/<sha>-<start>.log        stdout+stderr of one start
//! ```
//!
//! Every operation records the step it is in (`state.json` `step`) before it acts and clears it
//! when done, so an interrupted operation is visible. Requests that change the host run one at a
//! time (a lock file, `run/.lock`) and are fenced: one carrying a token older than the newest in
//! `state.json` is refused before it acts ([`crate::protocol::Fence`]). [`HostRoot::handle`] answers one
//! [`HostRequest`]; the same code serves the local transport in-process and `applier host`
//! ([`serve`]) for remote ones. By concern:
//!
//! - [`state`]: `state.json`, the step in progress, the fence, mark-good, status.
//! - [`env`]: the minimal environment services and commands get.
//! - [`preflight`]: writable root, free disk, node ABI.
//! - [`fetch`]: streaming, verified fetch into a release directory; [`layers`]: each layer
//!   unpacked once and shared by hard links; [`presigned`]: the read-only store of presigned
//!   URLs a target fetches through.
//! - [`release`]: the release's service spec, config render (and its preview), the
//!   `current` switch.
//! - [`process`]: start and stop of the service process; [`ready`]: the readiness wait
//!   (port, then the service's probes, then `min_healthy`).
//! - [`exec`]: shell commands and files the checks read.
//! - [`prune`]: removing old releases, then the layers no kept release uses.
//! - [`serve`]: the protocol session on stdin/stdout of `applier host`.

pub mod env;
pub mod exec;
pub mod fetch;
pub mod layers;
pub mod port;
pub mod preflight;
pub mod presigned;
pub mod process;
pub mod prune;
pub mod ready;
pub mod release;
pub mod serve;
pub mod state;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use artifact::store::Store;
use artifact::unpack::UnpackLimits;

pub use env::{CommandEnv, service_env};
pub use exec::{exec, wait_output};
pub use preflight::{node_arch, node_os};
pub use presigned::UrlStore;
pub use process::{StartedChild, pid_alive};
pub use serve::{ServeSummary, serve};

use crate::protocol::{FileText, HostError, HostRequest, HostResponse, io_err};

/// One host's root directory, and the store it may read directly (in-process hosts).
#[derive(Clone, Debug)]
pub struct HostRoot {
    root: PathBuf,
    store: Option<Arc<dyn Store>>,
    limits: UnpackLimits,
}

impl HostRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        HostRoot {
            root: root.into(),
            store: None,
            limits: UnpackLimits::default(),
        }
    }

    /// A root that fetches from `store` when a request names no other source.
    pub fn with_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
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
        for d in ["releases", "layers", "cache/blobs/sha256", "logs", "run"] {
            let p = self.root.join(d);
            fs::create_dir_all(&p).map_err(io_err(format!("creating {}", p.display())))?;
        }
        Ok(())
    }

    /// The release `current` points at.
    pub fn current(&self) -> Option<String> {
        let target = fs::read_link(self.root.join("current")).ok()?;
        target.file_name().map(|n| n.to_string_lossy().into_owned())
    }

    /// Answers one request; a failure is an [`HostResponse::Error`] with its kind.
    pub fn handle(&self, req: HostRequest) -> HostResponse {
        self.execute(req)
            .unwrap_or_else(|e| HostResponse::Error(e.to_remote()))
    }

    /// Runs one request, keeping the error typed (in-process callers). A request that changes
    /// the host holds the host's lock while it runs and is admitted by its fence first.
    pub fn execute(&self, req: HostRequest) -> Result<HostResponse, HostError> {
        let lock = if req.changes_host() {
            let lock = self.lock()?;
            if let Some(f) = req.fence() {
                self.admit(f)?;
            }
            Some(lock)
        } else {
            None
        };
        // A fetch (minutes) and a preflight hold the lock only for the fence check: neither
        // touches `current`, the service or the known-good releases.
        let _lock = match req {
            HostRequest::FetchUrls(_) | HostRequest::Preflight(_) => None,
            _ => lock,
        };
        Ok(match req {
            HostRequest::Hello(h) => HostResponse::Hello(h.answer()?),
            HostRequest::Preflight(r) => HostResponse::Preflight(self.preflight(&r)?),
            HostRequest::FetchUrls(r) => HostResponse::FetchUrls(self.fetch_request(&r)?),
            HostRequest::ServiceSpec(r) => {
                self.verified_release(&r.release)?;
                HostResponse::ServiceSpec(self.service_spec(&r.release.commit)?)
            }
            HostRequest::Render(r) => HostResponse::Render(self.render(&r)?),
            HostRequest::RenderPreview(r) => HostResponse::RenderPreview(self.render_preview(&r)?),
            HostRequest::Switch(r) => HostResponse::Switch(self.switch(&r.release)?),
            // The child handle is dropped here: it is reaped in the background, and the
            // service outlives an `applier host` process that exits.
            HostRequest::Start(r) => HostResponse::Start(self.start(&r)?.1),
            HostRequest::WaitReady(r) => HostResponse::WaitReady(self.wait_ready(&r)?),
            HostRequest::Stop(_) => HostResponse::Stop(self.stop()?),
            HostRequest::Status => HostResponse::Status(self.status()?),
            HostRequest::MarkGood(r) => {
                self.verified_release(&r.release)?;
                HostResponse::MarkGood(self.mark_good(&r.release)?)
            }
            HostRequest::Prune(r) => HostResponse::Prune(self.prune(r.keep)?),
            HostRequest::ReadFile(r) => HostResponse::ReadFile(FileText {
                text: String::from_utf8_lossy(&self.read_file(&r.path)?).into_owned(),
            }),
            HostRequest::Exec(r) => HostResponse::Exec(exec(
                &r.cmd,
                std::time::Duration::from_millis(r.timeout_ms),
                CommandEnv::Clean(&service_env(&self.root, &r.env)),
            )?),
            HostRequest::Health => HostResponse::Health(self.health()?),
            HostRequest::Batch(b) => HostResponse::Batch(b.run(|r| self.handle(r))?),
        })
    }
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Writes `data` to `path` atomically: a temp file beside it, synced, renamed over it. On any
/// failure after the temp file was created, the temp file is removed (nothing is left behind).
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), HostError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        rand::random::<u32>()
    ));
    let mut f = fs::File::create(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
    let written = f
        .write_all(data)
        .map_err(io_err(format!("writing {}", tmp.display())))
        .and_then(|()| {
            f.sync_all()
                .map_err(io_err(format!("syncing {}", tmp.display())))
        })
        .and_then(|()| {
            fs::rename(&tmp, path).map_err(io_err(format!("renaming into {}", path.display())))
        });
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Removes a directory tree, if it exists: renamed aside first (`.trash-<name>-<random>`
/// beside it, which prune sweeps if a crash interrupts the removal), so nothing ever sees it
/// half removed under its own name.
fn discard_dir(path: &Path) -> Result<(), HostError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    let trash = parent.join(format!(
        ".trash-{}-{}",
        name.to_string_lossy(),
        rand::random::<u32>()
    ));
    match fs::rename(path, &trash) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(format!("moving aside {}", path.display()))(e)),
    }
    fs::remove_dir_all(&trash).map_err(io_err(format!("removing {}", trash.display())))
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

#[cfg(test)]
mod layer_tests;
#[cfg(test)]
mod tests;
