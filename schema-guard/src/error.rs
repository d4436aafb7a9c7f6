//! The library's error type.

use std::path::PathBuf;

/// What can go wrong while extracting or comparing storage manifests.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error("revision {0:?} not found")]
    RevNotFound(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid YAML: {message}")]
    Yaml { path: String, message: String },
    #[error("invalid storage manifest: {0}")]
    Format(String),
    #[error("config: {0}")]
    Config(String),
    #[error("capture failed: {0}")]
    Capture(String),
    /// The capture could not be made safe (a backend not substituted, no sandbox): it did not
    /// run, or was stopped before storage code ran.
    #[error("capture refused: {0}")]
    CaptureUnsafe(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
