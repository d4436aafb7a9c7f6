//! Deterministic layers: a sorted, normalised tar stream, compressed in parallel (zstd by
//! default, gzip on request).
//!
//! Same input entries give the same bytes on any machine and with any thread count:
//! entries sorted by path bytes, mtime fixed (the commit time), uid/gid 0 and no user or group
//! names, modes 0644/0755 (directories 0755), symlinks kept as symlinks, long names as GNU
//! long-name entries, no hardlinks, gzip header without name or time.
//!
//! Two digests come out of one pass: `diff_id` (sha256 of the uncompressed tar, the layer's
//! content identity, the same for both compressions and stable across compressor versions)
//! and `digest`/`size` of the compressed bytes (what transport verifies).
//!
//! The tar is GNU-format, written here header by header (not through the `tar` crate's
//! builder, which records host metadata): every ancestor directory of an entry is an entry
//! too (added when missing), directory names end in `/`, symlinks have mode 0777, and the
//! archive ends with two zero blocks and no record padding.
//!
//! Compression cuts the tar stream into fixed-size chunks and compresses each one
//! independently on a worker thread (gzip: one member of sync-flushed deflate chunks; zstd: one
//! frame per chunk; see `pack/pipeline.rs`). Chunk boundaries
//! depend only on the tar bytes, so the output does not depend on the number of threads.
//!
//! Each [`LayerCompression`] has a layer format version and a media type: gzip is format 1
//! (the bytes of earlier releases, unchanged), zstd is format 2. Changing any byte of the output
//! for the same input means a new format version (the golden tests in `tests/pack_golden.rs`
//! pin both).

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::Digest;

mod pipeline;

pub use pipeline::{CHUNK_SIZE, ZSTD_CHUNK_SIZE};

/// The newest layer format this module writes (zstd). Gzip layers are format 1; see
/// [`LayerCompression::format_version`], which is what dependency-layer keys record.
pub const FORMAT_VERSION: u32 = 2;

/// Media type of gzip layers (format 1).
pub const GZIP_LAYER_MEDIA_TYPE: &str = "application/vnd.restbase-deploy.layer.v1.tar+gzip";
/// Media type of zstd layers (format 2).
pub const ZSTD_LAYER_MEDIA_TYPE: &str = "application/vnd.restbase-deploy.layer.v2.tar+zstd";

/// How a layer's tar stream is compressed. It changes `digest`, never `diff_id`.
///
/// zstd is the default: on a 181 MB `node_modules` it packed 2.4x faster than gzip level 6
/// on 2 cores, at the speed of `tar | sha256sum`, into a 5% smaller layer (`ci/bench pack`,
/// `docs/BENCHMARKS.md`); it also decodes with less CPU.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LayerCompression {
    /// gzip, layer format 1, level 0-9 (default 6).
    Gzip,
    /// zstd, layer format 2, level 1-19 (default 3).
    #[default]
    Zstd,
}

impl LayerCompression {
    /// The manifest media type of layers compressed this way.
    pub fn media_type(self) -> &'static str {
        match self {
            LayerCompression::Gzip => GZIP_LAYER_MEDIA_TYPE,
            LayerCompression::Zstd => ZSTD_LAYER_MEDIA_TYPE,
        }
    }

    /// The compression a media type names, if it is one this crate reads.
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        [LayerCompression::Gzip, LayerCompression::Zstd]
            .into_iter()
            .find(|c| c.media_type() == media_type)
    }

    /// The layer format version (gzip 1, zstd 2): part of dependency-layer keys, so
    /// switching compression never reuses a layer of the other kind.
    pub fn format_version(self) -> u32 {
        match self {
            LayerCompression::Gzip => 1,
            LayerCompression::Zstd => 2,
        }
    }

    /// The level used when none is given.
    pub fn default_level(self) -> u32 {
        match self {
            LayerCompression::Gzip => 6,
            LayerCompression::Zstd => 3,
        }
    }

    /// `level` limited to what this compression accepts (zstd's levels above 19 need windows
    /// larger than the unpacker allows, and zstd level 0 means "default").
    pub fn clamp_level(self, level: u32) -> u32 {
        match self {
            LayerCompression::Gzip => level.min(9),
            LayerCompression::Zstd => level.clamp(1, 19),
        }
    }

    /// A reader of the tar inside a layer compressed this way (multi-member gzip, or zstd
    /// frames). It decompresses only: digests are the caller's (or the unpacker's) to check.
    pub fn decoder<'a, R: std::io::Read + 'a>(
        self,
        r: R,
    ) -> std::io::Result<Box<dyn std::io::Read + 'a>> {
        Ok(match self {
            LayerCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
            LayerCompression::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
        })
    }

    /// `gzip` or `zstd`.
    pub fn name(self) -> &'static str {
        match self {
            LayerCompression::Gzip => "gzip",
            LayerCompression::Zstd => "zstd",
        }
    }
}

impl std::fmt::Display for LayerCompression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Not `gzip` or `zstd`.
#[derive(Debug, thiserror::Error)]
#[error("unknown layer compression {0:?} (expected gzip or zstd)")]
pub struct ParseCompressionError(pub String);

impl std::str::FromStr for LayerCompression {
    type Err = ParseCompressionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gzip" => Ok(LayerCompression::Gzip),
            "zstd" => Ok(LayerCompression::Zstd),
            _ => Err(ParseCompressionError(s.to_string())),
        }
    }
}

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

/// Packing settings. Compression and level do not change `diff_id`; they do change `digest`.
#[derive(Clone, Debug)]
pub struct PackOptions {
    /// mtime for every entry (seconds since the epoch), e.g. the commit time.
    pub mtime: u64,
    pub compression: LayerCompression,
    /// Level for `compression` (limited by [`LayerCompression::clamp_level`]).
    pub level: u32,
    /// Compression threads; the output bytes do not depend on it.
    pub threads: usize,
}

impl PackOptions {
    /// Defaults with `compression` at its default level.
    pub fn with_compression(compression: LayerCompression) -> Self {
        PackOptions {
            mtime: 0,
            compression,
            level: compression.default_level(),
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        }
    }
}

impl Default for PackOptions {
    /// zstd at level 3, one thread per CPU.
    fn default() -> Self {
        PackOptions::with_compression(LayerCompression::default())
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
    pipeline::write_layer(entries, opts, out)
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
