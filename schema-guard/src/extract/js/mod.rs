//! The static JavaScript reader: enough of a module to know what it asks the storage for,
//! without running it.
//!
//! [`Module::parse`] tokenizes a file in one linear pass ([`lex`]), reads its top level
//! ([`stmt`]): `const`/`let`/`var` declarations (evaluated on first use), functions, classes
//! and `module.exports`. [`Module::call_exports`] and [`Module::call_function`] then evaluate
//! ([`eval`]) the exported factory or a named function with given arguments: identifiers
//! resolve within the module, arithmetic and `||` work on resolved values, method calls on
//! instances of the module's classes run the method. What cannot be resolved is a
//! [`V::Opaque`] carrying the expression and its line, and shows up as a marker in JSON
//! output ([`unresolved_leaves`]), never as a guess.
//!
//! Bounded: files over [`Limits::max_bytes`] are refused, nesting is limited to
//! [`Limits::depth`], evaluation to [`Limits::fuel`] steps and [`Limits::max_calls`] nested
//! calls, so hostile input gives an error, not a hang or a stack overflow.

use std::cell::Cell;
use std::rc::Rc;

use serde_json::Value;

pub mod ast;
pub mod eval;
pub mod lex;
pub mod parse;
pub mod scan;
pub mod stmt;
pub mod value;

pub use eval::{LINE, SPEC_FILE, TREE, UNRESOLVED, V, Why, strip_lines};

/// Bounds of the reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest file read, in bytes.
    pub max_bytes: usize,
    /// Deepest nesting of brackets, expressions and template substitutions.
    pub depth: usize,
    /// Evaluation steps per module.
    pub fuel: u64,
    /// Nested function calls.
    pub max_calls: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 1 << 20,
            depth: 64,
            fuel: 200_000,
            max_calls: 8,
        }
    }
}

/// Why a file could not be read.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum JsError {
    #[error("file is {bytes} bytes, over the {limit}-byte limit of the static reader")]
    TooLarge { bytes: usize, limit: usize },
    #[error("line {line}: nesting deeper than the static reader's limit")]
    TooDeep { line: u32 },
    #[error("line {line}: {what}")]
    Syntax { line: u32, what: String },
    #[error("evaluation budget exhausted")]
    Budget,
}

/// A parsed module.
pub struct Module {
    path: String,
    dir: String,
    src: String,
    limits: Limits,
    fuel: Cell<u64>,
    top: stmt::TopLevel,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module").field("path", &self.path).finish()
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        // Classes and closures refer back to the module scope: break the cycles.
        if let Ok(mut vars) = self.top.env.vars.try_borrow_mut() {
            vars.clear();
        }
    }
}

impl Module {
    /// Reads `src`, the text of the tree file `path`.
    pub fn parse(path: &str, src: &str, limits: Limits) -> Result<Module, JsError> {
        let seq = Rc::new(lex::tokenize(src, limits)?);
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d).to_string();
        let mut m = Module {
            path: path.to_string(),
            dir,
            src: src.to_string(),
            limits,
            fuel: Cell::new(limits.fuel),
            top: stmt::TopLevel {
                env: Rc::default(),
                exports: None,
            },
        };
        let top = {
            let ev = m.ev();
            let root: eval::Env = Rc::default();
            stmt::top_level(&ev, &seq, &root)?
        };
        m.top = top;
        Ok(m)
    }

    fn ev(&self) -> eval::Ev<'_> {
        eval::Ev {
            src: &self.src,
            path: &self.path,
            dir: &self.dir,
            fuel: Cell::new(self.fuel.get()),
            calls: Cell::new(0),
            max_calls: self.limits.max_calls,
            limits: self.limits,
            depth: Cell::new(0),
        }
    }

    fn run<T>(&self, f: impl FnOnce(&eval::Ev<'_>) -> Result<T, JsError>) -> Result<T, JsError> {
        let ev = self.ev();
        let r = f(&ev);
        self.fuel.set(ev.fuel.get());
        r
    }

    /// Whether the module assigns `module.exports`.
    pub fn has_exports(&self) -> bool {
        self.top.exports.is_some()
    }

    /// The value of `module.exports`, called with `args` when it is a function (a hyperswitch
    /// or fixture module factory).
    pub fn call_exports(&self, args: Vec<V>) -> Result<Option<V>, JsError> {
        let Some(e) = &self.top.exports else {
            return Ok(None);
        };
        self.run(|ev| {
            let v = ev.eval(e, &self.top.env)?;
            match v {
                V::Func(c) => ev.apply(&c, args, e).map(Some),
                other => Ok(Some(other)),
            }
        })
    }

    /// Calls the function or class method `name` declared in this module. `Ok(None)` when no
    /// such function exists; an opaque value when several do.
    pub fn call_function(&self, name: &str, args: Vec<V>) -> Result<Option<V>, JsError> {
        let mut found: Vec<eval::Closure> = Vec::new();
        for slot in self.top.env.vars.borrow().values() {
            if let eval::Slot::Val(V::Class(def)) = slot {
                for (n, f) in &def.methods {
                    if n == name {
                        found.push(eval::Closure {
                            func: f.clone(),
                            env: def.env.clone(),
                            this: Some(V::Instance(def.clone())),
                        });
                    }
                }
            }
        }
        if let Some(eval::Slot::Val(V::Func(c))) = self.top.env.vars.borrow().get(name) {
            found.push((**c).clone());
        }
        let Some(exports) = self.top.exports.clone() else {
            return Ok(None);
        };
        match found.len() {
            0 => Ok(None),
            1 => self.run(|ev| ev.apply(&found[0], args, &exports).map(Some)),
            _ => Ok(Some(self.run(|ev| {
                Ok(ev.opaque(&exports, &format!("{name} is declared more than once")))
            })?)),
        }
    }

    /// The module's path in the tree.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// A JSON value as an evaluator value (module options, request bodies from YAML).
pub fn from_json(v: &Value) -> V {
    match v {
        Value::Null => V::Null,
        Value::Bool(b) => V::Bool(*b),
        Value::Number(n) => V::Num(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => V::str(s),
        Value::Array(a) => V::Arr(Rc::new(a.iter().map(from_json).collect())),
        Value::Object(o) => V::Obj(Rc::new(
            o.iter().map(|(k, v)| (k.clone(), from_json(v))).collect(),
        )),
    }
}

/// Whether a JSON value is an unresolved marker; its description if so.
pub fn as_unresolved(v: &Value) -> Option<Why> {
    let m = v.as_object()?.get(UNRESOLVED)?;
    Some(Why {
        path: m["path"].as_str().unwrap_or_default().to_string(),
        line: m["line"].as_u64().unwrap_or_default() as u32,
        text: m["text"].as_str().unwrap_or_default().to_string(),
        reason: m["reason"].as_str().unwrap_or_default().to_string(),
    })
}

/// Every unresolved marker in a JSON value, with its key path.
pub fn unresolved_leaves(v: &Value, path: &str, out: &mut Vec<(String, Why)>) {
    if let Some(w) = as_unresolved(v) {
        out.push((path.to_string(), w));
        return;
    }
    match v {
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                unresolved_leaves(x, &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                unresolved_leaves(x, &p, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
