//! The AST of the static reader's expressions ([`Expr`]) and functions ([`Func`], whose
//! block bodies stay token ranges, interpreted on demand).

use std::rc::Rc;

use super::lex::Seq;

/// Where an expression came from: its sequence and token range.
#[derive(Clone, Debug)]
pub struct Span {
    pub seq: Rc<Seq>,
    pub from: usize,
    pub to: usize,
}

impl Span {
    /// The 1-based line of the first token.
    pub fn line(&self) -> u32 {
        self.seq.toks.get(self.from).map_or(0, |t| t.line)
    }

    /// The expression's source text, whitespace collapsed, at most 120 characters.
    pub fn text(&self, src: &str) -> String {
        let (Some(a), Some(b)) = (
            self.seq.toks.get(self.from),
            self.seq.toks.get(self.to.max(self.from + 1) - 1),
        ) else {
            return String::new();
        };
        let raw = src.get(a.start..b.end).unwrap_or("");
        let mut t = raw.split_whitespace().collect::<Vec<_>>().join(" ");
        if t.chars().count() > 120 {
            t = t.chars().take(117).collect::<String>() + "...";
        }
        t
    }
}

/// A function: parameter names (with defaults) and a body.
#[derive(Clone, Debug)]
pub struct Func {
    pub params: Vec<Param>,
    pub body: Body,
}

#[derive(Clone, Debug)]
pub enum Param {
    Name(String, Option<Expr>),
    /// A destructuring or rest parameter: bound names are unknown.
    Pattern(Vec<String>),
}

#[derive(Clone, Debug)]
pub enum Body {
    Expr(Box<Expr>),
    /// Statements between the braces at `open` and its mate in `seq`.
    Block(Rc<Seq>, usize),
}

#[derive(Clone, Debug)]
pub enum PropKey {
    Name(String),
    Computed(Expr),
}

#[derive(Clone, Debug)]
pub enum Prop {
    Value(PropKey, Expr),
    Shorthand(String),
    Spread(Expr),
    /// A method, getter or setter: its name.
    Method(String, Rc<Func>),
}

#[derive(Clone, Debug)]
pub enum Elem {
    Expr(Expr),
    Spread(Expr),
    Hole,
}

#[derive(Clone, Debug)]
pub enum Kind {
    Num(f64),
    Str(String),
    Template(Vec<String>, Vec<Expr>),
    Ident(String),
    This,
    Regex,
    Array(Vec<Elem>),
    Object(Vec<Prop>),
    Member(Box<Expr>, String, bool),
    Index(Box<Expr>, Box<Expr>, bool),
    Call(Box<Expr>, Vec<Elem>),
    New(Box<Expr>, Vec<Elem>),
    Unary(&'static str, Box<Expr>),
    Binary(&'static str, Box<Expr>, Box<Expr>),
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
    Assign(&'static str, Box<Expr>, Box<Expr>),
    Func(Rc<Func>),
    Class,
    /// Something the reader does not model (`yield`, `await`, a sequence...).
    Other,
}

#[derive(Clone, Debug)]
pub struct Expr {
    pub kind: Kind,
    pub span: Span,
}
