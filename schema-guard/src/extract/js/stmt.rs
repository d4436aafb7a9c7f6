//! Statements of the static reader: the top level of a module (declarations bound lazily,
//! `module.exports = ...` found) and function bodies interpreted in order (declarations,
//! `if (...) throw` guards, assignments to known values, `return`).
//!
//! A statement the interpreter does not follow (a loop, a branch that is not a guard, a call
//! for its effects) makes every name it may change opaque; a `return` or `throw` inside one
//! makes the function's result opaque. Nothing is skipped silently.

use std::collections::BTreeSet;
use std::rc::Rc;

use super::eval::{ClassDef, Env, Ev, Slot, V, child, scope_of, taint_roots};
use super::lex::{Seq, Tok};
use super::parse::{Expr, Func, Kind, Parser};
use super::{JsError, Limits};

type R<T> = Result<T, JsError>;

/// How a block ended.
enum Flow {
    Next,
    Return(V),
}

/// A statement walker over `seq[from..to]`.
struct Walk<'s> {
    seq: &'s Rc<Seq>,
    i: usize,
    to: usize,
    limits: Limits,
}

impl Walk<'_> {
    fn tok(&self, i: usize) -> Option<&Tok> {
        (i < self.to).then(|| self.seq.toks.get(i).map(|t| &t.tok))?
    }
    fn word(&self, i: usize, w: &str) -> bool {
        matches!(self.tok(i), Some(Tok::Ident(x)) if x == w)
    }
    fn punct(&self, i: usize, p: &str) -> bool {
        matches!(self.tok(i), Some(Tok::Punct(q)) if *q == p)
    }
    fn mate(&self, i: usize) -> usize {
        self.seq
            .mate
            .get(i)
            .copied()
            .filter(|&m| m != u32::MAX)
            .map_or(self.to, |m| (m as usize).min(self.to))
    }
    fn line(&self, i: usize) -> u32 {
        self.seq.toks.get(i).map_or(0, |t| t.line)
    }
    fn parser(&self) -> Parser {
        Parser::new(self.seq.clone(), self.i, self.to, self.limits)
    }
    /// Parses an expression at `i` and moves past it and an optional `;`.
    fn expr(&mut self) -> R<Expr> {
        let mut p = self.parser();
        let e = p.expr()?;
        self.i = p.i;
        if self.punct(self.i, ";") {
            self.i += 1;
        }
        Ok(e)
    }

    /// The end of the statement at `i` (for statements that are skipped, not run).
    fn skip(&self, i: usize) -> usize {
        let mut j = i;
        // Compound statements: keyword, optional (...) header, then a body statement.
        if let Some(Tok::Ident(w)) = self.tok(j) {
            match w.as_str() {
                "if" | "for" | "while" | "with" | "switch" => {
                    j += 1;
                    if self.word(j, "await") {
                        j += 1;
                    }
                    if self.punct(j, "(") {
                        j = self.mate(j) + 1;
                    }
                    j = self.skip(j);
                    if w == "if" && self.word(j, "else") {
                        j = self.skip(j + 1);
                    }
                    return j;
                }
                "do" => {
                    j = self.skip(j + 1);
                    if self.word(j, "while") && self.punct(j + 1, "(") {
                        j = self.mate(j + 1) + 1;
                    }
                    return j + usize::from(self.punct(j, ";"));
                }
                "try" => {
                    j = self.skip(j + 1);
                    if self.word(j, "catch") {
                        j += 1;
                        if self.punct(j, "(") {
                            j = self.mate(j) + 1;
                        }
                        j = self.skip(j);
                    }
                    if self.word(j, "finally") {
                        j = self.skip(j + 1);
                    }
                    return j;
                }
                "else" => return self.skip(j + 1),
                _ => {}
            }
        }
        if self.punct(j, "{") {
            return self.mate(j) + 1;
        }
        // A simple statement: to the next `;` at this level, or a line break before a
        // statement keyword, or the end of the block.
        let start_line = self.line(j);
        while j < self.to {
            match self.tok(j) {
                Some(Tok::Punct(";")) => return j + 1,
                Some(Tok::Punct("(" | "[" | "{")) => j = self.mate(j) + 1,
                Some(Tok::Ident(w))
                    if j > i
                        && self.line(j) > start_line
                        && STMT_WORDS.contains(&w.as_str())
                        && !self.punct(j - 1, ".") =>
                {
                    return j;
                }
                _ => j += 1,
            }
        }
        j
    }
}

