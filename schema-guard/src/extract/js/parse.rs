//! Expression parser of the static reader: a Pratt parser over a token [`Seq`], producing a
//! small AST. Function bodies are not parsed here: they are kept as token ranges (skipped in
//! constant time through bracket mates) and interpreted on demand by [`super::eval`].
//!
//! Nesting is bounded by [`super::Limits::depth`]; every token is consumed once per parse.

use std::rc::Rc;

pub use super::ast::*;
use super::lex::{Seq, Tok};
use super::{JsError, Limits};

const BINARY: &[(&str, u8)] = &[
    ("??", 1),
    ("||", 2),
    ("&&", 3),
    ("|", 4),
    ("^", 5),
    ("&", 6),
    ("==", 7),
    ("!=", 7),
    ("===", 7),
    ("!==", 7),
    ("<", 8),
    (">", 8),
    ("<=", 8),
    (">=", 8),
    ("instanceof", 8),
    ("in", 8),
    ("<<", 9),
    (">>", 9),
    (">>>", 9),
    ("+", 10),
    ("-", 10),
    ("*", 11),
    ("/", 11),
    ("%", 11),
    ("**", 12),
];

const ASSIGN: &[&str] = &[
    "=", "+=", "-=", "*=", "/=", "%=", "**=", "<<=", ">>=", ">>>=", "&=", "|=", "^=", "&&=", "||=",
    "??=",
];

/// A parser over one token sequence.
pub struct Parser {
    pub seq: Rc<Seq>,
    pub i: usize,
    /// Parse stops at this index (exclusive).
    pub end: usize,
    depth: usize,
    limits: Limits,
}

impl Parser {
    pub fn new(seq: Rc<Seq>, from: usize, end: usize, limits: Limits) -> Parser {
        Parser {
            seq,
            i: from,
            end,
            depth: 0,
            limits,
        }
    }

    fn tok(&self, i: usize) -> Option<&Tok> {
        (i < self.end).then(|| self.seq.toks.get(i).map(|t| &t.tok))?
    }

    pub fn punct(&self, i: usize, p: &str) -> bool {
        matches!(self.tok(i), Some(Tok::Punct(q)) if *q == p)
    }

    pub fn word(&self, i: usize, w: &str) -> bool {
        matches!(self.tok(i), Some(Tok::Ident(x)) if x == w)
    }

    fn err(&self, what: &str) -> JsError {
        JsError::Syntax {
            line: self
                .seq
                .toks
                .get(self.i.min(self.seq.toks.len().saturating_sub(1)))
                .map_or(0, |t| t.line),
            what: what.to_string(),
        }
    }

    fn mate(&self, i: usize) -> Result<usize, JsError> {
        match self.seq.mate.get(i) {
            Some(&m) if m != u32::MAX && (m as usize) < self.end => Ok(m as usize),
            _ => Err(self.err("unbalanced bracket")),
        }
    }

    fn expr_at(&self, kind: Kind, from: usize) -> Expr {
        Expr {
            kind,
            span: Span {
                seq: self.seq.clone(),
                from,
                to: self.i,
            },
        }
    }

    fn enter(&mut self) -> Result<(), JsError> {
        self.depth += 1;
        if self.depth > self.limits.depth {
            return Err(JsError::TooDeep {
                line: self.seq.toks.get(self.i).map_or(0, |t| t.line),
            });
        }
        Ok(())
    }

    /// An assignment expression (no top-level comma).
    pub fn expr(&mut self) -> Result<Expr, JsError> {
        self.enter()?;
        let r = self.assign();
        self.depth -= 1;
        r
    }

    fn assign(&mut self) -> Result<Expr, JsError> {
        let from = self.i;
        if let Some(f) = self.arrow()? {
            return Ok(self.expr_at(Kind::Func(Rc::new(f)), from));
        }
        let lhs = self.binary(0)?;
        if self.punct(self.i, "?") {
            self.i += 1;
            let a = self.expr()?;
            if !self.punct(self.i, ":") {
                return Err(self.err("expected `:`"));
            }
            self.i += 1;
            let b = self.expr()?;
            return Ok(self.expr_at(Kind::Cond(Box::new(lhs), Box::new(a), Box::new(b)), from));
        }
        if let Some(Tok::Punct(p)) = self.tok(self.i)
            && let Some(op) = ASSIGN.iter().find(|a| **a == *p)
        {
            self.i += 1;
            let rhs = self.expr()?;
            return Ok(self.expr_at(Kind::Assign(op, Box::new(lhs), Box::new(rhs)), from));
        }
        Ok(lhs)
    }

