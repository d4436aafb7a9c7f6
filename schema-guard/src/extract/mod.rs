//! Extractors: from a revision to its [`StorageManifest`].
//!
//! - [`static_manifest`] reads a git revision's tree only: literal schema objects in JS
//!   modules, `x-setup-handler` requests in YAML (with `{{options.x}}` templates resolved from
//!   the service config), key-value buckets (`version = 5000 + body.version`), and the
//!   service config (domains, storage groups, storage version). Values it cannot resolve are
//!   recorded as [`Unresolved`] (rule SG090), never guessed.
//! - [`capture::capture`] runs the revision's own code with `node` and a recording table
//!   backend, so computed schemas come out exactly as the service sends them.

use std::path::Path;

use serde_json::{Map, Value, json};

use crate::config::RepoConfig;
use crate::manifest::{Location, StorageGroup, StorageManifest, Unresolved};
use crate::{Error, Result};

pub mod capture;
pub mod js;
pub mod tree;

pub use capture::{CaptureOptions, capture, capture_rev};
pub use tree::{DirTree, GitTree, Tree, materialise, resolve_commit};

/// Table backend modules whose versions are recorded by default.
pub const DEFAULT_BACKEND_MODULES: &[&str] = &[
    "restbase-mod-table-cassandra",
    "restbase-mod-table-sqlite",
    "restbase-mod-table-spec",
];

/// Settings shared by both extractors.
#[derive(Clone, Debug, Default)]
pub struct StaticOptions {
    /// Service config path in the tree; default: `.schema-guard.yaml`'s `config`, else
    /// `deploy/env/<env>.yaml`, else `config.yaml`, else `config.example.yaml`.
    pub config: Option<String>,
    /// Environment (default: `.schema-guard.yaml`'s `env`, else `production`).
    pub env: Option<String>,
}

/// The service config of a revision, as far as storage is concerned.
#[derive(Clone, Debug, Default)]
pub struct ServiceConfig {
    pub path: Option<String>,
    pub domains: Vec<String>,
    pub options: Value,
    pub storage_groups: Option<Vec<StorageGroup>>,
    pub storage_version: Option<i64>,
    pub replication: Option<Value>,
    pub skip_flags: Vec<String>,
}

fn get_path<'v>(v: &'v Value, dotted: &str) -> Option<&'v Value> {
    let mut cur = v;
    for part in dotted.split('.') {
        cur = match part.parse::<usize>() {
            Ok(i) => cur.get(i)?,
            Err(_) => cur.get(part)?,
        };
    }
    Some(cur)
}

fn yaml_to_json(text: &str, path: &str) -> Result<Value> {
    let v: serde_norway::Value = serde_norway::from_str(text).map_err(|e| Error::Yaml {
        path: path.into(),
        message: e.to_string(),
    })?;
    serde_json::to_value(v).map_err(|e| Error::Yaml {
        path: path.into(),
        message: e.to_string(),
    })
}

fn find_skip_flags(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, val) in m {
                if (k == "skip_resources" || k == "skip_schema_update")
                    && val.as_bool() == Some(true)
                {
                    out.push(k.clone());
                }
                find_skip_flags(val, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| find_skip_flags(x, out)),
        _ => {}
    }
}

