//! Resolving the operator configuration from its layers, with provenance.
//!
//! The configuration is layered: built-in defaults < the YAML file(s) < environment variables
//! < command-line flags. Each layer is a JSON tree merged leaf by leaf; every leaf remembers
//! which layer set it, so `--show-config` can say where each value came from. The library
//! never reads the environment itself: the binary passes the variables it read in
//! [`Layers::env`].
//!
//! Environment variables: `APPLIER_STORE` (the store location) and the generic form
//! `APPLIER__<PATH>` with `__` separating path segments, lower-cased
//! (`APPLIER__ENVS__STAGING__GROUP_SIZE=2`). Flags: `--store` and `--set path=value`
//! (dotted path; the value is parsed as YAML).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde_json::Value;

use super::{Config, EnvConfig};

/// A configuration problem (exit code 64 in the binary).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid YAML: {source}")]
    Yaml {
        path: PathBuf,
        #[source]
        source: serde_norway::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("unknown environment {env:?} (configured: {known})")]
    UnknownEnv { env: String, known: String },
}

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(v) => write!(f, "env {v}"),
            Source::Flag(v) => write!(f, "flag {v}"),
        }
    }
}

/// The inputs of configuration resolution, lowest precedence first.
#[derive(Clone, Debug, Default)]
pub struct Layers {
    /// Config files, merged in order.
    pub files: Vec<PathBuf>,
    /// Environment variables (name, value) as the binary read them; unrelated ones are ignored.
    pub env: Vec<(String, String)>,
    /// `--store`.
    pub store_flag: Option<String>,
    /// `--set path=value`, in order.
    pub sets: Vec<String>,
}

/// The resolved configuration with the origin of every leaf.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub config: Config,
    origins: BTreeMap<String, Source>,
}

impl Layers {
    /// Merges the layers and validates the result.
    pub fn resolve(&self) -> Result<Resolved, ConfigError> {
        let mut tree = Value::Object(Default::default());
        let mut origins = BTreeMap::new();
        for path in &self.files {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let v: Value = if text.trim().is_empty() {
                Value::Object(Default::default())
            } else {
                serde_norway::from_str(&text).map_err(|source| ConfigError::Yaml {
                    path: path.clone(),
                    source,
                })?
            };
            merge(&mut tree, v, "", &Source::File(path.clone()), &mut origins);
        }
        for (name, value) in &self.env {
            let path = if name == "APPLIER_STORE" {
                "store".to_string()
            } else if let Some(rest) = name.strip_prefix("APPLIER__") {
                rest.split("__")
                    .map(|s| s.to_ascii_lowercase())
                    .collect::<Vec<_>>()
                    .join(".")
            } else {
                continue;
            };
            set_path(
                &mut tree,
                &path,
                parse_scalar(value),
                &Source::Env(name.clone()),
                &mut origins,
            )?;
        }
        if let Some(store) = &self.store_flag {
            set_path(
                &mut tree,
                "store",
                Value::String(store.clone()),
                &Source::Flag("--store".into()),
                &mut origins,
            )?;
        }
        for s in &self.sets {
            let (path, value) = s
                .split_once('=')
                .ok_or_else(|| ConfigError::Invalid(format!("--set {s:?}: expected path=value")))?;
            set_path(
                &mut tree,
                path.trim(),
                parse_scalar(value),
                &Source::Flag(format!("--set {}", path.trim())),
                &mut origins,
            )?;
        }
        let config: Config =
            serde_json::from_value(tree).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        validate(&config)?;
        Ok(Resolved { config, origins })
    }
}

fn parse_scalar(s: &str) -> Value {
    serde_norway::from_str::<Value>(s).unwrap_or_else(|_| Value::String(s.to_string()))
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn merge(
    dst: &mut Value,
    src: Value,
    prefix: &str,
    source: &Source,
    origins: &mut BTreeMap<String, Source>,
) {
    match (dst, src) {
        (Value::Object(d), Value::Object(s)) => {
            for (k, v) in s {
                let p = join(prefix, &k);
                let slot = d.entry(k).or_insert(Value::Null);
                if slot.is_object() && v.is_object() {
                    merge(slot, v, &p, source, origins);
                } else {
                    origins.retain(|key, _| !(key == &p || key.starts_with(&format!("{p}."))));
                    record_leaves(&v, &p, source, origins);
                    *slot = v;
                }
            }
        }
        (d, s) => {
            record_leaves(&s, prefix, source, origins);
            *d = s;
        }
    }
}

fn record_leaves(v: &Value, prefix: &str, source: &Source, origins: &mut BTreeMap<String, Source>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                record_leaves(v, &join(prefix, k), source, origins);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, v) in a.iter().enumerate() {
                record_leaves(v, &join(prefix, &i.to_string()), source, origins);
            }
        }
        _ => {
            origins.insert(prefix.to_string(), source.clone());
        }
    }
}

