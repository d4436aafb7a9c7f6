//! The RESTBase config layout, read statically: the service's hyperswitch spec
//! (`services[0].conf.spec`) walked the way hyperswitch loads it.
//!
//! - Domains are the first segment of the root path keys (`/{domain:localhost}/...`).
//! - `x-modules` entries are followed: YAML specs (`path: x.yaml`), inline specs (`spec:`) and
//!   JS modules (`path: x.js`, whose exported factory is evaluated with the module's options,
//!   expanded from the parent's `{{options...}}` as hyperswitch does). A JS module's
//!   `resources` and a method's `x-setup-handler` requests are the storage requests.
//! - The module mounted at `/<domain>/sys/table` is the table storage module: its
//!   `options.conf` holds the backend flavour and the storage groups; it is not evaluated.
//! - Key-value buckets (`/<domain>/sys/key_value/<bucket>`) are built by the `makeSchema`
//!   function of the loaded module mounted at a path ending in `key_value`, evaluated with the
//!   request body (RESTBase's `sys/key_value.js`), with `table` set to the bucket name.
//!
//! Anything that cannot be followed becomes an [`Unresolved`] entry.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use serde_json::{Map, Value};

use super::js::{self, Module};
use super::{Request, Tree, expand, line_of, yaml_to_json};
use crate::manifest::{Location, Unresolved};

/// What the walk found.
#[derive(Debug, Default)]
pub struct Walked {
    pub domains: BTreeSet<String>,
    /// `options.conf` of the table storage module and where it was configured.
    pub table_conf: Option<Value>,
    pub requests: Vec<Request>,
    /// JS modules loaded, with the path they are mounted at (normalised segments).
    pub mounted: Vec<(Vec<String>, String)>,
    pub unresolved: Vec<Unresolved>,
}

/// Deepest module nesting followed.
const MAX_MODULE_DEPTH: usize = 24;

pub struct Walker<'t> {
    pub tree: &'t dyn Tree,
    pub limits: js::Limits,
    pub modules: BTreeMap<String, Option<Rc<Module>>>,
    pub out: Walked,
}

/// `{name:value}` -> value, other segments as written.
fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.strip_prefix('{')
                .and_then(|x| x.strip_suffix('}'))
                .and_then(|x| x.split_once(':'))
                .map_or_else(|| s.to_string(), |(_, v)| v.to_string())
        })
        .collect()
}

fn tree_path(p: &str) -> String {
    let p = p.strip_prefix(js::TREE).unwrap_or(p);
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            x => out.push(x),
        }
    }
    out.join("/")
}

