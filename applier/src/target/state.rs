//! `state.json`, this host's journal: the release `current` points at, the last and previous
//! known good releases, and the step in progress (recorded before an operation acts, cleared
//! when it is done, so an interrupted one is visible). Also the status report that reads it.

use std::fs;
use std::io;

use super::{HostRoot, now_rfc3339, write_atomic};
use crate::protocol::{HostError, HostState, HostStatus, ReleaseRef, StepInProgress, io_err};

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
}
