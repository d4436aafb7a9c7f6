//! Unit tests of the static JavaScript reader.

use serde_json::json;

use super::*;

fn module(src: &str) -> Module {
    Module::parse("sys/m.js", src, Limits::default()).expect("parses")
}

fn exports_json(src: &str, options: serde_json::Value) -> serde_json::Value {
    let mut v = module(src)
        .call_exports(vec![from_json(&options)])
        .unwrap()
        .unwrap()
        .to_json();
    strip_lines(&mut v);
    v
}

#[test]
fn constants_methods_and_templates_resolve() {
    let src = r#"'use strict';
const HyperSwitch = require('hyperswitch');
const spec = HyperSwitch.utils.loadSpec(`${__dirname}/m.yaml`);
const tableName = 'title_revisions-ng';
class PRS {
    constructor(options) { this.options = options; }
    getTableSchema() {
        return {
            table: tableName,
            version: 2,
            attributes: { title: 'string', rev: 'int' },
            index: [{ attribute: 'title', type: 'hash' }]
        };
    }
}
module.exports = (options = {}) => {
    const prs = new PRS(options);
    return {
        spec,
        operations: { x: prs.getTableSchema.bind(prs) },
        resources: [
            { uri: `/{domain}/sys/table/${tableName}`, body: prs.getTableSchema() },
            { uri: '/{domain}/sys/key_value/b', body: { ttl: options.grace_ttl || 86400 } }
        ]
    };
};
"#;
    let v = exports_json(src, json!({}));
    assert_eq!(v["spec"], json!({SPEC_FILE: format!("{TREE}sys/m.yaml")}));
    assert_eq!(
        v["resources"][0]["uri"],
        "/{domain}/sys/table/title_revisions-ng"
    );
    assert_eq!(v["resources"][0]["body"]["table"], "title_revisions-ng");
    assert_eq!(v["resources"][0]["body"]["version"], 2);
    // `options` was passed to a constructor: it may have changed, so it is not guessed.
    let mut u = Vec::new();
    unresolved_leaves(&v["resources"][1], "", &mut u);
    assert_eq!(u.len(), 1, "{u:?}");
    assert_eq!(u[0].0, "body.ttl");
    assert_eq!(u[0].1.line, 23);
    assert_eq!(u[0].1.text, "options.grace_ttl || 86400");
}

#[test]
fn key_value_make_schema_evaluates_with_a_body() {
    let src = r#"
class KVBucket {
    makeSchema(opts) {
        const schemaVersionMajor = 5;
        return {
            version: schemaVersionMajor * 1000 + (opts.version || 0),
            options: {
                compression: opts.compression || [{ algorithm: 'deflate', block_size: 256 }],
                updates: opts.updates || { pattern: 'timeseries' }
            },
            attributes: { key: opts.keyType || 'string', tid: 'timeuuid', headers: 'json', value: opts.valueType || 'blob' },
            index: [{ attribute: 'key', type: 'hash' }]
        };
    }
}
module.exports = (options) => ({ operations: {} });
"#;
    let m = module(src);
    let mut s = m
        .call_function(
            "makeSchema",
            vec![from_json(&json!({"valueType": "json", "version": 2}))],
        )
        .unwrap()
        .unwrap()
        .to_json();
    strip_lines(&mut s);
    assert_eq!(s["version"], 5002);
    assert_eq!(s["attributes"]["value"], "json");
    assert_eq!(s["attributes"]["key"], "string");
    assert_eq!(s["options"]["updates"], json!({"pattern": "timeseries"}));
    assert!(m.call_function("nope", vec![]).unwrap().is_none());
}

#[test]
fn changed_values_and_unknown_code_stay_unresolved() {
    let src = r#"
let version = 1;
version = 2;
const base = { a: 1 };
base.a = 3;
const VERSION = require('../package.json').schemaVersion;
function helper() { return 7; }
module.exports = function (options) {
    return { resources: [{ body: {
        v: version, b: base.a, c: VERSION + options.bump, d: helper(), e: options.x ? 1 : 2, f: `a${options.n}`
    } }] };
};
"#;
    let v = exports_json(src, json!({"x": true, "n": 4}));
    let body = &v["resources"][0]["body"];
    assert_eq!(body["d"], 7);
    assert_eq!(body["e"], 1);
    assert_eq!(body["f"], "a4");
    let mut u = Vec::new();
    unresolved_leaves(body, "", &mut u);
    let keys: Vec<&str> = u.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["b", "c", "v"], "{u:?}");
}

#[test]
fn function_bodies_with_branches_are_not_guessed() {
    let src = r#"
module.exports = function (options) {
    if (!options) { throw new Error('x'); }
    const resources = [];
    if (options.extra) { resources.push({ uri: 'x' }); }
    for (const r of options.list) { return r; }
    return { resources };
};
"#;
    let v = exports_json(src, json!({}));
    assert!(as_unresolved(&v).is_some(), "{v}");
}

#[test]
fn bounded_on_hostile_input() {
    let deep = format!(
        "module.exports = {}1{};",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert!(matches!(
        Module::parse("a.js", &deep, Limits::default()),
        Ok(_) | Err(JsError::TooDeep { .. })
    ));
    let m = Module::parse("a.js", &deep, Limits::default());
    if let Ok(m) = m {
        assert!(m.call_exports(vec![]).is_err());
    }
    let big = "x".repeat(Limits::default().max_bytes + 1);
    assert!(matches!(
        Module::parse("a.js", &big, Limits::default()),
        Err(JsError::TooLarge { .. })
    ));
    // A long flat expression reads in linear time (this once took minutes).
    let long = format!(
        "const v = {};\nmodule.exports = {{ v }};",
        vec!["1"; 30_000].join(" + ")
    );
    let t = std::time::Instant::now();
    let m = Module::parse("a.js", &long, Limits::default()).unwrap();
    let _ = m.call_exports(vec![]);
    assert!(t.elapsed().as_secs() < 5, "{:?}", t.elapsed());
    let recursive = "function f(x) { return f(x) + 1; }\nmodule.exports = { v: f(1) };";
    let v = Module::parse("a.js", recursive, Limits::default())
        .unwrap()
        .call_exports(vec![]);
    assert!(
        matches!(
            v,
            Ok(Some(V::Opaque(_))) | Ok(Some(V::Obj(_))) | Err(JsError::Budget)
        ),
        "{v:?}"
    );
}
