//! The host's layer store: each layer unpacked once, by digest, and shared by every release
//! that uses it through hard links (a release of a source-only change unpacks only its
//! source layer and links the dependency tree already there).
//!
//! ```text
//! <root>/layers/<hex>/          the layer's tree; files read-only (0444, 0555 if executable)
//! <root>/layers/<hex>.json      its record, written last: digests, size, entries, bytes
//! <root>/layers/.<hex>.lock     held while the tree is made or discarded
//! <root>/layers/.lock           shared by fetches, exclusive while prune removes trees
//! ```
//!
//! A tree is made by one [`Unpacker`] (every archive check, a durable staging directory
//! renamed into place whole), then its record is written: a tree is trusted only when its
//! record names the same digest, diff_id and size. A killed fetch leaves a `.<hex>.partial-`
//! staging directory or a tree without its record; neither is ever linked: the next fetch of
//! that layer removes it and unpacks again, and prune sweeps it. When a release links a tree,
//! the entries and bytes it links must be the ones recorded; a tree that changed on the host
//! is discarded and unpacked again. Read-only files keep a release from writing into
//! another's through its own path (the same inode).
//!
//! Prune ([`HostRoot::prune_layers`]) removes the trees (and cached blobs) no kept release
//! names, and only while no fetch holds the store: a fetch in progress keeps them all.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use artifact::Digest;
use artifact::manifest::Layer;
use artifact::store::Store;
use artifact::unpack::{UnpackLimits, UnpackStats, Unpacker, tree_stats};
use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};

use super::{HostRoot, discard_dir, now_rfc3339, write_atomic};
use crate::protocol::{HostError, io_err};

/// What `layers/<hex>.json` records of a tree.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct LayerRecord {
    pub(super) digest: Digest,
    pub(super) diff_id: Digest,
    pub(super) size: u64,
    /// What [`tree_stats`] counted when the tree was made.
    pub(super) entries: u64,
    pub(super) bytes: u64,
    unpacked_at: String,
}

impl LayerRecord {
    fn is_of(&self, layer: &Layer) -> bool {
        self.digest == layer.digest && self.diff_id == layer.diff_id && self.size == layer.size
    }

    pub(super) fn stats(&self) -> UnpackStats {
        UnpackStats {
            entries: self.entries,
            bytes: self.bytes,
        }
    }
}

