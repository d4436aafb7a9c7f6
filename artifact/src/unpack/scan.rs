//! Listing a layer without extracting it: every entry's normalised path, kind, mode and (for
//! files and symlinks) content digest, with the bytes of the few files a caller keeps. The
//! whole layer is verified against [`Expected`] before anything is returned, so a reader of a
//! layer's listing (e.g. a diff between two artifacts) never sees a tampered one.

use std::io::{self, Read};
use std::path::Path;

use super::paths::normalise;
use super::tar::TarReader;
use super::{Expected, UnpackError, check_expected};
use crate::Digest;
use crate::digest::HashingWriter;

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// Hard links, devices, FIFOs: listed, never followed.
    Other,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
            EntryKind::Other => "other",
        }
    }
}

/// One entry of a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerEntry {
    /// `/`-separated, without a leading `./` or a trailing `/`.
    pub path: String,
    pub kind: EntryKind,
    pub mode: u32,
    /// Files: the content's size.
    pub size: u64,
    /// Files: sha256 of the content; symlinks: of the target.
    pub digest: Option<Digest>,
    /// The content of a file `keep` selected and no bigger than `max_keep`.
    pub data: Option<Vec<u8>>,
}

/// Lists the layer `reader` holds (gzip or zstd), keeping the files `keep` selects that are at
/// most `max_keep` bytes. Paths that could not be unpacked safely (absolute, `..`) are an error.
pub fn scan_layer<R: Read>(
    reader: R,
    expected: &Expected,
    keep: &dyn Fn(&str) -> bool,
    max_keep: u64,
) -> Result<Vec<LayerEntry>, UnpackError> {
    let mut tar = TarReader::new(reader, expected.size)?;
    let mut out = Vec::new();
    while let Some(e) = tar.next_entry()? {
        let name = normalise(&e.name).map_err(|why| {
            UnpackError::Corrupt(format!("{}: {why}", String::from_utf8_lossy(&e.name)))
        })?;
        let path = String::from_utf8_lossy(&name).into_owned();
        let mode = (e.mode & 0o7777) as u32;
        let (kind, digest, data) = match e.typeflag {
            b'0' | 0 | b'7' => {
                let kept = keep(&path) && e.size <= max_keep;
                let mut w = HashingWriter::new(if kept {
                    Sink::Keep(Vec::new())
                } else {
                    Sink::Drop
                });
                tar.copy_data(&mut w, e.size, Path::new(&path))?;
                let (sink, digest, _) = w.finish();
                let data = match sink {
                    Sink::Keep(v) => Some(v),
                    Sink::Drop => None,
                };
                (EntryKind::File, Some(digest), data)
            }
            b'5' => {
                tar.skip_data(e.size)?;
                (EntryKind::Dir, None, None)
            }
            b'2' => {
                tar.skip_data(e.size)?;
                (EntryKind::Symlink, Some(Digest::of(&e.link)), None)
            }
            _ => {
                tar.skip_data(e.size)?;
                (EntryKind::Other, None, None)
            }
        };
        if path.is_empty() {
            continue;
        }
        let size = if kind == EntryKind::File { e.size } else { 0 };
        out.push(LayerEntry {
            path,
            kind,
            mode,
            size,
            digest,
            data,
        });
    }
    let got = tar.finish()?;
    check_expected(expected, &got)?;
    Ok(out)
}

/// Where a file's bytes go while they are hashed.
enum Sink {
    Keep(Vec<u8>),
    Drop,
}

impl io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Sink::Keep(v) = self {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
