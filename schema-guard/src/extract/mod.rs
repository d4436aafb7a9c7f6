//! Extractors: from a revision to its [`StorageManifest`].
//!
//! - [`static_manifest`] reads a git revision's tree only (no code runs). The service config
//!   (`deploy/env/<env>.yaml` or `config.yaml`) has one of two layouts: RESTBase's
//!   (`services[0].conf.spec`, walked module by module in [`spec`]) or the fixture service's
//!   (`services[0].conf.domains` / `storage`, [`fixture`]). JS modules are read by the bounded
//!   static reader [`js`] (constants, arithmetic, functions and methods of the module).
//!   Storage requests become tables: `/{domain}/sys/table/<t>` bodies are schemas,
//!   `/{domain}/sys/key_value/<b>` bodies go through the key-value module's `makeSchema`.
//!   Values it cannot resolve are recorded as [`Unresolved`] (rule SG090), never guessed or
//!   dropped.
//! - [`capture::capture`] runs the revision's own code with `node` and a recording table
//!   module, without network, so computed schemas come out exactly as the service sends them.

use std::path::Path;

use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::config::RepoConfig;
use crate::manifest::{Location, StorageGroup, StorageManifest, Unresolved};
use crate::{Error, Result};

pub mod capture;
pub mod fixture;
pub mod js;
pub mod spec;
pub mod tree;

pub use capture::{CaptureOptions, capture, capture_rev};
pub use fixture::bucket_schema;
pub use tree::{DirTree, GitTree, Tree, materialise, resolve_commit};

/// Table backend modules whose versions are recorded by default.
pub const DEFAULT_BACKEND_MODULES: &[&str] = &[
    "restbase-mod-table-cassandra",
    "restbase-mod-table-sqlite",
    "restbase-mod-table-spec",
];

/// Largest YAML file read (service config, specs).
pub const MAX_YAML_BYTES: usize = 2 << 20;

/// Settings shared by both extractors.
#[derive(Clone, Debug, Default)]
pub struct StaticOptions {
    /// Service config path in the tree; default: `.schema-guard.yaml`'s `config`, else
    /// `deploy/env/<env>.yaml`, else `config.yaml`, else `config.example.yaml`.
    pub config: Option<String>,
    /// Environment (default: `.schema-guard.yaml`'s `env`, else `production`).
    pub env: Option<String>,
}

/// A storage request found statically: `uri` and `body`, for one domain or (`None`) for every
/// configured domain.
#[derive(Clone, Debug)]
pub struct Request {
    pub domain: Option<String>,
    pub uri: Value,
    pub body: Value,
    pub location: Location,
}

/// Which config layout a service uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    /// `services[0].conf.spec`: hyperswitch modules, the table module's options.
    Restbase,
    /// `services[0].conf.domains` and `services[0].conf.storage`.
    #[default]
    Fixture,
}

/// The service config of a revision, as far as storage is concerned.
#[derive(Clone, Debug, Default)]
pub struct ServiceConfig {
    pub path: Option<String>,
    pub layout: Layout,
    pub domains: Vec<String>,
    /// Template values of the fixture layout (`services[0].conf.options`).
    pub options: Value,
    /// The table backend's config: `sys/table` module `options.conf`, or `conf.storage`.
    pub storage: Value,
    pub storage_groups: Option<Vec<StorageGroup>>,
    pub storage_version: Option<i64>,
    pub replication: Option<Value>,
    pub skip_flags: Vec<String>,
    /// The backend flavour (`sqlite`, `cassandra`).
    pub backend: Option<String>,
    /// Storage requests found while reading the layout (RESTBase).
    pub requests: Vec<Request>,
    pub unresolved: Vec<Unresolved>,
    /// JS modules mounted at a path, for bucket models.
    walked: Option<std::rc::Rc<std::cell::RefCell<spec::Walked>>>,
}