/// A flock held for as long as the value lives.
pub(super) struct Flock(#[allow(dead_code)] fs::File);

/// What prune did in the layer store.
#[derive(Debug, Default)]
pub(super) struct LayerPrune {
    pub(super) removed: Vec<Digest>,
    pub(super) kept: usize,
    /// A fetch held the store: nothing was removed from it.
    pub(super) busy: bool,
}

impl HostRoot {
    pub(super) fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    /// Where a layer's blob is cached.
    pub(super) fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("cache/blobs/sha256").join(d.hex())
    }

    /// The store lock, shared: held by a fetch from before it looks at a tree until its
    /// release is complete, so no tree it uses is removed under it.
    pub(super) fn layers_shared(&self) -> Result<Flock, HostError> {
        flock(&self.layers_dir().join(".lock"), FlockOperation::LockShared)?
            .ok_or_else(|| HostError::Preflight("the layer store's lock was not taken".into()))
    }

    /// The tree of `layer`, unpacked now if it is not already (whole and recorded). Returns
    /// it, its record and the bytes downloaded. Hold [`Self::layers_shared`].
    pub(super) fn layer_tree(
        &self,
        store: &dyn Store,
        layer: &Layer,
        limits: UnpackLimits,
    ) -> Result<(PathBuf, LayerRecord, u64), HostError> {
        let hex = layer.digest.hex();
        let dir = self.layers_dir();
        let tree = dir.join(&hex);
        let rec_path = dir.join(format!("{hex}.json"));
        let _lock = self.digest_lock(&layer.digest)?;
        if let Some(rec) = read_record(&rec_path)
            && rec.is_of(layer)
            && tree.is_dir()
        {
            return Ok((tree, rec, 0));
        }
        // Untrusted leftovers of a killed fetch (or another build's record): none is linked.
        self.drop_tree(&hex)?;
        let mut up = Unpacker::new(&tree, limits)?.with_read_only_files(true);
        let downloaded = self.stream_layer(store, layer, &mut up)?;
        up.finish()?;
        let s = tree_stats(&tree)?;
        let rec = LayerRecord {
            digest: layer.digest,
            diff_id: layer.diff_id,
            size: layer.size,
            entries: s.entries,
            bytes: s.bytes,
            unpacked_at: now_rfc3339(),
        };
        write_atomic(
            &rec_path,
            &serde_json::to_vec_pretty(&rec).expect("serialises"),
        )?;
        Ok((tree, rec, downloaded))
    }

    /// Untrusts and removes the tree of `digest` (it changed on the host). Hold
    /// [`Self::layers_shared`].
    pub(super) fn discard_layer(&self, digest: &Digest) -> Result<(), HostError> {
        let _lock = self.digest_lock(digest)?;
        self.drop_tree(&digest.hex())
    }

    fn digest_lock(&self, d: &Digest) -> Result<Flock, HostError> {
        let p = self.layers_dir().join(format!(".{}.lock", d.hex()));
        flock(&p, FlockOperation::LockExclusive)?
            .ok_or_else(|| HostError::Preflight(format!("{} was not taken", p.display())))
    }

    /// Removes the record (first: the tree is untrusted from then on), the tree and any
    /// staging directory of `hex`. Hold its digest lock or the store's exclusively.
    fn drop_tree(&self, hex: &str) -> Result<(), HostError> {
        let dir = self.layers_dir();
        let rec = dir.join(format!("{hex}.json"));
        match fs::remove_file(&rec) {
            Ok(()) => super::sync_dir(&dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("removing {}", rec.display()))(e)),
        }
        discard_dir(&dir.join(hex))?;
        let staging = format!(".{hex}.partial-");
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(&staging) {
                fs::remove_dir_all(e.path())
                    .map_err(io_err(format!("removing {}", e.path().display())))?;
            }
        }
        Ok(())
    }

    /// Removes every tree, record, lock, staging directory and cached blob whose digest no
    /// complete release on the host names, and the staging directories of releases killed
    /// while being composed; unless a fetch holds the store (then nothing, and `busy`).
    pub(super) fn prune_layers(&self) -> Result<LayerPrune, HostError> {
        let dir = self.layers_dir();
        let mut out = LayerPrune::default();
        if !dir.is_dir() {
            return Ok(out);
        }
        let Some(_lock) = flock(&dir.join(".lock"), FlockOperation::NonBlockingLockExclusive)?
        else {
            out.busy = true;
            return Ok(out);
        };
        // Read under the lock: a release completed since prune looked keeps its layers.
        let mut used_hex: BTreeSet<String> = BTreeSet::new();
        let releases = self.root.join("releases");
        for e in fs::read_dir(&releases).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".partial-") {
                // No fetch runs (it would hold the store): a composition a kill interrupted.
                fs::remove_dir_all(e.path())
                    .map_err(io_err(format!("removing {}", e.path().display())))?;
            } else if let Ok(m) = self.release_meta(&name) {
                used_hex.extend(m.layers.iter().map(|d| d.hex()));
            }
        }
        let mut gone: BTreeSet<String> = BTreeSet::new();
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // `<hex>`, `<hex>.json`, `.<hex>.lock`, `.<hex>.partial-<rand>`, `.trash-...`
            let hex = name
                .trim_start_matches('.')
                .split('.')
                .next()
                .unwrap_or_default()
                .to_string();
            if name.starts_with('.') && name.contains(".partial-") {
                // No fetch runs (it would hold the store): a killed fetch's staging.
                fs::remove_dir_all(e.path())
                    .map_err(io_err(format!("removing {}", e.path().display())))?;
                continue;
            }
            if name == ".lock" || hex.parse::<Digest>().is_err() {
                continue;
            }
            let complete =
                read_record(&dir.join(format!("{hex}.json"))).is_some() && dir.join(&hex).is_dir();
            if !used_hex.contains(&hex) || !complete {
                gone.insert(hex);
            }
        }
        for hex in &gone {
            if dir.join(hex).is_dir()
                && let Ok(d) = hex.parse::<Digest>()
            {
                out.removed.push(d);
            }
            self.drop_tree(hex)?;
            let _ = fs::remove_file(dir.join(format!(".{hex}.lock")));
        }
        // Trash a killed removal left.
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(".trash-") {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        // Cached blobs: kept only for layers a kept release uses.
        let blobs = self.root.join("cache/blobs/sha256");
        for e in fs::read_dir(&blobs).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !used_hex.contains(&name) {
                let _ = fs::remove_file(e.path());
            }
        }
        out.kept = used_hex
            .iter()
            .filter(|h| dir.join(h.as_str()).is_dir())
            .count();
        Ok(out)
    }
}

fn read_record(p: &Path) -> Option<LayerRecord> {
    fs::read(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Takes `op` on `path` (created if missing). `None` when a non-blocking lock is held.
fn flock(path: &Path, op: FlockOperation) -> Result<Option<Flock>, HostError> {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err(format!("opening {}", path.display())))?;
    match rustix::fs::flock(&f, op) {
        Ok(()) => Ok(Some(Flock(f))),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(io_err(format!("locking {}", path.display()))(e.into())),
    }
}
