//! Deterministic layers: a sorted, normalised tar stream, gzip-compressed in parallel.
//!
//! Same input entries give the same bytes on any machine and with any thread count:
//! entries sorted by path bytes, mtime fixed (the commit time), uid/gid 0 and no user or group
//! names, modes 0644/0755 (directories 0755), symlinks kept as symlinks, long names as GNU
//! long-name entries, no hardlinks, gzip header without name or time.
//!
//! Two digests come out of one pass: `diff_id` (sha256 of the uncompressed tar, the layer's
//! content identity, stable across compressor versions) and `digest`/`size` of the compressed
//! bytes (what transport verifies).
//!
//! The tar is GNU-format, written here header by header (not through the `tar` crate's
//! builder, which records host metadata): every ancestor directory of an entry is an entry
//! too (added when missing), directory names end in `/`, symlinks have mode 0777, and the
//! archive ends with two zero blocks and no record padding.
//!
//! Compression splits the tar stream into fixed [`CHUNK_SIZE`] chunks, deflates each one
//! independently on a worker thread (ending non-final chunks with a sync flush, so their
//! concatenation is one valid deflate stream) and writes them in order as a single gzip member.
//! Chunk boundaries depend only on the tar bytes, so the output does not depend on the number
//! of threads.
//!
//! [`FORMAT_VERSION`] names this exact layout; changing any byte of the output for the same
//! input means bumping it (the golden test in `tests/pack_golden.rs` pins it).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};

use flate2::{Compress, Compression, FlushCompress, Status};

use crate::Digest;
use crate::digest::Hasher;

/// Version of the layer format. Part of dependency-layer keys, so a format change rebuilds.
pub const FORMAT_VERSION: u32 = 1;

/// Media type recorded in manifests for layers this module writes.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.restbase-deploy.layer.v1.tar+gzip";

/// One entry to put in a layer.
#[derive(Clone, Debug)]
pub struct PackEntry {
    /// Relative `/`-separated path, no leading `/`, no `.`/`..` segments.
    pub path: String,
    pub kind: PackKind,
}

#[derive(Clone, Debug)]
pub enum PackKind {
    Dir,
    File { data: PackData, executable: bool },
    Symlink { target: String },
}

/// Where a file's bytes come from.
#[derive(Clone, Debug)]
pub enum PackData {
    Bytes(Vec<u8>),
    Path(PathBuf),
}

/// Compression settings. They do not change `diff_id`; they do change `digest`.
#[derive(Clone, Debug)]
pub struct PackOptions {
    /// mtime for every entry (seconds since the epoch), e.g. the commit time.
    pub mtime: u64,
    /// gzip level 0-9.
    pub level: u32,
    /// Compression threads; the output bytes do not depend on it.
    pub threads: usize,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            mtime: 0,
            level: 6,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        }
    }
}

/// What was written.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerInfo {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// sha256 of the compressed bytes.
    pub digest: Digest,
    /// Size of the compressed bytes.
    pub size: u64,
    /// Size of the uncompressed tar.
    pub tar_size: u64,
    /// Number of entries.
    pub entries: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("invalid entry path {0:?}")]
    BadPath(String),
    #[error("duplicate entry {0:?}")]
    Duplicate(String),
    /// A symlink whose target is absolute or resolves outside the layer (the unpacker would
    /// refuse it, so packing refuses it first).
    #[error("symlink {path:?} points outside the layer: {target:?}")]
    BadLink { path: String, target: String },
    #[error("unsupported file type at {0}")]
    Unsupported(PathBuf),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Bytes of tar stream compressed independently per worker job. Part of the format: changing
/// it changes the compressed bytes (not `diff_id`), so it means bumping [`FORMAT_VERSION`].
pub const CHUNK_SIZE: usize = 1 << 20;

const BLOCK: usize = 512;

/// Packs `entries` (any order; sorted here) into `out`.
///
/// Missing ancestor directories are added as entries, so a list of files alone and the same
/// files with their directories give the same layer. A path below a file or symlink entry is
/// refused ([`PackError::BadPath`]), as is a symlink whose target is absolute or resolves
/// outside the layer ([`PackError::BadLink`]). File contents are streamed: a
/// [`PackData::Path`] is read while packing and must keep the size it had when opened.
pub fn pack_entries<W: Write>(
    entries: Vec<PackEntry>,
    opts: &PackOptions,
    out: W,
) -> Result<LayerInfo, PackError> {
    let entries = canonical(entries)?;
    write_layer(entries, opts, out)
}

