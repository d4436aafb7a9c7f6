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
//! - The tar is parsed here (GNU and POSIX ustar, GNU long names, PAX `path`/`linkpath`/`size`),
//!   not by the `tar` crate, so every size is checked against the limits before anything is
//!   read or allocated.
//! - [`Unpacker::finish`] flushes the file system (`syncfs`) before the rename, so a release
//!   that is in place is also on disk.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use flate2::bufread::MultiGzDecoder;

use crate::Digest;
use crate::digest::Hasher;

/// Limits for one release (all layers together).
#[derive(Clone, Debug)]
pub struct UnpackLimits {
    /// Total bytes of file content.
    pub max_bytes: u64,
    /// Total number of entries.
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_bytes: 4 << 30,
            max_entries: 1_000_000,
        }
    }
}

/// What a layer must hash to.
#[derive(Clone, Debug, Default)]
pub struct Expected {
    /// sha256 of the compressed stream.
    pub digest: Option<Digest>,
    /// Size of the compressed stream.
    pub size: Option<u64>,
    /// sha256 of the uncompressed tar.
    pub diff_id: Option<Digest>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("refused entry {path:?}: {reason}")]
    Refused { path: String, reason: String },
    #[error("archive exceeds the limit of {limit} {what}")]
    TooLarge { what: &'static str, limit: u64 },
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: &'static str,
        expected: String,
        actual: String,
    },
    #[error("corrupt archive: {0}")]
    Corrupt(String),
    #[error("destination {0} already exists")]
    DestinationExists(PathBuf),
    /// An earlier call failed (its staging directory is gone) or the unpacker finished.
    #[error("unpacker already failed or finished")]
    Spent,
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

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
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File,
    Symlink(Vec<u8>),
}

