//! The JavaScript tokenizer of the static reader: one linear pass over the source.
//!
//! It knows strings, template literals (whose `${...}` substitutions are tokenized in place,
//! recursively, up to [`super::Limits::depth`]), comments, numbers, identifiers, regex literals
//! (by the usual "previous token" rule) and punctuators (longest match). Each bracket token is
//! paired with its mate in the same pass, so later stages skip blocks in constant time.

use super::{JsError, Limits};

/// One token kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    Str(String),
    /// A template literal: its literal parts and the token sequences of its substitutions.
    Template(Vec<String>, Vec<Seq>),
    Num(f64),
    Ident(String),
    Punct(&'static str),
    Regex,
}

/// A token with its byte span in the file and its 1-based line.
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub start: usize,
    pub end: usize,
    pub line: u32,
}

/// A token sequence with bracket mates: `mate[i]` is the index of the bracket closing (or
/// opening) token `i`, `u32::MAX` for other tokens.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Seq {
    pub toks: Vec<Token>,
    pub mate: Vec<u32>,
}

const PUNCTS: &[&str] = &[
    ">>>=", "...", "===", "!==", "**=", "<<=", ">>=", ">>>", "&&=", "||=", "??=", "=>", "==", "!=",
    "<=", ">=", "&&", "||", "??", "?.", "**", "++", "--", "+=", "-=", "*=", "/=", "%=", "&=", "|=",
    "^=", "<<", ">>", "{", "}", "(", ")", "[", "]", ";", ",", "<", ">", "+", "-", "*", "/", "%",
    "&", "|", "^", "!", "~", "?", ":", "=", ".", "@", "#",
];

const REGEX_AFTER_WORDS: &[&str] = &[
    "return",
    "typeof",
    "case",
    "do",
    "else",
    "in",
    "of",
    "new",
    "delete",
    "void",
    "throw",
    "instanceof",
    "yield",
    "await",
];

fn regex_allowed(prev: Option<&Token>) -> bool {
    match prev.map(|t| &t.tok) {
        None => true,
        Some(Tok::Punct(p)) => !matches!(*p, ")" | "]" | "}" | "++" | "--"),
        Some(Tok::Ident(w)) => REGEX_AFTER_WORDS.contains(&w.as_str()),
        _ => false,
    }
}

struct Lexer<'a> {
    src: &'a str,
    b: &'a [u8],
    i: usize,
    line: u32,
    limits: Limits,
}