    /// `x => ...`, `(a, b) => ...`, `async (...) => ...`.
    fn arrow(&mut self) -> Result<Option<Func>, JsError> {
        let mut i = self.i;
        if self.word(i, "async") && !self.punct(i + 1, "=>") {
            i += 1;
        }
        let (params, after) = match self.tok(i) {
            Some(Tok::Ident(name)) if self.punct(i + 1, "=>") => {
                (vec![Param::Name(name.clone(), None)], i + 1)
            }
            Some(Tok::Punct("(")) => {
                let close = self.mate(i)?;
                if !self.punct(close + 1, "=>") {
                    return Ok(None);
                }
                (self.params(i, close)?, close + 1)
            }
            _ => return Ok(None),
        };
        self.i = after + 1;
        let body = if self.punct(self.i, "{") {
            let open = self.i;
            self.i = self.mate(open)? + 1;
            Body::Block(self.seq.clone(), open)
        } else {
            Body::Expr(Box::new(self.expr()?))
        };
        Ok(Some(Func { params, body }))
    }

    /// Parameters between the parentheses at `open` and `close`.
    pub fn params(&mut self, open: usize, close: usize) -> Result<Vec<Param>, JsError> {
        let saved = (self.i, self.end);
        self.i = open + 1;
        self.end = close;
        let mut out = Vec::new();
        while self.i < close {
            match self.tok(self.i) {
                Some(Tok::Ident(name)) => {
                    let name = name.clone();
                    self.i += 1;
                    let default = if self.punct(self.i, "=") {
                        self.i += 1;
                        Some(self.expr()?)
                    } else {
                        None
                    };
                    out.push(Param::Name(name, default));
                }
                _ => {
                    // Destructuring or rest: skip to the next top-level comma.
                    let mut names = Vec::new();
                    while self.i < close && !self.punct(self.i, ",") {
                        if let Some(Tok::Ident(n)) = self.tok(self.i) {
                            names.push(n.clone());
                        }
                        self.i = match self.tok(self.i) {
                            Some(Tok::Punct("(" | "[" | "{")) => self.mate(self.i)? + 1,
                            _ => self.i + 1,
                        };
                    }
                    out.push(Param::Pattern(names));
                }
            }
            if self.punct(self.i, ",") {
                self.i += 1;
            } else if self.i < close {
                return Err(self.err("bad parameter list"));
            }
        }
        (self.i, self.end) = (close + 1, saved.1);
        Ok(out)
    }

    fn binary(&mut self, min: u8) -> Result<Expr, JsError> {
        let from = self.i;
        let mut lhs = self.unary()?;
        // Each operator deepens the tree: count it against the nesting limit.
        let depth = self.depth;
        let r = self.binary_rest(min, from, &mut lhs);
        self.depth = depth;
        r.map(|()| lhs)
    }

    fn binary_rest(&mut self, min: u8, from: usize, lhs: &mut Expr) -> Result<(), JsError> {
        loop {
            let op = match self.tok(self.i) {
                Some(Tok::Punct(p)) => BINARY.iter().find(|(o, _)| o == p),
                Some(Tok::Ident(w)) => BINARY.iter().find(|(o, _)| o == w),
                _ => None,
            };
            let Some(&(op, prec)) = op else { break };
            if prec <= min && !(op == "**" && prec == min) {
                break;
            }
            self.i += 1;
            self.enter()?;
            let rhs = self.binary(prec)?;
            let l = std::mem::replace(lhs, self.expr_at(Kind::Other, from));
            *lhs = self.expr_at(Kind::Binary(op, Box::new(l), Box::new(rhs)), from);
        }
        Ok(())
    }

    fn unary(&mut self) -> Result<Expr, JsError> {
        let from = self.i;
        let op = match self.tok(self.i) {
            Some(Tok::Punct(p @ ("!" | "-" | "+" | "~" | "++" | "--"))) => Some(*p),
            Some(Tok::Ident(w)) => ["typeof", "void", "delete", "await"]
                .into_iter()
                .find(|o| o == w),
            _ => None,
        };
        if let Some(op) = op {
            self.i += 1;
            self.enter()?;
            let e = self.unary();
            self.depth -= 1;
            return Ok(self.expr_at(Kind::Unary(op, Box::new(e?)), from));
        }
        let e = self.postfix()?;
        if matches!(self.tok(self.i), Some(Tok::Punct("++" | "--"))) {
            self.i += 1;
            return Ok(self.expr_at(Kind::Unary("++", Box::new(e)), from));
        }
        Ok(e)
    }

    fn args(&mut self) -> Result<Vec<Elem>, JsError> {
        // At `(`.
        let close = self.mate(self.i)?;
        self.i += 1;
        let items = self.elems(close)?;
        self.i = close + 1;
        Ok(items)
    }

