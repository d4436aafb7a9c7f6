//! Safe, verifying extraction of layers into a new release directory.
//!
//! Layers are untrusted input. [`Unpacker`] extracts into a private staging directory beside
//! the destination while it hashes the compressed stream, and only [`Unpacker::finish`] renames
//! the staging directory into place. Any refusal, digest mismatch or I/O error removes the
//! staging directory; nothing outside it is ever written (no path is followed out of it, no
//! symlink is created that points out of it, nothing is overwritten).
//!
//! Refused: absolute paths, `..` segments, symlinks or hardlinks whose target leaves the
//! destination, device/fifo/socket entries, entries that would go through a symlink, archives
//! past the byte or entry limit, and (across layers) an entry that already exists.
//!
//! Choices worth knowing:
//! - Hardlinks are refused outright (the packer never writes them).
//! - Files get mode 0755 when the archive gives any exec bit, else 0644; directories 0755.
//!   Owners and mtimes from the archive are ignored (files carry the extraction time).
//! - Missing parent directories are created; `.` segments and a leading `./` are accepted.
//! - A symlink is checked when created and again, with every symlink of the release, after
//!   each layer: its target is resolved against the entries extracted so far (following
//!   those symlinks, as the kernel would) and must stay inside the destination.
//! - Layers are gzip (format 1) or zstd (format 2), told apart by their first bytes; the
//!   digest check covers either.
//! - The tar is parsed here (GNU and POSIX ustar, GNU long names, PAX `path`/`linkpath`/`size`;
//!   `unpack/tar.rs`), not by the `tar` crate, so every size is checked against the limits
//!   before anything is read or allocated.
//! - The compressed stream is read, hashed and decompressed, and the tar hashed, on a thread
//!   of its own (`unpack/relay.rs`; [`Unpacker::with_decode_thread`]), which hands the tar to
//!   the calling thread in bounded chunks.
//! - Every check runs on the calling thread, in archive order. Files of up to 1 MiB are then
//!   written by a few writer threads (`unpack/writer.rs`), which only ever create new files at
//!   paths already checked, below directories already created; bigger files, directories and
//!   symlinks are created on the calling thread.
//!
//! Durability: [`Unpacker::finish`] makes the whole staging tree durable before the rename
//! that gives it its final name, so a release directory that exists after a crash is complete.
//! It waits for every writer thread, then calls `syncfs` once on the file system holding the
//! staging directory (one writeback pass and one journal commit for all files, where an
//! `fsync` per file and directory costs a journal commit each: several times slower for
//! 14,000 files on ext4 here), renames with `RENAME_NOREPLACE` and fsyncs the parent
//! directory. A caller that switches a `current` link to the release does so only after
//! `finish` returned (the release is also recorded as fetched only then), so `current` never
//! points at a release a crash could leave incomplete; a crash before the rename leaves only a
//! `.partial-` staging directory, which nothing points at.
//!
//! To keep that last pass short, a writeback thread calls `syncfs` every 50 ms while layers
//! are extracted ([`Unpacker::with_early_writeback`]), so the disk writes in parallel with
//! extraction instead of after it (on a 181 MB, 14,000-file layer the final pass went from
//! 1-2.5 s to 0.01-0.1 s). Those passes are an optimisation only; their errors are ignored
//! and correctness rests on the final one. `syncfs` also writes back other programs' dirty
//! data on the same file system, which the kernel would write within 30 s anyway.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{DirBuilder, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

mod link;
mod paths;
mod read;
mod relay;
mod scan;
mod tar;
mod types;
mod writer;

pub use link::tree_stats;
pub(crate) use paths::link_escapes;
use paths::normalise;
use read::check_expected;
pub use read::read_layer_file;
pub use scan::{EntryKind, LayerEntry, scan_layer};
pub use types::{Expected, UnpackError, UnpackLimits, UnpackStats};

