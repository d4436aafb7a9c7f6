//! A small, tolerant reader for JavaScript object literals, enough to find table schemas
//! (`{table: ..., version: ..., attributes: {...}, index: [...]}`) in service modules without
//! running them.
//!
//! The tokenizer knows strings, template literals, comments, numbers, identifiers, regex
//! literals (by the usual "previous token" heuristic) and punctuation. The parser reads
//! literals (strings, numbers, booleans, null, arrays, objects); anything else (identifiers,
//! calls, arithmetic, spreads, shorthand properties) becomes [`JsValue::Unresolved`] with its
//! source text and line, never a guess.

use serde_json::{Map, Value};

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Str(String),
    /// A template literal with `${...}` substitutions.
    Template,
    Num(f64),
    Ident(String),
    Punct(char),
    Spread,
    Regex,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    start: usize,
    end: usize,
    line: u32,
}

/// A parsed literal value.
#[derive(Clone, Debug, PartialEq)]
pub enum JsValue {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Array(Vec<JsValue>),
    Object(Vec<(String, JsValue)>),
    /// Not a literal: the source text and its 1-based line.
    Unresolved {
        text: String,
        line: u32,
    },
}

/// An object literal found in a source file.
#[derive(Clone, Debug)]
pub struct FoundObject {
    pub line: u32,
    pub value: JsValue,
}

impl JsValue {
    pub fn get(&self, key: &str) -> Option<&JsValue> {
        match self {
            JsValue::Object(entries) => {
                entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
            }
            _ => None,
        }
    }

    /// Every unresolved value below (and including) this one, with its key path.
    pub fn unresolved(&self, path: &str, out: &mut Vec<(String, String, u32)>) {
        match self {
            JsValue::Unresolved { text, line } => out.push((path.to_string(), text.clone(), *line)),
            JsValue::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    v.unresolved(&format!("{path}[{i}]"), out);
                }
            }
            JsValue::Object(entries) => {
                for (k, v) in entries {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    v.unresolved(&p, out);
                }
            }
            _ => {}
        }
    }

    /// The JSON value, when fully resolved.
    pub fn to_json(&self) -> Option<Value> {
        Some(match self {
            JsValue::Null => Value::Null,
            JsValue::Bool(b) => Value::Bool(*b),
            JsValue::Num(n) => {
                if n.fract() == 0.0 && n.abs() < 9.0e15 {
                    Value::from(*n as i64)
                } else {
                    serde_json::Number::from_f64(*n).map(Value::Number)?
                }
            }
            JsValue::Str(s) => Value::String(s.clone()),
            JsValue::Array(items) => {
                Value::Array(items.iter().map(JsValue::to_json).collect::<Option<_>>()?)
            }
            JsValue::Object(entries) => {
                let mut m = Map::new();
                for (k, v) in entries {
                    m.insert(k.clone(), v.to_json()?);
                }
                Value::Object(m)
            }
            JsValue::Unresolved { .. } => return None,
        })
    }
}

fn regex_allowed(prev: Option<&Tok>) -> bool {
    match prev {
        None => true,
        Some(Tok::Punct(c)) => !matches!(c, ')' | ']' | '}'),
        Some(Tok::Ident(w)) => matches!(
            w.as_str(),
            "return"
                | "typeof"
                | "case"
                | "do"
                | "else"
                | "in"
                | "of"
                | "new"
                | "delete"
                | "void"
                | "throw"
        ),
        Some(Tok::Spread) => true,
        _ => false,
    }
}

