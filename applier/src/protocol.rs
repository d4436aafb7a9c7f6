//! The host protocol: every operation on a target is one [`HostRequest`] answered by one
//! [`HostResponse`], the same for every transport (in-process, ssh, in-memory).
//!
//! On the wire (ssh) each is one JSON object on one line, tagged by `op`
//! (`{"op":"switch","commit":"..."}`). A session opens with [`HostRequest::Hello`] carrying
//! [`PROTOCOL_VERSION`]; the target refuses any other version, and any request before the
//! hello. A failed operation answers [`HostResponse::Error`] with a [`ErrorKind`] and the
//! message, so an error keeps its kind across the wire ([`HostError::kind`]). The golden tests
//! at the bottom pin the wire format: changing it means bumping [`PROTOCOL_VERSION`].
//!
//! Fencing: every request that changes the host (preflight announces it too) carries the
//! sender's [`Fence`], the generation of the environment lease it holds. The target records the
//! highest one it has seen in its `state.json` and refuses a lower one ([`HostError::Fenced`]),
//! so a deployer that lost its lease cannot change a host a newer deploy has reached. A request
//! without a fence (an operator's own `applier host --root R stop`) is carried out.
//!
//! Releases are named by [`ReleaseRef`]: a manifest digest and the commit derived from that
//! verified manifest ([`ReleaseRef::of`]); the target checks that the release directory holds
//! that very build before it renders, switches to or marks it.
//!
//! Adding an operation: a variant in both enums (with its request and report types here), its
//! handler on the target ([`crate::target::HostRoot::execute`]) and in the in-memory host, and
//! a typed method on [`crate::host::Host`] if the engine calls it.

use std::collections::BTreeMap;

use artifact::Digest;
use artifact::manifest::Manifest;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use model::names::{CommitId, DeployId, Name, NameError};

use crate::service::ServiceSpec;

mod batch;
mod error;
pub use batch::{BatchReport, BatchRequest};
pub(crate) use error::io_err;
pub use error::{ErrorKind, HostError, RemoteError};

/// The version of this protocol. Bumped on any change to the wire format (2: the host's ops
/// file in `render`, and `render-preview`; 3: `batch`).
pub const PROTOCOL_VERSION: u32 = 3;

/// One request to a target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum HostRequest {
    /// Opens a session: the protocol version (checked) and the sender's applier version.
    Hello(Hello),
    /// Reachable, writable, disk space, node ABI.
    Preflight(PreflightRequest),
    /// Fetch, verify and unpack an artifact, from presigned URLs or a store.
    FetchUrls(FetchUrlsRequest),
    /// The release's `deploy/service.yaml`.
    ServiceSpec(ReleaseRequest),
    /// Render the release's env config plus host-local values into `config.yaml`.
    Render(RenderRequest),
    /// Render in memory only, and answer the result with the host's ops values masked.
    RenderPreview(PreviewRequest),
    /// Point `current` at a release, atomically.
    Switch(ReleaseRequest),
    /// Start the current release.
    Start(StartRequest),
    /// Wait until the service's port accepts connections.
    WaitReady(ReadyRequest),
    /// Stop the running instance.
    Stop(StopRequest),
    /// Releases, `current`, the host's state and the running instance.
    Status,
    /// Record a release as this host's last known good.
    MarkGood(ReleaseRequest),
    /// Remove old releases.
    Prune(PruneRequest),
    /// A file under the host's root (logs), as text.
    ReadFile(ReadFileRequest),
    /// A shell command on the host.
    Exec(ExecRequest),
    /// A cheap look at the host: the service's pid alive, its port bound, `current`, free disk.
    Health,
    /// Several requests in one round trip, run in order until the first that fails.
    Batch(BatchRequest),
}

/// The answer to one request: the report of the request's own kind, or an error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum HostResponse {
    Hello(HelloReport),
    Preflight(PreflightReport),
    FetchUrls(FetchReport),
    ServiceSpec(ServiceSpec),
    Render(RenderReport),
    RenderPreview(PreviewReport),
    Switch(SwitchReport),
    Start(RunInfo),
    WaitReady(ReadyReport),
    Stop(StopReport),
    Status(HostStatus),
    MarkGood(HostState),
    Prune(PruneReport),
    ReadFile(FileText),
    Exec(ExecOutput),
    Health(HealthReport),
    Batch(BatchReport),
    /// The operation failed.
    Error(RemoteError),
}