pub(crate) fn get_path<'v>(v: &'v Value, dotted: &str) -> Option<&'v Value> {
    let mut cur = v;
    for part in dotted.split('.') {
        cur = match part.parse::<usize>() {
            Ok(i) => cur.get(i)?,
            Err(_) => cur.get(part)?,
        };
    }
    Some(cur)
}

/// Reads YAML (merge keys applied) as JSON; files over [`MAX_YAML_BYTES`] are refused.
pub fn yaml_to_json(text: &str, path: &str) -> Result<Value> {
    let err = |message: String| Error::Yaml {
        path: path.into(),
        message,
    };
    if text.len() > MAX_YAML_BYTES {
        return Err(err(format!(
            "{} bytes, over the {MAX_YAML_BYTES}-byte limit",
            text.len()
        )));
    }
    let mut v: serde_norway::Value =
        serde_norway::from_str(text).map_err(|e| err(e.to_string()))?;
    v.apply_merge().map_err(|e| err(e.to_string()))?;
    serde_json::to_value(v).map_err(|e| err(e.to_string()))
}

fn find_skip_flags(v: &Value, out: &mut Vec<String>, depth: usize) {
    if depth > 128 {
        return;
    }
    match v {
        Value::Object(m) => {
            for (k, val) in m {
                if (k == "skip_resources" || k == "skip_schema_update")
                    && val.as_bool() == Some(true)
                {
                    out.push(k.clone());
                }
                find_skip_flags(val, out, depth + 1);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| find_skip_flags(x, out, depth + 1)),
        _ => {}
    }
}

/// Storage groups as configured: `domains` a string, a `/regex/` or a list of them.
pub fn storage_groups(storage: &Value) -> Option<Vec<StorageGroup>> {
    let groups = storage.get("storage_groups")?.as_array()?;
    Some(
        groups
            .iter()
            .map(|g| StorageGroup {
                name: g
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                domains: match g.get("domains") {
                    Some(Value::String(s)) => vec![s.clone()],
                    Some(Value::Array(a)) => a
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect(),
                    _ => Vec::new(),
                },
            })
            .collect(),
    )
}

impl ServiceConfig {
    /// Reads the storage-relevant parts of a service config; `tree` is needed for the
    /// RESTBase layout (its modules are files of the tree).
    pub fn read(v: &Value, path: Option<String>, tree: &dyn Tree) -> ServiceConfig {
        let conf = get_path(v, "services.0.conf").unwrap_or(v);
        let mut cfg = ServiceConfig {
            path: path.clone(),
            options: conf
                .get("options")
                .cloned()
                .unwrap_or(Value::Object(Map::new())),
            ..ServiceConfig::default()
        };
        if let Some(root) = conf.get("spec") {
            cfg.layout = Layout::Restbase;
            let mut w = spec::Walker {
                tree,
                limits: js::Limits::default(),
                modules: Default::default(),
                out: spec::Walked::default(),
            };
            let file = path.clone().unwrap_or_else(|| "config.yaml".into());
            w.spec(root, &file, &[], conf, 0);
            cfg.domains = w.out.domains.iter().cloned().collect();
            match w.out.table_conf.clone() {
                Some(c) => cfg.storage = c,
                None => w.out.unresolved.push(Unresolved {
                    location: Location {
                        path: file.clone(),
                        line: None,
                    },
                    what: "the table storage module (no module mounted at /{domain}/sys/table)"
                        .into(),
                    inputs: None,
                }),
            }
            // sys/table.js defaults its backend to cassandra.
            cfg.backend = Some(
                cfg.storage
                    .get("backend")
                    .and_then(Value::as_str)
                    .unwrap_or("cassandra")
                    .to_string(),
            );
            cfg.requests = std::mem::take(&mut w.out.requests);
            cfg.unresolved = std::mem::take(&mut w.out.unresolved);
            cfg.walked = Some(std::rc::Rc::new(std::cell::RefCell::new(w.out)));
        } else {
            cfg.storage = conf.get("storage").cloned().unwrap_or(Value::Null);
            cfg.domains = conf
                .get("domains")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            cfg.backend = cfg
                .storage
                .get("flavour")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        cfg.storage_groups = storage_groups(&cfg.storage);
        cfg.storage_version = cfg.storage.get("version").and_then(Value::as_i64);
        let mut replication = Map::new();
        for k in [
            "datacenters",
            "replication",
            "default_replication",
            "localDc",
            "local_dc",
        ] {
            if let Some(x) = cfg.storage.get(k) {
                replication.insert(k.to_string(), x.clone());
            }
        }
        cfg.replication = (!replication.is_empty()).then_some(Value::Object(replication));
        find_skip_flags(v, &mut cfg.skip_flags, 0);
        cfg
    }

    /// Finds and reads the service config of a tree.
    pub fn from_tree(
        tree: &dyn Tree,
        opts: &StaticOptions,
        repo: &RepoConfig,
    ) -> Result<ServiceConfig> {
        let Some(path) = config_path(tree, opts, repo)? else {
            return Ok(ServiceConfig::default());
        };
        let text = tree.read_text(&path).unwrap_or_default();
        Ok(ServiceConfig::read(
            &yaml_to_json(&text, &path)?,
            Some(path),
            tree,
        ))
    }

    /// Copies config-level facts into a manifest.
    pub fn apply(&self, m: &mut StorageManifest) {
        m.config = self.path.clone();
        m.domains = self.domains.clone();
        m.storage_groups = self.storage_groups.clone();
        m.storage_version = self.storage_version;
        m.replication = self.replication.clone();
        m.skip_flags = self.skip_flags.clone();
        m.backend = self.backend.clone();
    }
}

/// The service config path to use in a tree.
pub fn config_path(
    tree: &dyn Tree,
    opts: &StaticOptions,
    repo: &RepoConfig,
) -> Result<Option<String>> {
    if let Some(c) = opts.config.as_ref().or(repo.config.as_ref()) {
        if tree.read(c).is_none() {
            return Err(Error::Config(format!(
                "service config {c} not found in the revision"
            )));
        }
        return Ok(Some(c.clone()));
    }
    let env = opts
        .env
        .as_deref()
        .or(repo.env.as_deref())
        .unwrap_or("production");
    for c in [
        format!("deploy/env/{env}.yaml"),
        "config.yaml".into(),
        "config.example.yaml".into(),
    ] {
        if tree.read(&c).is_some() {
            return Ok(Some(c));
        }
    }
    if opts.env.is_some() {
        return Err(Error::Config(format!(
            "no deploy/env/{env}.yaml in the revision"
        )));
    }
    Ok(None)
}

/// Versions of the table backend modules: package-lock.json's resolved version, else the
/// package.json range.
pub fn backend_module_versions(
    tree: &dyn Tree,
    names: &[String],
) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let read = |p: &str| -> Value {
        tree.read(p)
            .filter(|b| b.len() <= 16 << 20)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    };
    let (pkg, lock) = (read("package.json"), read("package-lock.json"));
    for name in names {
        let locked = lock
            .get("packages")
            .and_then(|p| p.get(format!("node_modules/{name}")))
            .or_else(|| lock.get("dependencies").and_then(|d| d.get(name)))
            .and_then(|e| e.get("version"))
            .and_then(Value::as_str);
        let declared = ["dependencies", "devDependencies", "optionalDependencies"]
            .iter()
            .find_map(|k| pkg.get(k).and_then(|d| d.get(name)).and_then(Value::as_str));
        if let Some(v) = locked.or(declared) {
            out.insert(name.clone(), v.to_string());
        }
    }
    out
}

/// Resolves `{{a.b}}` templates; a string that is exactly one template keeps the value's type.
pub(crate) fn expand(v: &Value, ctx: &Value) -> std::result::Result<Value, String> {
    let re = regex::Regex::new(r"\{\{\s*([^{}]+?)\s*\}\}").expect("valid regex");
    let lookup = |expr: &str| -> std::result::Result<Value, String> {
        let mut cur = ctx;
        for part in expr.split('.') {
            cur = cur.get(part).ok_or_else(|| format!("{{{{{expr}}}}}"))?;
        }
        Ok(cur.clone())
    };
    Ok(match v {
        Value::String(s) => {
            let trimmed = s.trim();
            if let Some(c) = re
                .captures(trimmed)
                .filter(|c| c.get(0).map(|m| m.as_str()) == Some(trimmed))
            {
                lookup(&c[1])?
            } else if re.is_match(s) {
                let mut err = None;
                let out = re.replace_all(s, |c: &regex::Captures<'_>| match lookup(&c[1]) {
                    Ok(Value::String(x)) => x,
                    Ok(other) => other.to_string(),
                    Err(e) => {
                        err = Some(e);
                        String::new()
                    }
                });
                if let Some(e) = err {
                    return Err(e);
                }
                Value::String(out.into_owned())
            } else {
                v.clone()
            }
        }
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| expand(x, ctx))
                .collect::<std::result::Result<_, _>>()?,
        ),
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, x) in m {
                out.insert(k.clone(), expand(x, ctx)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

pub(crate) fn line_of(text: &str, needle: &str) -> Option<u32> {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i as u32 + 1)
}

fn default_modules(repo: &RepoConfig) -> Vec<String> {
    repo.backend_modules.clone().unwrap_or_else(|| {
        DEFAULT_BACKEND_MODULES
            .iter()
            .map(|s| s.to_string())
            .collect()
    })
}

/// Turns storage requests into tables of the manifest.
fn add_requests(m: &mut StorageManifest, cfg: &ServiceConfig, tree: &dyn Tree) {
    let mut walker = spec::Walker {
        tree,
        limits: js::Limits::default(),
        modules: Default::default(),
        out: cfg
            .walked
            .as_ref()
            .map(|w| std::mem::take(&mut *w.borrow_mut()))
            .unwrap_or_default(),
    };
    for r in &cfg.requests {
        let targets: Vec<String> = match &r.domain {
            Some(d) => vec![d.clone()],
            None => cfg.domains.clone(),
        };
        let Some(uri) = r.uri.as_str() else {
            let what = match js::as_unresolved(&r.uri) {
                Some(w) => format!("the uri `{}` of a storage request ({})", w.text, w.reason),
                None => "a storage request without uri".into(),
            };
            m.unresolved.push(Unresolved {
                location: r.location.clone(),
                what,
                inputs: None,
            });
            continue;
        };
        for d in targets {
            let uri = uri
                .replace("{domain}", &d)
                .replace("{{request.params.domain}}", &d);
            let parts: Vec<&str> = uri.trim_start_matches('/').split('/').collect();
            let schema = match parts.as_slice() {
                [_, "sys", "table", t] => {
                    let mut s = r.body.clone();
                    if let Some(o) = s.as_object_mut() {
                        // The table backends take the name from the URI.
                        o.insert("table".into(), Value::String(t.to_string()));
                    }
                    Ok(s)
                }
                [_, "sys", "key_value", bucket] => match cfg.layout {
                    Layout::Restbase => walker.bucket(&d, bucket, &r.body),
                    Layout::Fixture => bucket_schema(bucket, &r.body),
                },
                _ => Err(format!(
                    "a storage request to {uri:?} (no static model for it)"
                )),
            };
            let mut at = r.location.clone();
            let schema = schema.and_then(|s| {
                let mut leaves = Vec::new();
                js::unresolved_leaves(&s, "", &mut leaves);
                match leaves.first() {
                    None => Ok(s),
                    Some((key, w)) => {
                        if !w.path.is_empty() {
                            at = Location {
                                path: w.path.clone(),
                                line: Some(w.line),
                            };
                        }
                        Err(format!(
                            "`{key}: {}` in the schema of table {} ({})",
                            w.text,
                            parts.get(3).unwrap_or(&"?"),
                            w.reason
                        ))
                    }
                }
            });
            match schema {
                Ok(s) if s.to_string().contains("{{") => m.unresolved.push(Unresolved {
                    location: r.location.clone(),
                    what: format!("a template in the request to {uri} (not expanded at start-up)"),
                    inputs: None,
                }),
                Ok(s) => m.add_table(&d, &s, Some(r.location.clone())),
                Err(what) => m.unresolved.push(Unresolved {
                    location: at,
                    what,
                    inputs: None,
                }),
            }
        }
    }
    m.unresolved.append(&mut walker.out.unresolved);
}

/// Static extraction over any [`Tree`].
pub fn static_manifest_tree(tree: &dyn Tree, opts: &StaticOptions) -> Result<StorageManifest> {
    let repo = RepoConfig::from_tree(tree)?;
    let mut cfg = ServiceConfig::from_tree(tree, opts, &repo)?;
    let mut m = StorageManifest::new("static");
    cfg.apply(&mut m);
    m.unresolved.append(&mut cfg.unresolved);
    if cfg.layout == Layout::Fixture {
        if cfg.domains.is_empty() {
            cfg.domains.push("{domain}".to_string());
            m.unresolved.push(Unresolved {
                location: Location {
                    path: cfg.path.clone().unwrap_or_else(|| "config.yaml".into()),
                    line: None,
                },
                what: "the service's domains (no `domains` list in the config)".into(),
                inputs: None,
            });
        }
        cfg.requests =
            fixture::requests(tree, &cfg.options, js::Limits::default(), &mut m.unresolved);
    }
    m.backend_modules = backend_module_versions(tree, &default_modules(&repo));
    add_requests(&mut m, &cfg, tree);
    // What an unresolved value depends on: its file and the service config.
    let config_text = cfg
        .path
        .as_deref()
        .and_then(|p| tree.read(p))
        .unwrap_or_default();
    for u in &mut m.unresolved {
        let mut h = Sha256::new();
        h.update(tree.read(&u.location.path).unwrap_or_default());
        h.update(b"\0");
        h.update(&config_text);
        u.inputs = Some(hex::encode(&h.finalize()[..6]));
    }
    m.finish();
    Ok(m)
}

/// Static storage manifest of a git revision (`repo_path` is any path inside the repository).
pub fn static_manifest(repo_path: &Path, rev: &str) -> Result<StorageManifest> {
    static_manifest_with(repo_path, rev, &StaticOptions::default())
}

/// [`static_manifest`] with options.
pub fn static_manifest_with(
    repo_path: &Path,
    rev: &str,
    opts: &StaticOptions,
) -> Result<StorageManifest> {
    let repo = git2::Repository::discover(repo_path)?;
    let tree = GitTree::open(&repo, rev)?;
    let mut m = static_manifest_tree(&tree, opts)?;
    m.commit = Some(tree.commit.clone());
    Ok(m)
}

/// Static storage manifest of a directory (a checkout or an unpacked release).
pub fn static_manifest_dir(dir: &Path, opts: &StaticOptions) -> Result<StorageManifest> {
    static_manifest_tree(&DirTree::open(dir)?, opts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn templates_resolve_or_fail() {
        let ctx = json!({"options": {"v": 3, "name": "x"}});
        assert_eq!(
            expand(
                &json!({"a": "{{options.v}}", "b": "n-{{ options.name }}"}),
                &ctx
            )
            .unwrap(),
            json!({"a": 3, "b": "n-x"})
        );
        assert_eq!(
            expand(&json!("{{options.missing}}"), &ctx).unwrap_err(),
            "{{options.missing}}"
        );
    }
}