fn tokenize(src: &str) -> Vec<Token> {
    let b = src.as_bytes();
    let mut out: Vec<Token> = Vec::new();
    let (mut i, mut line) = (0usize, 1u32);
    while i < b.len() {
        let c = b[i];
        let start = i;
        let start_line = line;
        match c {
            b'\n' => {
                line += 1;
                i += 1;
                continue;
            }
            c if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    if b[i] == b'\n' {
                        line += 1;
                    }
                    i += 1;
                }
                i = (i + 2).min(b.len());
                continue;
            }
            b'/' if regex_allowed(out.last().map(|t| &t.tok)) => {
                i += 1;
                let mut class = false;
                while i < b.len() && b[i] != b'\n' {
                    match b[i] {
                        b'\\' => i += 1,
                        b'[' => class = true,
                        b']' => class = false,
                        b'/' if !class => break,
                        _ => {}
                    }
                    i += 1;
                }
                i += 1;
                while i < b.len() && (b[i].is_ascii_alphabetic()) {
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Regex,
                    start,
                    end: i.min(b.len()),
                    line: start_line,
                });
                continue;
            }
            b'\'' | b'"' => {
                let q = c;
                i += 1;
                let mut s = String::new();
                while i < b.len() && b[i] != q && b[i] != b'\n' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                        match b[i] {
                            b'n' => s.push('\n'),
                            b't' => s.push('\t'),
                            b'r' => s.push('\r'),
                            b'\n' => line += 1,
                            _ => {
                                let ch = src[i..].chars().next().unwrap_or('?');
                                s.push(ch);
                                i += ch.len_utf8();
                                continue;
                            }
                        }
                        i += 1;
                        continue;
                    }
                    let ch = src[i..].chars().next().unwrap_or('?');
                    s.push(ch);
                    i += ch.len_utf8();
                }
                i += 1;
                out.push(Token {
                    tok: Tok::Str(s),
                    start,
                    end: i.min(b.len()),
                    line: start_line,
                });
                continue;
            }
            b'`' => {
                i += 1;
                let mut s = String::new();
                let mut subst = false;
                while i < b.len() && b[i] != b'`' {
                    match b[i] {
                        b'\\' => {
                            i += 1;
                        }
                        b'\n' => line += 1,
                        b'$' if b.get(i + 1) == Some(&b'{') => {
                            subst = true;
                            // Skip the substitution with brace depth (nested templates are rare here).
                            let mut depth = 0;
                            while i < b.len() {
                                match b[i] {
                                    b'{' => depth += 1,
                                    b'}' => {
                                        depth -= 1;
                                        if depth == 0 {
                                            break;
                                        }
                                    }
                                    b'\n' => line += 1,
                                    _ => {}
                                }
                                i += 1;
                            }
                        }
                        _ => {
                            let ch = src[i..].chars().next().unwrap_or('?');
                            s.push(ch);
                            i += ch.len_utf8();
                            continue;
                        }
                    }
                    i += 1;
                }
                i += 1;
                let tok = if subst { Tok::Template } else { Tok::Str(s) };
                out.push(Token {
                    tok,
                    start,
                    end: i.min(b.len()),
                    line: start_line,
                });
                continue;
            }
            c if c.is_ascii_digit()
                || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) =>
            {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_')
                {
                    if (b[i] == b'e' || b[i] == b'E')
                        && matches!(b.get(i + 1), Some(b'+') | Some(b'-'))
                    {
                        i += 1;
                    }
                    i += 1;
                }
                let text = src[start..i].replace('_', "");
                let n = if let Some(h) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X"))
                {
                    i64::from_str_radix(h, 16)
                        .map(|v| v as f64)
                        .unwrap_or(f64::NAN)
                } else {
                    text.parse().unwrap_or(f64::NAN)
                };
                out.push(Token {
                    tok: Tok::Num(n),
                    start,
                    end: i,
                    line: start_line,
                });
                continue;
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b'$' || c >= 0x80 => {
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric()
                        || b[i] == b'_'
                        || b[i] == b'$'
                        || b[i] >= 0x80)
                {
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Ident(src[start..i].to_string()),
                    start,
                    end: i,
                    line: start_line,
                });
                continue;
            }
            b'.' if b.get(i + 1) == Some(&b'.') && b.get(i + 2) == Some(&b'.') => {
                i += 3;
                out.push(Token {
                    tok: Tok::Spread,
                    start,
                    end: i,
                    line: start_line,
                });
                continue;
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                i += ch.len_utf8();
                out.push(Token {
                    tok: Tok::Punct(ch),
                    start,
                    end: i,
                    line: start_line,
                });
            }
        }
    }
    out
}

