//! The storage manifests an artifact records, one per environment config shipped in
//! `deploy/env/<env>.yaml` (env `default` when there is none), as
//! `{"format": 1, "envs": {"<env>": <storage manifest>}}`: what the applier's storage guard
//! compares.
//!
//! Each is captured (schema-guard runs the commit's own code with its dependency layer, in its
//! sandbox, with a recording table module) when the commit has a dependency layer: the
//! `node_modules` npm installed in this build, or a reused layer unpacked (verified) from the
//! store into the build's temp directory, so the same commit gets the same manifest whether
//! or not its layer was reused. Without dependencies it is read statically. The manifest's
//! `extractor` field says which. A capture that fails falls back to the static read with a
//! warning; a static read that fails leaves the env out with a warning (the deploy guard then
//! refuses for lack of a manifest).

use std::collections::BTreeMap;
use std::path::Path;

use artifact::pack::{LayerInfo, PackData, PackKind};
use artifact::store::Store;
use artifact::unpack::{Expected, UnpackLimits, Unpacker};
use schema_guard::extract::{self, CaptureOptions, StaticOptions};

use crate::source::SourceTree;

/// One line on what [`StorageSource::manifests`] produced: each env and how it was read
/// (`test: capture, production: static`), or that there is none.
pub fn summary(storage: Option<&serde_json::Value>) -> String {
    let envs = storage
        .and_then(|s| s.get("envs"))
        .and_then(serde_json::Value::as_object);
    match envs {
        Some(envs) if !envs.is_empty() => envs
            .iter()
            .map(|(name, m)| {
                let how = m.get("extractor").and_then(|e| e.as_str()).unwrap_or("?");
                format!("{name}: {how}")
            })
            .collect::<Vec<_>>()
            .join(", "),
        _ => "none".to_string(),
    }
}

/// The source files schema-guard reads, kept before the source tree is packed.
#[derive(Debug)]
pub struct StorageSource {
    commit: String,
    files: BTreeMap<String, Vec<u8>>,
}

struct Files<'a>(&'a StorageSource, Vec<String>);

impl extract::Tree for Files<'_> {
    fn paths(&self) -> Vec<String> {
        self.1.clone()
    }
    fn read(&self, path: &str) -> Option<Vec<u8>> {
        self.0.files.get(path).cloned()
    }
}

fn skipped(path: &str) -> bool {
    path.split('/')
        .any(|seg| seg == "node_modules" || seg.starts_with('.') || seg == "test" || seg == "tests")
        && path != ".schema-guard.yaml"
}

impl StorageSource {
    pub fn new(src: &SourceTree) -> StorageSource {
        let files = src
            .entries
            .iter()
            .filter_map(|e| match &e.kind {
                PackKind::File {
                    data: PackData::Bytes(b),
                    ..
                } => Some((e.path.clone(), b.clone())),
                _ => None,
            })
            .collect();
        StorageSource {
            commit: src.info.commit.clone(),
            files,
        }
    }

    fn envs(&self) -> Vec<String> {
        let envs: Vec<String> = self
            .files
            .keys()
            .filter_map(|p| p.strip_prefix("deploy/env/")?.strip_suffix(".yaml"))
            .filter(|e| !e.contains('/'))
            .map(str::to_string)
            .collect();
        if envs.is_empty() {
            vec![String::new()]
        } else {
            envs
        }
    }

