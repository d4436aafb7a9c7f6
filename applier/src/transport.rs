//! How the deploy host reaches a target: every host operation goes through [`Host`].
//!
//! [`LocalHost`] runs the [`crate::hostops`] functions in-process against a directory on this
//! machine. A remote transport (ssh) implements the same trait by running
//! `applier host --root <root> <op> --request <json>` on the target and parsing its JSON
//! answer; the request and report types in `hostops` are that wire format.

use std::sync::Arc;
use std::time::Duration;

use artifact::Digest;
use artifact::manifest::Manifest;
use artifact::store::Store;
use artifact::unpack::UnpackLimits;

use crate::config::HostConfig;
use crate::hostops::{
    ExecOutput, FetchReport, HostError, HostRoot, HostState, HostStatus, PreflightReport,
    PreflightRequest, PruneReport, ReadyReport, ReadyRequest, ReleaseRef, RenderReport,
    RenderRequest, RunInfo, StartRequest, StopReport, SwitchReport,
};
use crate::service::ServiceSpec;

/// One target host.
pub trait Host: Send + Sync + std::fmt::Debug {
    /// The inventory name.
    fn name(&self) -> &str;
    /// The address checks connect to.
    fn address(&self) -> &str;
    /// Host-local settings from the inventory.
    fn config(&self) -> &HostConfig;
    fn preflight(&self, req: &PreflightRequest) -> Result<PreflightReport, HostError>;
    /// Fetches, verifies and unpacks an artifact into a release directory.
    fn fetch(&self, digest: &Digest, manifest: &Manifest) -> Result<FetchReport, HostError>;
    /// The release's `deploy/service.yaml`.
    fn service_spec(&self, commit: &str) -> Result<ServiceSpec, HostError>;
    fn render(&self, req: &RenderRequest) -> Result<RenderReport, HostError>;
    fn switch(&self, commit: &str) -> Result<SwitchReport, HostError>;
    fn start(&self, req: &StartRequest) -> Result<RunInfo, HostError>;
    fn wait_ready(&self, req: &ReadyRequest) -> Result<ReadyReport, HostError>;
    fn stop(&self) -> Result<StopReport, HostError>;
    fn status(&self) -> Result<HostStatus, HostError>;
    fn mark_good(&self, release: &ReleaseRef) -> Result<HostState, HostError>;
    fn prune(&self, keep: usize) -> Result<PruneReport, HostError>;
    /// Reads a file under the host's root (logs).
    fn read_file(&self, path: &str) -> Result<Vec<u8>, HostError>;
    /// Runs a shell command on the host.
    fn exec(&self, cmd: &str, timeout: Duration) -> Result<ExecOutput, HostError>;
}

/// A host that is a directory on this machine.
#[derive(Debug)]
pub struct LocalHost {
    name: String,
    cfg: HostConfig,
    root: HostRoot,
    store: Arc<dyn Store>,
    limits: UnpackLimits,
}

impl LocalHost {
    pub fn new(name: &str, cfg: &HostConfig, store: Arc<dyn Store>) -> Self {
        LocalHost {
            name: name.to_string(),
            cfg: cfg.clone(),
            root: HostRoot::new(&cfg.root),
            store,
            limits: UnpackLimits::default(),
        }
    }
}

impl Host for LocalHost {
    fn name(&self) -> &str {
        &self.name
    }
    fn address(&self) -> &str {
        &self.cfg.address
    }
    fn config(&self) -> &HostConfig {
        &self.cfg
    }
    fn preflight(&self, req: &PreflightRequest) -> Result<PreflightReport, HostError> {
        self.root.preflight(req)
    }
    fn fetch(&self, digest: &Digest, manifest: &Manifest) -> Result<FetchReport, HostError> {
        self.root
            .fetch(self.store.as_ref(), digest, manifest, self.limits.clone())
    }
    fn service_spec(&self, commit: &str) -> Result<ServiceSpec, HostError> {
        self.root.service_spec(commit)
    }
    fn render(&self, req: &RenderRequest) -> Result<RenderReport, HostError> {
        self.root.render(req)
    }
    fn switch(&self, commit: &str) -> Result<SwitchReport, HostError> {
        self.root.switch(commit)
    }
    fn start(&self, req: &StartRequest) -> Result<RunInfo, HostError> {
        // The child handle is dropped here: it is reaped in the background.
        self.root.start(req).map(|(_child, info)| info)
    }
    fn wait_ready(&self, req: &ReadyRequest) -> Result<ReadyReport, HostError> {
        self.root.wait_ready(req)
    }
    fn stop(&self) -> Result<StopReport, HostError> {
        self.root.stop()
    }
    fn status(&self) -> Result<HostStatus, HostError> {
        self.root.status()
    }
    fn mark_good(&self, release: &ReleaseRef) -> Result<HostState, HostError> {
        self.root.mark_good(release)
    }
    fn prune(&self, keep: usize) -> Result<PruneReport, HostError> {
        self.root.prune(keep)
    }
    fn read_file(&self, path: &str) -> Result<Vec<u8>, HostError> {
        self.root.read_file(path)
    }
    fn exec(&self, cmd: &str, timeout: Duration) -> Result<ExecOutput, HostError> {
        crate::hostops::exec(cmd, timeout)
    }
}
