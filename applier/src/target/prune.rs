//! Pruning: old releases go, never `current`, the running one, or the last and previous
//! known good; the `keep` most recently fetched stay too. Half-removed trash is swept, and so
//! are partial releases (a directory without the `.release.json` a completed fetch writes
//! last, left by a fetch that was killed), unless a fetch of it is in progress. Then the
//! unpacked layers (and cached blobs) that no kept release names go, with any partial tree
//! ([`super::layers`]); removing a release only unlinks its hard links, so a layer another
//! release uses is never touched.

use std::fs;
use std::time::{Instant, SystemTime};

use super::{HostRoot, discard_dir};
use crate::protocol::{HostError, PruneReport, io_err};

impl HostRoot {
    /// Removes old releases (and cached blobs no kept release uses), keeping `current`, the
    /// last and previous known good, and the `keep` most recently fetched.
    pub fn prune(&self, keep: usize) -> Result<PruneReport, HostError> {
        let started = Instant::now();
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
                discard_dir(&self.release_dir(&name))?;
                removed.push(name);
            }
        }
        let layers = self.prune_layers()?;
        Ok(PruneReport {
            removed,
            kept,
            layers_removed: layers.removed,
            layers_kept: layers.kept,
            layers_busy: layers.busy,
            ms: started.elapsed().as_millis() as u64,
        })
    }
}
