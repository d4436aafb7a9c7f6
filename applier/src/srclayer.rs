//! A read-only look inside an artifact's source layer in the store: every entry's path,
//! kind and content digest, and the bytes of the few files a caller asks for (each capped at
//! 1 MiB). Used by `applier diff` (the files a commit changed, the env configs). Nothing is written; the
//! layer is read by `artifact::unpack::scan_layer` (gzip or zstd, digests verified).

use std::collections::BTreeMap;

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

/// Reads the source layer of `manifest` (gzip or zstd, its digests verified), keeping the
/// files `keep` selects.
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
    let expected = artifact::unpack::Expected {
        digest: Some(layer.digest),
        size: Some(layer.size),
        diff_id: Some(layer.diff_id),
    };
    let entries = artifact::unpack::scan_layer(got.reader, &expected, keep, KEEP_LIMIT)
        .map_err(|e| format!("{key}: {e}"))?;
    let mut out = SourceFiles::default();
    for e in entries {
        if let Some(data) = e.data {
            out.kept.insert(e.path.clone(), data);
        }
        out.entries.insert(
            e.path,
            Entry {
                kind: e.kind.as_str(),
                digest: e.digest,
                size: e.size,
                mode: e.mode,
            },
        );
    }
    Ok(out)
}
