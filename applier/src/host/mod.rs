//! How the deploy host reaches a target: every host operation is a [`HostRequest`] sent
//! through [`Host::call`].
//!
//! A host implements three primitives: its inventory [`Host::name`], its [`Host::config`],
//! and [`Host::call`], which carries one request to the target and brings back its answer.
//! Every typed operation the engine uses (`preflight`, `fetch`, `switch`, `start`, ...) is
//! provided on top of `call`, so the transports differ only in how a request travels:
//!
//! - [`local::LocalHost`]: in-process, against a directory on this machine
//!   ([`crate::target::HostRoot`]).
//! - [`ssh::SshHost`]: as JSON on the stdin of `applier host` on the target, through the
//!   system `ssh`.
//! - [`memory::MemoryHost`]: an in-memory target (no processes, no disk) for engine tests and
//!   benchmarks, with injectable latency and failures.

pub mod local;
pub mod memory;
pub mod ssh;

use std::collections::BTreeMap;
use std::time::Duration;

use artifact::manifest::Manifest;
use artifact::store::Store;
use artifact::{Digest, keys};

pub use local::LocalHost;

use crate::config::HostConfig;
use crate::protocol::{
    BatchRequest, ExecOutput, ExecRequest, Fence, FetchReport, FetchUrlsRequest, HealthReport,
    HostError, HostRequest, HostResponse, HostState, HostStatus, PreflightReport, PreflightRequest,
    PreviewReport, PreviewRequest, PruneReport, PruneRequest, ReadFileRequest, ReadyReport,
    ReadyRequest, ReleaseRef, ReleaseRequest, RenderReport, RenderRequest, RunInfo, StartRequest,
    StopReport, StopRequest, SwitchReport,
};
use crate::service::ServiceSpec;

/// The results of [`Host::render_switch_start`]: a step not run (an earlier one failed) is
/// `None`.
#[derive(Debug)]
pub struct RenderSwitchStart {
    pub render: Result<RenderReport, HostError>,
    pub switch: Option<Result<SwitchReport, HostError>>,
    pub start: Option<Result<RunInfo, HostError>>,
}

/// Sends a request and takes the answer of the expected kind.
macro_rules! ask {
    ($host:expr, $req:expr, $answer:ident) => {
        match $host.call($req)?.into_result()? {
            HostResponse::$answer(r) => Ok(r),
            other => Err(HostError::Transport(format!(
                "{}: unexpected answer `{}` to a {} request",
                $host.name(),
                other.op(),
                stringify!($answer)
            ))),
        }
    };
}

/// One target host. Every operation that changes the host takes the deploy's [`Fence`] (for
/// those with a request struct, in its `fence` field), which the target checks.
pub trait Host: Send + Sync + std::fmt::Debug {
    /// The inventory name.
    fn name(&self) -> &str;
    /// Host-local settings from the inventory.
    fn config(&self) -> &HostConfig;
    /// Carries one request to the target and returns its answer. An error answer may come
    /// back as `Ok(HostResponse::Error)` or as `Err`; the typed methods treat both as errors.
    fn call(&self, req: HostRequest) -> Result<HostResponse, HostError>;

