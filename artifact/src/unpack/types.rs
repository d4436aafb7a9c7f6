//! The unpacker's public types: the limits of one release, what a layer must hash to, the
//! counts of what was extracted, and the errors.

use std::path::PathBuf;

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
        UnpackLimits {
            max_bytes: 4 << 30,
            max_entries: 1_000_000,
        }
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
    DigestMismatch {
        what: &'static str,
        expected: String,
        actual: String,
    },
    #[error("corrupt archive: {0}")]
    Corrupt(String),
    #[error("destination {0} already exists")]
    DestinationExists(PathBuf),
    /// An earlier call failed (its staging directory is gone) or the unpacker finished.
    #[error("unpacker already failed or finished")]
    Spent,
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}