    fn elems(&mut self, close: usize) -> Result<Vec<Elem>, JsError> {
        let mut items = Vec::new();
        while self.i < close {
            if self.punct(self.i, ",") {
                items.push(Elem::Hole);
                self.i += 1;
                continue;
            }
            let spread = self.punct(self.i, "...");
            if spread {
                self.i += 1;
            }
            let e = self.expr()?;
            items.push(if spread {
                Elem::Spread(e)
            } else {
                Elem::Expr(e)
            });
            if self.punct(self.i, ",") {
                self.i += 1;
            } else if self.i != close {
                return Err(self.err("expected `,`"));
            }
        }
        Ok(items)
    }

    fn postfix(&mut self) -> Result<Expr, JsError> {
        let from = self.i;
        let mut e = if self.word(self.i, "new") {
            self.i += 1;
            self.enter()?;
            let callee = self.primary();
            self.depth -= 1;
            let callee = callee?;
            let args = if self.punct(self.i, "(") {
                self.args()?
            } else {
                Vec::new()
            };
            self.expr_at(Kind::New(Box::new(callee), args), from)
        } else {
            self.primary()?
        };
        let depth = self.depth;
        let r = self.postfix_rest(from, &mut e);
        self.depth = depth;
        r.map(|()| e)
    }

    fn postfix_rest(&mut self, from: usize, e: &mut Expr) -> Result<(), JsError> {
        loop {
            self.enter()?;
            let optional = self.punct(self.i, "?.");
            if self.punct(self.i, ".") || optional {
                self.i += 1;
                if optional && self.punct(self.i, "(") {
                    let args = self.args()?;
                    let f = self.take(e, from);
                    *e = self.expr_at(Kind::Call(Box::new(f), args), from);
                    continue;
                }
                if optional && self.punct(self.i, "[") {
                    let f = self.take(e, from);
                    *e = self.index(f, from, true)?;
                    continue;
                }
                let Some(Tok::Ident(name)) = self.tok(self.i) else {
                    return Err(self.err("expected a property name"));
                };
                let name = name.clone();
                self.i += 1;
                let f = self.take(e, from);
                *e = self.expr_at(Kind::Member(Box::new(f), name, optional), from);
            } else if self.punct(self.i, "[") {
                let f = self.take(e, from);
                *e = self.index(f, from, false)?;
            } else if self.punct(self.i, "(") {
                let args = self.args()?;
                let f = self.take(e, from);
                *e = self.expr_at(Kind::Call(Box::new(f), args), from);
            } else if let Some(Tok::Template(..)) = self.tok(self.i) {
                // A tagged template: not modelled.
                self.i += 1;
                *e = self.expr_at(Kind::Other, from);
            } else {
                return Ok(());
            }
        }
    }

    fn take(&self, e: &mut Expr, from: usize) -> Expr {
        std::mem::replace(e, self.expr_at(Kind::Other, from))
    }

    fn index(&mut self, e: Expr, from: usize, optional: bool) -> Result<Expr, JsError> {
        let close = self.mate(self.i)?;
        self.i += 1;
        let saved = self.end;
        self.end = close;
        let ix = self.expr();
        self.end = saved;
        let ix = ix?;
        if self.i != close {
            return Err(self.err("expected `]`"));
        }
        self.i = close + 1;
        Ok(self.expr_at(Kind::Index(Box::new(e), Box::new(ix), optional), from))
    }

    fn primary(&mut self) -> Result<Expr, JsError> {
        let from = self.i;
        let Some(tok) = self.tok(self.i).cloned() else {
            return Err(self.err("expected an expression"));
        };
        self.i += 1;
        let kind = match tok {
            Tok::Num(n) => Kind::Num(n),
            Tok::Str(s) => Kind::Str(s),
            Tok::Regex => Kind::Regex,
            Tok::Template(parts, subs) => {
                let mut exprs = Vec::new();
                for s in subs {
                    let seq = Rc::new(s);
                    let n = seq.toks.len();
                    let mut p = Parser::new(seq, 0, n, self.limits);
                    p.depth = self.depth;
                    let e = p.expr()?;
                    if p.i != n {
                        return Err(p.err("unexpected token in template substitution"));
                    }
                    exprs.push(e);
                }
                Kind::Template(parts, exprs)
            }
            Tok::Punct("(") => {
                let close = self.mate(from)?;
                let saved = self.end;
                self.end = close;
                let mut e = self.expr();
                while e.is_ok() && self.punct(self.i, ",") {
                    self.i += 1;
                    e = self.expr().map(|x| self.expr_at(Kind::Other, x.span.from));
                }
                self.end = saved;
                let e = e?;
                if self.i != close {
                    return Err(self.err("expected `)`"));
                }
                self.i = close + 1;
                return Ok(Expr {
                    kind: e.kind,
                    span: e.span,
                });
            }
            Tok::Punct("[") => {
                let close = self.mate(from)?;
                let items = self.elems(close)?;
                self.i = close + 1;
                Kind::Array(items)
            }
            Tok::Punct("{") => Kind::Object(self.object(from)?),
            Tok::Ident(w) => match w.as_str() {
                "this" => Kind::This,
                "function" => {
                    if let Some(Tok::Ident(_)) = self.tok(self.i) {
                        self.i += 1;
                    }
                    Kind::Func(Rc::new(self.function_rest()?))
                }
                "class" => {
                    while self.i < self.end && !self.punct(self.i, "{") {
                        self.i += 1;
                    }
                    self.i = self.mate(self.i)? + 1;
                    Kind::Class
                }
                "async" if self.word(self.i, "function") => return self.primary(),
                _ => Kind::Ident(w),
            },
            Tok::Punct(p) => return Err(self.err(&format!("unexpected `{p}`"))),
        };
        Ok(self.expr_at(kind, from))
    }

