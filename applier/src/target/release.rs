//! A release on the host: its `deploy/service.yaml`, the config rendered into it from its
//! three layers ([`crate::envconfig`]: the release's env file, the inventory's values, the
//! host's ops file), and the atomic switch of `current` to it.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{HostRoot, sync_dir, write_atomic};
use crate::envconfig::{self, Layer, OpsFile, Rendered};
use crate::protocol::{
    HostError, OpsFileRef, PreviewReport, PreviewRequest, ReleaseRef, RenderReport, RenderRequest,
    SwitchReport, io_err,
};
use crate::service::ServiceSpec;

/// The ops file as read: its path and values.
type OpsRead = Option<(String, OpsFile)>;

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

    /// Renders the release's env config, the port, the inventory's values and the host's
    /// ops file into `<release>/config.yaml` (mode 0600: it may hold the host's secrets).
    pub fn render(&self, req: &RenderRequest) -> Result<RenderReport, HostError> {
        let dir = self.verified_release(&req.release)?;
        let commit = req.release.commit.as_str();
        let spec = self.service_spec(commit)?;
        let env_file = checked_env_file(&spec.config.env_file, &req.env)?;
        let base = self.release_env_config(commit, &env_file, &req.env)?;
        let r = self.merge(base, &env_file, &spec.config, req)?;
        let text =
            serde_norway::to_string(&r.tree).map_err(|e| HostError::Render(e.to_string()))?;
        let out = dir.join("config.yaml");
        write_atomic(&out, text.as_bytes())?;
        fs::set_permissions(&out, fs::Permissions::from_mode(0o600))
            .map_err(io_err(format!("restricting {}", out.display())))?;
        Ok(RenderReport {
            config: out.display().to_string(),
            port: req.port,
        })
    }

    /// Renders without writing: the release on this host, or the inline env config the
    /// request carries. Answers the YAML with the ops file's values masked.
    pub fn render_preview(&self, req: &PreviewRequest) -> Result<PreviewReport, HostError> {
        let (base, env_file, config) = match &req.inline {
            Some(i) => {
                let env_file = checked_env_file(&i.config.env_file, &req.render.env)?;
                (
                    parse_env_config(&i.env_config, &env_file)?,
                    env_file,
                    i.config.clone(),
                )
            }
            None => {
                self.verified_release(&req.render.release)?;
                let commit = req.render.release.commit.as_str();
                let spec = self.service_spec(commit)?;
                let env_file = checked_env_file(&spec.config.env_file, &req.render.env)?;
                let base = self.release_env_config(commit, &env_file, &req.render.env)?;
                (base, env_file, spec.config)
            }
        };
        let ops = self.read_ops(req.render.ops.as_ref())?;
        let r = merge_layers(base, &env_file, &config, &req.render, &ops)?;
        Ok(PreviewReport {
            text: envconfig::masked_yaml(&r),
            ops_keys: r.masked.iter().map(|p| p.pointer()).collect(),
            ops_file: ops.map(|(p, _)| p),
        })
    }

    fn merge(
        &self,
        base: Value,
        env_file: &str,
        config: &model::service::ConfigSpec,
        req: &RenderRequest,
    ) -> Result<Rendered, HostError> {
        let ops = self.read_ops(req.ops.as_ref())?;
        merge_layers(base, env_file, config, req, &ops)
    }

    fn release_env_config(
        &self,
        commit: &str,
        env_file: &str,
        env: &str,
    ) -> Result<Value, HostError> {
        let path = self.release_dir(commit).join(env_file);
        match fs::read_to_string(&path) {
            Ok(t) => parse_env_config(&t, env_file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(HostError::Render(format!(
                "the release has no config for env {env} ({env_file})"
            ))),
            Err(e) => Err(io_err(format!("reading {}", path.display()))(e)),
        }
    }

    /// Reads the host's ops file: relative paths are under the root. An absent file is no
    /// values, unless it is required.
    fn read_ops(&self, ops: Option<&OpsFileRef>) -> Result<OpsRead, HostError> {
        let Some(o) = ops else { return Ok(None) };
        let path = self.root.join(&o.path);
        let shown = path.display().to_string();
        match fs::read_to_string(&path) {
            Ok(t) => {
                let f = OpsFile::parse(&t, &shown).map_err(HostError::Render)?;
                Ok(Some((shown, f)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && !o.required => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(HostError::Render(format!(
                "the host's ops file {shown} does not exist (the inventory names it: ops_file)"
            ))),
            Err(e) => Err(io_err(format!("reading the host's ops file {shown}"))(e)),
        }
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

/// `config.env_file` with `{env}` put in: a relative path inside the release, or refused.
fn checked_env_file(template: &str, env: &str) -> Result<String, HostError> {
    let rel = template.replace("{env}", env);
    if Path::new(&rel)
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(HostError::Render(format!(
            "config.env_file {rel:?} must be a relative path inside the release"
        )));
    }
    Ok(rel)
}

fn parse_env_config(text: &str, env_file: &str) -> Result<Value, HostError> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_norway::from_str(text).map_err(|e| HostError::Render(format!("{env_file}: {e}")))
}

fn merge_layers(
    base: Value,
    env_file: &str,
    config: &model::service::ConfigSpec,
    req: &RenderRequest,
    ops: &OpsRead,
) -> Result<Rendered, HostError> {
    let mut layers = vec![Layer {
        name: "the inventory's values".into(),
        values: &req.values,
        masked: false,
    }];
    if let Some((path, f)) = ops {
        layers.push(Layer {
            name: format!("the host's ops file {path}"),
            values: &f.values,
            masked: true,
        });
    }
    envconfig::render(base, env_file, config, req.port, &layers).map_err(HostError::Render)
}
