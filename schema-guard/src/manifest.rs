//! The storage manifest of one revision: every table schema the service asks the table backend
//! for (normalised the way RESTBase's table-spec validator does), its domains, its storage
//! groups, the storage module config version and the table backend module versions.
//!
//! The document is versioned (`format: 1`) and serialisable with
//! [`model::canonical_json`], so the builder can embed it in an artifact manifest
//! (`Manifest.storage`) and the applier can read it back with [`StorageManifest::from_value`].

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::Error;

/// Version of the storage manifest document. Readers refuse versions they do not know.
pub const STORAGE_MANIFEST_FORMAT: u32 = 1;

/// Attribute types the table spec accepts (plus `set<T>` of each).
pub const ATTRIBUTE_TYPES: &[&str] = &[
    "blob",
    "int",
    "varint",
    "decimal",
    "float",
    "double",
    "boolean",
    "string",
    "timeuuid",
    "uuid",
    "timestamp",
    "json",
    "long",
];

/// Where something was declared: a repository-relative path and a 1-based line.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Location {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}", self.path, l),
            None => write!(f, "{}", self.path),
        }
    }
}

/// One table as requested for one domain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableEntry {
    /// Table name (the `table` of the schema, the `<name>` of `/{domain}/sys/table/<name>`).
    pub table: String,
    /// Domain the table is created for.
    pub domain: String,
    /// Normalised version (missing = 1).
    pub version: i64,
    /// `sha256:<hex>` of the normalised schema without its version.
    pub content_hash: String,
    /// The normalised schema, version included.
    pub schema: Value,
    /// Where the schema was declared, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// The storage group the domain resolves to (the first group whose patterns match); `None`
    /// when no group matches or none is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_group: Option<String>,
    /// What the table-spec validator would refuse in this schema (empty when valid).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// A storage group: a name and the domains (strings or `/regex/`) it holds, tried in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageGroup {
    pub name: String,
    pub domains: Vec<String>,
}

/// A value that could not be resolved statically (reported as SG090).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unresolved {
    pub location: Location,
    /// What could not be resolved (an expression, a template).
    pub what: String,
    /// Short digest of what the value depends on (its file and the service config): the same
    /// unresolved value with the same inputs in base and head is not a new risk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<String>,
}

/// The storage manifest of a revision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StorageManifest {
    /// Always [`STORAGE_MANIFEST_FORMAT`].
    pub format: u32,
    /// `static`, `capture`, or `manual` for hand-written manifests.
    #[serde(default = "manual")]
    pub extractor: String,
    /// The commit the manifest was extracted from, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Environment config the manifest was extracted with (e.g. `deploy/env/production.yaml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// Every requested table, sorted by (table, domain).
    #[serde(default)]
    pub tables: Vec<TableEntry>,
    /// Every domain the service serves, sorted.
    #[serde(default)]
    pub domains: Vec<String>,
    /// The table backend flavour from the service config (`sqlite`, `cassandra`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Storage groups in their configured order; `None` when the config declares none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_groups: Option<Vec<StorageGroup>>,
    /// The storage module config `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_version: Option<i64>,
    /// Replication settings of the storage config (`datacenters`, `replication`...), as found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<Value>,
    /// Table backend npm modules and their resolved versions.
    #[serde(default)]
    pub backend_modules: BTreeMap<String, String>,
    /// `skip_resources` / `skip_schema_update` set in the config.
    #[serde(default)]
    pub skip_flags: Vec<String>,
    /// Values the static extractor could not resolve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unresolved: Vec<Unresolved>,
}

impl StorageManifest {
    /// An empty manifest for the given extractor.
    pub fn new(extractor: &str) -> StorageManifest {
        StorageManifest {
            format: STORAGE_MANIFEST_FORMAT,
            extractor: extractor.to_string(),
            commit: None,
            config: None,
            backend: None,
            tables: Vec::new(),
            domains: Vec::new(),
            storage_groups: None,
            storage_version: None,
            replication: None,
            backend_modules: BTreeMap::new(),
            skip_flags: Vec::new(),
            unresolved: Vec::new(),
        }
    }

