//! Pruning: old releases go, never `current`, the running one, or the last and previous
//! known good; the `keep` most recently fetched stay too. Half-removed trash is swept, and so
//! are partial releases (a directory without the `.release.json` a completed fetch writes
//! last, left by a fetch that was killed), unless a fetch of it is in progress.

use std::fs;
use std::time::SystemTime;

use super::HostRoot;
use crate::protocol::{HostError, PruneReport, io_err};

impl HostRoot {
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
            protect.push(r.commit.to_string());
        }
        if let Some(run) = self.running()? {
            protect.push(run.release);
        }
        if let Some(step) = &st.step
            && step.op == "fetch"
        {
            protect.extend(step.release.clone());
        }
        let mut all: Vec<(SystemTime, String)> = Vec::new();
        let mut removed = Vec::new();
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
                if !protect.contains(&name) && self.release_meta(&name).is_err() {
                    // A partial release: never complete, so nothing can use it.
                    fs::remove_dir_all(e.path())
                        .map_err(io_err(format!("removing {}", e.path().display())))?;
                    removed.push(name);
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
}