/// Extracts one or more layers into a staging directory, then moves it into place.
pub struct Unpacker {
    staging: PathBuf,
    dest: PathBuf,
    limits: UnpackLimits,
    stats: UnpackStats,
    finished: bool,
    /// Set once a layer failed: the staging directory is gone and every later call fails.
    spent: bool,
    /// Everything extracted so far, by relative path (`/`-separated bytes, no trailing `/`).
    nodes: HashMap<Vec<u8>, Node>,
    /// Writer threads to start (0: write every file on the calling thread).
    writers: usize,
    /// Started at the first layer, joined before a layer returns.
    pool: Option<writer::Pool>,
    /// Whether to start writing back to disk while extracting.
    early_writeback: bool,
    decode_thread: bool,
    /// Running from the first layer until `finish` (or a failure).
    writeback: Option<writer::Writeback>,
    /// Applied to every file's mode (0o777, or 0o555 for read-only files).
    file_mask: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File,
    Symlink(Vec<u8>),
}

/// What [`Unpacker::admit`] left to do for an entry.
enum Admitted {
    /// Nothing: created already (a directory, a symlink), or the root.
    Done,
    /// A regular file to create at this path, with this mode.
    File(PathBuf, u32),
}

/// Writer threads by default: enough to keep every core creating files while the calling
/// thread decodes, without flooding a small machine.
fn default_writers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(2, 8)
}

impl Unpacker {
    /// Prepares to create `dest`, which must not exist; its parent must.
    ///
    /// Creates the staging directory `.<name>.partial-<random>` (mode 0700) in the parent.
    pub fn new(dest: &Path, limits: UnpackLimits) -> Result<Self, UnpackError> {
        let name = dest.file_name().ok_or_else(|| {
            io_error(
                format!("destination {} has no file name", dest.display()),
                io::ErrorKind::InvalidInput.into(),
            )
        })?;
        if std::fs::symlink_metadata(dest).is_ok() {
            return Err(UnpackError::DestinationExists(dest.to_path_buf()));
        }
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut staging_name = std::ffi::OsString::from(".");
        staging_name.push(name);
        staging_name.push(format!(".partial-{:016x}", rand::random::<u64>()));
        let staging = parent.join(staging_name);
        DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .map_err(|e| {
                io_error(
                    format!("creating staging directory {}", staging.display()),
                    e,
                )
            })?;
        Ok(Unpacker {
            staging,
            dest: dest.to_path_buf(),
            limits,
            stats: UnpackStats::default(),
            finished: false,
            spent: false,
            nodes: HashMap::new(),
            writers: default_writers(),
            pool: None,
            early_writeback: true,
            decode_thread: true,
            writeback: None,
            file_mask: 0o777,
        })
    }

    /// Sets the number of writer threads (default: the CPU count, 2 to 8; 0 writes every file
    /// on the calling thread). What is extracted and every check are the same either way.
    pub fn with_writers(mut self, writers: usize) -> Self {
        self.writers = writers;
        self
    }

    /// Whether to flush to disk while extracting (default: yes) or only in
    /// [`Unpacker::finish`]. Either way `finish` makes everything durable before the rename;
    /// early writeback only lets the disk work in parallel with extraction.
    pub fn with_early_writeback(mut self, on: bool) -> Self {
        self.early_writeback = on;
        self
    }

    /// Whether a layer is decoded on a thread of its own (default: yes): reading the
    /// compressed stream, both hashes and the decompression there, the tar headers, every
    /// check and the writes on the calling thread. What is extracted and every check are the
    /// same either way.
    pub fn with_decode_thread(mut self, on: bool) -> Self {
        self.decode_thread = on;
        self
    }

    /// Whether files are created read-only (0444, or 0555 with an exec bit; default: no).
    /// For trees that several releases share by hard links, so that no release writes into
    /// another's files through its own path.
    pub fn with_read_only_files(mut self, on: bool) -> Self {
        self.file_mask = if on { 0o555 } else { 0o777 };
        self
    }