/// Walks `root` (without following symlinks) and packs everything under it, each path
/// prefixed with `prefix` (e.g. `node_modules`; empty for none). The prefix directory itself
/// is an entry when non-empty.
pub fn pack_dir<W: Write>(
    root: &Path,
    prefix: &str,
    opts: &PackOptions,
    out: W,
) -> Result<LayerInfo, PackError> {
    pack_entries(walk_dir(root, prefix)?, opts, out)
}

/// Walks `root` sorted, without following symlinks, into entries prefixed with `prefix`.
///
/// Regular files become [`PackData::Path`] entries (executable when any exec bit is set),
/// symlinks keep their target, and anything else (sockets, fifos, devices) is
/// [`PackError::Unsupported`]. Names must be UTF-8.
pub fn walk_dir(root: &Path, prefix: &str) -> Result<Vec<PackEntry>, PackError> {
    let mut out = Vec::new();
    if !prefix.is_empty() {
        check_path(prefix)?;
        out.push(PackEntry {
            path: prefix.to_string(),
            kind: PackKind::Dir,
        });
    }
    let mut stack = vec![(root.to_path_buf(), prefix.to_string())];
    while let Some((dir, rel)) = stack.pop() {
        let rd = std::fs::read_dir(&dir)
            .map_err(|e| io_err(format!("reading directory {}", dir.display()), e))?;
        for ent in rd {
            let ent = ent.map_err(|e| io_err(format!("reading directory {}", dir.display()), e))?;
            let full = ent.path();
            let name = ent.file_name();
            let name = name
                .to_str()
                .ok_or_else(|| PackError::BadPath(full.to_string_lossy().into_owned()))?;
            let path = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            let ft = ent
                .file_type()
                .map_err(|e| io_err(format!("stat {}", full.display()), e))?;
            let kind = if ft.is_dir() {
                stack.push((full, path.clone()));
                PackKind::Dir
            } else if ft.is_file() {
                let md = ent
                    .metadata()
                    .map_err(|e| io_err(format!("stat {}", full.display()), e))?;
                PackKind::File {
                    executable: md.permissions().mode() & 0o111 != 0,
                    data: PackData::Path(full),
                }
            } else if ft.is_symlink() {
                let t = std::fs::read_link(&full)
                    .map_err(|e| io_err(format!("reading symlink {}", full.display()), e))?;
                let target = t
                    .into_os_string()
                    .into_string()
                    .map_err(|t| PackError::BadLink {
                        path: path.clone(),
                        target: t.to_string_lossy().into_owned(),
                    })?;
                PackKind::Symlink { target }
            } else {
                return Err(PackError::Unsupported(full));
            };
            out.push(PackEntry { path, kind });
        }
    }
    out.sort_unstable_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(out)
}

fn io_err(context: String, source: io::Error) -> PackError {
    PackError::Io { context, source }
}

/// A relative `/`-separated path without empty, `.` or `..` segments or NUL bytes.
fn check_path(path: &str) -> Result<(), PackError> {
    let ok = !path.is_empty()
        && !path.contains('\0')
        && path
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if ok {
        Ok(())
    } else {
        Err(PackError::BadPath(path.to_string()))
    }
}

