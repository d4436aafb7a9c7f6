//! `state.json`, this host's journal: the release `current` points at, the last and previous
//! known good releases, and the step in progress (recorded before an operation acts, cleared
//! when it is done, so an interrupted one is visible). Also the status and health reports.

use std::fs;
use std::io;

use super::{HostRoot, now_rfc3339, write_atomic};
use crate::protocol::{
    HealthReport, HostError, HostState, HostStatus, ReleaseRef, StepInProgress, io_err,
};

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
