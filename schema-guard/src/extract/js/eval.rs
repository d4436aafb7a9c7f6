//! Evaluation of the expressions the static reader parsed: constants, object and array
//! literals, template literals, arithmetic, `||`/`&&`/`??`/`?:`, member access, and calls of
//! functions and class methods declared in the same module (their bodies interpreted
//! statement by statement: declarations, guards, assignments, `return`).
//!
//! Anything else becomes [`V::Opaque`] with the source text and line of the expression that
//! could not be resolved; operations on an opaque value stay opaque, so nothing is guessed.
//! A value that may have been changed (reassigned, mutated, passed to code the reader does not
//! follow) is opaque from then on. Work is bounded by a fuel counter and a call depth.

use std::cell::Cell;
use std::rc::Rc;

use super::JsError;
use super::parse::{Body, Elem, Expr, Kind, Param, Prop, PropKey};
pub use super::value::*;

type R<T> = Result<T, JsError>;

/// The evaluation context of one module.
pub struct Ev<'a> {
    pub src: &'a str,
    pub path: &'a str,
    pub dir: &'a str,
    pub fuel: Cell<u64>,
    pub calls: Cell<usize>,
    pub max_calls: usize,
    pub limits: super::Limits,
    pub depth: Cell<usize>,
}

impl Ev<'_> {
    fn burn(&self) -> R<()> {
        let f = self.fuel.get();
        if f == 0 {
            return Err(JsError::Budget);
        }
        self.fuel.set(f - 1);
        Ok(())
    }

    pub fn opaque(&self, e: &Expr, reason: &str) -> V {
        V::Opaque(Rc::new(Why {
            path: self.path.to_string(),
            line: e.span.line(),
            text: e.span.text(self.src),
            reason: reason.to_string(),
        }))
    }

    pub fn lookup(&self, env: &Env, name: &str, e: &Expr) -> R<V> {
        let Some(scope) = scope_of(env, name) else {
            return Ok(match name {
                "undefined" => V::Undef,
                "NaN" => V::Num(f64::NAN),
                "Infinity" => V::Num(f64::INFINITY),
                "__dirname" => V::str(&format!("{TREE}{}", self.dir)),
                "require" | "Object" | "Number" | "String" | "parseInt" => {
                    V::Module(Rc::from("\u{1}global"), vec![name.to_string()])
                }
                _ => self.opaque(e, &format!("`{name}` is not declared in this module")),
            });
        };
        let slot = scope.vars.borrow().get(name).cloned();
        match slot {
            Some(Slot::Val(v)) => Ok(v),
            Some(Slot::Tainted(why)) => Ok(self.opaque(e, &why)),
            Some(Slot::Busy) => Ok(self.opaque(e, "defined in terms of itself")),
            Some(Slot::Lazy(init)) => {
                scope.vars.borrow_mut().insert(name.into(), Slot::Busy);
                let v = self.eval(&init, &scope);
                let v = match v {
                    Ok(v) => v,
                    Err(err) => {
                        scope
                            .vars
                            .borrow_mut()
                            .insert(name.into(), Slot::Lazy(init));
                        return Err(err);
                    }
                };
                scope
                    .vars
                    .borrow_mut()
                    .insert(name.into(), Slot::Val(v.clone()));
                Ok(v)
            }
            None => Ok(V::Undef),
        }
    }

    pub fn eval(&self, e: &Expr, env: &Env) -> R<V> {
        self.burn()?;
        let d = self.depth.get();
        if d > self.limits.depth * 8 {
            return Err(JsError::TooDeep {
                line: e.span.line(),
            });
        }
        self.depth.set(d + 1);
        let r = self.eval_inner(e, env);
        self.depth.set(d);
        r
    }

    fn eval_inner(&self, e: &Expr, env: &Env) -> R<V> {
        Ok(match &e.kind {
            Kind::Num(n) => V::Num(*n),
            Kind::Str(s) => V::str(s),
            Kind::Template(parts, exprs) => {
                let mut out = parts.first().cloned().unwrap_or_default();
                for (x, part) in exprs.iter().zip(parts.iter().skip(1)) {
                    match self.eval(x, env)?.to_str() {
                        Some(s) => out.push_str(&s),
                        None => return Ok(self.opaque(e, "a substitution is not known")),
                    }
                    out.push_str(part);
                }
                V::str(&out)
            }
            Kind::Ident(name) => match name.as_str() {
                "true" => V::Bool(true),
                "false" => V::Bool(false),
                "null" => V::Null,
                _ => self.lookup(env, name, e)?,
            },
            Kind::This => self.lookup(env, "\u{1}this", e)?,
            Kind::Regex | Kind::Class | Kind::Other => self.opaque(e, "not modelled"),
            Kind::Array(items) => V::Arr(Rc::new(self.elems(items, env, e)?)),
            Kind::Object(props) => self.object(props, env, e)?,
            Kind::Member(obj, name, optional) => {
                let base = self.eval(obj, env)?;
                self.member(&base, name, *optional, e)
            }
            Kind::Index(obj, ix, optional) => {
                let base = self.eval(obj, env)?;
                match self.eval(ix, env)?.to_str() {
                    Some(k) => self.member(&base, &k, *optional, e),
                    None => self.opaque(e, "the index is not known"),
                }
            }
            Kind::Call(callee, args) => self.call(callee, args, env, e)?,
            Kind::New(callee, args) => {
                let c = self.eval(callee, env)?;
                self.taint_args(args, env, "changed by a constructor");
                match c {
                    V::Class(def) => V::Instance(def),
                    _ => self.opaque(e, "an object built by code the reader does not follow"),
                }
            }
            Kind::Unary(op, x) => self.unary(op, x, env, e)?,
            Kind::Binary(op, a, b) => self.binary(op, a, b, env, e)?,
            Kind::Cond(c, a, b) => match self.eval(c, env)?.truthy() {
                Some(true) => self.eval(a, env)?,
                Some(false) => self.eval(b, env)?,
                None => self.opaque(e, "the condition is not known"),
            },
            Kind::Assign(..) => self.opaque(e, "an assignment inside an expression"),
            Kind::Func(f) => V::Func(Rc::new(Closure {
                func: f.clone(),
                env: env.clone(),
                this: self.lookup_this(env),
            })),
        })
    }

    fn lookup_this(&self, env: &Env) -> Option<V> {
        let s = scope_of(env, "\u{1}this")?;
        match s.vars.borrow().get("\u{1}this") {
            Some(Slot::Val(v)) => Some(v.clone()),
            _ => None,
        }
    }

    fn member(&self, base: &V, name: &str, optional: bool, e: &Expr) -> V {
        match base {
            V::Opaque(_) => self.opaque(e, "its object is not known"),
            V::Undef | V::Null if optional => V::Undef,
            V::Undef | V::Null => self.opaque(e, "reads a property of undefined"),
            _ => base
                .get(name)
                .unwrap_or_else(|| self.opaque(e, "a property the reader cannot see")),
        }
    }

    fn elems(&self, items: &[Elem], env: &Env, e: &Expr) -> R<Vec<V>> {
        let mut out = Vec::new();
        for it in items {
            match it {
                Elem::Expr(x) => out.push(self.eval(x, env)?),
                Elem::Hole => out.push(V::Undef),
                Elem::Spread(x) => match self.eval(x, env)? {
                    V::Arr(a) => out.extend(a.iter().cloned()),
                    _ => out.push(self.opaque(e, "a spread of an unknown value")),
                },
            }
        }
        Ok(out)
    }

    fn object(&self, props: &[Prop], env: &Env, e: &Expr) -> R<V> {
        let mut out: Vec<(String, V)> = Vec::new();
        let set = |out: &mut Vec<(String, V)>, k: String, v: V| {
            out.retain(|(x, _)| *x != k);
            out.push((k, v));
        };
        for p in props {
            match p {
                Prop::Value(PropKey::Name(k), x) => {
                    let v = self.eval(x, env)?;
                    set(&mut out, k.clone(), v);
                }
                Prop::Value(PropKey::Computed(kx), x) => match self.eval(kx, env)?.to_str() {
                    Some(k) => {
                        let v = self.eval(x, env)?;
                        set(&mut out, k, v);
                    }
                    None => return Ok(self.opaque(e, "a computed key is not known")),
                },
                Prop::Shorthand(k) => {
                    let v = self.lookup(env, k, e)?;
                    set(&mut out, k.clone(), v);
                }
                Prop::Spread(x) => match self.eval(x, env)? {
                    V::Obj(o) => o
                        .iter()
                        .for_each(|(k, v)| set(&mut out, k.clone(), v.clone())),
                    V::Undef | V::Null => {}
                    _ => return Ok(self.opaque(e, "a spread of an unknown object")),
                },
                Prop::Method(name, f) => {
                    let v = V::Func(Rc::new(Closure {
                        func: f.clone(),
                        env: env.clone(),
                        this: None,
                    }));
                    set(&mut out, name.clone(), v);
                }
            }
        }
        set(&mut out, LINE.to_string(), V::Num(f64::from(e.span.line())));
        Ok(V::Obj(Rc::new(out)))
    }

    fn unary(&self, op: &str, x: &Expr, env: &Env, e: &Expr) -> R<V> {
        if matches!(op, "delete" | "++" | "--" | "await" | "void") {
            return Ok(self.opaque(e, "not modelled"));
        }
        let v = self.eval(x, env)?;
        if let V::Opaque(_) = v {
            return Ok(self.opaque(e, "its operand is not known"));
        }
        Ok(match op {
            "!" => v
                .truthy()
                .map_or_else(|| self.opaque(e, "unknown"), |b| V::Bool(!b)),
            "-" => v
                .to_num()
                .map_or_else(|| self.opaque(e, "unknown"), |n| V::Num(-n)),
            "+" => v.to_num().map_or_else(|| self.opaque(e, "unknown"), V::Num),
            "typeof" => V::str(match v {
                V::Undef => "undefined",
                V::Bool(_) => "boolean",
                V::Num(_) => "number",
                V::Str(_) => "string",
                V::Func(_) | V::Class(_) => "function",
                V::Null | V::Arr(_) | V::Obj(_) | V::Instance(_) => "object",
                _ => return Ok(self.opaque(e, "unknown")),
            }),
            _ => self.opaque(e, "not modelled"),
        })
    }

    fn binary(&self, op: &str, a: &Expr, b: &Expr, env: &Env, e: &Expr) -> R<V> {
        let l = self.eval(a, env)?;
        if matches!(op, "||" | "&&" | "??") {
            let pick_left = match op {
                "||" => l.truthy(),
                "&&" => l.truthy().map(|t| !t),
                _ => match l {
                    V::Opaque(_) => None,
                    V::Undef | V::Null => Some(false),
                    _ => Some(true),
                },
            };
            return match pick_left {
                Some(true) => Ok(l),
                Some(false) => self.eval(b, env),
                None => Ok(self.opaque(e, "its left side is not known")),
            };
        }
        let r = self.eval(b, env)?;
        let known = |v: &V| matches!(v, V::Undef | V::Null | V::Bool(_) | V::Num(_) | V::Str(_));
        if !known(&l) || !known(&r) {
            return Ok(self.opaque(e, "an operand is not a known primitive"));
        }
        let (ln, rn) = (
            l.to_num().unwrap_or(f64::NAN),
            r.to_num().unwrap_or(f64::NAN),
        );
        let strict_eq = |l: &V, r: &V| match (l, r) {
            (V::Undef, V::Undef) | (V::Null, V::Null) => true,
            (V::Bool(x), V::Bool(y)) => x == y,
            (V::Num(x), V::Num(y)) => x == y,
            (V::Str(x), V::Str(y)) => x == y,
            _ => false,
        };
        Ok(match op {
            "+" if matches!(l, V::Str(_)) || matches!(r, V::Str(_)) => V::str(&format!(
                "{}{}",
                l.to_str().unwrap_or_default(),
                r.to_str().unwrap_or_default()
            )),
            "+" => V::Num(ln + rn),
            "-" => V::Num(ln - rn),
            "*" => V::Num(ln * rn),
            "/" => V::Num(ln / rn),
            "%" => V::Num(ln % rn),
            "**" => V::Num(ln.powf(rn)),
            "===" => V::Bool(strict_eq(&l, &r)),
            "!==" => V::Bool(!strict_eq(&l, &r)),
            "<" => V::Bool(ln < rn),
            ">" => V::Bool(ln > rn),
            "<=" => V::Bool(ln <= rn),
            ">=" => V::Bool(ln >= rn),
            _ => self.opaque(e, "an operator the reader does not model"),
        })
    }

    /// Marks identifiers passed to code the reader does not follow as possibly changed.
    pub fn taint_args(&self, args: &[Elem], env: &Env, why: &str) {
        for a in args {
            if let Elem::Expr(x) | Elem::Spread(x) = a {
                taint_roots(x, env, why);
            }
        }
    }

    fn call(&self, callee: &Expr, args: &[Elem], env: &Env, e: &Expr) -> R<V> {
        // `f.bind(x)` makes a function without running anything.
        if let Kind::Member(target, name, _) = &callee.kind
            && name == "bind"
        {
            return Ok(match self.eval(target, env)? {
                f @ V::Func(_) => f,
                _ => self.opaque(e, "binds an unknown function"),
            });
        }
        let f = self.eval(callee, env)?;
        let argv = self.elems(args, env, e)?;
        match f {
            V::Func(c) => {
                if !super::scan::is_pure(&c.func) {
                    self.taint_args(args, env, "passed to a function that changes values");
                }
                self.apply(&c, argv, e)
            }
            V::Module(name, path) if &*name == "\u{1}global" => Ok(self.builtin(&path, argv, e)),
            V::Module(_, path) if path.last().map(String::as_str) == Some("loadSpec") => {
                match argv.first() {
                    Some(V::Str(p)) => Ok(V::SpecFile(p.to_string())),
                    _ => Ok(self.opaque(e, "a spec path that is not known")),
                }
            }
            _ => {
                self.taint_args(args, env, "passed to code the reader does not follow");
                Ok(self.opaque(e, "calls code the reader does not follow"))
            }
        }
    }

    fn builtin(&self, path: &[String], argv: Vec<V>, e: &Expr) -> V {
        let names: Vec<&str> = path.iter().map(String::as_str).collect();
        match (names.as_slice(), argv.first()) {
            (["require"], Some(V::Str(name))) => V::Module(name.clone(), Vec::new()),
            (["Number"], Some(v)) => v.to_num().map_or_else(|| self.opaque(e, "unknown"), V::Num),
            (["String"], Some(v)) => v
                .to_str()
                .map_or_else(|| self.opaque(e, "unknown"), |s| V::str(&s)),
            (["Object", "assign"], Some(_)) => {
                let mut out: Vec<(String, V)> = Vec::new();
                for a in &argv {
                    match a {
                        V::Obj(o) => {
                            for (k, v) in o.iter() {
                                out.retain(|(x, _)| x != k);
                                out.push((k.clone(), v.clone()));
                            }
                        }
                        V::Undef | V::Null => {}
                        _ => return self.opaque(e, "assigns from an unknown object"),
                    }
                }
                V::Obj(Rc::new(out))
            }
            _ => self.opaque(e, "calls a function the reader does not model"),
        }
    }

    /// Calls a closure with arguments.
    pub fn apply(&self, c: &Closure, argv: Vec<V>, e: &Expr) -> R<V> {
        if self.calls.get() >= self.max_calls {
            return Ok(self.opaque(e, "calls nest too deep"));
        }
        self.calls.set(self.calls.get() + 1);
        let env = child(&c.env);
        if let Some(this) = &c.this {
            env.vars
                .borrow_mut()
                .insert("\u{1}this".into(), Slot::Val(this.clone()));
        }
        let mut argv = argv.into_iter();
        let mut r = Ok(());
        for p in &c.func.params {
            let a = argv.next().unwrap_or(V::Undef);
            match p {
                Param::Name(n, default) => {
                    let v = match (a, default) {
                        (V::Undef, Some(d)) => match self.eval(d, &env) {
                            Ok(v) => v,
                            Err(err) => {
                                r = Err(err);
                                break;
                            }
                        },
                        (a, _) => a,
                    };
                    env.vars.borrow_mut().insert(n.clone(), Slot::Val(v));
                }
                Param::Pattern(names) => {
                    for n in names {
                        env.vars
                            .borrow_mut()
                            .insert(n.clone(), Slot::Tainted("a destructured parameter".into()));
                    }
                }
            }
        }
        let out = r.and_then(|()| match &c.func.body {
            Body::Expr(x) => self.eval(x, &env),
            Body::Block(seq, open) => super::stmt::run_function(self, seq, *open, &env, e),
        });
        self.calls.set(self.calls.get() - 1);
        out
    }
}

/// Prefix of `__dirname` values: the tree root.
pub const TREE: &str = "\u{1}tree/";

/// Taints the root identifiers of an expression that code may change (`a`, `a.b`, `a[0]`).
pub fn taint_roots(x: &Expr, env: &Env, why: &str) {
    let mut cur = x;
    loop {
        match &cur.kind {
            Kind::Member(o, ..) | Kind::Index(o, ..) => cur = o,
            Kind::Ident(name) => {
                if let Some(s) = scope_of(env, name) {
                    s.vars.borrow_mut().insert(
                        name.clone(),
                        Slot::Tainted(format!("`{name}` may be {why}")),
                    );
                }
                return;
            }
            Kind::This => return,
            _ => return,
        }
    }
}