/// Validates, sorts, rejects duplicates, adds missing ancestor directories and checks that
/// every symlink stays inside the layer.
fn canonical(mut entries: Vec<PackEntry>) -> Result<Vec<PackEntry>, PackError> {
    for e in &entries {
        check_path(&e.path)?;
    }
    entries.sort_unstable_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    for w in entries.windows(2) {
        if w[0].path == w[1].path {
            return Err(PackError::Duplicate(w[0].path.clone()));
        }
    }
    let mut implicit: Vec<String> = Vec::new();
    {
        let index: HashMap<&str, &PackKind> =
            entries.iter().map(|e| (e.path.as_str(), &e.kind)).collect();
        let mut added: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for e in &entries {
            for (i, _) in e.path.match_indices('/') {
                let anc = &e.path[..i];
                match index.get(anc) {
                    Some(PackKind::Dir) => {}
                    Some(_) => return Err(PackError::BadPath(e.path.clone())),
                    None => {
                        if added.insert(anc) {
                            implicit.push(anc.to_string());
                        }
                    }
                }
            }
        }
        for e in &entries {
            if let PackKind::Symlink { target } = &e.kind {
                let escapes = target.is_empty()
                    || target.contains('\0')
                    || crate::unpack::link_escapes(e.path.as_bytes(), target.as_bytes(), |p| {
                        match std::str::from_utf8(p).ok().and_then(|p| index.get(p)) {
                            Some(PackKind::Symlink { target }) => Some(target.as_bytes()),
                            _ => None,
                        }
                    });
                if escapes {
                    return Err(PackError::BadLink {
                        path: e.path.clone(),
                        target: target.clone(),
                    });
                }
            }
        }
    }
    if !implicit.is_empty() {
        entries.extend(implicit.into_iter().map(|path| PackEntry {
            path,
            kind: PackKind::Dir,
        }));
        entries.sort_unstable_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    }
    Ok(entries)
}

// ---------------------------------------------------------------------------------------------
// tar headers

fn put_octal(field: &mut [u8], value: u64) {
    // `field.len() - 1` octal digits, zero-padded, NUL-terminated; base-256 when too large.
    let digits = field.len() - 1;
    if digits < 22 && value >= 1u64 << (3 * digits) {
        field.fill(0);
        let n = field.len();
        let be = value.to_be_bytes();
        field[n - 8..].copy_from_slice(&be);
        field[0] |= 0x80;
        return;
    }
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
}

fn header(name: &[u8], mode: u32, size: u64, mtime: u64, typeflag: u8, link: &[u8]) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    put_octal(&mut h[100..108], u64::from(mode));
    put_octal(&mut h[108..116], 0);
    put_octal(&mut h[116..124], 0);
    put_octal(&mut h[124..136], size);
    put_octal(&mut h[136..148], mtime);
    h[156] = typeflag;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..263].copy_from_slice(b"ustar ");
    h[263..265].copy_from_slice(b" \0");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

// ---------------------------------------------------------------------------------------------
// the pipeline

struct Job {
    index: u64,
    raw: Vec<u8>,
    len: usize,
    last: bool,
}

struct Done {
    index: u64,
    raw: Vec<u8>,
    len: usize,
    last: bool,
    result: io::Result<(Vec<u8>, u32)>,
}

fn aborted() -> PackError {
    io_err(
        "packing".into(),
        io::Error::new(io::ErrorKind::BrokenPipe, "output side stopped"),
    )
}

/// The tar stream, cut into chunks that go to the compression workers.
struct TarOut<'a> {
    buf: Vec<u8>,
    fill: usize,
    index: u64,
    total: u64,
    pool: &'a Receiver<Vec<u8>>,
    work: &'a SyncSender<Job>,
}