/// Longest GNU long-name / PAX record accepted.
const MAX_META: u64 = 64 << 10;
/// Bytes accepted after the end-of-archive marker (GNU tar pads to 10 KiB records).
const MAX_TRAILING: u64 = 1 << 20;
const BLOCK: usize = 512;

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
        })
    }

    /// The staging directory (exists until [`Unpacker::finish`] or a failure).
    pub fn staging_dir(&self) -> &Path {
        &self.staging
    }

    /// Extracts one gzip-compressed tar layer, verifying `expected` as it reads. On any error
    /// the staging directory is removed and the unpacker is spent.
    ///
    /// Limits apply to all layers together. Returns this layer's counts.
    pub fn layer<R: Read>(
        &mut self,
        reader: R,
        expected: &Expected,
    ) -> Result<UnpackStats, UnpackError> {
        if self.spent || self.finished {
            return Err(UnpackError::Spent);
        }
        match self.extract(reader, expected) {
            Ok(stats) => Ok(stats),
            Err(e) => {
                self.spent = true;
                let _ = std::fs::remove_dir_all(&self.staging);
                Err(e)
            }
        }
    }

    /// Renames the staging directory to the destination.
    ///
    /// The rename never replaces anything (`renameat2(RENAME_NOREPLACE)`, with an existence
    /// check first where the file system lacks it); the parent directory is fsynced after.
    pub fn finish(mut self) -> Result<UnpackStats, UnpackError> {
        if self.spent {
            return Err(UnpackError::Spent);
        }
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

    fn extract<R: Read>(
        &mut self,
        reader: R,
        expected: &Expected,
    ) -> Result<UnpackStats, UnpackError> {
        let compressed = Tap::new(reader, expected.size);
        let decoder = MultiGzDecoder::new(BufReader::with_capacity(64 << 10, compressed));
        let mut tar = BufReader::with_capacity(256 << 10, Tap::new(decoder, None));
        let mut layer = UnpackStats::default();
        let mut meta = Meta::default();
        let mut block = [0u8; BLOCK];
        loop {
            if !read_block(&mut tar, &mut block)? {
                return Err(UnpackError::Corrupt(
                    "archive ends without the end-of-archive marker".into(),
                ));
            }
            if block.iter().all(|&b| b == 0) {
                break;
            }
            let h = parse_header(&block)?;
            let padded = |size: u64| size.div_ceil(BLOCK as u64) * BLOCK as u64;
            match h.typeflag {
                b'L' | b'K' | b'x' | b'g' => {
                    meta.count += 1;
                    if meta.count > 8 {
                        return Err(UnpackError::Corrupt(
                            "too many metadata headers in a row".into(),
                        ));
                    }
                    if h.size > MAX_META {
                        return Err(UnpackError::TooLarge {
                            what: "bytes of entry metadata",
                            limit: MAX_META,
                        });
                    }
                    let mut data = vec![0u8; padded(h.size) as usize];
                    read_exact(&mut tar, &mut data)?;
                    data.truncate(h.size as usize);
                    match h.typeflag {
                        b'L' => meta.name = Some(trim_nul(&data).to_vec()),
                        b'K' => meta.link = Some(trim_nul(&data).to_vec()),
                        b'x' => meta.pax(&data)?,
                        _ => {} // global PAX header: nothing in it matters here
                    }
                    continue;
                }
                _ => {}
            }
            let meta_now = std::mem::take(&mut meta);
            let name = meta_now.pax_path.or(meta_now.name).unwrap_or(h.name);
            let link = meta_now.pax_link.or(meta_now.link).unwrap_or(h.link);
            let size = meta_now.pax_size.unwrap_or(h.size);
            let shown = String::from_utf8_lossy(&name).into_owned();

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
            layer.entries += 1;

            let refuse = |reason: &str| UnpackError::Refused {
                path: shown.clone(),
                reason: reason.to_string(),
            };
            let rel = normalise(&name).map_err(&refuse)?;
            let is_dir = h.typeflag == b'5';
            if rel.is_empty() {
                if is_dir {
                    skip(&mut tar, padded(size))?;
                    self.stats.bytes += size;
                    layer.bytes += size;
                    continue;
                }
                return Err(refuse("empty path"));
            }
            match h.typeflag {
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
            match h.typeflag {
                b'5' => {
                    match existing {
                        Some(Node::Dir) => {}
                        Some(_) => return Err(refuse("already exists and is not a directory")),
                        None => {
                            mkdir(&full)?;
                            self.nodes.insert(rel, Node::Dir);
                        }
                    }
                    skip(&mut tar, padded(size))?;
                }
                b'2' => {
                    if existing.is_some() {
                        return Err(refuse("already exists"));
                    }
                    if link.is_empty() || link.contains(&0) {
                        return Err(refuse("empty symlink target"));
                    }
                    if self.escapes(&rel, &link) {
                        return Err(refuse(&format!(
                            "symlink target {:?} leaves the destination",
                            String::from_utf8_lossy(&link)
                        )));
                    }
                    std::os::unix::fs::symlink(OsStr::from_bytes(&link), &full)
                        .map_err(|e| io_error(format!("creating symlink {}", full.display()), e))?;
                    self.nodes.insert(rel, Node::Symlink(link));
                    skip(&mut tar, padded(size))?;
                }
                _ => {
                    if existing.is_some() {
                        return Err(refuse("already exists"));
                    }
                    let mode = if h.mode & 0o111 != 0 { 0o755 } else { 0o644 };
                    let mut f = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(mode)
                        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                        .open(&full)
                        .map_err(|e| io_error(format!("creating {}", full.display()), e))?;
                    self.nodes.insert(rel, Node::File);
                    copy_exact(&mut tar, &mut f, size, &full)?;
                    f.set_permissions(std::fs::Permissions::from_mode(mode))
                        .map_err(|e| io_error(format!("chmod {}", full.display()), e))?;
                    skip(&mut tar, padded(size) - size)?;
                }
            }
            self.stats.bytes += size;
            layer.bytes += size;
        }
        if meta.count > 0 {
            return Err(UnpackError::Corrupt(
                "metadata header without an entry".into(),
            ));
        }
        // A later entry may change what an earlier symlink resolves to: check them all.
        let links: Vec<(Vec<u8>, Vec<u8>)> = self
            .nodes
            .iter()
            .filter_map(|(p, n)| match n {
                Node::Symlink(t) => Some((p.clone(), t.clone())),
                _ => None,
            })
            .collect();
        for (p, t) in links {
            if self.escapes(&p, &t) {
                return Err(UnpackError::Refused {
                    path: String::from_utf8_lossy(&p).into_owned(),
                    reason: format!(
                        "symlink target {:?} leaves the destination",
                        String::from_utf8_lossy(&t)
                    ),
                });
            }
        }

        // Rest of the tar stream (record padding), then the rest of the compressed stream.
        let mut trailing = 0u64;
        let mut buf = [0u8; 8192];
        loop {
            let n = read_some(&mut tar, &mut buf)?;
            if n == 0 {
                break;
            }
            trailing += n as u64;
            if trailing > MAX_TRAILING {
                return Err(UnpackError::TooLarge {
                    what: "bytes after the end of the archive",
                    limit: MAX_TRAILING,
                });
            }
        }
        let (decoder, diff) = tar.into_inner().into_parts();
        let mut compressed = decoder.into_inner().into_inner();
        loop {
            let n = read_some(&mut compressed, &mut buf)?;
            if n == 0 {
                break;
            }
        }
        let (_, comp) = compressed.into_parts();
        let (digest, size) = comp.finish();
        let (diff_id, _) = diff.finish();
        if let Some(want) = expected.size
            && want != size
        {
            return Err(UnpackError::DigestMismatch {
                what: "size",
                expected: want.to_string(),
                actual: size.to_string(),
            });
        }
        if let Some(want) = expected.digest
            && want != digest
        {
            return Err(UnpackError::DigestMismatch {
                what: "digest",
                expected: want.to_string(),
                actual: digest.to_string(),
            });
        }
        if let Some(want) = expected.diff_id
            && want != diff_id
        {
            return Err(UnpackError::DigestMismatch {
                what: "diff_id",
                expected: want.to_string(),
                actual: diff_id.to_string(),
            });
        }
        Ok(layer)
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
                    mkdir(&self.staging.join(OsStr::from_bytes(anc)))?;
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
            .finish()
    }
}

impl Drop for Unpacker {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

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
fn normalise(name: &[u8]) -> Result<Vec<u8>, &'static str> {
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

fn mkdir(full: &Path) -> Result<(), UnpackError> {
    DirBuilder::new()
        .mode(0o755)
        .create(full)
        .and_then(|()| std::fs::set_permissions(full, std::fs::Permissions::from_mode(0o755)))
        .map_err(|e| io_error(format!("creating directory {}", full.display()), e))
}

fn io_error(context: String, source: io::Error) -> UnpackError {
    UnpackError::Io { context, source }
}

/// The compressed stream was longer than the expected size.
#[derive(Debug)]
struct TooLong(u64);

impl std::fmt::Display for TooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "more than the expected {} bytes", self.0)
    }
}

