//! Token scans of the static reader: which names a module changes after declaring them
//! (reassignment, member assignment, `delete`, mutating methods), and whether a function body
//! changes anything at all (a pure function's arguments stay known after a call).

use std::collections::BTreeSet;

use super::lex::{Seq, Tok};
use super::parse::{Body, Func};

const ASSIGN_OPS: &[&str] = &[
    "=", "+=", "-=", "*=", "/=", "%=", "**=", "<<=", ">>=", ">>>=", "&=", "|=", "^=", "&&=", "||=",
    "??=", "++", "--",
];

const MUTATING_METHODS: &[&str] = &[
    "push",
    "pop",
    "shift",
    "unshift",
    "splice",
    "sort",
    "reverse",
    "fill",
    "copyWithin",
    "set",
    "add",
    "delete",
    "clear",
];

fn punct(seq: &Seq, i: usize, p: &str) -> bool {
    matches!(seq.toks.get(i).map(|t| &t.tok), Some(Tok::Punct(q)) if *q == p)
}

fn is_word(seq: &Seq, i: usize, w: &str) -> bool {
    matches!(seq.toks.get(i).map(|t| &t.tok), Some(Tok::Ident(x)) if x == w)
}

/// After the identifier at `i`: skips `.name` / `[...]` accessors; returns the index after the
/// chain and whether the chain had at least one accessor.
fn chain_end(seq: &Seq, mut i: usize) -> (usize, bool, Option<String>) {
    let mut any = false;
    let mut last = None;
    loop {
        if (punct(seq, i, ".") || punct(seq, i, "?."))
            && let Some(Tok::Ident(n)) = seq.toks.get(i + 1).map(|t| &t.tok)
        {
            last = Some(n.clone());
            i += 2;
            any = true;
        } else if punct(seq, i, "[") {
            match seq.mate.get(i) {
                Some(&m) if m != u32::MAX => i = m as usize + 1,
                _ => return (i, any, last),
            }
            last = None;
            any = true;
        } else {
            return (i, any, last);
        }
    }
}

/// Names (roots of member chains included) that some statement changes, in `seq[from..to]`,
/// template substitutions included.
pub fn changed_names(seq: &Seq, from: usize, to: usize, out: &mut BTreeSet<String>) {
    let to = to.min(seq.toks.len());
    for i in from..to {
        let tok = &seq.toks[i].tok;
        if let Tok::Template(_, subs) = tok {
            for s in subs {
                changed_names(s, 0, s.toks.len(), out);
            }
            continue;
        }
        let Tok::Ident(name) = tok else { continue };
        if i > 0 && (punct(seq, i - 1, ".") || punct(seq, i - 1, "?.")) {
            continue;
        }
        let declared = i > 0
            && (is_word(seq, i - 1, "const")
                || is_word(seq, i - 1, "let")
                || is_word(seq, i - 1, "var"));
        if (i > 0
            && (punct(seq, i - 1, "++")
                || punct(seq, i - 1, "--")
                || is_word(seq, i - 1, "delete")))
            && !declared
        {
            out.insert(name.clone());
            continue;
        }
        let (end, accessed, last) = chain_end(seq, i + 1);
        let assigned = ASSIGN_OPS.iter().any(|op| punct(seq, end, op));
        let mutating_call = accessed
            && punct(seq, end, "(")
            && last
                .as_deref()
                .is_some_and(|m| MUTATING_METHODS.contains(&m));
        if (assigned && (accessed || !declared)) || mutating_call {
            out.insert(name.clone());
        } else if name == "Object"
            && let Some(m) = last
            && (m == "assign" || m == "defineProperty" || m == "defineProperties")
            && punct(seq, end, "(")
            && let Some(Tok::Ident(target)) = seq.toks.get(end + 1).map(|t| &t.tok)
        {
            out.insert(target.clone());
        }
    }
}

/// Whether a function body changes nothing: no assignment, `delete`, `++`/`--` or mutating
/// method call anywhere in it (declarations of its own locals excepted).
pub fn is_pure(f: &Func) -> bool {
    match &f.body {
        Body::Expr(_) => false,
        Body::Block(seq, open) => {
            let close = seq.mate.get(*open).map_or(0, |&m| m as usize);
            let mut changed = BTreeSet::new();
            changed_names(seq, open + 1, close, &mut changed);
            changed.is_empty()
        }
    }
}
