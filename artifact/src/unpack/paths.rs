//! Path rules for extracted entries: normalising an entry name, and deciding whether a
//! symlink (followed through the symlinks extracted so far) leaves the release.

/// Whether the symlink at `link_path` (relative to the root) with `target` resolves outside
/// the root. `symlink(p)` gives the target of `p` when `p` is a known symlink; those are
/// followed as the kernel would (so `..` after a symlink climbs from where it points).
/// Absolute targets and chains of more than 40 links count as escaping.
pub(crate) fn link_escapes<'a>(
    link_path: &[u8],
    target: &[u8],
    symlink: impl Fn(&[u8]) -> Option<&'a [u8]>,
) -> bool {
    if target.first() == Some(&b'/') {
        return true;
    }
    let mut stack: Vec<&[u8]> = link_path.split(|&b| b == b'/').collect();
    stack.pop();
    let mut pending: Vec<&[u8]> = target.split(|&b| b == b'/').rev().collect();
    let mut hops = 0;
    let mut joined = Vec::new();
    while let Some(seg) = pending.pop() {
        match seg {
            b"" | b"." => {}
            b".." => {
                if stack.pop().is_none() {
                    return true;
                }
            }
            name => {
                stack.push(name);
                joined.clear();
                for (i, s) in stack.iter().enumerate() {
                    if i > 0 {
                        joined.push(b'/');
                    }
                    joined.extend_from_slice(s);
                }
                if let Some(t) = symlink(&joined) {
                    hops += 1;
                    if hops > 40 || t.first() == Some(&b'/') {
                        return true;
                    }
                    stack.pop();
                    pending.extend(t.split(|&b| b == b'/').rev());
                }
            }
        }
    }
    false
}

/// `/`-joined path without `.` or empty segments; refuses absolute paths and `..`.
pub(super) fn normalise(name: &[u8]) -> Result<Vec<u8>, &'static str> {
    if name.is_empty() {
        return Err("empty path");
    }
    if name[0] == b'/' {
        return Err("absolute path");
    }
    if name.contains(&0) {
        return Err("NUL in path");
    }
    let mut out = Vec::with_capacity(name.len());
    for seg in name.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => return Err("`..` in path"),
            s => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(s);
            }
        }
    }
    Ok(out)
}