struct Parser<'a> {
    src: &'a str,
    toks: &'a [Token],
}

impl Parser<'_> {
    fn punct(&self, i: usize, c: char) -> bool {
        matches!(self.toks.get(i), Some(Token { tok: Tok::Punct(p), .. }) if *p == c)
    }

    /// Skips an expression up to a depth-0 `,`, `}` or `]`; returns the index of that delimiter.
    fn skip_expr(&self, mut i: usize) -> Option<usize> {
        let mut depth = 0i32;
        while let Some(t) = self.toks.get(i) {
            if let Tok::Punct(c) = t.tok {
                match c {
                    '(' | '[' | '{' => depth += 1,
                    ')' | ']' | '}' if depth == 0 => return Some(i),
                    ')' | ']' | '}' => depth -= 1,
                    ',' if depth == 0 => return Some(i),
                    ';' if depth == 0 => return None,
                    _ => {}
                }
            }
            i += 1;
        }
        None
    }

    fn unresolved(&self, from: usize, to: usize) -> JsValue {
        let (a, b) = (&self.toks[from], &self.toks[to.max(from + 1) - 1]);
        let text: String = self.src[a.start..b.end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        JsValue::Unresolved { text, line: a.line }
    }

    /// Parses a value at `i`; returns it and the index after it.
    fn value(&self, i: usize) -> Option<(JsValue, usize)> {
        let t = self.toks.get(i)?;
        let simple = match &t.tok {
            Tok::Punct('{') => Some(self.object(i)?),
            Tok::Punct('[') => Some(self.array(i)?),
            Tok::Str(s) => Some((JsValue::Str(s.clone()), i + 1)),
            Tok::Num(n) if !n.is_nan() => Some((JsValue::Num(*n), i + 1)),
            Tok::Punct('-') => match self.toks.get(i + 1).map(|t| &t.tok) {
                Some(Tok::Num(n)) if !n.is_nan() => Some((JsValue::Num(-n), i + 2)),
                _ => None,
            },
            Tok::Ident(w) => match w.as_str() {
                "true" => Some((JsValue::Bool(true), i + 1)),
                "false" => Some((JsValue::Bool(false), i + 1)),
                "null" => Some((JsValue::Null, i + 1)),
                _ => None,
            },
            _ => None,
        };
        if let Some((v, next)) = simple {
            // A literal followed by more expression (`5000 + x`) is an expression.
            if next >= self.toks.len()
                || [',', '}', ']', ')', ';']
                    .iter()
                    .any(|c| self.punct(next, *c))
            {
                return Some((v, next));
            }
        }
        let end = self.skip_expr(i)?;
        if end == i {
            return None;
        }
        Some((self.unresolved(i, end), end))
    }

    fn array(&self, mut i: usize) -> Option<(JsValue, usize)> {
        i += 1;
        let mut items = Vec::new();
        loop {
            if self.punct(i, ']') {
                return Some((JsValue::Array(items), i + 1));
            }
            if matches!(self.toks.get(i)?.tok, Tok::Spread) {
                let end = self.skip_expr(i)?;
                items.push(self.unresolved(i, end));
                i = end;
            } else {
                let (v, next) = self.value(i)?;
                items.push(v);
                i = next;
            }
            if self.punct(i, ',') {
                i += 1;
            } else if !self.punct(i, ']') {
                return None;
            }
        }
    }

    fn object(&self, mut i: usize) -> Option<(JsValue, usize)> {
        i += 1;
        let mut entries = Vec::new();
        loop {
            if self.punct(i, '}') {
                return Some((JsValue::Object(entries), i + 1));
            }
            let t = self.toks.get(i)?;
            match &t.tok {
                Tok::Spread => {
                    let end = self.skip_expr(i)?;
                    entries.push(("...".to_string(), self.unresolved(i, end)));
                    i = end;
                }
                Tok::Ident(k) | Tok::Str(k) => {
                    let key = k.clone();
                    if self.punct(i + 1, ':') {
                        let (v, next) = self.value(i + 2)?;
                        entries.push((key, v));
                        i = next;
                    } else if self.punct(i + 1, ',') || self.punct(i + 1, '}') {
                        if matches!(t.tok, Tok::Str(_)) {
                            return None;
                        }
                        entries.push((key, self.unresolved(i, i + 1)));
                        i += 1;
                    } else {
                        // A method, getter, or not an object literal at all.
                        return None;
                    }
                }
                Tok::Num(n) if self.punct(i + 1, ':') => {
                    let (v, next) = self.value(i + 2)?;
                    entries.push((n.to_string(), v));
                    i = next;
                }
                _ => return None,
            }
            if self.punct(i, ',') {
                i += 1;
            } else if !self.punct(i, '}') {
                return None;
            }
        }
    }
}