    /// The staging directory (exists until [`Unpacker::finish`] or a failure).
    pub fn staging_dir(&self) -> &Path {
        &self.staging
    }

    /// Extracts one tar layer, gzip- or zstd-compressed, verifying `expected` as it reads. On
    /// any error the staging directory is removed and the unpacker is spent. When it returns
    /// `Ok`, every file of the layer is written (not yet durable: see [`Unpacker::finish`]).
    ///
    /// Limits apply to all layers together. Returns this layer's counts.
    pub fn layer<R: Read + Send>(
        &mut self,
        reader: R,
        expected: &Expected,
    ) -> Result<UnpackStats, UnpackError> {
        if self.spent || self.finished {
            return Err(UnpackError::Spent);
        }
        if self.early_writeback && self.writeback.is_none() {
            // Best effort: without it, finish still flushes everything.
            self.writeback = writer::Writeback::start(&self.staging).ok();
        }
        let extracted = self.extract(reader, expected);
        // Wait for the writers whatever happened: nothing may still be writing into the
        // staging directory when it is removed or checked.
        let written = match self.pool.take() {
            Some(pool) => pool.join(),
            None => Ok(()),
        };
        match extracted.and_then(|stats| written.map(|()| stats)) {
            Ok(stats) => Ok(stats),
            Err(e) => {
                self.spent = true;
                self.writeback = None;
                let _ = std::fs::remove_dir_all(&self.staging);
                Err(e)
            }
        }
    }

