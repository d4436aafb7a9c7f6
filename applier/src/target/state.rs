//! `state.json`, this host's journal: the release `current` points at, the last and previous
//! known good releases, the step in progress (recorded before an operation acts, cleared when
//! it is done, so an interrupted one is visible) and the newest fencing token seen. Also the
//! host's lock, the fence check, and the status and health reports.
//!
//! A `state.json` that does not parse is an error everywhere it is read (preflight included),
//! never an empty state: the host's journal is what tells an interrupted step and the fence.

use std::fs;
use std::io;
use std::time::{Duration, Instant};

use super::{HostRoot, now_rfc3339, write_atomic};
use crate::protocol::{
    Fence, HealthReport, HostError, HostState, HostStatus, ReleaseRef, StepInProgress, io_err,
};

/// How long a request waits for another one holding the host's lock.
const LOCK_WAIT: Duration = Duration::from_secs(60);

/// This host's lock (`run/.lock`), held until dropped.
#[derive(Debug)]
pub struct HostLock(#[allow(dead_code)] fs::File);

impl HostRoot {
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

    pub(super) fn update_state(
        &self,
        f: impl FnOnce(&mut HostState),
    ) -> Result<HostState, HostError> {
        self.ensure_dirs()?;
        let mut st = self.state()?;
        f(&mut st);
        self.save_state(&mut st)?;
        Ok(st)
    }

    /// Takes this host's lock: requests that change the host run one at a time, so a fence
    /// check and the operation it admits cannot interleave with another request's. Waits up to
    /// a minute for a request holding it.
    pub fn lock(&self) -> Result<HostLock, HostError> {
        self.ensure_dirs()?;
        let p = self.root.join("run/.lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io_err(format!("opening {}", p.display())))?;
        let t0 = Instant::now();
        loop {
            match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(HostLock(f)),
                Err(rustix::io::Errno::WOULDBLOCK) if t0.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    return Err(HostError::Preflight(format!(
                        "{} is held by another request for over {}s; try again when it is done",
                        p.display(),
                        LOCK_WAIT.as_secs()
                    )));
                }
                Err(e) => return Err(io_err(format!("locking {}", p.display()))(e.into())),
            }
        }
    }

    /// Admits a request carrying `fence`: refused when the host has seen a newer token (or the
    /// same token from another deploy), recorded as the newest otherwise. Hold [`Self::lock`].
    pub fn admit(&self, fence: &Fence) -> Result<(), HostError> {
        let st = self.state()?;
        if let Some(seen) = st.fences.get(fence.env.as_str()) {
            if fence == seen {
                return Ok(());
            }
            if fence.token <= seen.token {
                return Err(HostError::Fenced {
                    got: fence.clone(),
                    seen: seen.clone(),
                });
            }
        }
        self.update_state(|s| {
            s.fences.insert(fence.env.to_string(), fence.clone());
        })?;
        Ok(())
    }

    /// Records the step in progress.
    pub(super) fn begin(&self, op: &str, release: Option<&str>) -> Result<(), HostError> {
        self.update_state(|s| {
            s.step = Some(StepInProgress {
                op: op.into(),
                release: release.map(str::to_string),
                started_at: now_rfc3339(),
            })
        })?;
        Ok(())
    }

    /// Clears the step in progress.
    pub(super) fn end(&self) -> Result<HostState, HostError> {
        self.update_state(|s| s.step = None)
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

    /// The releases on disk (sorted), `current`, the state and the running instance.
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

    /// A cheap look: `current`, the running instance's pid if alive, whether its port
    /// answers on 127.0.0.1, and the free disk. Reads and connects; changes nothing.
    pub fn health(&self) -> Result<HealthReport, HostError> {
        let run = self.running()?;
        let port = run.as_ref().and_then(|r| r.port);
        let port_bound = port.map(|p| {
            std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], p)),
                std::time::Duration::from_millis(250),
            )
            .is_ok()
        });
        Ok(HealthReport {
            current: self.current(),
            pid: run.map(|r| r.pid),
            port,
            port_bound,
            free_bytes: self.free_bytes()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RunInfo;

    #[test]
    fn health_reports_the_pid_the_port_current_and_free_disk() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path());
        root.ensure_dirs().unwrap();
        let h = root.health().unwrap();
        assert_eq!((h.current, h.pid, h.port_bound), (None, None, None));
        assert!(h.free_bytes > 0);
        // An instance of ours (running from a release here) with its port bound.
        let rel = dir.path().join("releases").join("r1");
        fs::create_dir_all(&rel).unwrap();
        std::os::unix::fs::symlink("releases/r1", dir.path().join("current")).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(&rel)
            .spawn()
            .unwrap();
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let info = RunInfo {
            pid: child.id() as i32,
            release: "r1".into(),
            port: Some(port),
            log: "x".into(),
            started_at: now_rfc3339(),
            started_unix_ms: 0,
        };
        fs::write(root.run_path(), serde_json::to_vec(&info).unwrap()).unwrap();
        let h = root.health().unwrap();
        assert_eq!(h.current.as_deref(), Some("r1"));
        assert_eq!(
            (h.pid, h.port, h.port_bound),
            (Some(info.pid), Some(port), Some(true))
        );
        drop(listener);
        assert_eq!(root.health().unwrap().port_bound, Some(false));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            root.health().unwrap().pid,
            None,
            "a dead pid is not reported"
        );
    }
}