impl std::error::Error for TooLong {}

/// Maps a read error anywhere in the decoding chain.
fn read_error(e: io::Error) -> UnpackError {
    if let Some(TooLong(n)) = e.get_ref().and_then(|i| i.downcast_ref::<TooLong>()) {
        return UnpackError::DigestMismatch {
            what: "size",
            expected: n.to_string(),
            actual: format!("more than {n}"),
        };
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof => UnpackError::Corrupt("truncated stream".into()),
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => {
            UnpackError::Corrupt(format!("gzip: {e}"))
        }
        _ => io_error("reading layer".into(), e),
    }
}

/// Hashes and counts what is read through it; optionally refuses to read past a size.
struct Tap<R> {
    inner: R,
    hasher: Hasher,
    limit: Option<u64>,
}

impl<R: Read> Tap<R> {
    fn new(inner: R, limit: Option<u64>) -> Self {
        Tap {
            inner,
            hasher: Hasher::new(),
            limit,
        }
    }
    fn into_parts(self) -> (R, Hasher) {
        (self.inner, self.hasher)
    }
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        if let Some(limit) = self.limit
            && self.hasher.len() > limit
        {
            return Err(io::Error::other(TooLong(limit)));
        }
        Ok(n)
    }
}

fn read_some<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<usize, UnpackError> {
    loop {
        match r.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(e)),
        }
    }
}

fn read_exact<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<(), UnpackError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            UnpackError::Corrupt("truncated archive".into())
        } else {
            read_error(e)
        }
    })
}

/// Reads one block; `false` at a clean end of stream.
fn read_block<R: Read>(r: &mut R, block: &mut [u8; BLOCK]) -> Result<bool, UnpackError> {
    let first = read_some(r, &mut block[..])?;
    if first == 0 {
        return Ok(false);
    }
    read_exact(r, &mut block[first..])?;
    Ok(true)
}