    /// Makes the staging directory durable and renames it to the destination.
    ///
    /// One `syncfs`, after every file was written, covers every file and directory of the
    /// release (see the module doc). The
    /// rename never replaces anything (`renameat2(RENAME_NOREPLACE)`, with an existence check
    /// first where the file system lacks it); the parent directory is fsynced after.
    pub fn finish(mut self) -> Result<UnpackStats, UnpackError> {
        if self.spent {
            return Err(UnpackError::Spent);
        }
        // Every writer has finished (each layer joins them); stop the early passes so the
        // decisive one below runs alone.
        self.writeback = None;
        let st = &self.staging;
        std::fs::set_permissions(st, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| io_error(format!("chmod {}", st.display()), e))?;
        let dir = File::open(st).map_err(|e| io_error(format!("opening {}", st.display()), e))?;
        rustix::fs::syncfs(&dir)
            .map_err(|e| io_error(format!("syncfs {}", st.display()), e.into()))?;
        drop(dir);
        if std::fs::symlink_metadata(&self.dest).is_ok() {
            return Err(UnpackError::DestinationExists(self.dest.clone()));
        }
        let cwd = rustix::fs::CWD;
        match rustix::fs::renameat_with(
            cwd,
            st,
            cwd,
            &self.dest,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) | Err(rustix::io::Errno::NOTEMPTY) => {
                return Err(UnpackError::DestinationExists(self.dest.clone()));
            }
            Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOSYS) => {
                // No RENAME_NOREPLACE here; checked just above.
                std::fs::rename(st, &self.dest).map_err(|e| {
                    io_error(
                        format!("renaming {} to {}", st.display(), self.dest.display()),
                        e,
                    )
                })?;
            }
            Err(e) => {
                return Err(io_error(
                    format!("renaming {} to {}", st.display(), self.dest.display()),
                    e.into(),
                ));
            }
        }
        self.finished = true;
        let parent = match self.dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        File::open(&parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(format!("fsync {}", parent.display()), e))?;
        Ok(self.stats.clone())
    }

    /// Reads the layer, decoding it on a thread of its own (see `relay`; it ends before this
    /// returns) unless told not to.
    fn extract<R: Read + Send>(
        &mut self,
        reader: R,
        expected: &Expected,
    ) -> Result<UnpackStats, UnpackError> {
        if !self.decode_thread {
            let tar = tar::TarReader::new(reader, expected.size)?;
            return self.extract_from(tar, expected);
        }
        std::thread::scope(|s| {
            let tar = tar::TarReader::threaded(s, reader, expected.size)?;
            self.extract_from(tar, expected)
        })
    }

    fn extract_from<D: tar::Decoded>(
        &mut self,
        mut tar: tar::TarReader<D>,
        expected: &Expected,
    ) -> Result<UnpackStats, UnpackError> {
        let mut layer = UnpackStats::default();
        let bytes_before = self.stats.bytes;
        while let Some(entry) = tar.next_entry()? {
            self.entry(&mut tar, entry)?;
            layer.entries += 1;
        }
        layer.bytes = self.stats.bytes - bytes_before;
        // A later entry may change what an earlier symlink resolves to: check them all.
        self.check_links()?;
        let got = tar.finish()?;
        check_expected(expected, &got)?;
        Ok(layer)
    }

    /// Checks one entry ([`Self::admit`]), then writes a regular file's data (or queues it
    /// for a writer thread).
    fn entry<D: tar::Decoded>(
        &mut self,
        tar: &mut tar::TarReader<D>,
        e: tar::Entry,
    ) -> Result<(), UnpackError> {
        let size = e.size;
        let Admitted::File(full, mode) = self.admit(&e.name, e.typeflag, size, e.mode, &e.link)?
        else {
            return tar.skip_data(size);
        };
        if self.writers > 0 && size <= writer::INLINE_MAX {
            let data = tar.read_data(size)?;
            if self.pool.is_none() {
                self.pool = Some(writer::Pool::new(self.writers)?);
            }
            let pool = self.pool.as_ref().expect("started above");
            return pool.submit(full, data, mode);
        }
        let mut f = writer::open_new(&full, mode)?;
        tar.copy_data(&mut f, size, &full)?;
        writer::set_mode(&f, &full, mode)
    }

    /// Checks one entry (a tar `typeflag`, its size and mode, a symlink's target) against the
    /// limits, its path and what exists; creates its missing parents, and a directory or
    /// symlink itself. A regular file is left to the caller, at the path and mode answered.
    fn admit(
        &mut self,
        name: &[u8],
        typeflag: u8,
        size: u64,
        mode: u64,
        link: &[u8],
    ) -> Result<Admitted, UnpackError> {
        if self.stats.entries + 1 > self.limits.max_entries {
            return Err(UnpackError::TooLarge {
                what: "entries",
                limit: self.limits.max_entries,
            });
        }
        // Every entry's data (whatever its type) counts, so a lying size cannot make us
        // read or skip more than the limit.
        if self.stats.bytes.saturating_add(size) > self.limits.max_bytes {
            return Err(UnpackError::TooLarge {
                what: "bytes",
                limit: self.limits.max_bytes,
            });
        }
        self.stats.entries += 1;
        self.stats.bytes += size;

        let refuse = |reason: &str| UnpackError::Refused {
            path: String::from_utf8_lossy(name).into_owned(),
            reason: reason.to_string(),
        };
        let rel = normalise(name).map_err(&refuse)?;
        if rel.is_empty() {
            if typeflag == b'5' {
                return Ok(Admitted::Done);
            }
            return Err(refuse("empty path"));
        }
        match typeflag {
            b'0' | 0 | b'7' | b'5' | b'2' => {}
            b'1' => return Err(refuse("hardlinks are not supported")),
            b'3' => return Err(refuse("character devices are not allowed")),
            b'4' => return Err(refuse("block devices are not allowed")),
            b'6' => return Err(refuse("fifos are not allowed")),
            t => return Err(refuse(&format!("unsupported entry type {:?}", t as char))),
        }
        self.parents(&rel, &refuse)?;
        let full = self.staging.join(OsStr::from_bytes(&rel));
        let existing = self.nodes.get(&rel).cloned();
        match typeflag {
            b'5' => match existing {
                Some(Node::Dir) => Ok(Admitted::Done),
                Some(_) => Err(refuse("already exists and is not a directory")),
                None => {
                    writer::mkdir(&full)?;
                    self.nodes.insert(rel, Node::Dir);
                    Ok(Admitted::Done)
                }
            },
            b'2' => {
                if existing.is_some() {
                    return Err(refuse("already exists"));
                }
                if link.is_empty() || link.contains(&0) {
                    return Err(refuse("empty symlink target"));
                }
                if self.escapes(&rel, link) {
                    return Err(refuse(&format!(
                        "symlink target {:?} leaves the destination",
                        String::from_utf8_lossy(link)
                    )));
                }
                std::os::unix::fs::symlink(OsStr::from_bytes(link), &full)
                    .map_err(|e| io_error(format!("creating symlink {}", full.display()), e))?;
                self.nodes.insert(rel, Node::Symlink(link.to_vec()));
                Ok(Admitted::Done)
            }
            _ => {
                if existing.is_some() {
                    return Err(refuse("already exists"));
                }
                let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
                self.nodes.insert(rel, Node::File);
                Ok(Admitted::File(full, mode & self.file_mask))
            }
        }
    }

    /// Refuses the layer if any symlink of the release now resolves outside it.
    fn check_links(&self) -> Result<(), UnpackError> {
        // In path order, so the same archive is always refused naming the same entry.
        let mut links: Vec<(&Vec<u8>, &Vec<u8>)> = self
            .nodes
            .iter()
            .filter_map(|(p, n)| match n {
                Node::Symlink(t) => Some((p, t)),
                _ => None,
            })
            .collect();
        links.sort_unstable();
        for (p, t) in links {
            if self.escapes(p, t) {
                return Err(UnpackError::Refused {
                    path: String::from_utf8_lossy(p).into_owned(),
                    reason: format!(
                        "symlink target {:?} leaves the destination",
                        String::from_utf8_lossy(t)
                    ),
                });
            }
        }
        Ok(())
    }

    /// Creates missing ancestors of `rel`; refuses a path through a symlink or a file.
    fn parents(
        &mut self,
        rel: &[u8],
        refuse: &dyn Fn(&str) -> UnpackError,
    ) -> Result<(), UnpackError> {
        for (i, _) in rel.iter().enumerate().filter(|(_, b)| **b == b'/') {
            let anc = &rel[..i];
            match self.nodes.get(anc) {
                Some(Node::Dir) => {}
                Some(Node::Symlink(_)) => return Err(refuse("path goes through a symlink")),
                Some(Node::File) => return Err(refuse("path goes through a file")),
                None => {
                    writer::mkdir(&self.staging.join(OsStr::from_bytes(anc)))?;
                    self.nodes.insert(anc.to_vec(), Node::Dir);
                }
            }
        }
        Ok(())
    }

    fn escapes(&self, link_path: &[u8], target: &[u8]) -> bool {
        link_escapes(link_path, target, |p| match self.nodes.get(p) {
            Some(Node::Symlink(t)) => Some(t.as_slice()),
            _ => None,
        })
    }
}

impl std::fmt::Debug for Unpacker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unpacker")
            .field("staging", &self.staging)
            .field("dest", &self.dest)
            .field("limits", &self.limits)
            .field("stats", &self.stats)
            .field("finished", &self.finished)
            .field("spent", &self.spent)
            .field("nodes", &self.nodes.len())
            .field("writers", &self.writers)
            .field("early_writeback", &self.early_writeback)
            .field("decode_thread", &self.decode_thread)
            .finish()
    }
}

impl Drop for Unpacker {
    fn drop(&mut self) {
        self.writeback = None;
        self.pool = None;
        if !self.finished {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

fn io_error(context: String, source: io::Error) -> UnpackError {
    UnpackError::Io { context, source }
}