impl TarOut<'_> {
    fn space(&mut self) -> Result<(), PackError> {
        if self.fill == CHUNK_SIZE {
            let next = self.pool.recv().map_err(|_| aborted())?;
            let raw = std::mem::replace(&mut self.buf, next);
            self.work
                .send(Job {
                    index: self.index,
                    raw,
                    len: CHUNK_SIZE,
                    last: false,
                })
                .map_err(|_| aborted())?;
            self.index += 1;
            self.fill = 0;
        }
        Ok(())
    }

    fn put(&mut self, mut data: &[u8]) -> Result<(), PackError> {
        while !data.is_empty() {
            self.space()?;
            let n = (CHUNK_SIZE - self.fill).min(data.len());
            self.buf[self.fill..self.fill + n].copy_from_slice(&data[..n]);
            self.fill += n;
            self.total += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    fn pad(&mut self) -> Result<(), PackError> {
        let rem = (self.total % BLOCK as u64) as usize;
        if rem != 0 {
            self.put(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// Copies exactly `size` bytes of `file` into the stream.
    fn put_file(&mut self, file: &mut File, size: u64, path: &Path) -> Result<(), PackError> {
        let mut left = size;
        while left > 0 {
            self.space()?;
            let want = ((CHUNK_SIZE - self.fill) as u64).min(left) as usize;
            let n = match file.read(&mut self.buf[self.fill..self.fill + want]) {
                Ok(0) => {
                    return Err(io_err(
                        format!("reading {}", path.display()),
                        io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while packing"),
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(format!("reading {}", path.display()), e)),
            };
            self.fill += n;
            self.total += n as u64;
            left -= n as u64;
        }
        let mut probe = [0u8; 1];
        match file.read(&mut probe) {
            Ok(0) => Ok(()),
            Ok(_) => Err(io_err(
                format!("reading {}", path.display()),
                io::Error::new(io::ErrorKind::InvalidData, "file grew while packing"),
            )),
            Err(e) => Err(io_err(format!("reading {}", path.display()), e)),
        }
    }

    /// A header, preceded by GNU long-name/long-link entries where needed.
    fn entry(
        &mut self,
        name: &[u8],
        mode: u32,
        size: u64,
        mtime: u64,
        typeflag: u8,
        link: &[u8],
    ) -> Result<(), PackError> {
        for (long, flag) in [(name, b'L'), (link, b'K')] {
            if long.len() > 100 {
                let h = header(b"././@LongLink", 0o644, long.len() as u64 + 1, 0, flag, b"");
                self.put(&h)?;
                self.put(long)?;
                self.put(&[0])?;
                self.pad()?;
            }
        }
        self.put(&header(name, mode, size, mtime, typeflag, link))
    }

    fn finish(mut self) -> Result<u64, PackError> {
        self.work
            .send(Job {
                index: self.index,
                raw: std::mem::take(&mut self.buf),
                len: self.fill,
                last: true,
            })
            .map_err(|_| aborted())?;
        Ok(self.total)
    }
}

/// Writes the tar stream of `entries` (already canonical) into `tar`.
fn produce(
    entries: Vec<PackEntry>,
    mtime: u64,
    mut tar: TarOut<'_>,
) -> Result<(u64, u64), PackError> {
    let count = entries.len() as u64;
    let mut name = Vec::with_capacity(256);
    for e in entries {
        name.clear();
        name.extend_from_slice(e.path.as_bytes());
        match e.kind {
            PackKind::Dir => {
                name.push(b'/');
                tar.entry(&name, 0o755, 0, mtime, b'5', b"")?;
            }
            PackKind::Symlink { target } => {
                tar.entry(&name, 0o777, 0, mtime, b'2', target.as_bytes())?
            }
            PackKind::File { data, executable } => {
                let mode = if executable { 0o755 } else { 0o644 };
                match data {
                    PackData::Bytes(b) => {
                        tar.entry(&name, mode, b.len() as u64, mtime, b'0', b"")?;
                        tar.put(&b)?;
                    }
                    PackData::Path(p) => {
                        let mut f = std::fs::OpenOptions::new()
                            .read(true)
                            // O_NONBLOCK: a fifo put in place of a file must not hang us.
                            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
                            .open(&p)
                            .map_err(|e| io_err(format!("opening {}", p.display()), e))?;
                        let md = f
                            .metadata()
                            .map_err(|e| io_err(format!("stat {}", p.display()), e))?;
                        if !md.is_file() {
                            return Err(PackError::Unsupported(p));
                        }
                        tar.entry(&name, mode, md.len(), mtime, b'0', b"")?;
                        tar.put_file(&mut f, md.len(), &p)?;
                    }
                }
                tar.pad()?;
            }
        }
    }
    tar.put(&[0u8; 2 * BLOCK])?;
    let total = tar.finish()?;
    Ok((count, total))
}

/// Compresses one chunk as raw deflate: sync flush unless it is the last.
fn deflate_chunk(c: &mut Compress, input: &[u8], last: bool) -> io::Result<(Vec<u8>, u32)> {
    c.reset();
    let crc = crc32fast::hash(input);
    let mut out = Vec::with_capacity(input.len() + input.len() / 64 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(64 << 10);
        }
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&input[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let done = if last {
            status == Status::StreamEnd
        } else {
            c.total_in() as usize == input.len() && out.len() < out.capacity()
        };
        if done {
            return Ok((out, crc));
        }
    }
}

fn worker(level: u32, jobs: &Mutex<Receiver<Job>>, done: &std::sync::mpsc::Sender<Done>) {
    let mut c = Compress::new(Compression::new(level), false);
    loop {
        let job = {
            let rx = match jobs.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            rx.recv()
        };
        let Ok(job) = job else { return };
        let result = deflate_chunk(&mut c, &job.raw[..job.len], job.last);
        if done
            .send(Done {
                index: job.index,
                raw: job.raw,
                len: job.len,
                last: job.last,
                result,
            })
            .is_err()
        {
            return;
        }
    }
}

fn write_layer<W: Write>(
    entries: Vec<PackEntry>,
    opts: &PackOptions,
    out: W,
) -> Result<LayerInfo, PackError> {
    let threads = opts.threads.max(1);
    let level = opts.level.min(9);
    let mtime = opts.mtime;
    let buffers = threads * 4 + 4;
    let (pool_tx, pool_rx) = channel::<Vec<u8>>();
    for _ in 1..buffers {
        let _ = pool_tx.send(vec![0u8; CHUNK_SIZE]);
    }
    let (work_tx, work_rx) = sync_channel::<Job>(threads * 4);
    let work_rx = Arc::new(Mutex::new(work_rx));
    let (done_tx, done_rx) = channel::<Done>();

    std::thread::scope(|s| {
        let producer = s.spawn(move || {
            let tar = TarOut {
                buf: vec![0u8; CHUNK_SIZE],
                fill: 0,
                index: 0,
                total: 0,
                pool: &pool_rx,
                work: &work_tx,
            };
            produce(entries, mtime, tar)
        });
        for _ in 0..threads {
            let rx = Arc::clone(&work_rx);
            let tx = done_tx.clone();
            s.spawn(move || worker(level, &rx, &tx));
        }
        drop(done_tx);
        drop(work_rx);
        let written = consume(out, level, done_rx, pool_tx);
        let produced = match producer.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        match (written, produced) {
            // An output error explains a producer abort, so it wins.
            (Err(e), _) => Err(e),
            // The stream stopped early because the producer failed (e.g. a file vanished).
            (Ok(_), Err(e)) => Err(e),
            (Ok(None), Ok(_)) => Err(aborted()),
            (Ok(Some(w)), Ok((entries, tar_size))) => {
                debug_assert_eq!(w.tar_size, tar_size);
                Ok(LayerInfo {
                    diff_id: w.diff_id,
                    digest: w.digest,
                    size: w.size,
                    tar_size,
                    entries,
                })
            }
        }
    })
}

struct Written {
    diff_id: Digest,
    digest: Digest,
    size: u64,
    tar_size: u64,
}

/// Writes the compressed chunks in order as one gzip member, hashing both streams.
/// `Ok(None)` when the chunks stopped before the last one (the producer failed).
fn consume<W: Write>(
    out: W,
    level: u32,
    done: Receiver<Done>,
    pool: std::sync::mpsc::Sender<Vec<u8>>,
) -> Result<Option<Written>, PackError> {
    let werr = |e| io_err("writing layer".into(), e);
    let mut out = crate::digest::HashingWriter::new(out);
    let xfl = match level {
        9 => 2,
        1 => 4,
        _ => 0,
    };
    // No name, no comment, mtime 0, OS "unknown".
    out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 0xff])
        .map_err(werr)?;
    let mut diff = Hasher::new();
    let mut crc = crc32fast::Hasher::new();
    let mut pending: BTreeMap<u64, Done> = BTreeMap::new();
    let mut next = 0u64;
    for d in done.iter() {
        pending.insert(d.index, d);
        while let Some(d) = pending.remove(&next) {
            let (comp, chunk_crc) = d
                .result
                .map_err(|e| io_err("compressing layer".into(), e))?;
            diff.update(&d.raw[..d.len]);
            crc.combine(&crc32fast::Hasher::new_with_initial_len(
                chunk_crc,
                d.len as u64,
            ));
            out.write_all(&comp).map_err(werr)?;
            next += 1;
            if d.last {
                let (diff_id, tar_size) = diff.finish();
                out.write_all(&crc.finalize().to_le_bytes()).map_err(werr)?;
                out.write_all(&(tar_size as u32).to_le_bytes())
                    .map_err(werr)?;
                out.flush().map_err(werr)?;
                let (_, digest, size) = out.finish();
                return Ok(Some(Written {
                    diff_id,
                    digest,
                    size,
                    tar_size,
                }));
            }
            let _ = pool.send(d.raw);
        }
    }
    Ok(None)
}
