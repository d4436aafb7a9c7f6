//! A release on the host: its `deploy/service.yaml`, the config rendered into it from its env
//! file plus host-local values, and the atomic switch of `current` to it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{HostRoot, sync_dir, write_atomic};
use crate::protocol::{HostError, ReleaseRef, RenderReport, RenderRequest, SwitchReport, io_err};
use crate::service::ServiceSpec;

impl HostRoot {
    /// The directory of `release`, if it holds that very build: its `.release.json` (written
    /// by the fetch that verified it) names the same manifest digest. A directory holding
    /// another build of the commit, or none, is refused.
    pub fn verified_release(&self, release: &ReleaseRef) -> Result<PathBuf, HostError> {
        let meta = self.release_meta(&release.commit)?;
        if meta.manifest != release.manifest {
            return Err(HostError::NotFetched(format!(
                "{} as the build {} (releases/{} holds {})",
                release.commit, release.manifest, release.commit, meta.manifest
            )));
        }
        Ok(self.release_dir(&release.commit))
    }

    pub fn service_spec(&self, commit: &str) -> Result<ServiceSpec, HostError> {
        let dir = self.release_dir(commit);
        if !dir.is_dir() {
            return Err(HostError::NotFetched(commit.to_string()));
        }
        Ok(ServiceSpec::load(&dir)?)
    }

    /// Renders `deploy/env/<env>.yaml` of the release plus host-local values into
    /// `<release>/config.yaml`.
    pub fn render(&self, req: &RenderRequest) -> Result<RenderReport, HostError> {
        let dir = self.verified_release(&req.release)?;
        let spec = self.service_spec(&req.release.commit)?;
        let rel = spec.config.env_file.replace("{env}", &req.env);
        if Path::new(&rel)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(HostError::Render(format!(
                "config.env_file {rel:?} must be a relative path inside the release"
            )));
        }
        let env_file = dir.join(&rel);
        let mut tree: Value = match fs::read_to_string(&env_file) {
            Ok(t) if t.trim().is_empty() => Value::Object(Default::default()),
            Ok(t) => serde_norway::from_str(&t)
                .map_err(|e| HostError::Render(format!("{}: {e}", env_file.display())))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(HostError::Render(format!(
                    "the release has no config for env {} ({})",
                    req.env,
                    spec.config.env_file.replace("{env}", &req.env)
                )));
            }
            Err(e) => return Err(io_err(format!("reading {}", env_file.display()))(e)),
        };
        let port = req.port.or(spec.port);
        if let Some(port) = port {
            crate::config::set_value_path(&mut tree, &spec.config.port_path, port.into())
                .map_err(HostError::Render)?;
        }
        for (path, v) in &req.values {
            crate::config::set_value_path(&mut tree, path, v.clone()).map_err(HostError::Render)?;
        }
        let text = serde_norway::to_string(&tree).map_err(|e| HostError::Render(e.to_string()))?;
        let out = dir.join("config.yaml");
        write_atomic(&out, text.as_bytes())?;
        Ok(RenderReport {
            config: out.display().to_string(),
            port,
        })
    }

    /// Points `current` at the release, atomically (only if its directory holds that build).
    pub fn switch(&self, release: &ReleaseRef) -> Result<SwitchReport, HostError> {
        self.verified_release(release)?;
        let commit = release.commit.as_str();
        self.begin("switch", Some(commit))?;
        let from = self.current();
        let tmp = self
            .root
            .join(format!(".current-{}", rand::random::<u32>()));
        std::os::unix::fs::symlink(Path::new("releases").join(commit), &tmp)
            .map_err(io_err(format!("creating {}", tmp.display())))?;
        fs::rename(&tmp, self.root.join("current")).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err("switching current")(e)
        })?;
        sync_dir(&self.root);
        self.update_state(|s| {
            s.current = Some(release.clone());
            s.step = None;
        })?;
        Ok(SwitchReport {
            from,
            to: commit.to_string(),
        })
    }
}