const STMT_WORDS: &[&str] = &[
    "const", "let", "var", "function", "class", "if", "for", "while", "do", "return", "throw",
    "try", "switch", "module", "exports",
];

/// Whether the statement at `i` is `throw ...` or `{ throw ...; }`.
fn is_throw(w: &Walk<'_>, i: usize) -> bool {
    w.word(i, "throw") || (w.punct(i, "{") && w.word(i + 1, "throw") && w.mate(i) == w.skip(i + 1))
}

fn has_return(seq: &Seq, from: usize, to: usize) -> bool {
    seq.toks[from..to.min(seq.toks.len())]
        .iter()
        .any(|t| matches!(&t.tok, Tok::Ident(w) if w == "return" || w == "throw"))
}

/// Binds a class declaration's methods.
fn class_def(w: &mut Walk<'_>, env: &Env) -> Option<(String, V)> {
    // At `class`.
    let name = match w.tok(w.i + 1) {
        Some(Tok::Ident(n)) => n.clone(),
        _ => return None,
    };
    let mut j = w.i + 2;
    while j < w.to && !w.punct(j, "{") {
        j += 1;
    }
    let close = w.mate(j);
    let mut methods = Vec::new();
    let mut k = j + 1;
    while k < close {
        while matches!(w.tok(k), Some(Tok::Ident(m)) if ["static", "async", "get", "set"].contains(&m.as_str()))
            && !w.punct(k + 1, "(")
        {
            k += 1;
        }
        if let Some(Tok::Ident(m)) = w.tok(k)
            && w.punct(k + 1, "(")
        {
            let mut p = Parser::new(w.seq.clone(), k + 1, close, w.limits);
            if let Ok(f) = p.function_rest() {
                methods.push((m.clone(), Rc::new(f)));
                k = p.i;
                continue;
            }
        }
        // A field or something else: to its end.
        k = match w.tok(k) {
            Some(Tok::Punct("(" | "[" | "{")) => w.mate(k) + 1,
            _ => k + 1,
        };
    }
    w.i = close + 1;
    Some((
        name,
        V::Class(Rc::new(ClassDef {
            methods,
            env: env.clone(),
        })),
    ))
}

/// `function name(...) {...}` at `w.i`.
fn function_decl(w: &mut Walk<'_>, env: &Env, ev: &Ev<'_>) -> R<Option<(String, V)>> {
    let name = match w.tok(w.i + 1) {
        Some(Tok::Ident(n)) => n.clone(),
        _ => return Ok(None),
    };
    let mut p = Parser::new(w.seq.clone(), w.i + 2, w.to, w.limits);
    let f: Func = p.function_rest()?;
    w.i = p.i;
    let _ = ev;
    Ok(Some((
        name,
        V::Func(Rc::new(super::eval::Closure {
            func: Rc::new(f),
            env: env.clone(),
            this: None,
        })),
    )))
}

/// Declarators after `const`/`let`/`var` at `w.i`; `lazy` binds module-level initialisers
/// for evaluation on first use.
fn declare(
    w: &mut Walk<'_>,
    env: &Env,
    ev: &Ev<'_>,
    lazy: bool,
    changed: &BTreeSet<String>,
) -> R<()> {
    w.i += 1;
    loop {
        match w.tok(w.i).cloned() {
            Some(Tok::Ident(name)) => {
                w.i += 1;
                let slot = if w.punct(w.i, "=") {
                    w.i += 1;
                    let mut p = w.parser();
                    let init = p.expr()?;
                    w.i = p.i;
                    if changed.contains(&name) {
                        Slot::Tainted(format!("`{name}` is changed after its declaration"))
                    } else if lazy {
                        Slot::Lazy(Rc::new(init))
                    } else {
                        Slot::Val(ev.eval(&init, env)?)
                    }
                } else {
                    Slot::Val(V::Undef)
                };
                env.vars.borrow_mut().insert(name, slot);
            }
            Some(Tok::Punct("{" | "[")) => {
                // Destructuring: every name in the pattern is unknown.
                let close = w.mate(w.i);
                for t in &w.seq.toks[w.i..close] {
                    if let Tok::Ident(n) = &t.tok {
                        env.vars
                            .borrow_mut()
                            .insert(n.clone(), Slot::Tainted("a destructured value".into()));
                    }
                }
                w.i = close + 1;
                if w.punct(w.i, "=") {
                    w.i += 1;
                    let mut p = w.parser();
                    p.expr()?;
                    w.i = p.i;
                }
            }
            _ => {
                return Err(JsError::Syntax {
                    line: w.line(w.i),
                    what: "bad declaration".into(),
                });
            }
        }
        if w.punct(w.i, ",") {
            w.i += 1;
        } else {
            if w.punct(w.i, ";") {
                w.i += 1;
            }
            return Ok(());
        }
    }
}

