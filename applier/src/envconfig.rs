//! The service config a release runs with, from its three layers, merged at render time on
//! the target.
//!
//! | layer | owned by | where it lives |
//! |---|---|---|
//! | code and schema config | the service's developers | `deploy/env/<env>.yaml` inside the artifact |
//! | inventory values | operators | `envs.<env>.values` and `envs.<env>.hosts.<h>.values` of the inventory |
//! | host ops file | operators (configuration management) | `/etc/<service>/ops.yaml` on the host (or `ops_file`) |
//!
//! Precedence, lowest first: the artifact's env config, the host's port (at the service's
//! `config.port_path`), the inventory's env values, its host values, the host's ops file. A
//! value of either operator layer whose key the artifact's env config also sets (the key, or
//! anything below or above it) is refused, unless `deploy/service.yaml` declares that key, or
//! one above it, ops-owned (`config.ops_owned`). Keys the env config does not set are the
//! operators' to add.
//!
//! Keys are JSON pointers (RFC 6901: `/services/0/conf/storage/path`, `~1` for a `/` and `~0`
//! for a `~` inside a key, so any key can be addressed) or, for compatibility, dotted paths
//! (`services.0.conf.storage.path`, which cannot address a key containing a dot). A segment
//! indexes a list when the node is a list.
//!
//! Values of the host's ops file never leave the host: [`masked_yaml`] shows them as
//! [`MASK`], as it does any value under a key that looks like a secret ([`is_secret_key`]),
//! and no error here quotes a value.

use std::collections::{BTreeMap, BTreeSet};

use model::service::ConfigSpec;
use serde::Deserialize;
use serde_json::Value;

/// What a masked value is shown as.
pub const MASK: &str = "<masked>";

/// The default place of a host's ops file; `{service}` is the service's name.
pub const DEFAULT_OPS_FILE: &str = "/etc/{service}/ops.yaml";

/// A key in a config tree: its segments, unescaped.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ValuePath(Vec<String>);

impl ValuePath {
    /// Parses a JSON pointer (`/a/b~1c`) or a dotted path (`a.b`).
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s == "/" {
            return Err(format!("{s:?}: a key must name something below the root"));
        }
        let segs: Vec<String> = if let Some(rest) = s.strip_prefix('/') {
            rest.split('/')
                .map(|seg| unescape(seg).ok_or_else(|| format!("{s:?}: `~` must be `~0` or `~1`")))
                .collect::<Result<_, _>>()?
        } else {
            s.split('.').map(str::to_string).collect()
        };
        if segs.iter().any(String::is_empty) {
            return Err(format!("{s:?}: empty segment"));
        }
        Ok(ValuePath(segs))
    }

    /// The key as a JSON pointer.
    pub fn pointer(&self) -> String {
        self.0
            .iter()
            .map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1")))
            .collect()
    }

    /// True if `self` is `other` or lies above it.
    pub fn covers(&self, other: &ValuePath) -> bool {
        other.0.starts_with(&self.0)
    }

    /// Sets the key, creating objects (and appending to a list at its length) on the way.
    pub fn set(&self, tree: &mut Value, value: Value) -> Result<(), String> {
        let mut cur = tree;
        for (i, seg) in self.0.iter().enumerate() {
            let last = i + 1 == self.0.len();
            if cur.is_null() {
                *cur = Value::Object(Default::default());
            }
            cur = match cur {
                Value::Object(m) => {
                    if last {
                        m.insert(seg.clone(), value);
                        return Ok(());
                    }
                    m.entry(seg.clone()).or_insert(Value::Null)
                }
                Value::Array(a) => {
                    let idx: usize = seg.parse().map_err(|_| {
                        format!("{}: {seg:?} is not an index into a list", self.pointer())
                    })?;
                    if idx > a.len() {
                        return Err(format!(
                            "{}: index {idx} past the end of a list of {}",
                            self.pointer(),
                            a.len()
                        ));
                    }
                    if idx == a.len() {
                        a.push(Value::Null);
                    }
                    if last {
                        a[idx] = value;
                        return Ok(());
                    }
                    &mut a[idx]
                }
                // The value is not quoted: it may be a secret.
                other => {
                    return Err(format!(
                        "{}: {seg:?} goes through a {}",
                        self.pointer(),
                        kind(other)
                    ));
                }
            };
        }
        unreachable!("the loop returns on the last segment")
    }

    /// The node at this key, if there is one.
    pub fn get<'a>(&self, tree: &'a Value) -> Option<&'a Value> {
        self.0.iter().try_fold(tree, |cur, seg| match cur {
            Value::Object(m) => m.get(seg),
            Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        })
    }
}

fn unescape(seg: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = seg.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

/// The host's ops file: `values`, key -> value.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsFile {
    #[serde(default)]
    pub values: BTreeMap<String, Value>,
}

