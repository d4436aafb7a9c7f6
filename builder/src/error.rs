//! The builder's error type and the coarse classes the binary maps to exit codes.

use artifact::StoreError;
use artifact::pack::PackError;
use artifact::sign::SignError;

/// Which class of failure an [`Error`] is; the binary maps each to one documented exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The build itself failed: git, npm, node, packing, local I/O.
    Build,
    /// Bad arguments or configuration, or a hash that names no (or more than one) artifact.
    Usage,
    /// The store failed or could not be reached.
    Store,
    /// A stored blob is missing or does not match its recorded digest or size.
    Integrity,
    /// The commit was already built to a different manifest, or npm resolved a dependency
    /// layer that differs from the recorded one.
    NotReproducible,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("git: {context}: {source}")]
    Git {
        context: String,
        #[source]
        source: git2::Error,
    },
    #[error("source tree: {0}")]
    Source(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("node: {0}")]
    Node(String),
    #[error("npm {step} failed ({status}){}", if .output.is_empty() { String::new() } else { format!(":\n{}", .output) })]
    Npm {
        step: String,
        status: String,
        /// npm's own error text (its last lines, with the path of its log rewritten to the
        /// kept copy).
        output: String,
        /// Where npm's full log of the failed run was kept, if it wrote one.
        log: Option<std::path::PathBuf>,
    },
    #[error("{what} {key}: {detail}")]
    BadBlob {
        what: String,
        key: String,
        detail: String,
    },
    #[error(
        "dependency layer {key} is not reproducible: npm produced {produced}, {recorded} is recorded; first difference: {first_difference}"
    )]
    LayerDiffers {
        key: String,
        recorded: String,
        produced: String,
        first_difference: String,
    },
    #[error("cannot repair {key}: {detail}")]
    CannotRepair { key: String, detail: String },
    #[error("packing the {what} layer: {source}")]
    Pack {
        what: &'static str,
        #[source]
        source: PackError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signature: {0}")]
    Sign(#[from] SignError),
    #[error("{key}: stored record is not valid: {detail}")]
    Corrupt { key: String, detail: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "commit {commit} was already built as {existing}; this build produced {produced}: the build is not reproducible"
    )]
    NotReproducible {
        commit: String,
        existing: String,
        produced: String,
    },
    #[error(
        "not an artifact hash or commit: {0:?} (expected hex digits, at least 4, optionally after `sha256:`)"
    )]
    BadQuery(String),
    #[error("no artifact matches {0:?}")]
    NotFound(String),
    #[error("{query:?} is ambiguous; it matches: {}", .candidates.join(", "))]
    Ambiguous {
        query: String,
        candidates: Vec<String>,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn git(context: impl Into<String>, source: git2::Error) -> Self {
        Error::Git {
            context: context.into(),
            source,
        }
    }

    /// The class of this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(_)
            | Error::BadQuery(_)
            | Error::NotFound(_)
            | Error::Ambiguous { .. } => ErrorKind::Usage,
            Error::Store(e) => match e {
                StoreError::BadLocation { .. } | StoreError::InvalidKey(_) => ErrorKind::Usage,
                _ => ErrorKind::Store,
            },
            Error::Corrupt { .. } => ErrorKind::Store,
            Error::BadBlob { .. } => ErrorKind::Integrity,
            Error::LayerDiffers { .. } | Error::CannotRepair { .. } => ErrorKind::NotReproducible,
            Error::Sign(e) => match e {
                SignError::Io { .. } | SignError::BadKey { .. } => ErrorKind::Usage,
                SignError::Store(StoreError::BadLocation { .. } | StoreError::InvalidKey(_)) => {
                    ErrorKind::Usage
                }
                _ => ErrorKind::Store,
            },
            Error::NotReproducible { .. } => ErrorKind::NotReproducible,
            Error::Git { .. }
            | Error::Source(_)
            | Error::Node(_)
            | Error::Npm { .. }
            | Error::Pack { .. }
            | Error::Io { .. } => ErrorKind::Build,
        }
    }
}