impl ServiceConfig {
    /// Reads the storage-relevant parts of a service-runner style config.
    pub fn from_value(v: &Value, path: Option<String>) -> ServiceConfig {
        let conf = get_path(v, "services.0.conf").unwrap_or(v);
        let storage = conf.get("storage").cloned().unwrap_or(Value::Null);
        let domains = conf
            .get("domains")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let storage_groups =
            storage
                .get("storage_groups")
                .and_then(Value::as_array)
                .map(|groups| {
                    groups
                        .iter()
                        .map(|g| StorageGroup {
                            name: g
                                .get("name")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string(),
                            domains: g
                                .get("domains")
                                .and_then(Value::as_array)
                                .map(|a| {
                                    a.iter()
                                        .filter_map(Value::as_str)
                                        .map(str::to_string)
                                        .collect()
                                })
                                .unwrap_or_default(),
                        })
                        .collect()
                });
        let mut replication = Map::new();
        for k in [
            "datacenters",
            "replication",
            "default_replication",
            "localDc",
            "local_dc",
        ] {
            if let Some(x) = storage.get(k) {
                replication.insert(k.to_string(), x.clone());
            }
        }
        let mut skip_flags = Vec::new();
        find_skip_flags(v, &mut skip_flags);
        ServiceConfig {
            path,
            domains,
            options: conf
                .get("options")
                .cloned()
                .unwrap_or(Value::Object(Map::new())),
            storage_groups,
            storage_version: storage.get("version").and_then(Value::as_i64),
            replication: (!replication.is_empty()).then_some(Value::Object(replication)),
            skip_flags,
        }
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
        Ok(ServiceConfig::from_value(
            &yaml_to_json(&text, &path)?,
            Some(path),
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
    let pkg: Value = tree
        .read("package.json")
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let lock: Value = tree
        .read("package-lock.json")
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
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

fn js_candidate(path: &str) -> bool {
    path.ends_with(".js") && !path.split('/').rev().skip(1).any(tree::skipped_dir)
}

/// The key-value bucket table the fixture contract's `sys/key_value` module creates.
pub fn bucket_schema(bucket: &str, body: &Value) -> std::result::Result<Value, String> {
    let version = match body.get("version") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) if n.is_i64() => n.as_i64().unwrap_or_default(),
        Some(Value::String(s)) if s.trim().parse::<i64>().is_ok() => {
            s.trim().parse().unwrap_or_default()
        }
        Some(other) => {
            return Err(format!(
                "bucket {bucket}: version {other} is not an integer"
            ));
        }
    };
    let s = |k: &str, d: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(d)
            .to_string()
    };
    let mut schema = json!({
        "table": bucket,
        "version": 5000 + version,
        "attributes": {"key": s("keyType", "string"), "value": s("valueType", "blob"), "tid": "timeuuid"},
        "index": [
            {"attribute": "key", "type": "hash"},
            {"attribute": "tid", "type": "range", "order": "desc"}
        ]
    });
    let mut options = Map::new();
    for k in ["default_time_to_live", "compression"] {
        if let Some(v) = body.get(k) {
            options.insert(k.to_string(), v.clone());
        }
    }
    if !options.is_empty() {
        schema["options"] = Value::Object(options);
    }
    Ok(schema)
}

/// Resolves `{{a.b}}` templates; a string that is exactly one template keeps the value's type.
fn expand(v: &Value, ctx: &Value) -> std::result::Result<Value, String> {
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

fn line_of(text: &str, needle: &str) -> Option<u32> {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i as u32 + 1)
}

fn collect_setup_handlers<'v>(v: &'v Value, out: &mut Vec<&'v Value>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "x-setup-handler" {
                    out.push(x);
                } else {
                    collect_setup_handlers(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_setup_handlers(x, out)),
        _ => {}
    }
}

