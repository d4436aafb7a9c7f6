//! Hostile input for the static readers: generated JavaScript and YAML (unbalanced brackets,
//! unterminated strings and templates, deep nesting, long expressions, alias bombs) must give
//! a result or an error quickly, never a crash (a stack overflow aborts this test binary) or
//! a hang. Bounded iterations (proptest), plus a few worst cases written out.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use schema_guard::extract::js::{Limits, Module, from_json};

const JS_PIECES: &[&str] = &[
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    "`",
    "${",
    "'",
    "\"",
    "/",
    "/*",
    "*/",
    "//",
    "\n",
    " ",
    ",",
    ";",
    ":",
    "=",
    "=>",
    "+",
    "*",
    "||",
    "&&",
    "?",
    ".",
    "...",
    "?.",
    "!",
    "-",
    "1",
    "0x1f",
    "5000",
    "'a'",
    "x",
    "opts",
    "options",
    "this",
    "return",
    "const",
    "let",
    "function",
    "class",
    "new",
    "if",
    "else",
    "for",
    "throw",
    "module.exports",
    "module.exports =",
    "require('x')",
    "table:",
    "version:",
    "attributes:",
    "index:",
    "\\",
    "\u{e9}",
    "async",
    "get",
    "static",
];

const YAML_PIECES: &[&str] = &[
    "a:",
    "b: 1",
    "- ",
    "  ",
    "\n",
    "{",
    "}",
    "[",
    "]",
    ",",
    "&x ",
    "*x",
    "<<: *x",
    "'",
    "\"",
    "x-modules:",
    "x-setup-handler:",
    "path: sys/a.js",
    "spec:",
    "paths:",
    "/{domain:a}:",
    "? ",
    "!!str ",
    "%YAML 1.2\n",
    "---\n",
    "...\n",
    "|",
    ">",
    "#",
    ":",
    "\t",
    "~",
];

fn assemble(pieces: &[&str], picks: &[usize]) -> String {
    picks.iter().map(|i| pieces[i % pieces.len()]).collect()
}

fn run_js(src: &str) {
    let start = Instant::now();
    if let Ok(m) = Module::parse("sys/x.js", src, Limits::default()) {
        let _ = m.call_exports(vec![from_json(&serde_json::json!({"a": 1}))]);
        let _ = m.call_function("makeSchema", vec![from_json(&serde_json::json!({}))]);
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
}

fn run_yaml(text: &str) {
    let start = Instant::now();
    let _ = schema_guard::extract::yaml_to_json(text, "x.yaml");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn js_reader_gives_a_result_or_an_error(picks in prop::collection::vec(0usize..1000, 0..400)) {
        run_js(&assemble(JS_PIECES, &picks));
    }

    #[test]
    fn js_reader_survives_wrapped_schemas(picks in prop::collection::vec(0usize..1000, 0..60), depth in 0usize..300) {
        let inner = assemble(JS_PIECES, &picks);
        let src = format!(
            "const t = 'x';\nmodule.exports = (options) => ({{ resources: [{{ uri: `/{{domain}}/sys/table/${{t}}`, body: {}{inner}{} }}] }});",
            "{ a: [".repeat(depth),
            "] }".repeat(depth)
        );
        run_js(&src);
    }

    #[test]
    fn yaml_reader_gives_a_result_or_an_error(picks in prop::collection::vec(0usize..1000, 0..400)) {
        run_yaml(&assemble(YAML_PIECES, &picks));
    }

    #[test]
    fn arbitrary_bytes_do_not_crash_either_reader(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        let text = String::from_utf8_lossy(&bytes);
        run_js(&text);
        run_yaml(&text);
    }
}

#[test]
fn worst_cases_are_bounded() {
    // Deep nesting of every bracket kind and of template substitutions.
    for (open, close) in [
        ("(", ")"),
        ("[", "]"),
        ("{a:", "}"),
        ("`${", "}`"),
        ("-", ""),
        ("!", ""),
        ("a.b(", ")"),
    ] {
        run_js(&format!(
            "module.exports = {}1{};",
            open.repeat(50_000),
            close.repeat(50_000)
        ));
    }
    // A 90 KB expression (once 148 s) and long member chains.
    run_js(&format!(
        "module.exports = {{ v: {} }};",
        vec!["a * 1000 + (b || 0)"; 4500].join(" + ")
    ));
    run_js(&format!("module.exports = x{};", ".y".repeat(40_000)));
    // Mutual recursion and self-reference.
    run_js(
        "function f(x) { return g(x) + 1; }\nfunction g(x) { return f(x) * 2; }\nmodule.exports = { v: f(1) };",
    );
    run_js("const a = b + 1;\nconst b = a + 1;\nmodule.exports = { v: a };");
    // Over the size limit: an error, not a read.
    let big = format!(
        "// {}\nmodule.exports = {{}};",
        "x".repeat(Limits::default().max_bytes)
    );
    assert!(Module::parse("big.js", &big, Limits::default()).is_err());
    // YAML: alias expansion bomb, deep nesting, over the size limit.
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 0..12 {
        let prev = if i == 0 {
            "a".to_string()
        } else {
            format!("l{}", i - 1)
        };
        bomb.push_str(&format!("l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
    }
    run_yaml(&bomb);
    run_yaml(&format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000)));
    run_yaml(&"a:\n ".repeat(50_000));
    assert!(
        schema_guard::extract::yaml_to_json(
            &"#".repeat(schema_guard::extract::MAX_YAML_BYTES + 1),
            "x.yaml"
        )
        .is_err()
    );
}