    /// The address checks connect to.
    fn address(&self) -> &str {
        &self.config().address
    }
    fn preflight(&self, req: &PreflightRequest) -> Result<PreflightReport, HostError> {
        ask!(self, HostRequest::Preflight(req.clone()), Preflight)
    }
    /// Fetches, verifies and unpacks an artifact into a release directory.
    fn fetch(
        &self,
        fence: &Fence,
        digest: &Digest,
        manifest: &Manifest,
    ) -> Result<FetchReport, HostError> {
        let mut req = FetchUrlsRequest::new(digest, manifest);
        req.fence = Some(fence.clone());
        ask!(self, HostRequest::FetchUrls(req), FetchUrls)
    }
    /// The release's `deploy/service.yaml` (if its directory holds that build).
    fn service_spec(&self, release: &ReleaseRef) -> Result<ServiceSpec, HostError> {
        let req = ReleaseRequest {
            release: release.clone(),
            fence: None,
        };
        ask!(self, HostRequest::ServiceSpec(req), ServiceSpec)
    }
    fn render(&self, req: &RenderRequest) -> Result<RenderReport, HostError> {
        ask!(self, HostRequest::Render(req.clone()), Render)
    }
    /// Renders without writing anything; the host's ops values come back masked.
    fn render_preview(&self, req: &PreviewRequest) -> Result<PreviewReport, HostError> {
        ask!(self, HostRequest::RenderPreview(req.clone()), RenderPreview)
    }
    fn switch(&self, fence: &Fence, release: &ReleaseRef) -> Result<SwitchReport, HostError> {
        let req = ReleaseRequest {
            release: release.clone(),
            fence: Some(fence.clone()),
        };
        ask!(self, HostRequest::Switch(req), Switch)
    }
    /// Runs `requests` in one round trip, in order, until the first that fails: one result per
    /// request run (a failure to reach the host is the one result).
    fn batch(&self, requests: Vec<HostRequest>) -> Vec<Result<HostResponse, HostError>> {
        match self
            .call(HostRequest::Batch(BatchRequest { requests }))
            .and_then(HostResponse::into_result)
        {
            Ok(HostResponse::Batch(b)) => b
                .answers
                .into_iter()
                .map(HostResponse::into_result)
                .collect(),
            Ok(other) => vec![Err(HostError::Transport(format!(
                "{}: unexpected answer `{}` to a batch request",
                self.name(),
                other.op()
            )))],
            Err(e) => vec![Err(e)],
        }
    }
    /// Render, switch and start in one round trip ([`Host::batch`]): each step's result, up to
    /// the first that failed (`None` for those not run).
    fn render_switch_start(
        &self,
        render: &RenderRequest,
        switch: &Fence,
        release: &ReleaseRef,
        start: &StartRequest,
    ) -> RenderSwitchStart {
        let mut answers = self
            .batch(vec![
                HostRequest::Render(render.clone()),
                HostRequest::Switch(ReleaseRequest {
                    release: release.clone(),
                    fence: Some(switch.clone()),
                }),
                HostRequest::Start(start.clone()),
            ])
            .into_iter();
        let name = self.name().to_string();
        let unexpected = move |op: String, want: &str| {
            HostError::Transport(format!(
                "{name}: unexpected answer `{op}` to a {want} request"
            ))
        };
        let render = match answers.next() {
            Some(Ok(HostResponse::Render(r))) => Ok(r),
            Some(Ok(other)) => Err(unexpected(other.op(), "render")),
            Some(Err(e)) => Err(e),
            None => Err(unexpected("nothing".into(), "render")),
        };
        let switch = answers.next().map(|a| match a {
            Ok(HostResponse::Switch(r)) => Ok(r),
            Ok(other) => Err(unexpected(other.op(), "switch")),
            Err(e) => Err(e),
        });
        let start = answers.next().map(|a| match a {
            Ok(HostResponse::Start(r)) => Ok(r),
            Ok(other) => Err(unexpected(other.op(), "start")),
            Err(e) => Err(e),
        });
        RenderSwitchStart {
            render,
            switch,
            start,
        }
    }
    fn start(&self, req: &StartRequest) -> Result<RunInfo, HostError> {
        ask!(self, HostRequest::Start(req.clone()), Start)
    }
    fn wait_ready(&self, req: &ReadyRequest) -> Result<ReadyReport, HostError> {
        ask!(self, HostRequest::WaitReady(req.clone()), WaitReady)
    }
    fn stop(&self, fence: &Fence) -> Result<StopReport, HostError> {
        let req = StopRequest {
            fence: Some(fence.clone()),
        };
        ask!(self, HostRequest::Stop(req), Stop)
    }
    fn status(&self) -> Result<HostStatus, HostError> {
        ask!(self, HostRequest::Status, Status)
    }
    fn mark_good(&self, fence: &Fence, release: &ReleaseRef) -> Result<HostState, HostError> {
        let req = ReleaseRequest {
            release: release.clone(),
            fence: Some(fence.clone()),
        };
        ask!(self, HostRequest::MarkGood(req), MarkGood)
    }
    fn prune(&self, fence: &Fence, keep: usize) -> Result<PruneReport, HostError> {
        let req = PruneRequest {
            keep,
            fence: Some(fence.clone()),
        };
        ask!(self, HostRequest::Prune(req), Prune)
    }
    /// Reads a file under the host's root (logs).
    fn read_file(&self, path: &str) -> Result<Vec<u8>, HostError> {
        let req = ReadFileRequest {
            path: path.to_string(),
        };
        ask!(self, HostRequest::ReadFile(req), ReadFile).map(|f| f.text.into_bytes())
    }
    /// Runs a shell command on the host, in the target's minimal environment plus `env` (the
    /// values the command refers to, never spliced into `cmd`).
    fn exec(
        &self,
        cmd: &str,
        env: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<ExecOutput, HostError> {
        let req = ExecRequest {
            cmd: cmd.to_string(),
            timeout_ms: timeout.as_millis() as u64,
            env: env.clone(),
        };
        ask!(self, HostRequest::Exec(req), Exec)
    }
    /// The service's pid alive, its port bound, `current`, free disk.
    fn health(&self) -> Result<HealthReport, HostError> {
        ask!(self, HostRequest::Health, Health)
    }
}

/// Gives a fetch request its layer source from the deploy host's `store`: the manifest as
/// stored (the bytes its digest is of: read from the store only when the request's own bytes
/// are not those), and with `presign`, a presigned GET URL of every layer valid that long (or,
/// from a store without presigned URLs, the store's location, which the target then opens
/// itself). Without `presign` the target reads the store it was given. The URLs come from the
/// deploy's [`crate::store_meter::MeteredStore`], which signs one per blob for every host.
pub(crate) fn fetch_source(
    mut req: FetchUrlsRequest,
    store: &dyn Store,
    presign: Option<Duration>,
) -> Result<FetchUrlsRequest, HostError> {
    if Digest::of(req.manifest.as_bytes()) != req.digest {
        let (bytes, _) = store.get_bytes(&keys::blob(&req.digest))?;
        req.manifest = String::from_utf8(bytes)
            .map_err(|e| HostError::Preflight(format!("manifest is not UTF-8: {e}")))?;
    }
    req.urls.clear();
    req.store = None;
    let Some(expiry) = presign else {
        return Ok(req);
    };
    for layer in &req.verified_manifest()?.layers {
        let key = keys::blob(&layer.digest);
        match store.presign_get(&key, expiry)? {
            Some(url) => {
                req.urls.insert(key, url);
            }
            None => {
                req.urls.clear();
                req.store = Some(store.location());
                break;
            }
        }
    }
    Ok(req)
}