/// Applies `target = value` to a known binding, else makes the target's root opaque.
fn assign(ev: &Ev<'_>, env: &Env, op: &str, target: &Expr, rhs: &Expr) -> R<()> {
    if op == "=" {
        if let Kind::Ident(name) = &target.kind
            && let Some(scope) = scope_of(env, name)
        {
            let v = ev.eval(rhs, env)?;
            scope.vars.borrow_mut().insert(name.clone(), Slot::Val(v));
            return Ok(());
        }
        if let Kind::Member(obj, key, false) = &target.kind
            && let Kind::Ident(name) = &obj.kind
            && let Some(scope) = scope_of(env, name)
        {
            let base = ev.eval(obj, env)?;
            let v = ev.eval(rhs, env)?;
            if let V::Obj(props) = base {
                let mut props = (*props).clone();
                props.retain(|(k, _)| k != key);
                props.push((key.clone(), v));
                scope
                    .vars
                    .borrow_mut()
                    .insert(name.clone(), Slot::Val(V::Obj(Rc::new(props))));
                return Ok(());
            }
        }
    }
    taint_roots(target, env, "assigned");
    Ok(())
}

/// Runs the statements of the block at `open` as a function body.
pub fn run_function(ev: &Ev<'_>, seq: &Rc<Seq>, open: usize, env: &Env, at: &Expr) -> R<V> {
    let close = seq.mate.get(open).map_or(open, |&m| m as usize);
    let body = child(env);
    let mut w = Walk {
        seq,
        i: open + 1,
        to: close,
        limits: ev.limits,
    };
    // In a body, statements run in order: a later assignment is applied when reached.
    let changed = BTreeSet::new();
    hoist(
        &mut Walk {
            seq,
            i: open + 1,
            to: close,
            limits: ev.limits,
        },
        &body,
        ev,
    )?;
    match block(&mut w, &body, ev, &changed) {
        Ok(Flow::Return(v)) => Ok(v),
        Ok(Flow::Next) => Ok(V::Undef),
        Err(e @ (JsError::Budget | JsError::TooDeep { .. })) => Err(e),
        Err(other) => Ok(ev.opaque(at, &format!("its function body cannot be read ({other})"))),
    }
}

/// Binds function and class declarations of a block before it runs (JS hoisting).
fn hoist(w: &mut Walk<'_>, env: &Env, ev: &Ev<'_>) -> R<()> {
    while w.i < w.to {
        let start = w.i;
        if w.word(w.i, "function") || (w.word(w.i, "async") && w.word(w.i + 1, "function")) {
            if w.word(w.i, "async") {
                w.i += 1;
            }
            if let Ok(Some((n, v))) = function_decl(w, env, ev) {
                env.vars.borrow_mut().insert(n, Slot::Val(v));
            }
        } else if w.word(w.i, "class")
            && let Some((n, v)) = class_def(w, env)
        {
            env.vars.borrow_mut().insert(n, Slot::Val(v));
        }
        if w.i == start {
            w.i = w.skip(w.i).max(start + 1);
        }
    }
    Ok(())
}