/// Sets a dotted path (or a JSON pointer) in a JSON tree, creating objects (and indexing
/// lists) on the way ([`crate::envconfig::ValuePath`]).
pub fn set_value_path(tree: &mut Value, path: &str, value: Value) -> Result<(), String> {
    crate::envconfig::ValuePath::parse(path)?.set(tree, value)
}

fn set_path(
    tree: &mut Value,
    path: &str,
    value: Value,
    source: &Source,
    origins: &mut BTreeMap<String, Source>,
) -> Result<(), ConfigError> {
    origins.retain(|key, _| !(key == path || key.starts_with(&format!("{path}."))));
    record_leaves(&value, path, source, origins);
    set_value_path(tree, path, value).map_err(ConfigError::Invalid)
}

fn validate(c: &Config) -> Result<(), ConfigError> {
    super::validate::validate(c)?;
    for (name, env) in &c.envs {
        let bad = |m: String| Err(ConfigError::Invalid(format!("envs.{name}: {m}")));
        if env.groups.is_empty() {
            return bad("no groups".into());
        }
        if env.group_size == 0 {
            return bad("group_size must be at least 1".into());
        }
        if env.prefetch_parallelism == 0 {
            return bad("prefetch_parallelism must be at least 1".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for g in &env.groups {
            if g.hosts.is_empty() {
                return bad(format!("group {} has no hosts", g.name));
            }
            for h in &g.hosts {
                if !env.hosts.contains_key(h) {
                    return bad(format!(
                        "group {} names host {h}, which is not under hosts",
                        g.name
                    ));
                }
                if !seen.insert(h.clone()) {
                    return bad(format!("host {h} is in more than one group"));
                }
            }
        }
        for h in env.hosts.keys() {
            if !seen.contains(h) {
                return bad(format!("host {h} is in no group"));
            }
        }
        if let Some(p) = env.capacity.max_out_percent
            && (p == 0 || p > 100)
        {
            return bad("capacity.max_out_percent must be 1..=100".into());
        }
        if env.capacity.max_out == Some(0) {
            return bad("capacity.max_out must be at least 1".into());
        }
        if env
            .require_signature
            .as_ref()
            .is_some_and(|p| p.trusted_keys.is_empty())
        {
            return bad("require_signature.trusted_keys is empty".into());
        }
        let c = &env.checks;
        if let Some(p) =
            super::analysis::problems(c.canary.as_ref(), c.quorum.as_ref(), c.watch.as_ref())
                .into_iter()
                .next()
        {
            return bad(p);
        }
        if let Some(p) = c.extra.iter().find_map(|x| x.problem()) {
            return bad(p);
        }
        for (i, w) in env.freeze.iter().enumerate() {
            crate::freeze::parse(w, i)
                .map_err(|e| ConfigError::Invalid(format!("envs.{name}: {e}")))?;
        }
        for sink in &env.notify {
            use super::policy::{CommandLine, NotifySink};
            match sink {
                NotifySink::Webhook { url, .. }
                    if !(url.starts_with("http://") || url.starts_with("https://")) =>
                {
                    return bad(format!("notify: webhook url {url:?} is not http(s)"));
                }
                NotifySink::Command {
                    command: CommandLine::Argv(a),
                    ..
                } if a.is_empty() => {
                    return bad("notify: empty command".into());
                }
                NotifySink::Command {
                    command: CommandLine::Shell(c),
                    ..
                } if c.trim().is_empty() => {
                    return bad("notify: empty command".into());
                }
                _ => {}
            }
        }
        if let Some(p) = &env.promotion {
            if p.requires.is_empty() {
                return bad("promotion.requires is empty".into());
            }
            if p.requires.iter().any(|r| r == name) {
                return bad("promotion.requires names the environment itself".into());
            }
        }
    }
    Ok(())
}

impl Resolved {
    pub fn env(&self, env: &str) -> Result<&EnvConfig, ConfigError> {
        self.config
            .envs
            .get(env)
            .ok_or_else(|| ConfigError::UnknownEnv {
                env: env.to_string(),
                known: self
                    .config
                    .envs
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Where the value at a dotted path came from.
    pub fn origin(&self, path: &str) -> Source {
        self.origins.get(path).cloned().unwrap_or(Source::Default)
    }

    /// Every leaf of the resolved configuration with its origin, as `path = value  # origin`
    /// lines.
    pub fn show(&self) -> String {
        let tree = serde_json::to_value(&self.config).expect("config serialises");
        let mut leaves = Vec::new();
        collect_leaves(&tree, "", &mut leaves);
        let mut out = String::new();
        for (path, v) in leaves {
            out.push_str(&format!("{path} = {v}  # {}\n", self.origin(&path)));
        }
        out
    }
}

fn collect_leaves(v: &Value, prefix: &str, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                collect_leaves(v, &join(prefix, k), out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, v) in a.iter().enumerate() {
                collect_leaves(v, &join(prefix, &i.to_string()), out);
            }
        }
        _ => out.push((prefix.to_string(), v.clone())),
    }
}
