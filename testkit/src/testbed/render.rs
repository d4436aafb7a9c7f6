//! Configuration files of the bed, rendered from the templates in `ci/testbed.d/` on every
//! `up`: each `@KEY@` is replaced by its value, and a key left unrendered is an error.

use std::path::Path;

use super::Error;
use super::layout::write_atomic;

/// Renders template `name` of `dir` into `out` with `vars`.
pub fn render(dir: &Path, name: &str, out: &Path, vars: &[(&str, String)]) -> Result<(), Error> {
    let tmpl = dir.join(name);
    let mut text = std::fs::read_to_string(&tmpl)
        .map_err(|e| Error::Failed(format!("{}: {e}", tmpl.display())))?;
    for (k, v) in vars {
        text = text.replace(&format!("@{k}@"), v);
    }
    if let Some(left) = unrendered(&text) {
        return Err(Error::Failed(format!(
            "unrendered {left} in {}",
            tmpl.display()
        )));
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    write_atomic(out, text.as_bytes())
}

/// The first `@KEY@` (upper case, digits, `_`) left in `text`.
fn unrendered(text: &str) -> Option<&str> {
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(off) = text[i..].find('@') {
        let start = i + off;
        let mut j = start + 1;
        while j < b.len() && (b[j].is_ascii_uppercase() || b[j].is_ascii_digit() || b[j] == b'_') {
            j += 1;
        }
        if j > start + 1 && j < b.len() && b[j] == b'@' {
            return Some(&text[start..=j]);
        }
        i = start + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_keys_are_found_and_mail_addresses_are_not_keys() {
        assert_eq!(unrendered("a @PORT@ b"), Some("@PORT@"));
        assert_eq!(unrendered("user@example.org @@ @lower@"), None);
    }
}