/// The wire name of a request or response (`switch`, `fetch-urls`, ...).
fn op_of(v: impl Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.get("op").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

impl HostRequest {
    /// The request's wire name (`switch`, `fetch-urls`, ...).
    pub fn op(&self) -> String {
        op_of(self)
    }

    /// Whether the request changes the host (and so is fenced and serialised on the target).
    /// Preflight counts: it announces the sender's fence.
    pub fn changes_host(&self) -> bool {
        matches!(
            self,
            HostRequest::Preflight(_)
                | HostRequest::FetchUrls(_)
                | HostRequest::Render(_)
                | HostRequest::Switch(_)
                | HostRequest::Start(_)
                | HostRequest::Stop(_)
                | HostRequest::MarkGood(_)
                | HostRequest::Prune(_)
        )
    }

    /// The fence a host-changing request carries, if any.
    pub fn fence(&self) -> Option<&Fence> {
        match self {
            HostRequest::Preflight(r) => r.fence.as_ref(),
            HostRequest::FetchUrls(r) => r.fence.as_ref(),
            HostRequest::Render(r) => r.fence.as_ref(),
            HostRequest::Switch(r) | HostRequest::MarkGood(r) => r.fence.as_ref(),
            HostRequest::Start(r) => r.fence.as_ref(),
            HostRequest::Stop(r) => r.fence.as_ref(),
            HostRequest::Prune(r) => r.fence.as_ref(),
            _ => None,
        }
    }
}

/// A fencing token: the environment, the generation of its lease the sender holds (it grows
/// on every acquire and takeover), and the deploy holding it. Generations are counted per
/// environment, so a host compares a token with the newest of the same environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fence {
    pub env: Name,
    pub token: u64,
    pub deploy_id: DeployId,
}

impl std::fmt::Display for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} (deploy {})",
            self.token, self.env, self.deploy_id
        )
    }
}

impl HostResponse {
    /// The response's wire name.
    pub fn op(&self) -> String {
        op_of(self)
    }

    /// `Error` answers as errors.
    pub fn into_result(self) -> Result<HostResponse, HostError> {
        match self {
            HostResponse::Error(e) => Err(e.into()),
            r => Ok(r),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    pub protocol: u32,
    /// The sender's applier version.
    pub version: String,
}

impl Hello {
    /// This applier's hello.
    pub fn ours() -> Self {
        Hello {
            protocol: PROTOCOL_VERSION,
            version: crate::VERSION.to_string(),
        }
    }

    /// The answer to this hello, or the refusal of another protocol version.
    pub fn answer(&self) -> Result<HelloReport, HostError> {
        if self.protocol != PROTOCOL_VERSION {
            return Err(HostError::Version {
                theirs: self.protocol,
                ours: PROTOCOL_VERSION,
            });
        }
        Ok(HelloReport {
            protocol: PROTOCOL_VERSION,
            version: crate::VERSION.to_string(),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloReport {
    pub protocol: u32,
    /// The target's applier version.
    pub version: String,
}

/// A request naming one release (service spec, switch, mark good).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    pub release: ReleaseRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<Fence>,
}

/// A release: the manifest it is built from and that manifest's commit (which names its
/// directory on a host). Both are validated when parsed; [`ReleaseRef::of`] makes one from a
/// verified manifest, which is the only way the engine makes one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReleaseRef {
    pub commit: CommitId,
    pub manifest: Digest,
}

impl ReleaseRef {
    /// The release of the manifest `manifest` (verified against `digest` by the caller): its
    /// commit is the manifest's own.
    pub fn of(digest: Digest, manifest: &Manifest) -> Result<Self, NameError> {
        Ok(ReleaseRef {
            commit: CommitId::parse(&manifest.source.commit)?,
            manifest: digest,
        })
    }
}

impl std::fmt::Display for ReleaseRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.commit.short())
    }
}

/// This host's journal (`state.json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostState {
    pub current: Option<ReleaseRef>,
    pub last_good: Option<ReleaseRef>,
    pub previous_good: Option<ReleaseRef>,
    pub step: Option<StepInProgress>,
    /// The newest fencing token a request carried, per environment; an older one of the same
    /// environment is refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fences: BTreeMap<String, Fence>,
    #[serde(default)]
    pub updated_at: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepInProgress {
    pub op: String,
    pub release: Option<String>,
    pub started_at: String,
}

/// The running instance (`run/service.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    pub pid: i32,
    pub release: String,
    pub port: Option<u16>,
    pub log: String,
    pub started_at: String,
    pub started_unix_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreflightRequest {
    pub min_free_bytes: u64,
    /// The node binary whose ABI to report (`None`: skip).
    pub node: Option<String>,
    /// The sender's fence, announced: recorded as the highest seen, or refused if lower.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<Fence>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreflightReport {
    pub root: String,
    pub free_bytes: u64,
    pub node_abi: Option<String>,
    pub os: String,
    pub arch: String,
    pub current: Option<String>,
}

/// What a target needs to fetch an artifact: the manifest, and where its layers come from.
/// Where there are presigned URLs the target needs no store credentials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchUrlsRequest {
    pub digest: Digest,
    /// The manifest's bytes (the target checks they hash to `digest`).
    pub manifest: String,
    /// Store key of each layer blob -> presigned GET URL.
    #[serde(default)]
    pub urls: BTreeMap<String, String>,
    /// A store location to read directly instead (stores without presigned URLs). With
    /// neither URLs nor a location, the target reads the store it was given (in-process).
    #[serde(default)]
    pub store: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<Fence>,
}

