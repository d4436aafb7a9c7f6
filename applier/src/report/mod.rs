//! What a person reads about deploys, made from their journals: the deploy report (one
//! self-contained HTML file: `applier report`, and written by a deploy to an environment's
//! `report_dir`), `applier show` (the steps as text) and `applier history` (who, why, type,
//! outcome, duration, hosts changed, with filters).
//!
//! - [`model`]: the [`Report`] built from a journal (timeline, checks, rollback path, storage
//!   guard, canary analyses); every renderer draws from it.
//! - [`html`]: the HTML report (its canary charts in `canary`); [`markup`]: the escaping
//!   writer it is made with.
//! - [`text`]: `applier show`.
//! - [`history`]: history rows and filters.
//!
//! Journals are read by the caller through [`crate::records`]; nothing here touches the store.

mod canary;
pub mod history;
pub mod html;
pub mod markup;
pub mod model;
pub mod text;

use std::path::{Path, PathBuf};

pub use model::{CanaryAnalysis, CanaryMetric, Report};

use crate::records::Journal;

/// The canary analyses a journal records (`Journal::analysis`), as the report draws them:
/// their numbers per metric (the journal keeps no sample series, so no chart line is drawn
/// for them). A record that does not read as one is left out.
pub fn canary_of(journal: &Journal) -> Vec<CanaryAnalysis> {
    journal
        .analysis
        .iter()
        .filter_map(|a| {
            let v = serde_json::to_value(a).ok()?;
            CanaryAnalysis::from_value(v).ok()
        })
        .collect()
}

/// The report of a journal.
pub fn of(journal: &Journal) -> Report {
    Report::from_journal(journal, canary_of(journal))
}

/// The HTML report of a journal.
pub fn html_of(journal: &Journal) -> String {
    html::render(&of(journal))
}

/// The file name a report of `journal` gets in a report directory: `<env>-<id>.html`;
/// `None` when the journal's env or id is not a plain name (a record is untrusted: it must
/// not choose where the file goes).
pub fn file_name(journal: &Journal) -> Option<String> {
    let plain = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    (plain(&journal.env) && plain(&journal.id))
        .then(|| format!("{}-{}.html", journal.env, journal.id))
}

/// Writes the report of `journal` into `dir` (created if absent) atomically: a temporary file
/// renamed over `<env>-<id>.html`, so a reader never sees half a report.
pub fn write_to_dir(dir: &Path, journal: &Journal) -> std::io::Result<PathBuf> {
    let name = file_name(journal).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "the journal names env {:?} and id {:?}: not plain names for a file",
                journal.env, journal.id
            ),
        )
    })?;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    write_atomic(&path, &html_of(journal))?;
    Ok(path)
}

/// Writes `text` to `path` through a temporary file in the same directory renamed over it: a
/// reader sees the old file or the whole new one, and a failed write leaves no half file.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())?;
    let mut perm = tmp.as_file().metadata()?.permissions();
    // Readable by whoever serves or opens the reports (a temp file starts as 0600).
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o644);
    tmp.as_file().set_permissions(perm)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests;