    /// Sorts tables and domains, removes duplicate (table, domain) entries (first one wins) and
    /// adds every table's domain to `domains`.
    pub fn finish(&mut self) {
        let mut seen = BTreeSet::new();
        self.tables
            .retain(|t| seen.insert((t.table.clone(), t.domain.clone())));
        self.tables
            .sort_by(|a, b| (&a.table, &a.domain).cmp(&(&b.table, &b.domain)));
        // One lookup per domain (group patterns are regexes).
        let mut groups: BTreeMap<String, Option<String>> = BTreeMap::new();
        for i in 0..self.tables.len() {
            if self.tables[i].storage_group.is_none() {
                let d = self.tables[i].domain.clone();
                let g = match groups.get(&d) {
                    Some(g) => g.clone(),
                    None => {
                        let g = self.group_of(&d).map(str::to_string);
                        groups.insert(d, g.clone());
                        g
                    }
                };
                self.tables[i].storage_group = g;
            }
        }
        let mut domains: BTreeSet<String> = self.domains.iter().cloned().collect();
        domains.extend(self.tables.iter().map(|t| t.domain.clone()));
        self.domains = domains.into_iter().collect();
        self.skip_flags.sort();
        self.skip_flags.dedup();
        let mut seen = Vec::new();
        self.unresolved.retain(|u| {
            let key = (u.location.clone(), u.what.clone());
            let new = !seen.contains(&key);
            if new {
                seen.push(key);
            }
            new
        });
    }

    /// The manifest as a JSON value (what `artifact::Manifest.storage` holds).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("manifest serialises")
    }

    /// Canonical JSON bytes (sorted keys, no whitespace).
    pub fn to_canonical_json(&self) -> Vec<u8> {
        model::canonical_json(&self.to_value())
    }

    /// Reads a manifest from a JSON value, refusing unknown formats.
    ///
    /// Hand-written manifests may list raw schemas instead of normalised tables:
    /// `"schemas": [{"domain": "...", "schema": {...}, "location": {"path": "...", "line": 1}}]`;
    /// they are normalised and hashed here.
    pub fn from_value(v: &Value) -> Result<StorageManifest, Error> {
        let format = v.get("format").and_then(Value::as_u64);
        if format != Some(u64::from(STORAGE_MANIFEST_FORMAT)) {
            return Err(Error::Format(format!(
                "storage manifest format {format:?} is not supported (expected {STORAGE_MANIFEST_FORMAT})"
            )));
        }
        let mut v = v.clone();
        let raw = v.as_object_mut().and_then(|o| o.remove("schemas"));
        let mut m: StorageManifest =
            serde_json::from_value(v).map_err(|e| Error::Format(e.to_string()))?;
        if let Some(raw) = raw {
            let items = raw
                .as_array()
                .ok_or_else(|| Error::Format("schemas must be an array".into()))?;
            for item in items {
                let domain = item
                    .get("domain")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Error::Format("schemas[].domain missing".into()))?;
                let schema = item
                    .get("schema")
                    .ok_or_else(|| Error::Format("schemas[].schema missing".into()))?;
                let loc = item
                    .get("location")
                    .map(|l| serde_json::from_value(l.clone()))
                    .transpose()
                    .map_err(|e| Error::Format(e.to_string()))?;
                m.add_table(domain, schema, loc);
            }
            m.finish();
        }
        Ok(m)
    }

    /// Reads a manifest from JSON bytes.
    pub fn from_json(bytes: &[u8]) -> Result<StorageManifest, Error> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| Error::Format(e.to_string()))?;
        StorageManifest::from_value(&v)
    }

    /// The storage group a domain maps to (first group whose patterns match), if any.
    pub fn group_of(&self, domain: &str) -> Option<&str> {
        let groups = self.storage_groups.as_ref()?;
        groups
            .iter()
            .find(|g| g.domains.iter().any(|p| domain_matches(p, domain)))
            .map(|g| g.name.as_str())
    }

    /// Adds a table from a raw schema as the service would send it.
    pub fn add_table(&mut self, domain: &str, raw: &Value, location: Option<Location>) {
        let n = normalise_schema(raw);
        self.tables.push(TableEntry {
            table: n.table,
            domain: domain.to_string(),
            version: n.version,
            content_hash: n.content_hash,
            schema: n.schema,
            location,
            storage_group: None,
            problems: n.problems,
        });
    }
}

