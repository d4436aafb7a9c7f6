//! Config files for tests, written by serialising the real config types (so a test config
//! that the tool would refuse fails at set-up, not as a confusing test failure), with YAML
//! fragments merged in where a test only adds a few keys.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Parses a YAML fragment (e.g. a few keys of an environment block) into a JSON value.
/// An empty fragment is an empty mapping.
pub fn yaml(text: &str) -> Value {
    if text.trim().is_empty() {
        return Value::Object(Default::default());
    }
    serde_norway::from_str(text).unwrap_or_else(|e| panic!("bad YAML fragment {text:?}: {e}"))
}

/// Merges `over` into `base`: mappings key by key (recursively), anything else replaces.
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

/// `value` with `over` merged in, read back as `T` (the real type validates the result).
pub fn merged<T: Serialize + DeserializeOwned>(value: &T, over: Value) -> T {
    let mut v = serde_json::to_value(value).expect("serialising a config value");
    merge(&mut v, over);
    serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("the merged config is refused by its type: {e}\n{v:#}"))
}

/// Writes `value` as YAML to `path`.
pub fn write_yaml<T: Serialize>(path: &Path, value: &T) {
    let text = serde_norway::to_string(value).expect("serialising to YAML");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_is_deep_for_mappings_and_replaces_the_rest() {
        let mut a = yaml("a: {b: 1, c: [1, 2]}\nd: x\n");
        merge(&mut a, yaml("a: {c: [3], e: true}\n"));
        assert_eq!(a, yaml("a: {b: 1, c: [3], e: true}\nd: x\n"));
        assert_eq!(yaml("  "), serde_json::json!({}));
    }
}