impl Lexer<'_> {
    fn err(&self, what: &str) -> JsError {
        JsError::Syntax {
            line: self.line,
            what: what.to_string(),
        }
    }

    fn ch(&self) -> char {
        self.src[self.i..].chars().next().unwrap_or('\u{fffd}')
    }

    /// Tokens until the end of input (`close == false`) or until the `}` closing a template
    /// substitution (`close == true`, the `}` is consumed).
    fn seq(&mut self, close: bool, depth: usize) -> Result<Seq, JsError> {
        if depth > self.limits.depth {
            return Err(JsError::TooDeep { line: self.line });
        }
        let mut toks: Vec<Token> = Vec::new();
        let mut braces = 0usize;
        while self.i < self.b.len() {
            let c = self.b[self.i];
            let (start, line) = (self.i, self.line);
            match c {
                b'\n' => {
                    self.line += 1;
                    self.i += 1;
                }
                c if c.is_ascii_whitespace() => self.i += 1,
                b'/' if self.b.get(self.i + 1) == Some(&b'/') => {
                    while self.i < self.b.len() && self.b[self.i] != b'\n' {
                        self.i += 1;
                    }
                }
                b'/' if self.b.get(self.i + 1) == Some(&b'*') => {
                    self.i += 2;
                    while self.i < self.b.len()
                        && !(self.b[self.i] == b'*' && self.b.get(self.i + 1) == Some(&b'/'))
                    {
                        if self.b[self.i] == b'\n' {
                            self.line += 1;
                        }
                        self.i += 1;
                    }
                    self.i = (self.i + 2).min(self.b.len());
                }
                b'/' if regex_allowed(toks.last()) => {
                    self.regex()?;
                    toks.push(self.token(Tok::Regex, start, line));
                }
                b'\'' | b'"' => {
                    let s = self.string(c)?;
                    toks.push(self.token(Tok::Str(s), start, line));
                }
                b'`' => {
                    let tok = self.template(depth)?;
                    toks.push(self.token(tok, start, line));
                }
                c if c.is_ascii_digit()
                    || (c == b'.' && self.b.get(self.i + 1).is_some_and(u8::is_ascii_digit)) =>
                {
                    let n = self.number();
                    toks.push(self.token(Tok::Num(n), start, line));
                }
                c if c.is_ascii_alphabetic() || c == b'_' || c == b'$' || c >= 0x80 => {
                    while self.i < self.b.len() {
                        let d = self.b[self.i];
                        if d.is_ascii_alphanumeric() || d == b'_' || d == b'$' {
                            self.i += 1;
                        } else if d >= 0x80 {
                            self.i += self.ch().len_utf8();
                        } else {
                            break;
                        }
                    }
                    let word = self.src[start..self.i].to_string();
                    toks.push(self.token(Tok::Ident(word), start, line));
                }
                b'}' if close && braces == 0 => {
                    self.i += 1;
                    return finish(toks, self.line);
                }
                _ => {
                    let rest = &self.src[self.i..];
                    let Some(p) = PUNCTS.iter().find(|p| rest.starts_with(**p)) else {
                        // Anything else (a stray character) is skipped, as a browser would not.
                        self.i += self.ch().len_utf8();
                        continue;
                    };
                    self.i += p.len();
                    match *p {
                        "{" => braces += 1,
                        "}" => braces = braces.saturating_sub(1),
                        _ => {}
                    }
                    toks.push(self.token(Tok::Punct(p), start, line));
                }
            }
        }
        if close {
            return Err(self.err("unterminated template substitution"));
        }
        finish(toks, self.line)
    }

    fn token(&self, tok: Tok, start: usize, line: u32) -> Token {
        Token {
            tok,
            start,
            end: self.i,
            line,
        }
    }

    fn regex(&mut self) -> Result<(), JsError> {
        self.i += 1;
        let mut class = false;
        loop {
            match self.b.get(self.i) {
                None | Some(b'\n') => return Err(self.err("unterminated regular expression")),
                Some(b'\\') => self.i += 2,
                Some(b'[') => {
                    class = true;
                    self.i += 1;
                }
                Some(b']') => {
                    class = false;
                    self.i += 1;
                }
                Some(b'/') if !class => {
                    self.i += 1;
                    break;
                }
                Some(_) => self.i += 1,
            }
        }
        while self.b.get(self.i).is_some_and(u8::is_ascii_alphabetic) {
            self.i += 1;
        }
        Ok(())
    }

    fn escape(&mut self, s: &mut String) {
        // At the character after the backslash.
        match self.b.get(self.i) {
            Some(b'n') => s.push('\n'),
            Some(b't') => s.push('\t'),
            Some(b'r') => s.push('\r'),
            Some(b'0') => s.push('\0'),
            Some(b'\n') => self.line += 1,
            Some(_) => {
                let ch = self.ch();
                s.push(ch);
                self.i += ch.len_utf8();
                return;
            }
            None => return,
        }
        self.i += 1;
    }

    fn string(&mut self, q: u8) -> Result<String, JsError> {
        self.i += 1;
        let mut s = String::new();
        loop {
            match self.b.get(self.i) {
                None | Some(b'\n') => return Err(self.err("unterminated string")),
                Some(&c) if c == q => {
                    self.i += 1;
                    return Ok(s);
                }
                Some(b'\\') => {
                    self.i += 1;
                    self.escape(&mut s);
                }
                Some(_) => {
                    let ch = self.ch();
                    s.push(ch);
                    self.i += ch.len_utf8();
                }
            }
        }
    }

    fn template(&mut self, depth: usize) -> Result<Tok, JsError> {
        self.i += 1;
        let (mut parts, mut subs) = (vec![String::new()], Vec::new());
        loop {
            match self.b.get(self.i) {
                None => return Err(self.err("unterminated template literal")),
                Some(b'`') => {
                    self.i += 1;
                    break;
                }
                Some(b'\\') => {
                    self.i += 1;
                    let last = parts.last_mut().expect("one part");
                    self.escape(last);
                }
                Some(b'$') if self.b.get(self.i + 1) == Some(&b'{') => {
                    self.i += 2;
                    subs.push(self.seq(true, depth + 1)?);
                    parts.push(String::new());
                }
                Some(_) => {
                    let ch = self.ch();
                    if ch == '\n' {
                        self.line += 1;
                    }
                    parts.last_mut().expect("one part").push(ch);
                    self.i += ch.len_utf8();
                }
            }
        }
        Ok(if subs.is_empty() {
            Tok::Str(parts.pop().unwrap_or_default())
        } else {
            Tok::Template(parts, subs)
        })
    }

    fn number(&mut self) -> f64 {
        let start = self.i;
        while self.i < self.b.len() {
            let d = self.b[self.i];
            if (d == b'e' || d == b'E')
                && matches!(self.b.get(self.i + 1), Some(b'+') | Some(b'-'))
                && !self.src[start..self.i].starts_with("0x")
            {
                self.i += 2;
            } else if d.is_ascii_alphanumeric() || d == b'.' || d == b'_' {
                self.i += 1;
            } else {
                break;
            }
        }
        let text = self.src[start..self.i].replace('_', "");
        let radix = |p: &str, r: u32| {
            text.strip_prefix(p)
                .or_else(|| text.strip_prefix(&p.to_uppercase()))
                .map(|d| i64::from_str_radix(d, r).map_or(f64::NAN, |v| v as f64))
        };
        radix("0x", 16)
            .or_else(|| radix("0o", 8))
            .or_else(|| radix("0b", 2))
            .unwrap_or_else(|| text.parse().unwrap_or(f64::NAN))
    }
}

