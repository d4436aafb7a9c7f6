//! The fixture service's config layout (`fixtures/service`): domains in
//! `services[0].conf.domains`, the table backend config in `services[0].conf.storage`, tables
//! from every `sys/*.js` module's exported `resources` (the factory called with
//! `services[0].conf.options`) and from `x-setup-handler` lists of `projects/*.yaml`, with
//! `{{options.x}}` templates resolved from the same options, applied to every domain.
//! Key-value buckets follow the fixture contract ([`bucket_schema`]) unless the tree's
//! `sys/key_value.js` has a RESTBase-style `makeSchema`.

use serde_json::{Map, Value, json};

use super::js::{self, Module};
use super::{Request, Tree, expand, line_of, yaml_to_json};
use crate::manifest::{Location, Unresolved};

/// Storage requests of the fixture layout.
pub fn requests(
    tree: &dyn Tree,
    options: &Value,
    limits: js::Limits,
    unresolved: &mut Vec<Unresolved>,
) -> Vec<Request> {
    let mut out = Vec::new();
    let mut miss = |path: &str, line: Option<u32>, what: String| {
        unresolved.push(Unresolved {
            location: Location {
                path: path.to_string(),
                line,
            },
            what,
            inputs: None,
        })
    };
    let ctx = json!({ "options": options });
    for path in tree.paths() {
        let in_dir = |d: &str, ext: &str| {
            path.strip_prefix(d)
                .is_some_and(|rest| !rest.contains('/') && rest.ends_with(ext))
        };
        if in_dir("sys/", ".js") {
            let Some(src) = tree.read_text(&path) else {
                continue;
            };
            let m = match Module::parse(&path, &src, limits) {
                Ok(m) => m,
                Err(e) => {
                    miss(
                        &path,
                        None,
                        format!("the static reader cannot read it: {e}"),
                    );
                    continue;
                }
            };
            let exported = match m.call_exports(vec![js::from_json(options)]) {
                Ok(Some(v)) => v.to_json(),
                Ok(None) => continue,
                Err(e) => {
                    miss(&path, None, format!("its exports cannot be read: {e}"));
                    continue;
                }
            };
            let resources = exported.get("resources").cloned().unwrap_or(Value::Null);
            if let Some(w) = js::as_unresolved(&exported).or_else(|| js::as_unresolved(&resources))
            {
                miss(
                    &path,
                    Some(w.line),
                    format!("the module's resources `{}` ({})", w.text, w.reason),
                );
                continue;
            }
            for r in resources.as_array().into_iter().flatten() {
                let mut r = r.clone();
                let mut body = r.get("body").cloned().unwrap_or(Value::Object(Map::new()));
                let line = js::strip_lines(&mut body).or(js::strip_lines(&mut r));
                out.push(Request {
                    domain: None,
                    uri: r.get("uri").cloned().unwrap_or(Value::Null),
                    body,
                    location: Location {
                        path: path.clone(),
                        line,
                    },
                });
            }
        } else if in_dir("projects/", ".yaml") {
            let Some(text) = tree.read_text(&path) else {
                continue;
            };
            if !text.contains("x-setup-handler") {
                continue;
            }
            let doc = match yaml_to_json(&text, &path) {
                Ok(d) => d,
                Err(e) => {
                    miss(&path, None, e.to_string());
                    continue;
                }
            };
            for item in doc
                .get("x-setup-handler")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                for (name, request) in item.as_object().into_iter().flatten() {
                    let line = line_of(&text, &format!("{name}:"));
                    match expand(request, &ctx) {
                        Ok(r) => out.push(Request {
                            domain: None,
                            uri: r.get("uri").cloned().unwrap_or(Value::Null),
                            body: r.get("body").cloned().unwrap_or(Value::Object(Map::new())),
                            location: Location {
                                path: path.clone(),
                                line,
                            },
                        }),
                        Err(t) => miss(
                            &path,
                            line,
                            format!(
                                "template {t} in setup request {name} (not a literal in the service config)"
                            ),
                        ),
                    }
                }
            }
        }
    }
    out
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
}