impl FetchUrlsRequest {
    /// A request for `manifest` with no layer source yet (the transport fills it in).
    pub fn new(digest: &Digest, manifest: &Manifest) -> Self {
        FetchUrlsRequest {
            digest: *digest,
            manifest: String::from_utf8(manifest.to_canonical_json())
                .expect("canonical JSON is UTF-8"),
            urls: BTreeMap::new(),
            store: None,
            fence: None,
        }
    }

    /// The manifest, verified against the digest.
    pub fn verified_manifest(&self) -> Result<Manifest, HostError> {
        let got = Digest::of(self.manifest.as_bytes());
        if got != self.digest {
            return Err(HostError::Preflight(format!(
                "the manifest sent hashes to {got}, not {}",
                self.digest
            )));
        }
        Manifest::from_json(self.manifest.as_bytes())
            .map_err(|e| HostError::Preflight(format!("manifest {}: {e}", self.digest)))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchReport {
    pub release: String,
    /// True when the release was already unpacked.
    pub cached: bool,
    /// Bytes downloaded from the store (0 for cache hits).
    pub downloaded: u64,
    pub entries: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderRequest {
    pub release: ReleaseRef,
    /// Which `deploy/env/<env>.yaml` of the release.
    pub env: Name,
    pub port: Option<u16>,
    /// The inventory's values for this host, key (JSON pointer or dotted path) -> value,
    /// applied after the port ([`crate::envconfig`]).
    #[serde(default)]
    pub values: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<Fence>,
    /// The host's ops file, read on the host and applied last; its values never travel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<OpsFileRef>,
}

/// Where the host's ops file is (absolute, or relative to the host's root), and whether it
/// must exist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsFileRef {
    pub path: String,
    pub required: bool,
}

/// A render that writes nothing: of the release on the host (`inline: None`), or of an env
/// config the deploy host read from the store (a release the host may not have yet).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    pub render: RenderRequest,
    #[serde(default)]
    pub inline: Option<InlineConfig>,
}

/// A release's env config file and its `deploy/service.yaml` `config` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InlineConfig {
    /// The YAML text of `deploy/env/<env>.yaml`.
    pub env_config: String,
    pub config: model::service::ConfigSpec,
}

/// The rendered config as YAML, every value of the host's ops file (and under a
/// secret-looking key) masked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewReport {
    pub text: String,
    /// Keys the host's ops file set (JSON pointers), without their values.
    pub ops_keys: Vec<String>,
    /// The ops file read, if there was one.
    pub ops_file: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderReport {
    pub config: String,
    pub port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchReport {
    pub from: Option<String>,
    pub to: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    pub port: Option<u16>,
    /// The inventory's `env` for the service, over the target's minimal base
    /// ([`crate::target::BaseEnv`]).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<Fence>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<Fence>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadyRequest {
    pub address: String,
    pub port: u16,
    pub timeout_ms: u64,
    /// The service's `ready:` probes, awaited after the port (none: the port alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<model::service::ReadySpec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyReport {
    pub after_ms: u64,
    /// When each probe passed (`port after 120 ms; log "listening on" after 3104 ms; ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopReport {
    /// The pid that was stopped, if one was running.
    pub stopped: Option<i32>,
    /// True when it had to be killed after the stop timeout.
    pub killed: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostStatus {
    /// The release `current` points at.
    pub current: Option<String>,
    pub state: HostState,
    pub running: Option<RunInfo>,
    pub releases: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneRequest {
    /// How many of the most recently fetched releases to keep (besides the protected ones).
    pub keep: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<Fence>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    /// Releases removed.
    pub removed: Vec<String>,
    pub kept: Vec<String>,
    /// Unpacked layers removed (no kept release used them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers_removed: Vec<Digest>,
    /// Unpacked layers kept.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub layers_kept: usize,
    /// A fetch was in progress: no layer was removed this time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub layers_busy: bool,
    /// How long the host took, in milliseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ms: u64,
}

fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadFileRequest {
    pub path: String,
}

/// A file's content, as text (invalid UTF-8 replaced).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileText {
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// Run as `sh -c <cmd>`, in the target's minimal environment plus `env`.
    pub cmd: String,
    pub timeout_ms: u64,
    /// Values the command reads as variables (`$APPLIER_HOST`, ...): never spliced into `cmd`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutput {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// The release `current` points at.
    pub current: Option<String>,
    /// The running instance's pid, if that process is alive (and runs from a release here).
    pub pid: Option<i32>,
    /// The port it was started on.
    pub port: Option<u16>,
    /// Whether that port accepts a connection on 127.0.0.1 (`None`: no instance or no port).
    pub port_bound: Option<bool>,
    /// Bytes available on the root's file system.
    pub free_bytes: u64,
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