fn block(w: &mut Walk<'_>, env: &Env, ev: &Ev<'_>, changed: &BTreeSet<String>) -> R<Flow> {
    while w.i < w.to {
        let start = w.i;
        let Some(tok) = w.tok(w.i).cloned() else {
            break;
        };
        match tok {
            Tok::Punct(";") => w.i += 1,
            Tok::Str(_) if w.punct(w.i + 1, ";") || w.line(w.i + 1) > w.line(w.i) => w.i += 1,
            Tok::Ident(word) => match word.as_str() {
                "const" | "let" | "var" => declare(w, env, ev, false, changed)?,
                "function" | "class" | "async" if !w.punct(w.i + 1, "(") => {
                    w.i = w.skip(w.i).max(start + 1)
                }
                "return" => {
                    w.i += 1;
                    if w.i >= w.to
                        || w.punct(w.i, ";")
                        || w.punct(w.i, "}")
                        || w.line(w.i) > w.line(start)
                    {
                        return Ok(Flow::Return(V::Undef));
                    }
                    let e = w.expr()?;
                    return Ok(Flow::Return(ev.eval(&e, env)?));
                }
                "throw" => {
                    return Err(JsError::Syntax {
                        line: w.line(start),
                        what: "the function throws".into(),
                    });
                }
                "if" if w.punct(w.i + 1, "(") => {
                    let then = w.mate(w.i + 1) + 1;
                    let end = w.skip(w.i);
                    let guard = is_throw(w, then) && w.skip(then) == end;
                    if !guard {
                        opaque_region(w, env, start, end)?;
                    }
                    w.i = end;
                }
                "for" | "while" | "do" | "switch" | "try" | "if" | "with" => {
                    let end = w.skip(w.i);
                    opaque_region(w, env, start, end)?;
                    w.i = end;
                }
                _ => statement(w, env, ev)?,
            },
            Tok::Punct("{") => {
                let end = w.mate(w.i) + 1;
                opaque_region(w, env, start, end)?;
                w.i = end;
            }
            _ => statement(w, env, ev)?,
        }
        if w.i == start {
            w.i += 1;
        }
    }
    Ok(Flow::Next)
}

/// A region the interpreter does not follow: what it may change becomes opaque; a `return`
/// or `throw` in it makes the result unknowable.
fn opaque_region(w: &Walk<'_>, env: &Env, from: usize, to: usize) -> R<()> {
    if has_return(w.seq, from, to) {
        return Err(JsError::Syntax {
            line: w.line(from),
            what: "it returns from inside a branch or loop".into(),
        });
    }
    let mut changed = BTreeSet::new();
    super::scan::changed_names(w.seq, from, to, &mut changed);
    for name in changed {
        if let Some(s) = scope_of(env, &name) {
            s.vars.borrow_mut().insert(
                name.clone(),
                Slot::Tainted(format!("`{name}` may be changed on line {}", w.line(from))),
            );
        }
    }
    Ok(())
}

/// An expression statement: assignments are applied; anything else may change what it names.
fn statement(w: &mut Walk<'_>, env: &Env, ev: &Ev<'_>) -> R<()> {
    let start = w.i;
    let e = match w.expr() {
        Ok(e) => e,
        Err(JsError::Syntax { .. }) => {
            let end = w.skip(start).max(start + 1);
            opaque_region(w, env, start, end)?;
            w.i = end;
            return Ok(());
        }
        Err(other) => return Err(other),
    };
    match &e.kind {
        Kind::Assign(op, target, rhs) => assign(ev, env, op, target, rhs),
        _ => {
            let end = w.i;
            opaque_region(w, env, start, end)?;
            let _ = ev.eval(&e, env)?;
            Ok(())
        }
    }
}

/// A module's top level: declarations (lazy), functions and classes, and `module.exports`.
pub struct TopLevel {
    pub env: Env,
    pub exports: Option<Expr>,
}

/// Reads a module's top level.
pub fn top_level(ev: &Ev<'_>, seq: &Rc<Seq>, root: &Env) -> R<TopLevel> {
    let n = seq.toks.len();
    let env = child(root);
    let mut changed = BTreeSet::new();
    super::scan::changed_names(seq, 0, n, &mut changed);
    hoist(
        &mut Walk {
            seq,
            i: 0,
            to: n,
            limits: ev.limits,
        },
        &env,
        ev,
    )?;
    for name in &changed {
        if env.vars.borrow().contains_key(name) {
            env.vars.borrow_mut().insert(
                name.clone(),
                Slot::Tainted(format!("`{name}` is changed after its declaration")),
            );
        }
    }
    let mut w = Walk {
        seq,
        i: 0,
        to: n,
        limits: ev.limits,
    };
    let mut exports = None;
    while w.i < n {
        let start = w.i;
        if w.word(w.i, "const") || w.word(w.i, "let") || w.word(w.i, "var") {
            if declare(&mut w, &env, ev, true, &changed).is_err() {
                w.i = w.skip(start).max(start + 1);
            }
        } else if w.word(w.i, "module")
            && w.punct(w.i + 1, ".")
            && w.word(w.i + 2, "exports")
            && w.punct(w.i + 3, "=")
        {
            w.i += 4;
            match w.expr() {
                Ok(e) => exports = Some(e),
                Err(JsError::Syntax { .. }) => w.i = w.skip(start).max(start + 1),
                Err(other) => return Err(other),
            }
        } else {
            w.i = w.skip(w.i).max(start + 1);
        }
    }
    Ok(TopLevel { env, exports })
}
