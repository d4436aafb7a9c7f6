//! A read-only look inside an artifact's source layer in the store: every entry's path,
//! kind and content digest, and the bytes of the few files a caller asks for (each capped at
//! 1 MiB). Used by the plan (`deploy/service.yaml`, for each host's checks) and by
//! `applier diff` (the files a commit changed, the env configs). Nothing is written, so the
//! `tar` crate's reader serves; unpacking onto a host goes through `artifact::unpack`.

use std::collections::BTreeMap;
use std::io::Read;

use artifact::manifest::{LayerKind, Manifest};
use artifact::store::Store;
use artifact::{Digest, keys};
use serde::Serialize;

/// Largest file kept in memory.
pub const KEEP_LIMIT: u64 = 1 << 20;

/// One entry: a file (with its content digest), a symlink (with its target) or a directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub kind: &'static str,
    /// Files: sha256 of the content; symlinks: of the target.
    pub digest: Option<Digest>,
    pub size: u64,
    pub mode: u32,
}

/// What was read.
#[derive(Clone, Debug, Default)]
pub struct SourceFiles {
    /// Path (without a leading `./`) -> entry.
    pub entries: BTreeMap<String, Entry>,
    /// The bytes of the files `keep` selected.
    pub kept: BTreeMap<String, Vec<u8>>,
}

/// Reads the source layer of `manifest`, keeping the files `keep` selects.
pub fn read(
    store: &dyn Store,
    manifest: &Manifest,
    keep: &dyn Fn(&str) -> bool,
) -> Result<SourceFiles, String> {
    let layer = manifest
        .layer(LayerKind::Source)
        .ok_or_else(|| "the artifact has no source layer".to_string())?;
    let key = keys::blob(&layer.digest);
    let got = store.get(&key).map_err(|e| format!("{key}: {e}"))?;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(got.reader));
    let mut out = SourceFiles::default();
    for entry in ar.entries().map_err(|e| format!("{key}: {e}"))? {
        let mut entry = entry.map_err(|e| format!("{key}: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("{key}: {e}"))?
            .to_string_lossy()
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        if path.is_empty() {
            continue;
        }
        let h = entry.header();
        let mode = h.mode().unwrap_or(0);
        let t = h.entry_type();
        let (kind, digest, size) = if t.is_dir() {
            ("dir", None, 0)
        } else if t.is_symlink() {
            let target = entry
                .link_name()
                .ok()
                .flatten()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            ("symlink", Some(Digest::of(target.as_bytes())), 0)
        } else {
            let mut buf = Vec::new();
            entry
                .read_to_end(&mut buf)
                .map_err(|e| format!("{key}: {path}: {e}"))?;
            let d = Digest::of(&buf);
            let n = buf.len() as u64;
            if keep(&path) && n <= KEEP_LIMIT {
                out.kept.insert(path.clone(), buf);
            }
            ("file", Some(d), n)
        };
        out.entries.insert(
            path,
            Entry {
                kind,
                digest,
                size,
                mode,
            },
        );
    }
    Ok(out)
}
