//! What a host operation can fail with ([`HostError`]), the kind each error keeps across the
//! wire ([`ErrorKind`], answered as a [`RemoteError`]), and the helper that gives an I/O error
//! its context.

use std::io;

use artifact::StoreError;
use artifact::unpack::UnpackError;
use serde::{Deserialize, Serialize};

use super::Fence;
use crate::service::ServiceSpecError;

/// What kind of failure an error is; travels with its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    Io,
    Unpack,
    Store,
    NotFetched,
    Spec,
    Render,
    Died,
    Timeout,
    /// The port was bound, but a readiness probe did not pass in time (or stopped passing
    /// within `min_healthy`).
    NotReady,
    StopFailed,
    Preflight,
    Transport,
    /// A malformed, unknown or out-of-order request.
    Protocol,
    /// Another protocol version.
    Version,
    /// A fencing token lower than the highest the host has seen.
    Fenced,
}

/// An error answer: its kind and message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    pub kind: ErrorKind,
    pub message: String,
}

/// What a host operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("fetch: {0}")]
    Unpack(#[from] UnpackError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("release {0} is not on this host (fetch it first)")]
    NotFetched(String),
    #[error("{0}")]
    Spec(#[from] ServiceSpecError),
    #[error("rendering config: {0}")]
    Render(String),
    #[error("the service exited before binding its port: {0}")]
    Died(String),
    #[error("the service did not bind port {port} within {secs}s: {detail}")]
    Timeout {
        port: u16,
        secs: u64,
        detail: String,
    },
    #[error("the service is not ready: {0}")]
    NotReady(String),
    #[error("the service (pid {pid}) did not stop: {detail}")]
    StopFailed { pid: i32, detail: String },
    #[error("preflight: {0}")]
    Preflight(String),
    #[error("transport: {0}")]
    Transport(String),
    #[error("host protocol: {0}")]
    Protocol(String),
    #[error(
        "host protocol version {theirs} is not this applier's ({ours}): install the same applier version on the deploy host and the targets"
    )]
    Version { theirs: u32, ours: u32 },
    #[error("refused: {}", fenced(got, seen))]
    Fenced { got: Fence, seen: Fence },
    /// An operation that failed on a remote host, as it reported it.
    #[error("{message}")]
    Remote { kind: ErrorKind, message: String },
}

impl HostError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            HostError::Io { .. } => ErrorKind::Io,
            HostError::Unpack(_) => ErrorKind::Unpack,
            HostError::Store(_) => ErrorKind::Store,
            HostError::NotFetched(_) => ErrorKind::NotFetched,
            HostError::Spec(_) => ErrorKind::Spec,
            HostError::Render(_) => ErrorKind::Render,
            HostError::Died(_) => ErrorKind::Died,
            HostError::Timeout { .. } => ErrorKind::Timeout,
            HostError::NotReady(_) => ErrorKind::NotReady,
            HostError::StopFailed { .. } => ErrorKind::StopFailed,
            HostError::Preflight(_) => ErrorKind::Preflight,
            HostError::Transport(_) => ErrorKind::Transport,
            HostError::Protocol(_) => ErrorKind::Protocol,
            HostError::Version { .. } => ErrorKind::Version,
            HostError::Fenced { .. } => ErrorKind::Fenced,
            HostError::Remote { kind, .. } => *kind,
        }
    }

    /// The error as an answer on the wire.
    pub fn to_remote(&self) -> RemoteError {
        RemoteError {
            kind: self.kind(),
            message: self.to_string(),
        }
    }
}

impl From<RemoteError> for HostError {
    fn from(e: RemoteError) -> Self {
        HostError::Remote {
            kind: e.kind,
            message: e.message,
        }
    }
}

/// Builds a `HostError::Io` from an `io::Error`, with context.
pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> HostError {
    let context = context.into();
    move |source| HostError::Io { context, source }
}

/// Why a host refused `got` after it saw `seen`: a newer token, or the same one from another
/// deploy (two lease records gave it out: the env's lease was reset, or another store is in use).
fn fenced(got: &Fence, seen: &Fence) -> String {
    if got.token == seen.token {
        format!(
            "fencing token {got} is the token this host already saw from deploy {}: two deploys hold one token (was the environment's lease record removed, or does the other deploy use another store?), so this one must stop",
            seen.deploy_id
        )
    } else {
        format!(
            "fencing token {got} is older than {seen}, the newest this host has seen: a newer deploy holds the environment's lease, so this one must stop"
        )
    }
}