impl OpsFile {
    /// Parses an ops file's text; `path` names it in errors, which give the place and never
    /// the text (it holds secrets).
    pub fn parse(text: &str, path: &str) -> Result<OpsFile, String> {
        if text.trim().is_empty() {
            return Ok(OpsFile::default());
        }
        serde_norway::from_str(text).map_err(|e| match e.location() {
            Some(l) => format!(
                "{path}: not a valid ops file at line {} column {} (expected `values: {{<key>: <value>}}`)",
                l.line(),
                l.column()
            ),
            None => format!("{path}: not a valid ops file (expected `values: {{<key>: <value>}}`)"),
        })
    }
}

/// One operator layer: where it comes from, and its values.
#[derive(Clone, Debug)]
pub struct Layer<'a> {
    /// For messages: `inventory`, `host file /etc/x/ops.yaml`.
    pub name: String,
    pub values: &'a BTreeMap<String, Value>,
    /// Values of the host's ops file: masked wherever the config is shown.
    pub masked: bool,
}

/// A rendered config and the keys whose values are masked when it is shown.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub tree: Value,
    pub masked: BTreeSet<ValuePath>,
}

/// Merges `base` (the artifact's env config; `env_file` names it in errors), the port and the
/// operator layers, in that order, refusing operator keys the artifact owns.
pub fn render(
    base: Value,
    env_file: &str,
    spec: &ConfigSpec,
    port: Option<u16>,
    layers: &[Layer<'_>],
) -> Result<Rendered, String> {
    let owned: Vec<ValuePath> = spec
        .ops_owned
        .iter()
        .map(|p| {
            ValuePath::parse(p).map_err(|e| format!("deploy/service.yaml config.ops_owned: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let artifact_keys = keys_of(&base);
    let mut tree = base;
    if let Some(port) = port {
        ValuePath::parse(&spec.port_path)
            .and_then(|p| p.set(&mut tree, port.into()))
            .map_err(|e| format!("config.port_path: {e}"))?;
    }
    let mut masked = BTreeSet::new();
    for layer in layers {
        for (key, value) in layer.values {
            let path = ValuePath::parse(key).map_err(|e| format!("{}: {e}", layer.name))?;
            let clash = artifact_keys
                .iter()
                .find(|k| k.covers(&path) || path.covers(k));
            if let Some(k) = clash
                && !owned.iter().any(|o| o.covers(&path))
            {
                return Err(format!(
                    "{} sets {}, which {env_file} of the release owns ({}); an operator value may replace it only if deploy/service.yaml declares it ops-owned (config.ops_owned)",
                    layer.name,
                    path.pointer(),
                    k.pointer()
                ));
            }
            path.set(&mut tree, value.clone())
                .map_err(|e| format!("{}: {e}", layer.name))?;
            if layer.masked {
                masked.insert(path);
            } else {
                masked.retain(|m| !path.covers(m));
            }
        }
    }
    Ok(Rendered { tree, masked })
}

/// Every leaf key of a tree (an empty map or list counts as a leaf).
fn keys_of(v: &Value) -> Vec<ValuePath> {
    fn walk(v: &Value, at: &mut Vec<String>, out: &mut Vec<ValuePath>) {
        let children: Vec<(String, &Value)> = match v {
            Value::Object(m) if !m.is_empty() => m.iter().map(|(k, v)| (k.clone(), v)).collect(),
            Value::Array(a) if !a.is_empty() => a
                .iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v))
                .collect(),
            _ => {
                if !at.is_empty() {
                    out.push(ValuePath(at.clone()));
                }
                return;
            }
        };
        for (k, c) in children {
            at.push(k);
            walk(c, at, out);
            at.pop();
        }
    }
    let mut out = Vec::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// True for a key whose value is shown masked wherever it comes from: it names a password,
/// secret, token, credential, private key or API key.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace(['-', '_'], "");
    [
        "password",
        "passwd",
        "secret",
        "token",
        "credential",
        "privatekey",
        "apikey",
    ]
    .iter()
    .any(|w| k.contains(w))
}

/// The rendered config as YAML, with every value of the host's ops file and every value
/// under a secret-looking key replaced by [`MASK`].
pub fn masked_yaml(r: &Rendered) -> String {
    let mut tree = r.tree.clone();
    for p in &r.masked {
        if p.get(&tree).is_some() {
            let _ = p.set(&mut tree, Value::String(MASK.into()));
        }
    }
    mask_secret_keys(&mut tree);
    serde_norway::to_string(&tree).unwrap_or_default()
}

fn mask_secret_keys(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, c) in m.iter_mut() {
                if is_secret_key(k) && !c.is_null() {
                    *c = Value::String(MASK.into());
                } else {
                    mask_secret_keys(c);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask_secret_keys),
        _ => {}
    }
}

/// Where a host's ops file is: `configured` (the host's `ops_file`, else the env's) with
/// `{service}` substituted, else [`DEFAULT_OPS_FILE`]. Returns the path and whether the file
/// must exist (it must when configured; the default may be absent).
pub fn ops_file_path(configured: Option<&str>, service: &str) -> (String, bool) {
    match configured {
        Some(p) => (p.replace("{service}", service), true),
        None => (DEFAULT_OPS_FILE.replace("{service}", service), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(owned: &[&str]) -> ConfigSpec {
        ConfigSpec {
            ops_owned: owned.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn vals(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn pointers_address_any_key_and_dotted_paths_still_work() {
        let mut t = json!({"services": [{"conf": {"a.b": 1, "x/y": {"~": 2}}}]});
        ValuePath::parse("/services/0/conf/a.b")
            .unwrap()
            .set(&mut t, 10.into())
            .unwrap();
        ValuePath::parse("/services/0/conf/x~1y/~0")
            .unwrap()
            .set(&mut t, 20.into())
            .unwrap();
        ValuePath::parse("services.0.conf.port")
            .unwrap()
            .set(&mut t, 7.into())
            .unwrap();
        assert_eq!(
            t,
            json!({"services": [{"conf": {"a.b": 10, "x/y": {"~": 20}, "port": 7}}]})
        );
        let p = ValuePath::parse("/a~1b/c~0").unwrap();
        assert_eq!(p.pointer(), "/a~1b/c~0");
        assert_eq!(
            ValuePath::parse("a.b").unwrap(),
            ValuePath::parse("/a/b").unwrap()
        );
        for bad in ["", "/", "/a//b", "a..b", "/a~2"] {
            assert!(ValuePath::parse(bad).is_err(), "{bad:?}");
        }
        let mut s = json!({"a": "hunter2"});
        let e = ValuePath::parse("/a/b")
            .unwrap()
            .set(&mut s, 1.into())
            .unwrap_err();
        assert!(e.contains("string") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn precedence_is_artifact_port_inventory_then_host_file() {
        let base = json!({"services": [{"conf": {"port": 1, "storage": {"path": "/a"}}}]});
        let inv = vals(&[
            ("services.0.conf.storage.path", json!("/inv")),
            ("/services/0/conf/host", json!("10.0.0.1")),
        ]);
        let host = vals(&[("/services/0/conf/storage/path", json!("/host"))]);
        let r = render(
            base,
            "deploy/env/test.yaml",
            &spec(&["/services/0/conf/storage"]),
            Some(7231),
            &[
                Layer {
                    name: "inventory".into(),
                    values: &inv,
                    masked: false,
                },
                Layer {
                    name: "host file ops.yaml".into(),
                    values: &host,
                    masked: true,
                },
            ],
        )
        .unwrap();
        assert_eq!(
            r.tree,
            json!({"services": [{"conf": {"port": 7231, "host": "10.0.0.1", "storage": {"path": "/host"}}}]})
        );
        let shown = masked_yaml(&r);
        assert!(shown.contains(MASK) && !shown.contains("/host"), "{shown}");
        assert!(shown.contains("10.0.0.1"), "{shown}");
    }

    #[test]
    fn an_operator_key_the_artifact_owns_is_refused_unless_declared_ops_owned() {
        let base = json!({"services": [{"conf": {"marker": "m", "storage": {"path": "/a"}}}]});
        let host = vals(&[("/services/0/conf/marker", json!("x"))]);
        let layer = [Layer {
            name: "host file /etc/s/ops.yaml".into(),
            values: &host,
            masked: true,
        }];
        let e = render(
            base.clone(),
            "deploy/env/test.yaml",
            &spec(&[]),
            None,
            &layer,
        )
        .unwrap_err();
        assert!(
            e.contains("/services/0/conf/marker")
                && e.contains("ops_owned")
                && e.contains("/etc/s/ops.yaml"),
            "{e}"
        );
        // Replacing a whole subtree the artifact sets is a collision too.
        let sub = vals(&[("/services/0/conf/storage", json!({"path": "/b"}))]);
        let layer = [Layer {
            name: "inventory".into(),
            values: &sub,
            masked: false,
        }];
        assert!(render(base.clone(), "f", &spec(&[]), None, &layer).is_err());
        assert!(
            render(
                base.clone(),
                "f",
                &spec(&["/services/0/conf/storage"]),
                None,
                &layer
            )
            .is_ok()
        );
        // A key the artifact does not set is the operators'.
        let new = vals(&[("/services/0/conf/secrets/api_key", json!("k"))]);
        let layer = [Layer {
            name: "inventory".into(),
            values: &new,
            masked: false,
        }];
        let r = render(base, "f", &spec(&[]), None, &layer).unwrap();
        assert!(
            masked_yaml(&r).contains(MASK),
            "a secret-looking key is masked"
        );
    }

    #[test]
    fn ops_file_errors_never_quote_the_file() {
        let e =
            OpsFile::parse("values:\n  /a: [unclosed hunter2\n", "/etc/s/ops.yaml").unwrap_err();
        assert!(
            e.contains("/etc/s/ops.yaml") && !e.contains("hunter2"),
            "{e}"
        );
        let e = OpsFile::parse("valeus: {a: hunter2}\n", "f").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        assert_eq!(
            OpsFile::parse("values: {/a: 1}", "f").unwrap().values.len(),
            1
        );
        assert_eq!(
            ops_file_path(None, "svc"),
            ("/etc/svc/ops.yaml".into(), false)
        );
        assert_eq!(
            ops_file_path(Some("ops.yaml"), "svc"),
            ("ops.yaml".into(), true)
        );
    }
}