/// Pairs brackets; an unbalanced sequence is a syntax error.
fn finish(toks: Vec<Token>, line: u32) -> Result<Seq, JsError> {
    let mut mate = vec![u32::MAX; toks.len()];
    let mut stack: Vec<usize> = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        let Tok::Punct(p) = &t.tok else { continue };
        match *p {
            "(" | "[" | "{" => stack.push(i),
            ")" | "]" | "}" => {
                let open = stack.pop().ok_or(JsError::Syntax {
                    line: t.line,
                    what: format!("unbalanced `{p}`"),
                })?;
                let want = match *p {
                    ")" => "(",
                    "]" => "[",
                    _ => "{",
                };
                if toks[open].tok != Tok::Punct(want) {
                    return Err(JsError::Syntax {
                        line: t.line,
                        what: format!("`{p}` closes a bracket opened on line {}", toks[open].line),
                    });
                }
                mate[open] = i as u32;
                mate[i] = open as u32;
            }
            _ => {}
        }
    }
    if let Some(&open) = stack.last() {
        return Err(JsError::Syntax {
            line: toks[open].line.max(line.min(toks[open].line)),
            what: "unclosed bracket".into(),
        });
    }
    Ok(Seq { toks, mate })
}

/// Tokenizes a whole source file.
pub fn tokenize(src: &str, limits: Limits) -> Result<Seq, JsError> {
    if src.len() > limits.max_bytes {
        return Err(JsError::TooLarge {
            bytes: src.len(),
            limit: limits.max_bytes,
        });
    }
    let mut lx = Lexer {
        src,
        b: src.as_bytes(),
        i: 0,
        line: 1,
        limits,
    };
    lx.seq(false, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<Tok> {
        tokenize(src, Limits::default())
            .unwrap()
            .toks
            .into_iter()
            .map(|t| t.tok)
            .collect()
    }

    #[test]
    fn templates_regexes_and_mates() {
        let s = tokenize("a(`x${ {b: `y${c}`} }z`, /[)]/g) / 2", Limits::default()).unwrap();
        assert_eq!(s.mate[1], 5, "{:?}", s.toks);
        let Tok::Template(parts, subs) = &s.toks[2].tok else {
            panic!("{:?}", s.toks[2]);
        };
        assert_eq!(parts, &["x", "z"]);
        assert_eq!(subs[0].toks.len(), 5);
        assert_eq!(s.toks[4].tok, Tok::Regex);
        assert_eq!(s.toks[6].tok, Tok::Punct("/"));
        assert_eq!(
            kinds("x === 0x1f"),
            [Tok::Ident("x".into()), Tok::Punct("==="), Tok::Num(31.0)]
        );
    }

    #[test]
    fn errors_not_panics() {
        for bad in ["'abc", "`${", "(]", "{", "/re", "`a${`b${", "}"] {
            assert!(tokenize(bad, Limits::default()).is_err(), "{bad}");
        }
        let deep = "`${".repeat(100);
        assert!(matches!(
            tokenize(&deep, Limits::default()),
            Err(JsError::TooDeep { .. })
        ));
    }
}