/// Static extraction over any [`Tree`].
pub fn static_manifest_tree(tree: &dyn Tree, opts: &StaticOptions) -> Result<StorageManifest> {
    let repo = RepoConfig::from_tree(tree)?;
    let cfg = ServiceConfig::from_tree(tree, opts, &repo)?;
    let mut m = StorageManifest::new("static");
    cfg.apply(&mut m);
    let mut domains = cfg.domains.clone();
    if domains.is_empty() {
        domains.push("{domain}".to_string());
        m.unresolved.push(Unresolved {
            location: Location {
                path: cfg.path.clone().unwrap_or_else(|| "config.yaml".into()),
                line: None,
            },
            what: "the service's domains (no `domains` list in the config)".into(),
        });
    }
    let names: Vec<String> = repo.backend_modules.clone().unwrap_or_else(|| {
        DEFAULT_BACKEND_MODULES
            .iter()
            .map(|s| s.to_string())
            .collect()
    });
    m.backend_modules = backend_module_versions(tree, &names);
    let ctx = json!({ "options": cfg.options });
    let config_files: Vec<&str> = cfg.path.iter().map(String::as_str).collect();

    for path in tree.paths() {
        let is_yaml = path.ends_with(".yaml") || path.ends_with(".yml");
        if js_candidate(&path) {
            let Some(src) = tree.read_text(&path) else {
                continue;
            };
            if !src.contains("attributes") {
                continue;
            }
            for found in js::find_objects_with_keys(&src, &["attributes", "index"]) {
                let loc = Location {
                    path: path.clone(),
                    line: Some(found.line),
                };
                let table = match found.value.get("table") {
                    Some(js::JsValue::Str(t)) => t.clone(),
                    // A schema template (e.g. a bucket module): its tables come from its callers.
                    _ => continue,
                };
                let mut unresolved = Vec::new();
                found.value.unresolved("", &mut unresolved);
                if !unresolved.is_empty() {
                    for (key, text, line) in unresolved {
                        m.unresolved.push(Unresolved {
                            location: Location {
                                path: path.clone(),
                                line: Some(line),
                            },
                            what: format!("`{key}: {text}` in the schema of table {table}"),
                        });
                    }
                    continue;
                }
                let schema = found.value.to_json().expect("resolved");
                for d in &domains {
                    m.add_table(d, &schema, Some(loc.clone()));
                }
            }
        } else if is_yaml
            && !config_files.contains(&path.as_str())
            && !path.split('/').rev().skip(1).any(tree::skipped_dir)
            && !path.starts_with("deploy/")
        {
            let Some(text) = tree.read_text(&path) else {
                continue;
            };
            if !text.contains("x-setup-handler") {
                continue;
            }
            let doc = yaml_to_json(&text, &path)?;
            let mut lists = Vec::new();
            collect_setup_handlers(&doc, &mut lists);
            for list in lists {
                for item in list.as_array().into_iter().flatten() {
                    for (name, request) in item.as_object().into_iter().flatten() {
                        let loc = Location {
                            path: path.clone(),
                            line: line_of(&text, &format!("{name}:")),
                        };
                        add_setup_request(&mut m, &domains, name, request, &ctx, loc);
                    }
                }
            }
        }
    }
    m.finish();
    Ok(m)
}

fn add_setup_request(
    m: &mut StorageManifest,
    domains: &[String],
    name: &str,
    request: &Value,
    ctx: &Value,
    loc: Location,
) {
    let request = match expand(request, ctx) {
        Ok(r) => r,
        Err(t) => {
            m.unresolved.push(Unresolved {
                location: loc,
                what: format!(
                    "template {t} in setup request {name} (not a literal in the service config)"
                ),
            });
            return;
        }
    };
    let uri = request
        .get("uri")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let body = request
        .get("body")
        .cloned()
        .unwrap_or(Value::Object(Map::new()));
    let parts: Vec<&str> = uri.trim_start_matches('/').split('/').collect();
    let targets: Vec<String> = match parts.first() {
        Some(&"{domain}") => domains.to_vec(),
        Some(d) if !d.is_empty() => vec![d.to_string()],
        _ => Vec::new(),
    };
    let schema = match parts.as_slice() {
        [_, "sys", "table", t] => {
            let mut s = body.clone();
            if s.get("table").is_none() && s.is_object() {
                s["table"] = Value::String(t.to_string());
            }
            Ok(s)
        }
        [_, "sys", "key_value", bucket] => bucket_schema(bucket, &body),
        _ => Err(format!(
            "setup request {name} to {uri:?} (no static model for it)"
        )),
    };
    match schema {
        Ok(s) => {
            for d in targets {
                m.add_table(&d, &s, Some(loc.clone()));
            }
        }
        Err(what) => m.unresolved.push(Unresolved {
            location: loc,
            what,
        }),
    }
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

    #[test]
    fn bucket_versions_and_defaults() {
        let s = bucket_schema("b", &json!({"version": "3", "valueType": "json"})).unwrap();
        assert_eq!(s["version"], json!(5003));
        assert_eq!(s["attributes"]["value"], json!("json"));
        assert_eq!(s["attributes"]["key"], json!("string"));
        assert_eq!(
            bucket_schema("b", &json!({})).unwrap()["version"],
            json!(5000)
        );
        assert!(bucket_schema("b", &json!({"version": "x"})).is_err());
    }

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
