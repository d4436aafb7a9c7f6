//! The packages of an npm lockfile (`package-lock.json` v1, v2 or v3), and what changed
//! between two: added, removed, and changed versions. A nested package is named by its path
//! (`a > b`: `b` installed under `a`).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DepsChange {
    pub added: Vec<(String, String)>,
    pub removed: Vec<(String, String)>,
    /// (package, from, to).
    pub changed: Vec<(String, String, String)>,
}

impl DepsChange {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Package path -> version.
pub fn packages(lock: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(pk) = lock.get("packages").and_then(Value::as_object) {
        for (path, p) in pk {
            let Some(rest) = path.strip_prefix("node_modules/") else {
                continue; // the root package, or a workspace member
            };
            let name = rest.replace("/node_modules/", " > ");
            let v = p.get("version").and_then(Value::as_str).unwrap_or("?");
            out.insert(name, v.to_string());
        }
        return out;
    }
    fn v1(deps: &Value, prefix: &str, out: &mut BTreeMap<String, String>) {
        let Some(m) = deps.as_object() else { return };
        for (name, d) in m {
            let full = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix} > {name}")
            };
            let v = d.get("version").and_then(Value::as_str).unwrap_or("?");
            out.insert(full.clone(), v.to_string());
            if let Some(sub) = d.get("dependencies") {
                v1(sub, &full, out);
            }
        }
    }
    if let Some(d) = lock.get("dependencies") {
        v1(d, "", &mut out);
    }
    out
}

pub fn diff(a: &Value, b: &Value) -> DepsChange {
    let (pa, pb) = (packages(a), packages(b));
    let mut c = DepsChange::default();
    for (n, v) in &pb {
        match pa.get(n) {
            None => c.added.push((n.clone(), v.clone())),
            Some(old) if old != v => c.changed.push((n.clone(), old.clone(), v.clone())),
            Some(_) => {}
        }
    }
    for (n, v) in &pa {
        if !pb.contains_key(n) {
            c.removed.push((n.clone(), v.clone()));
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn v3_and_v1_lockfiles() {
        let a = json!({"lockfileVersion": 3, "packages": {
            "": {"name": "svc"},
            "node_modules/js-yaml": {"version": "4.1.0"},
            "node_modules/@scope/x": {"version": "1.0.0"},
            "node_modules/a/node_modules/b": {"version": "2.0.0"}}});
        let b = json!({"lockfileVersion": 3, "packages": {
            "node_modules/js-yaml": {"version": "4.1.1"},
            "node_modules/@scope/x": {"version": "1.0.0"},
            "node_modules/c": {"version": "0.1.0"}}});
        let d = diff(&a, &b);
        assert_eq!(d.added, [("c".to_string(), "0.1.0".to_string())]);
        assert_eq!(d.removed, [("a > b".to_string(), "2.0.0".to_string())]);
        assert_eq!(
            d.changed,
            [(
                "js-yaml".to_string(),
                "4.1.0".to_string(),
                "4.1.1".to_string()
            )]
        );
        let v1 = json!({"lockfileVersion": 1, "dependencies": {"a": {"version": "1", "dependencies": {"b": {"version": "2"}}}}});
        let p = packages(&v1);
        assert_eq!(p.get("a > b").map(String::as_str), Some("2"));
        assert!(diff(&v1, &v1).is_empty());
    }
}
