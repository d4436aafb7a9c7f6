//! Preflight: the root is writable, has the free space a fetch needs, and which node ABI the
//! host's node reports (a dependency layer with native modules only runs on its own ABI).

use std::fs;
use std::process::{Command, Stdio};

use super::HostRoot;
use crate::protocol::{HostError, PreflightReport, PreflightRequest, io_err};

impl HostRoot {
    pub fn preflight(&self, req: &PreflightRequest) -> Result<PreflightReport, HostError> {
        self.ensure_dirs()?;
        let probe = self.root.join(".preflight-probe");
        fs::write(&probe, b"ok")
            .map_err(io_err(format!("{} is not writable", self.root.display())))?;
        let _ = fs::remove_file(&probe);
        // A host whose journal is unreadable fails here, before any host is depooled.
        self.state()?;
        let free_bytes = self.free_bytes()?;
        if free_bytes < req.min_free_bytes {
            return Err(HostError::Preflight(format!(
                "{} has {} MiB free, needs {} MiB",
                self.root.display(),
                free_bytes >> 20,
                req.min_free_bytes >> 20
            )));
        }
        let node_abi = match &req.node {
            None => None,
            Some(node) => {
                let env = super::service_env(&self.root, &Default::default());
                let mut cmd = Command::new(node);
                super::CommandEnv::Clean(&env).apply(&mut cmd);
                let out = cmd
                    .args(["-p", "process.versions.modules"])
                    .stdin(Stdio::null())
                    .output()
                    .map_err(|e| HostError::Preflight(format!("running {node}: {e}")))?;
                if !out.status.success() {
                    return Err(HostError::Preflight(format!(
                        "{node} -p process.versions.modules failed"
                    )));
                }
                Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
            }
        };
        Ok(PreflightReport {
            root: self.root.display().to_string(),
            free_bytes,
            node_abi,
            os: node_os().into(),
            arch: node_arch().into(),
            current: self.current(),
        })
    }

    /// Bytes available to this user on the root's file system.
    pub(super) fn free_bytes(&self) -> Result<u64, HostError> {
        let st = rustix::fs::statvfs(&self.root)
            .map_err(|e| io_err(format!("statvfs {}", self.root.display()))(e.into()))?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }
}

/// Node's `process.platform` for this build.
pub fn node_os() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    }
}

/// Node's `process.arch` for this build.
pub fn node_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        "x86" => "ia32",
        other => other,
    }
}
