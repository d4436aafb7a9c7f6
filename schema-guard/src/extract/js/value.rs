//! Values of the static reader's evaluator ([`V`]), the scopes that bind them, and their
//! JSON form: unknown values become marker objects ([`UNRESOLVED`]), object literals carry
//! their line under a hidden key ([`LINE`]), `loadSpec` results name their file
//! ([`SPEC_FILE`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use serde_json::{Map, Value};

use super::parse::{Expr, Func};

/// Why a value is unknown: the expression, where it is, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Why {
    pub path: String,
    pub line: u32,
    pub text: String,
    pub reason: String,
}

/// A class declared in a module: its methods.
pub struct ClassDef {
    pub methods: Vec<(String, Rc<Func>)>,
    pub env: Env,
}

/// A function value with the scope it was declared in.
#[derive(Clone, Debug)]
pub struct Closure {
    pub func: Rc<Func>,
    pub env: Env,
    pub this: Option<V>,
}

/// A value of the evaluator.
#[derive(Clone, Debug)]
pub enum V {
    Undef,
    Null,
    Bool(bool),
    Num(f64),
    Str(Rc<str>),
    Arr(Rc<Vec<V>>),
    Obj(Rc<Vec<(String, V)>>),
    Func(Rc<Closure>),
    Class(Rc<ClassDef>),
    Instance(Rc<ClassDef>),
    /// `require(name)` and a member path below it.
    Module(Rc<str>, Vec<String>),
    /// `loadSpec(path)`: a YAML spec file of the tree.
    SpecFile(String),
    Opaque(Rc<Why>),
}

/// A binding's state.
#[derive(Clone, Debug)]
pub enum Slot {
    Val(V),
    /// A module-level declaration, evaluated on first use.
    Lazy(Rc<Expr>),
    Busy,
    /// May have been changed: reading it gives an opaque value.
    Tainted(String),
}

#[derive(Default)]
pub struct Scope {
    pub vars: RefCell<HashMap<String, Slot>>,
    pub parent: Option<Env>,
}

// Scopes and classes refer to each other: print names only.
impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .vars
            .try_borrow()
            .map(|v| v.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("Scope")
            .field("names", &names)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ClassDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.methods.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("ClassDef")
            .field("methods", &names)
            .finish_non_exhaustive()
    }
}

pub type Env = Rc<Scope>;

pub fn child(parent: &Env) -> Env {
    Rc::new(Scope {
        vars: RefCell::default(),
        parent: Some(parent.clone()),
    })
}

/// Finds the scope binding `name`.
pub fn scope_of(env: &Env, name: &str) -> Option<Env> {
    let mut cur = Some(env.clone());
    while let Some(s) = cur {
        if s.vars.borrow().contains_key(name) {
            return Some(s);
        }
        cur = s.parent.clone();
    }
    None
}

pub fn num_to_string(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e21 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

impl V {
    pub fn str(s: &str) -> V {
        V::Str(Rc::from(s))
    }

    pub fn truthy(&self) -> Option<bool> {
        Some(match self {
            V::Undef | V::Null => false,
            V::Bool(b) => *b,
            V::Num(n) => *n != 0.0 && !n.is_nan(),
            V::Str(s) => !s.is_empty(),
            V::Opaque(_) => return None,
            _ => true,
        })
    }

    pub fn to_str(&self) -> Option<String> {
        Some(match self {
            V::Undef => "undefined".into(),
            V::Null => "null".into(),
            V::Bool(b) => b.to_string(),
            V::Num(n) => num_to_string(*n),
            V::Str(s) => s.to_string(),
            _ => return None,
        })
    }

    pub fn to_num(&self) -> Option<f64> {
        Some(match self {
            V::Undef => f64::NAN,
            V::Null => 0.0,
            V::Bool(b) => f64::from(u8::from(*b)),
            V::Num(n) => *n,
            V::Str(s) if s.trim().is_empty() => 0.0,
            V::Str(s) => s.trim().parse().unwrap_or(f64::NAN),
            _ => return None,
        })
    }

    /// Property lookup; `None` means "cannot tell".
    pub fn get(&self, key: &str) -> Option<V> {
        Some(match self {
            V::Obj(props) => props
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map_or(V::Undef, |(_, v)| v.clone()),
            V::Arr(items) if key == "length" => V::Num(items.len() as f64),
            V::Arr(items) => key
                .parse::<usize>()
                .ok()
                .and_then(|i| items.get(i).cloned())
                .unwrap_or(V::Undef),
            V::Str(s) if key == "length" => V::Num(s.chars().count() as f64),
            V::Module(name, path) => {
                let mut p = path.clone();
                p.push(key.to_string());
                V::Module(name.clone(), p)
            }
            V::Instance(class) => {
                let (_, f) = class.methods.iter().find(|(n, _)| n == key)?;
                V::Func(Rc::new(Closure {
                    func: f.clone(),
                    env: class.env.clone(),
                    this: Some(self.clone()),
                }))
            }
            V::Bool(_) | V::Num(_) | V::Str(_) => V::Undef,
            _ => return None,
        })
    }

    /// The JSON value (what `JSON.stringify` would send); unknown parts become markers
    /// (see [`marker`]).
    pub fn to_json(&self) -> Value {
        match self {
            V::Undef | V::Null => Value::Null,
            V::Bool(b) => Value::Bool(*b),
            V::Num(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => Value::from(*n as i64),
            V::Num(n) => serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number),
            V::Str(s) => Value::String(s.to_string()),
            V::Arr(items) => Value::Array(items.iter().map(V::to_json).collect()),
            V::Obj(props) => {
                let mut m = Map::new();
                for (k, v) in props.iter() {
                    if !matches!(v, V::Undef | V::Func(_)) {
                        m.insert(k.clone(), v.to_json());
                    }
                }
                Value::Object(m)
            }
            V::SpecFile(p) => serde_json::json!({ SPEC_FILE: p }),
            V::Opaque(w) => marker(w),
            V::Func(_) | V::Class(_) | V::Instance(_) | V::Module(..) => marker(&Why {
                path: String::new(),
                line: 0,
                text: "a function or module object".into(),
                reason: "not data".into(),
            }),
        }
    }
}

/// Key of the object standing for an unresolved value in JSON output.
pub const UNRESOLVED: &str = "\u{1}unresolved";
/// Hidden key of objects made by a literal: the literal's line (strip with [`strip_lines`]).
pub const LINE: &str = "\u{1}line";

/// Removes the hidden line keys of object literals; returns the outermost one.
pub fn strip_lines(v: &mut Value) -> Option<u32> {
    let mut top = None;
    match v {
        Value::Object(o) => {
            top = o.remove(LINE).and_then(|l| l.as_u64()).map(|l| l as u32);
            for x in o.values_mut() {
                strip_lines(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| {
            strip_lines(x);
        }),
        _ => {}
    }
    top
}

/// Key of the object standing for a spec file loaded with `loadSpec`.
pub const SPEC_FILE: &str = "\u{1}spec_file";

pub fn marker(w: &Why) -> Value {
    serde_json::json!({ UNRESOLVED: {"path": w.path, "line": w.line, "text": w.text, "reason": w.reason} })
}
