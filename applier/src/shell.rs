//! Commands run through a shell (`sh -c`): the pool driver's commands, the logs check's
//! `command`. Values never reach the shell as raw text: a template's `{name}` placeholders
//! become shell-quoted words, and every value is also given as an environment variable
//! (`APPLIER_<NAME>`), which is the form to prefer in templates (`"$APPLIER_HOST"`).

use std::collections::BTreeMap;

/// Quotes a word for a POSIX shell (words made only of safe characters stay as they are).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A command template with its values filled in: the command line (each `{name}` replaced by
/// the shell-quoted value) and the variables (`APPLIER_NAME=value`) to run it with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filled {
    pub cmd: String,
    pub env: BTreeMap<String, String>,
}

/// Fills `template`'s `{name}` placeholders from `values` (name, value), quoting each value.
/// Text that is not a known placeholder is left alone.
pub fn fill(template: &str, values: &[(&str, String)]) -> Filled {
    let mut cmd = String::with_capacity(template.len());
    let mut rest = template;
    'outer: while let Some(i) = rest.find('{') {
        cmd.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        for (name, value) in values {
            if let Some(tail) = after.strip_prefix(name).and_then(|t| t.strip_prefix('}')) {
                cmd.push_str(&shell_quote(value));
                rest = tail;
                continue 'outer;
            }
        }
        cmd.push('{');
        rest = after;
    }
    cmd.push_str(rest);
    let env = values
        .iter()
        .map(|(n, v)| (format!("APPLIER_{}", n.to_ascii_uppercase()), v.clone()))
        .collect();
    Filled { cmd, env }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/srv/a-b_c"), "/srv/a-b_c");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(id)"), "'$(id)'");
    }

    #[test]
    fn placeholders_become_quoted_words_and_variables() {
        let f = fill(
            "confctl select name={host} set/pooled=no; echo {port} {unknown} {{x}}",
            &[("host", "a;touch /tmp/x".into()), ("port", "7231".into())],
        );
        assert_eq!(
            f.cmd,
            "confctl select name='a;touch /tmp/x' set/pooled=no; echo 7231 {unknown} {{x}}"
        );
        assert_eq!(f.env["APPLIER_HOST"], "a;touch /tmp/x");
        assert_eq!(f.env["APPLIER_PORT"], "7231");
    }
}