fn skip<R: BufRead>(r: &mut R, mut n: u64) -> Result<(), UnpackError> {
    while n > 0 {
        let buf = r.fill_buf().map_err(read_error)?;
        if buf.is_empty() {
            return Err(UnpackError::Corrupt("truncated archive".into()));
        }
        let k = (buf.len() as u64).min(n) as usize;
        r.consume(k);
        n -= k as u64;
    }
    Ok(())
}

fn copy_exact<R: BufRead>(
    r: &mut R,
    f: &mut File,
    mut n: u64,
    path: &Path,
) -> Result<(), UnpackError> {
    while n > 0 {
        let buf = r.fill_buf().map_err(read_error)?;
        if buf.is_empty() {
            return Err(UnpackError::Corrupt("truncated archive".into()));
        }
        let k = (buf.len() as u64).min(n) as usize;
        f.write_all(&buf[..k])
            .map_err(|e| io_error(format!("writing {}", path.display()), e))?;
        r.consume(k);
        n -= k as u64;
    }
    Ok(())
}

fn trim_nul(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(i) => &b[..i],
        None => b,
    }
}

struct Header {
    name: Vec<u8>,
    link: Vec<u8>,
    mode: u64,
    size: u64,
    typeflag: u8,
}

/// Metadata from GNU long-name and PAX headers for the next entry.
#[derive(Default)]
struct Meta {
    count: u32,
    name: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    pax_path: Option<Vec<u8>>,
    pax_link: Option<Vec<u8>>,
    pax_size: Option<u64>,
}

impl Meta {
    /// PAX records: `<len> <key>=<value>\n`.
    fn pax(&mut self, mut data: &[u8]) -> Result<(), UnpackError> {
        let bad = || UnpackError::Corrupt("malformed PAX header".into());
        while !data.is_empty() {
            if data.iter().all(|&b| b == 0) {
                break;
            }
            let sp = data.iter().position(|&b| b == b' ').ok_or_else(bad)?;
            let len: usize = std::str::from_utf8(&data[..sp])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(bad)?;
            if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
                return Err(bad());
            }
            let rec = &data[sp + 1..len - 1];
            let eq = rec.iter().position(|&b| b == b'=').ok_or_else(bad)?;
            let (key, value) = (&rec[..eq], &rec[eq + 1..]);
            match key {
                b"path" => self.pax_path = Some(value.to_vec()),
                b"linkpath" => self.pax_link = Some(value.to_vec()),
                b"size" => {
                    let v = std::str::from_utf8(value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(bad)?;
                    self.pax_size = Some(v);
                }
                _ => {}
            }
            data = &data[len..];
        }
        Ok(())
    }
}

fn parse_number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        // GNU base-256, positive only.
        if field[0] != 0x80 {
            return None;
        }
        let mut v: u64 = 0;
        for &b in &field[1..] {
            if v >> 56 != 0 {
                return None;
            }
            v = (v << 8) | u64::from(b);
        }
        return Some(v);
    }
    let s = field.iter().skip_while(|&&b| b == b' ' || b == 0);
    let mut v: u64 = 0;
    for &b in s {
        match b {
            b'0'..=b'7' => {
                v = v.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
            }
            b' ' | 0 => break,
            _ => return None,
        }
    }
    Some(v)
}

fn parse_header(b: &[u8; BLOCK]) -> Result<Header, UnpackError> {
    let bad = |what: &str| UnpackError::Corrupt(format!("bad tar header: {what}"));
    let stored = parse_number(&b[148..156]).ok_or_else(|| bad("checksum field"))?;
    let unsigned: u64 = b
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(c)
            }
        })
        .sum();
    let signed: i64 = b
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            if (148..156).contains(&i) {
                32
            } else {
                i64::from(c as i8)
            }
        })
        .sum();
    if stored != unsigned && stored as i64 != signed {
        return Err(bad("checksum mismatch"));
    }
    let mut name = trim_nul(&b[0..100]).to_vec();
    if &b[257..263] == b"ustar\0" {
        let prefix = trim_nul(&b[345..500]);
        if !prefix.is_empty() {
            let mut full = prefix.to_vec();
            full.push(b'/');
            full.extend_from_slice(&name);
            name = full;
        }
    }
    Ok(Header {
        name,
        link: trim_nul(&b[157..257]).to_vec(),
        mode: parse_number(&b[100..108]).ok_or_else(|| bad("mode"))?,
        size: parse_number(&b[124..136]).ok_or_else(|| bad("size"))?,
        typeflag: b[156],
    })
}