impl Walker<'_> {
    fn unresolved(&mut self, path: &str, line: Option<u32>, what: String) {
        self.out.unresolved.push(Unresolved {
            location: Location {
                path: path.to_string(),
                line,
            },
            what,
            inputs: None,
        });
    }

    /// Walks a spec object loaded from `file` (config, YAML module or JS module spec).
    pub fn spec(
        &mut self,
        spec: &Value,
        file: &str,
        prefix: &[String],
        options: &Value,
        depth: usize,
    ) {
        if let Some(w) = js::as_unresolved(spec) {
            self.unresolved(
                &w.path,
                Some(w.line),
                format!("the spec `{}` ({})", w.text, w.reason),
            );
            return;
        }
        let Some(paths) = spec.get("paths").and_then(Value::as_object) else {
            return;
        };
        for (key, item) in paths {
            let mut at = prefix.to_vec();
            at.extend(segments(key));
            if prefix.is_empty() {
                match at.first() {
                    Some(d) if !d.starts_with('{') => {
                        self.out.domains.insert(d.clone());
                    }
                    _ => self.unresolved(
                        file,
                        None,
                        format!("the domain of spec path {key:?} (not a fixed value)"),
                    ),
                }
            }
            self.path_item(item, file, &at, options, depth);
        }
    }

    fn path_item(
        &mut self,
        item: &Value,
        file: &str,
        at: &[String],
        options: &Value,
        depth: usize,
    ) {
        let Some(item) = item.as_object() else { return };
        if let Some(mods) = item.get("x-modules") {
            match mods.as_array() {
                Some(list) => {
                    for m in list {
                        self.module(m, file, at, options, depth + 1);
                    }
                }
                None => self.unresolved(
                    file,
                    None,
                    format!("x-modules of /{} (not a list)", at.join("/")),
                ),
            }
        }
        for (method, spec) in item {
            if method.starts_with("x-") {
                continue;
            }
            if let Some(setup) = spec.get("x-setup-handler") {
                self.setup(setup, file, at);
            }
        }
    }

    fn setup(&mut self, setup: &Value, file: &str, at: &[String]) {
        let text = self.tree.read_text(file).unwrap_or_default();
        let Some(list) = setup.as_array() else {
            self.unresolved(file, None, "an x-setup-handler that is not a list".into());
            return;
        };
        for item in list {
            for (name, request) in item.as_object().into_iter().flatten() {
                let line = line_of(&text, &format!("{name}:"));
                self.request(request.clone(), file, line, at);
            }
        }
    }

    fn request(&mut self, mut request: Value, file: &str, line: Option<u32>, at: &[String]) {
        let mut body = request
            .get("body")
            .cloned()
            .unwrap_or(Value::Object(Map::new()));
        // Where the schema was written: the body's literal, else the request's.
        let origin = js::strip_lines(&mut body).or(js::strip_lines(&mut request));
        let domain = at.first().cloned().unwrap_or_default();
        self.out.requests.push(Request {
            domain: Some(domain),
            uri: request.get("uri").cloned().unwrap_or(Value::Null),
            body,
            location: Location {
                path: file.to_string(),
                line: origin.or(line),
            },
        });
    }

    fn module(&mut self, def: &Value, file: &str, at: &[String], parent: &Value, depth: usize) {
        if depth > MAX_MODULE_DEPTH {
            self.unresolved(
                file,
                None,
                format!(
                    "modules nested deeper than {MAX_MODULE_DEPTH} at /{}",
                    at.join("/")
                ),
            );
            return;
        }
        let ctx = serde_json::json!({ "options": parent });
        let options = match def.get("options") {
            None => Value::Object(Map::new()),
            Some(o) => match expand(o, &ctx) {
                Ok(v) => v,
                Err(t) => {
                    self.unresolved(
                        file,
                        None,
                        format!("template {t} in module options at /{}", at.join("/")),
                    );
                    return;
                }
            },
        };
        if let Some(inline) = def.get("spec") {
            self.spec(inline, file, at, &options, depth);
            return;
        }
        let Some(path) = def.get("path").and_then(Value::as_str) else {
            let what = def.get("name").and_then(Value::as_str).unwrap_or("?");
            self.unresolved(
                file,
                None,
                format!(
                    "module {what:?} at /{} is not a file of the tree",
                    at.join("/")
                ),
            );
            return;
        };
        let path = tree_path(path);
        if path.ends_with(".yaml") || path.ends_with(".yml") {
            match self.tree.read_text(&path) {
                Some(text) => match yaml_to_json(&text, &path) {
                    Ok(spec) => self.spec(&spec, &path, at, &options, depth),
                    Err(e) => self.unresolved(&path, None, e.to_string()),
                },
                None => self.unresolved(file, None, format!("module {path} is not in the tree")),
            }
            return;
        }
        if at.len() >= 2 && at[at.len() - 2] == "sys" && at[at.len() - 1] == "table" {
            match options.get("conf") {
                Some(conf) if self.out.table_conf.as_ref().is_none_or(|c| c == conf) => {
                    self.out.table_conf = Some(conf.clone());
                }
                Some(_) => self.unresolved(
                    file,
                    None,
                    "two table modules with different options".into(),
                ),
                None => self.unresolved(
                    file,
                    None,
                    format!("the table module {path} has no options.conf"),
                ),
            }
            return;
        }
        let Some(m) = self.load(&path, file) else {
            return;
        };
        self.out.mounted.push((at.to_vec(), path.clone()));
        let exported = match m.call_exports(vec![js::from_json(&options)]) {
            Ok(Some(v)) => v.to_json(),
            Ok(None) => {
                self.unresolved(&path, None, "a module without module.exports".into());
                return;
            }
            Err(e) => {
                self.unresolved(&path, None, format!("its exports cannot be read: {e}"));
                return;
            }
        };
        if let Some(w) = js::as_unresolved(&exported) {
            self.unresolved(
                &path,
                Some(w.line),
                format!("what the module exports: `{}` ({})", w.text, w.reason),
            );
            return;
        }
        match exported.get("resources") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for r in items {
                    if let Some(w) = js::as_unresolved(r) {
                        self.unresolved(
                            &path,
                            Some(w.line),
                            format!("a resource `{}` ({})", w.text, w.reason),
                        );
                    } else {
                        self.request(r.clone(), &path, None, at);
                    }
                }
            }
            Some(other) => {
                let w = js::as_unresolved(other);
                self.unresolved(
                    &path,
                    w.as_ref().map(|w| w.line),
                    format!(
                        "the module's resources{}",
                        w.map(|w| format!(" `{}` ({})", w.text, w.reason))
                            .unwrap_or_default()
                    ),
                );
            }
        }
        match exported.get("spec") {
            Some(s) if s.get(js::SPEC_FILE).is_some() => {
                let file = tree_path(s[js::SPEC_FILE].as_str().unwrap_or_default());
                match self.tree.read_text(&file).map(|t| yaml_to_json(&t, &file)) {
                    Some(Ok(spec)) => self.spec(&spec, &file, at, &options, depth),
                    Some(Err(e)) => self.unresolved(&file, None, e.to_string()),
                    None => {
                        self.unresolved(&path, None, format!("its spec {file} is not in the tree"))
                    }
                }
            }
            Some(s) => self.spec(s, &path, at, &options, depth),
            None => {}
        }
    }

    /// A JS module of the tree, parsed once.
    pub fn load(&mut self, path: &str, from: &str) -> Option<Rc<Module>> {
        if let Some(m) = self.modules.get(path) {
            return m.clone();
        }
        let m = match self.tree.read_text(path) {
            None => {
                self.unresolved(from, None, format!("module {path} is not in the tree"));
                None
            }
            Some(src) => match Module::parse(path, &src, self.limits) {
                Ok(m) => Some(Rc::new(m)),
                Err(e) => {
                    self.unresolved(path, None, format!("the static reader cannot read it: {e}"));
                    None
                }
            },
        };
        self.modules.insert(path.to_string(), m.clone());
        m
    }

    /// The bucket schema of `/<domain>/sys/key_value/<bucket>`: `makeSchema(body)` of the
    /// mounted key-value module, with the bucket as table name.
    pub fn bucket(&mut self, domain: &str, bucket: &str, body: &Value) -> Result<Value, String> {
        let candidates: Vec<String> = self
            .out
            .mounted
            .iter()
            .filter(|(at, _)| {
                at.first().map(String::as_str) == Some(domain)
                    && at.last().is_some_and(|s| s == "key_value")
            })
            .map(|(_, p)| p.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for path in candidates {
            let Some(m) = self.load(&path, &path) else {
                continue;
            };
            match m.call_function("makeSchema", vec![js::from_json(body)]) {
                Ok(None) => continue,
                Ok(Some(v)) => {
                    let mut s = v.to_json();
                    js::strip_lines(&mut s);
                    if let Some(w) = js::as_unresolved(&s) {
                        return Err(format!(
                            "bucket {bucket}: makeSchema in {path}:{} (`{}`: {})",
                            w.line, w.text, w.reason
                        ));
                    }
                    if let Some(o) = s.as_object_mut() {
                        o.insert("table".into(), Value::String(bucket.to_string()));
                    }
                    return Ok(s);
                }
                Err(e) => {
                    return Err(format!(
                        "bucket {bucket}: makeSchema in {path} cannot be read: {e}"
                    ));
                }
            }
        }
        Err(format!(
            "bucket {bucket}: no key_value module with makeSchema is mounted for {domain}"
        ))
    }
}
