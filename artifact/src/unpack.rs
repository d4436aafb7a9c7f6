//! Safe, verifying extraction of layers into a new release directory.
//!
//! Layers are untrusted input. [`Unpacker`] extracts into a private staging directory beside
//! the destination while it hashes the compressed stream, and only [`Unpacker::finish`] renames
//! the staging directory into place. Any refusal, digest mismatch or I/O error removes the
//! staging directory; nothing outside it is ever written (no path is followed out of it, no
//! symlink is created that points out of it, nothing is overwritten).
//!
//! Refused: absolute paths, `..` segments, symlinks or hardlinks whose target leaves the
//! destination, device/fifo/socket entries, entries that would go through a symlink, archives
//! past the byte or entry limit, and (across layers) an entry that already exists.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::Digest;

/// Limits for one release (all layers together).
#[derive(Clone, Debug)]
pub struct UnpackLimits {
    /// Total bytes of file content.
    pub max_bytes: u64,
    /// Total number of entries.
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits { max_bytes: 4 << 30, max_entries: 1_000_000 }
    }
}

/// What a layer must hash to.
#[derive(Clone, Debug, Default)]
pub struct Expected {
    /// sha256 of the compressed stream.
    pub digest: Option<Digest>,
    /// Size of the compressed stream.
    pub size: Option<u64>,
    /// sha256 of the uncompressed tar.
    pub diff_id: Option<Digest>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("refused entry {path:?}: {reason}")]
    Refused { path: String, reason: String },
    #[error("archive exceeds the limit of {limit} {what}")]
    TooLarge { what: &'static str, limit: u64 },
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch { what: &'static str, expected: String, actual: String },
    #[error("corrupt archive: {0}")]
    Corrupt(String),
    #[error("destination {0} already exists")]
    DestinationExists(PathBuf),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Extracts one or more layers into a staging directory, then moves it into place.
#[derive(Debug)]
pub struct Unpacker {
    staging: PathBuf,
    dest: PathBuf,
    limits: UnpackLimits,
    stats: UnpackStats,
    finished: bool,
}

impl Unpacker {
    /// Prepares to create `dest`, which must not exist; its parent must.
    pub fn new(dest: &Path, limits: UnpackLimits) -> Result<Self, UnpackError> {
        let _ = (dest, limits);
        todo!("Unpacker::new")
    }

    /// Extracts one gzip-compressed tar layer, verifying `expected` as it reads. On any error
    /// the staging directory is removed and the unpacker is spent.
    pub fn layer<R: Read>(&mut self, reader: R, expected: &Expected) -> Result<UnpackStats, UnpackError> {
        let _ = (reader, expected);
        todo!("Unpacker::layer")
    }

    /// Renames the staging directory to the destination.
    pub fn finish(self) -> Result<UnpackStats, UnpackError> {
        todo!("Unpacker::finish")
    }
}

impl Drop for Unpacker {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}
