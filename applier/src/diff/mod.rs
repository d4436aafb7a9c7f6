//! `applier diff <target> --env E`: what a deploy would change, before it runs.
//!
//! - **config**, per host: the config each host renders now (its current release) against
//!   the one it would render (the target), as a unified diff. Both are rendered by the host
//!   itself from the releases' env configs (read from the store here) and its own ops values,
//!   which come back masked ([`crate::envconfig::masked_yaml`]): no secret leaves the host.
//! - **code**: the commit range and the files the two source layers differ in.
//! - **dependencies**: packages added, removed and changed between the lockfiles the two
//!   artifacts recorded.
//! - **storage**: the storage guard's findings, exactly as the deploy would see them (with
//!   the env's `schema_policy` and the given `--ack`s), and the deploy type.
//!
//! The comparison base is what most of the env's hosts run (as for the deploy's guard); each
//! host's config is compared with its own current release. Nothing is changed anywhere.

pub mod lockfile;
pub mod text;

use std::collections::BTreeMap;

use artifact::manifest::{LayerKind, Manifest};
use artifact::resolve;
use artifact::{Digest, keys};
use serde::Serialize;

use crate::engine::gates::{self, Refusal};
use crate::engine::plan;
use crate::engine::{DeployError, DeployOptions, EnvContext};
use crate::guard::{self, DeployType, GuardRecord};
use crate::protocol::{InlineConfig, PreviewRequest, ReleaseRef};
use crate::records::{self, SourceRef};
use crate::service::ServiceSpec;
use crate::srclayer::{self, SourceFiles};

