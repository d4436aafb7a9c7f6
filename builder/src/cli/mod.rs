//! The command line's own parts (the binary's, not the library's): exit codes and hints
//! ([`exit`]), text rendering ([`render`]), key files ([`keys`]) and writing to stdout and to
//! new files.

pub mod exit;
pub mod keys;
pub mod render;

use std::io::Write;
use std::path::Path;

/// Writes one line of data to stdout; a closed stdout comes back as an error that
/// [`exit::fail`] turns into a quiet exit.
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)?
    };
}
pub(crate) use outln;

/// Prints `v` as pretty JSON on stdout.
pub fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Writes `bytes` to `path` atomically: into a temp file beside it, then renamed (or, with
/// `no_clobber`, linked, which fails if `path` exists). On any failure the temp file is
/// removed and `path` is untouched.
pub fn write_file(
    path: &Path,
    mode: u32,
    no_clobber: bool,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    fill(tmp.as_file_mut())?;
    tmp.as_file_mut().flush()?;
    tmp.as_file().sync_all()?;
    // Dropping a failed persist's temp file removes it.
    if no_clobber {
        tmp.persist_noclobber(path).map(|_| ()).map_err(|e| e.error)
    } else {
        tmp.persist(path).map(|_| ()).map_err(|e| e.error)
    }
}