fn manual() -> String {
    "manual".to_string()
}

/// Whether a storage group domain pattern (a string, or `/regex/` as in RESTBase config) matches.
pub fn domain_matches(pattern: &str, domain: &str) -> bool {
    if pattern.len() >= 2 && pattern.starts_with('/') && pattern.ends_with('/') {
        match Regex::new(&pattern[1..pattern.len() - 1]) {
            Ok(re) => re.is_match(domain),
            Err(_) => false,
        }
    } else {
        pattern == domain
    }
}

/// A schema after normalisation.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalised {
    pub table: String,
    pub version: i64,
    pub content_hash: String,
    pub schema: Value,
    pub problems: Vec<String>,
}

fn index_rank(t: &str) -> u8 {
    match t {
        "hash" => 0,
        "static" => 1,
        "range" => 2,
        "proj" => 3,
        _ => 4,
    }
}

/// Whether `t` is a table-spec attribute type (`set<T>` included).
pub fn valid_attribute_type(t: &str) -> bool {
    let inner = t
        .strip_prefix("set<")
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(t);
    ATTRIBUTE_TYPES.contains(&inner)
}

/// Normalises a table schema as the table-spec validator does: `version` defaults to 1,
/// `options` to `{}`, the index is ordered hash, static, range, proj (stable within a type),
/// attribute types are validated. The content hash covers everything but the version.
pub fn normalise_schema(raw: &Value) -> Normalised {
    let mut problems = Vec::new();
    let mut obj: Map<String, Value> = raw.as_object().cloned().unwrap_or_default();
    if !raw.is_object() {
        problems.push("schema is not an object".to_string());
    }
    let table = obj
        .get("table")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if table.is_empty() {
        problems.push("schema has no table name".to_string());
    }
    let version = match obj.get("version") {
        None | Some(Value::Null) => 1,
        Some(v) => match v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)) {
            Some(n) => n,
            None => {
                problems.push(format!("version {v} is not a number"));
                1
            }
        },
    };
    obj.insert("version".into(), Value::from(version));
    match obj.get("options") {
        None | Some(Value::Null) => {
            obj.insert("options".into(), Value::Object(Map::new()));
        }
        Some(Value::Object(_)) => {}
        Some(other) => problems.push(format!("options {other} is not an object")),
    }
    let attributes = obj
        .get("attributes")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if !obj.get("attributes").is_some_and(Value::is_object) {
        problems.push("schema has no attributes object".to_string());
    }
    for (name, ty) in &attributes {
        match ty.as_str() {
            Some(t) if valid_attribute_type(t) => {}
            _ => problems.push(format!("attribute {name} has invalid type {ty}")),
        }
    }
    let mut index: Vec<Value> = obj
        .get("index")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    index.sort_by_key(|e| index_rank(e.get("type").and_then(Value::as_str).unwrap_or("")));
    let mut has_hash = false;
    let mut has_range = false;
    let mut has_static = false;
    for e in &index {
        let attr = e.get("attribute").and_then(Value::as_str).unwrap_or("");
        let ty = e.get("type").and_then(Value::as_str).unwrap_or("");
        match ty {
            "hash" => has_hash = true,
            "range" => has_range = true,
            "static" => has_static = true,
            "proj" => {}
            other => problems.push(format!("index entry on {attr} has invalid type {other:?}")),
        }
        if !attributes.contains_key(attr) {
            problems.push(format!("index attribute {attr:?} is not declared"));
        }
        if let Some(order) = e.get("order")
            && !matches!(order.as_str(), Some("asc") | Some("desc"))
        {
            problems.push(format!("index entry on {attr} has invalid order {order}"));
        }
    }
    if !has_hash {
        problems.push("index has no hash key".to_string());
    }
    if has_static && !has_range {
        problems.push("a static index needs a range key".to_string());
    }
    obj.insert("index".into(), Value::Array(index));
    let schema = Value::Object(obj);
    let content_hash = content_hash(&schema);
    Normalised {
        table,
        version,
        content_hash,
        schema,
        problems,
    }
}