/// One side of the comparison.
#[derive(Clone, Debug, Serialize)]
pub struct Release {
    pub artifact: Digest,
    pub commit: String,
    pub subject: String,
    pub author: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct HostConfigDiff {
    pub host: String,
    /// The host's current release, if it has one.
    pub from: Option<String>,
    pub to: String,
    /// Unified diff of the rendered config (ops values masked); empty: no change.
    pub diff: String,
    /// The config the target would render here, ops values masked.
    pub rendered: String,
    /// The host's ops file, if it read one, and the keys it set (values never shown).
    pub ops_file: Option<String>,
    pub ops_keys: Vec<String>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FileChange {
    pub path: String,
    /// `added`, `removed`, `modified`.
    pub change: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct CodeChange {
    /// `<from>..<to>` commits, when there is a base.
    pub range: Option<String>,
    pub files: Vec<FileChange>,
    /// True when every changed file is under `deploy/` (a config change).
    pub deploy_only: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct DepsDiff {
    /// The two artifacts share their dependency layer (nothing to fetch, nothing changed).
    pub same_layer: bool,
    pub change: lockfile::DepsChange,
    pub note: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StorageDiff {
    /// False: the deploy would be refused by the guard for these findings.
    pub allowed: bool,
    pub findings: Vec<String>,
    pub recipes: Vec<String>,
    pub record: GuardRecord,
}

/// Everything `applier diff` reports.
#[derive(Clone, Debug, Serialize)]
pub struct DiffReport {
    pub env: String,
    pub target: Release,
    pub source_ref: Option<SourceRef>,
    /// What most of the env's hosts run now.
    pub current: Option<Release>,
    pub deploy_type: DeployType,
    pub config: Vec<HostConfigDiff>,
    pub code: CodeChange,
    pub deps: DepsDiff,
    pub storage: StorageDiff,
}

fn refused(record: String, reason: String) -> DeployError {
    DeployError::Refused(Refusal {
        record,
        reason,
        way_out: None,
    })
}

fn release(d: Digest, m: &Manifest) -> Release {
    Release {
        artifact: d,
        commit: m.source.commit.clone(),
        subject: m.source.subject.clone(),
        author: m.source.author.clone(),
    }
}

/// A manifest and its source layer's entries (with the `deploy/` files' bytes), read once.
struct Loaded {
    manifest: Manifest,
    files: SourceFiles,
}

struct Cache<'a> {
    ctx: &'a EnvContext,
    by_digest: BTreeMap<Digest, Loaded>,
}

impl Cache<'_> {
    fn get(&mut self, d: &Digest) -> Result<&Loaded, DeployError> {
        if !self.by_digest.contains_key(d) {
            let manifest = resolve::load_verified(self.ctx.store.as_ref(), d)?;
            let files = srclayer::read(self.ctx.store.as_ref(), &manifest, &|p| {
                p.starts_with("deploy/")
            })
            .map_err(|e| refused(keys::blob(d), e))?;
            self.by_digest.insert(*d, Loaded { manifest, files });
        }
        Ok(&self.by_digest[d])
    }
}

/// Computes what deploying `target` to `ctx`'s env would change (on `only_host`, when given).
pub fn diff(
    ctx: &EnvContext,
    target: &str,
    opts: &DeployOptions,
    only_host: Option<&str>,
) -> Result<DiffReport, DeployError> {
    let (digest, _, source_ref) = plan::resolve_target(ctx, target, opts)?;
    let (env_state, _) = records::load_state(ctx.store.as_ref(), &ctx.name)?;
    let mut cache = Cache {
        ctx,
        by_digest: BTreeMap::new(),
    };
    let cur_digest = plan::env_current(&env_state).filter(|d| *d != digest);
    let new = cache.get(&digest)?.manifest.clone();
    let cur = match cur_digest {
        Some(d) => Some((d, cache.get(&d)?.manifest.clone())),
        None => None,
    };

    let config = host_configs(ctx, &mut cache, &digest, &env_state, only_host)?;
    let code = code_change(&mut cache, cur.as_ref().map(|(d, _)| *d), &digest)?;
    let deps = deps_change(ctx, cur.as_ref().map(|(_, m)| m), &new)?;

    let service_env = ctx.service_env();
    let base_storage = cur
        .as_ref()
        .map_or(new.storage.as_ref(), |(_, m)| m.storage.as_ref());
    let g = guard::check(
        guard::select(base_storage, service_env),
        guard::select(new.storage.as_ref(), service_env),
        &gates::guard_options(ctx, opts),
    )
    .map_err(|e| refused(keys::blob(&digest), format!("storage guard: {e}")))?;
    let mut deploy_type = g.deploy_type;
    if deploy_type == DeployType::Code
        && cur
            .as_ref()
            .is_some_and(|(_, m)| guard::config_only(m, &new))
    {
        deploy_type = DeployType::Config;
    }
    Ok(DiffReport {
        env: ctx.name.clone(),
        target: release(digest, &new),
        source_ref,
        current: cur.as_ref().map(|(d, m)| release(*d, m)),
        deploy_type,
        config,
        code,
        deps,
        storage: StorageDiff {
            allowed: g.allowed,
            findings: g.findings,
            recipes: g.recipes,
            record: g.record,
        },
    })
}

fn host_configs(
    ctx: &EnvContext,
    cache: &mut Cache<'_>,
    digest: &Digest,
    env_state: &records::EnvState,
    only_host: Option<&str>,
) -> Result<Vec<HostConfigDiff>, DeployError> {
    if let Some(h) = only_host
        && !ctx.hosts.contains_key(h)
    {
        return Err(DeployError::Usage {
            message: format!("no host {h} in {}", ctx.name),
            way_out: Some(format!(
                "hosts: {}",
                ctx.hosts.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
        });
    }
    let new_commit = cache.get(digest)?.manifest.source.commit.clone();
    let mut out = Vec::new();
    for (name, host) in &ctx.hosts {
        if only_host.is_some_and(|h| h != name) {
            continue;
        }
        let from: Option<ReleaseRef> = host
            .status()
            .ok()
            .and_then(|s| s.state.current)
            .or_else(|| env_state.hosts.get(name).and_then(|r| r.current.clone()));
        let mut d = HostConfigDiff {
            host: name.clone(),
            from: from.as_ref().map(|r| r.commit.to_string()),
            to: new_commit.clone(),
            diff: String::new(),
            rendered: String::new(),
            ops_file: None,
            ops_keys: vec![],
            error: None,
        };
        let render = |cache: &mut Cache<'_>,
                      rd: &Digest|
         -> Result<(String, Option<String>, Vec<String>), String> {
            let l = cache.get(rd).map_err(|e| e.to_string())?;
            let spec = match l.files.kept.get(model::service::SERVICE_YAML) {
                Some(b) => {
                    ServiceSpec::parse(&String::from_utf8_lossy(b)).map_err(|e| e.to_string())?
                }
                None => ServiceSpec::default(),
            };
            let env_file = spec.config.env_file.replace("{env}", ctx.service_env());
            let text = l
                .files
                .kept
                .get(&env_file)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .ok_or_else(|| {
                    format!(
                        "the release has no config for env {} ({env_file})",
                        ctx.service_env()
                    )
                })?;
            let service = spec
                .name
                .clone()
                .unwrap_or_else(|| l.manifest.service.clone());
            let port = host.config().port.or(spec.port);
            let release =
                crate::protocol::ReleaseRef::of(*rd, &l.manifest).map_err(|e| e.to_string())?;
            let render = ctx.render_request(name, &service, &release, port)?;
            let p = host
                .render_preview(&PreviewRequest {
                    render,
                    inline: Some(InlineConfig {
                        env_config: text,
                        config: spec.config.clone(),
                    }),
                })
                .map_err(|e| e.to_string())?;
            Ok((p.text, p.ops_file, p.ops_keys))
        };
        let result = (|| -> Result<(), String> {
            let (to_text, ops_file, ops_keys) = render(cache, digest)?;
            let from_text = match &from {
                Some(r) => render(cache, &r.manifest)?.0,
                None => String::new(),
            };
            let short = |c: &str| c[..c.len().min(12)].to_string();
            d.diff = text::unified(
                &from_text,
                &to_text.clone(),
                &format!(
                    "{name} {} config.yaml",
                    from.as_ref()
                        .map(|r| short(&r.commit))
                        .unwrap_or_else(|| "(none)".into())
                ),
                &format!("{name} {} config.yaml", short(&new_commit)),
                3,
            );
            d.rendered = to_text;
            d.ops_file = ops_file;
            d.ops_keys = ops_keys;
            Ok(())
        })();
        d.error = result.err();
        out.push(d);
    }
    Ok(out)
}

fn code_change(
    cache: &mut Cache<'_>,
    cur: Option<Digest>,
    new: &Digest,
) -> Result<CodeChange, DeployError> {
    let Some(cur) = cur else {
        return Ok(CodeChange {
            range: None,
            files: vec![],
            deploy_only: false,
        });
    };
    let a = cache.get(&cur)?;
    let (a_commit, a_entries) = (a.manifest.source.commit.clone(), a.files.entries.clone());
    let b = cache.get(new)?;
    let mut files = Vec::new();
    for (p, e) in &b.files.entries {
        if e.kind == "dir" {
            continue;
        }
        match a_entries.get(p) {
            None => files.push(FileChange {
                path: p.clone(),
                change: "added",
            }),
            Some(old) if old != e => files.push(FileChange {
                path: p.clone(),
                change: "modified",
            }),
            Some(_) => {}
        }
    }
    for (p, e) in &a_entries {
        if e.kind != "dir" && !b.files.entries.contains_key(p) {
            files.push(FileChange {
                path: p.clone(),
                change: "removed",
            });
        }
    }
    files.sort_by(|x, y| x.path.cmp(&y.path));
    let deploy_only = !files.is_empty() && files.iter().all(|f| f.path.starts_with("deploy/"));
    Ok(CodeChange {
        range: Some(format!("{a_commit}..{}", b.manifest.source.commit)),
        files,
        deploy_only,
    })
}

fn lockfile(ctx: &EnvContext, m: &Manifest) -> Result<Option<serde_json::Value>, DeployError> {
    let Some(d) = &m.deps else { return Ok(None) };
    let key = keys::blob(&d.lockfile_blob);
    let (b, _) = ctx.store.get_bytes(&key)?;
    serde_json::from_slice(&b)
        .map(Some)
        .map_err(|e| refused(key, format!("the recorded lockfile is not JSON: {e}")))
}

fn deps_change(
    ctx: &EnvContext,
    cur: Option<&Manifest>,
    new: &Manifest,
) -> Result<DepsDiff, DeployError> {
    let layer = |m: &Manifest| m.layer(LayerKind::Deps).map(|l| l.diff_id);
    let Some(cur) = cur else {
        return Ok(DepsDiff {
            same_layer: false,
            change: Default::default(),
            note: Some("nothing deployed yet: no base to compare".into()),
        });
    };
    let same_layer = layer(cur) == layer(new);
    let (a, b) = (lockfile(ctx, cur)?, lockfile(ctx, new)?);
    let (change, note) = match (a, b) {
        (Some(a), Some(b)) => (lockfile::diff(&a, &b), None),
        _ => (
            Default::default(),
            Some("an artifact has no dependency layer: no lockfiles to compare".into()),
        ),
    };
    Ok(DepsDiff {
        same_layer,
        change,
        note,
    })
}