    /// After `function [name]`: `(params) { body }`.
    pub fn function_rest(&mut self) -> Result<Func, JsError> {
        if self.punct(self.i, "*") {
            self.i += 1;
        }
        if !self.punct(self.i, "(") {
            return Err(self.err("expected `(`"));
        }
        let close = self.mate(self.i)?;
        let params = self.params(self.i, close)?;
        if !self.punct(self.i, "{") {
            return Err(self.err("expected a function body"));
        }
        let open = self.i;
        self.i = self.mate(open)? + 1;
        Ok(Func {
            params,
            body: Body::Block(self.seq.clone(), open),
        })
    }

    fn object(&mut self, open: usize) -> Result<Vec<Prop>, JsError> {
        let close = self.mate(open)?;
        let mut props = Vec::new();
        while self.i < close {
            if self.punct(self.i, "...") {
                self.i += 1;
                props.push(Prop::Spread(self.expr()?));
            } else {
                // Modifiers of methods and accessors.
                while matches!(self.tok(self.i), Some(Tok::Ident(w)) if ["async", "get", "set", "static"].contains(&w.as_str()))
                    && !matches!(
                        self.tok(self.i + 1),
                        Some(Tok::Punct("," | ":" | "(" | "}"))
                    )
                {
                    self.i += 1;
                }
                if self.punct(self.i, "*") {
                    self.i += 1;
                }
                let key = match self.tok(self.i).cloned() {
                    Some(Tok::Ident(k) | Tok::Str(k)) => PropKey::Name(k),
                    Some(Tok::Num(n)) => PropKey::Name(super::eval::num_to_string(n)),
                    Some(Tok::Punct("[")) => {
                        let c = self.mate(self.i)?;
                        self.i += 1;
                        let saved = self.end;
                        self.end = c;
                        let k = self.expr();
                        self.end = saved;
                        let k = k?;
                        self.i = c;
                        PropKey::Computed(k)
                    }
                    _ => return Err(self.err("expected a property")),
                };
                let key_tok = self.i;
                self.i += 1;
                if self.punct(self.i, ":") {
                    self.i += 1;
                    props.push(Prop::Value(key, self.expr()?));
                } else if self.punct(self.i, "(") {
                    let f = self.function_rest()?;
                    let name = match key {
                        PropKey::Name(n) => n,
                        PropKey::Computed(_) => String::new(),
                    };
                    props.push(Prop::Method(name, Rc::new(f)));
                } else if let (PropKey::Name(n), Some(Tok::Ident(_))) = (&key, self.tok(key_tok)) {
                    let n = n.clone();
                    if self.punct(self.i, "=") {
                        // `{ a = 1 }` only exists in patterns.
                        return Err(self.err("default value outside a pattern"));
                    }
                    props.push(Prop::Shorthand(n));
                } else {
                    return Err(self.err("expected `:`"));
                }
            }
            if self.punct(self.i, ",") {
                self.i += 1;
            } else if self.i != close {
                return Err(self.err("expected `,` or `}`"));
            }
        }
        self.i = close + 1;
        Ok(props)
    }
}

/// Parses one whole expression from `src` (for tests and simple literals).
pub fn parse_expr(seq: Rc<Seq>, limits: Limits) -> Result<Expr, JsError> {
    let n = seq.toks.len();
    let mut p = Parser::new(seq, 0, n, limits);
    let e = p.expr()?;
    if p.i != n {
        return Err(p.err("unexpected token after the expression"));
    }
    Ok(e)
}