/// `sha256:<hex>` of the canonical JSON of a normalised schema without its `version`.
pub fn content_hash(schema: &Value) -> String {
    let mut v = schema.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("version");
    }
    let bytes = model::canonical_json(&v);
    format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_index_order() {
        let n = normalise_schema(&json!({
            "table": "t",
            "attributes": {"k": "string", "r": "timeuuid", "s": "int", "p": "set<string>"},
            "index": [
                {"attribute": "p", "type": "proj"},
                {"attribute": "r", "type": "range", "order": "desc"},
                {"attribute": "s", "type": "static"},
                {"attribute": "k", "type": "hash"}
            ]
        }));
        assert!(n.problems.is_empty(), "{:?}", n.problems);
        assert_eq!(n.version, 1);
        assert_eq!(n.schema["options"], json!({}));
        let types: Vec<&str> = n.schema["index"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["hash", "static", "range", "proj"]);
    }

    #[test]
    fn hash_ignores_version_and_order_of_keys() {
        let a = normalise_schema(&json!({"table": "t", "version": 2,
            "attributes": {"k": "string"}, "index": [{"attribute": "k", "type": "hash"}]}));
        let b = normalise_schema(&json!({"index": [{"type": "hash", "attribute": "k"}],
            "attributes": {"k": "string"}, "table": "t", "options": {}}));
        assert_eq!(a.content_hash, b.content_hash);
        assert_ne!(a.version, b.version);
        let c = normalise_schema(&json!({"table": "t",
            "attributes": {"k": "int"}, "index": [{"attribute": "k", "type": "hash"}]}));
        assert_ne!(a.content_hash, c.content_hash);
    }

    #[test]
    fn invalid_types_and_missing_hash_are_problems() {
        let n = normalise_schema(&json!({"table": "t",
            "attributes": {"k": "text", "r": "int"}, "index": [{"attribute": "r", "type": "static"}]}));
        assert!(n.problems.iter().any(|p| p.contains("invalid type")));
        assert!(n.problems.iter().any(|p| p.contains("no hash key")));
        assert!(n.problems.iter().any(|p| p.contains("needs a range key")));
    }

    #[test]
    fn groups_match_in_order_with_regexes() {
        let mut m = StorageManifest::new("static");
        m.storage_groups = Some(vec![
            StorageGroup {
                name: "test".into(),
                domains: vec!["/^test\\./".into()],
            },
            StorageGroup {
                name: "default".into(),
                domains: vec!["/./".into(), "x.org".into()],
            },
        ]);
        assert_eq!(m.group_of("test.wiki.org"), Some("test"));
        assert_eq!(m.group_of("en.wiki.org"), Some("default"));
        m.storage_groups = Some(vec![StorageGroup {
            name: "g".into(),
            domains: vec!["a.org".into()],
        }]);
        assert_eq!(m.group_of("b.org"), None);
    }

    #[test]
    fn round_trip_and_format_check() {
        let mut m = StorageManifest::new("static");
        m.add_table(
            "a.org",
            &json!({"table": "t", "attributes": {"k": "string"},
            "index": [{"attribute": "k", "type": "hash"}]}),
            None,
        );
        m.finish();
        let back = StorageManifest::from_json(&m.to_canonical_json()).unwrap();
        assert_eq!(back, m);
        let mut v = m.to_value();
        v["format"] = json!(2);
        assert!(StorageManifest::from_value(&v).is_err());
    }
}