/// Every object literal in `src` that has the given keys, outermost first. Objects nested in
/// a match are not reported separately.
pub fn find_objects_with_keys(src: &str, keys: &[&str]) -> Vec<FoundObject> {
    let toks = tokenize(src);
    let p = Parser { src, toks: &toks };
    let mut out = Vec::new();
    let mut skip_until = 0usize;
    for (i, t) in toks.iter().enumerate() {
        if i < skip_until || t.tok != Tok::Punct('{') {
            continue;
        }
        if let Some((v, next)) = p.object(i)
            && keys.iter().all(|k| v.get(k).is_some())
        {
            out.push(FoundObject {
                line: t.line,
                value: v,
            });
            skip_until = next;
        }
    }
    out
}

/// Parses a whole literal value (for tests and for simple module exports).
pub fn parse_value(src: &str) -> Option<JsValue> {
    let toks = tokenize(src);
    let p = Parser { src, toks: &toks };
    let (v, next) = p.value(0)?;
    (next == toks.len()).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_literals_comments_and_trailing_commas() {
        let v = parse_value(
            "{ table: 'pages', // the table\n version: 3, \"quoted-key\": \"x\\\"y\", attributes: { title: `string`, n: -1.5 }, \
             index: [ { attribute: 'title', type: 'hash' }, ], /* c */ ok: true, none: null, }",
        )
        .unwrap();
        assert_eq!(
            v.to_json().unwrap(),
            json!({"table": "pages", "version": 3, "quoted-key": "x\"y",
                   "attributes": {"title": "string", "n": -1.5},
                   "index": [{"attribute": "title", "type": "hash"}], "ok": true, "none": null})
        );
    }

    #[test]
    fn expressions_are_unresolved_with_lines() {
        let v = parse_value("{\n table: bucket,\n version: 5000 + opts.version,\n attributes: { v: `x${t}` }, ...rest, short }")
            .unwrap();
        let mut u = Vec::new();
        v.unresolved("", &mut u);
        let texts: Vec<(&str, &str, u32)> = u
            .iter()
            .map(|(p, t, l)| (p.as_str(), t.as_str(), *l))
            .collect();
        assert_eq!(
            texts,
            [
                ("table", "bucket", 2),
                ("version", "5000 + opts.version", 3),
                ("attributes.v", "`x${t}`", 4),
                ("...", "...rest", 4),
                ("short", "short", 4)
            ]
        );
        assert!(v.to_json().is_none());
    }

    #[test]
    fn finds_schema_objects_in_module_code() {
        let src = r#"'use strict';
const re = /[{'"]/g;
module.exports = function (options) {
    if (x) { doIt(); }
    return {
        resources: [{
            uri: '/{domain}/sys/table/pages',
            body: {
                table: 'pages',
                attributes: { title: 'string' },
                index: [{ attribute: 'title', type: 'hash' }]
            }
        }],
        method() { return { table: 'no', attributes: {}, index: [] }; }
    };
};
"#;
        let found = find_objects_with_keys(src, &["attributes", "index"]);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].line, 8);
        assert_eq!(
            found[0].value.get("table"),
            Some(&JsValue::Str("pages".into()))
        );
        assert_eq!(
            found[1].value.get("table"),
            Some(&JsValue::Str("no".into()))
        );
    }
}