    fn write_tree(&self, dir: &Path) -> std::io::Result<()> {
        for (path, bytes) in &self.files {
            let target = dir.join(path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(target, bytes)?;
        }
        Ok(())
    }

    /// The storage manifests of every env and the warnings to show. `built` is a `node_modules`
    /// the caller still holds (if any); else `layer`, the commit's dependency layer, is unpacked
    /// from `store` under `work`.
    pub fn manifests(
        &self,
        node: &Path,
        built: Option<&Path>,
        layer: Option<&LayerInfo>,
        store: &dyn Store,
        work: &Path,
    ) -> (Option<serde_json::Value>, Vec<String>) {
        let mut warnings = Vec::new();
        let unpacked = work.join("capture-deps");
        let node_modules = if let Some(built) = built.filter(|b| b.is_dir()) {
            Some(built.to_path_buf())
        } else if let Some(layer) = layer {
            match unpack_layer(store, layer, &unpacked) {
                Ok(()) => Some(unpacked.join("node_modules")),
                Err(e) => {
                    warnings.push(format!(
                        "storage capture: cannot unpack the dependency layer: {e}"
                    ));
                    None
                }
            }
        } else {
            None
        };
        let (m, mut w) = self.extract(node, node_modules.as_deref());
        warnings.append(&mut w);
        let _ = std::fs::remove_dir_all(&unpacked);
        (m, warnings)
    }

    fn extract(
        &self,
        node: &Path,
        node_modules: Option<&Path>,
    ) -> (Option<serde_json::Value>, Vec<String>) {
        let paths: Vec<String> = self.files.keys().filter(|p| !skipped(p)).cloned().collect();
        let tree = Files(self, paths);
        let mut warnings = Vec::new();
        let code = match node_modules {
            Some(_) => match tempfile::Builder::new()
                .prefix("builder-capture-")
                .tempdir()
            {
                Ok(d) => match self.write_tree(d.path()) {
                    Ok(()) => Some(d),
                    Err(e) => {
                        warnings.push(format!("storage capture: cannot write the source: {e}"));
                        None
                    }
                },
                Err(e) => {
                    warnings.push(format!("storage capture: no temp directory: {e}"));
                    None
                }
            },
            None => None,
        };
        let mut out = serde_json::Map::new();
        for env in self.envs() {
            let opts = StaticOptions {
                env: (!env.is_empty()).then(|| env.clone()),
                ..Default::default()
            };
            let name = if env.is_empty() {
                "default".to_string()
            } else {
                env
            };
            // Nothing to run without a service config: the static read says so.
            let statik = extract::static_manifest_tree(&tree, &opts);
            let has_config = statik.as_ref().is_ok_and(|m| m.config.is_some());
            let captured = match (&code, node_modules) {
                (Some(dir), Some(nm)) if has_config => {
                    let copts = CaptureOptions {
                        node: node.to_path_buf(),
                        node_modules: Some(nm.to_path_buf()),
                        config: opts.clone(),
                        ..Default::default()
                    };
                    match extract::capture(dir.path(), &copts) {
                        Ok(m) => Some(m),
                        Err(e) => {
                            warnings.push(format!(
                                "storage manifest of env {name}: capture failed, read statically instead: {e}"
                            ));
                            None
                        }
                    }
                }
                _ => None,
            };
            let m = match captured {
                Some(m) => Ok(m),
                None => statik,
            };
            match m {
                Ok(mut m) => {
                    m.commit = Some(self.commit.clone());
                    out.insert(name, m.to_value());
                }
                Err(e) => warnings.push(format!("storage manifest of env {name}: {e}")),
            }
        }
        if out.is_empty() {
            return (None, warnings);
        }
        (
            Some(serde_json::json!({"format": 1, "envs": serde_json::Value::Object(out)})),
            warnings,
        )
    }
}

/// Unpacks a dependency layer from the store into `dest`, verifying its digests.
fn unpack_layer(store: &dyn Store, layer: &LayerInfo, dest: &Path) -> Result<(), String> {
    let blob = store
        .get(&artifact::keys::blob(&layer.digest))
        .map_err(|e| e.to_string())?;
    let mut up = Unpacker::new(dest, UnpackLimits::default()).map_err(|e| e.to_string())?;
    up.layer(
        blob.reader,
        &Expected {
            digest: Some(layer.digest),
            size: Some(layer.size),
            diff_id: Some(layer.diff_id),
        },
    )
    .map_err(|e| e.to_string())?;
    up.finish().map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::summary;

    #[test]
    fn the_summary_names_each_env_and_how_it_was_read() {
        let s = serde_json::json!({"format": 1, "envs": {
            "production": {"extractor": "static"}, "test": {"extractor": "capture"}}});
        assert_eq!(summary(Some(&s)), "production: static, test: capture");
        assert_eq!(summary(Some(&serde_json::json!({"envs": {}}))), "none");
        assert_eq!(summary(None), "none");
    }
}
