//! Reading one layer: the compressed stream (hashed and size-checked as it is read), its
//! decompression (gzip or zstd, told apart by their magic bytes) and the tar headers in it
//! (hashed as the layer's `diff_id`).
//!
//! Everything here reads untrusted bytes and returns an error for anything unexpected; no size
//! from the archive is used to allocate or read before the caller checked it (metadata records
//! are capped at [`MAX_META`]). `tests/proptest_parsers.rs` throws generated hostile inputs at it.

use std::io::{self, BufRead, BufReader, Chain, Cursor, Read, Write};
use std::path::Path;
use std::thread::Scope;

use flate2::bufread::MultiGzDecoder;

use super::relay::Relay;
use super::{UnpackError, io_error};
use crate::Digest;
use crate::digest::Hasher;

/// Longest GNU long-name / PAX record accepted.
pub(super) const MAX_META: u64 = 64 << 10;
/// Bytes accepted after the end-of-archive marker (GNU tar pads to 10 KiB records).
const MAX_TRAILING: u64 = 1 << 20;
/// Largest zstd window accepted (8 MiB): the packer's frames are 4 MiB, and a hostile frame
/// header must not make the decoder allocate more.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;
pub(super) const BLOCK: usize = 512;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The compressed stream as the decoder reads it: the sniffed magic bytes, then the rest.
type Source<R> = BufReader<Chain<Cursor<Vec<u8>>, Tap<R>>>;

enum Decoder<R: Read> {
    Gzip(Box<MultiGzDecoder<Source<R>>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, Source<R>>>),
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Gzip(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
        }
    }
}

impl<R: Read> Decoder<R> {
    fn into_source(self) -> Source<R> {
        match self {
            Decoder::Gzip(d) => d.into_inner(),
            Decoder::Zstd(d) => d.finish(),
        }
    }
}

/// One tar entry's header, after GNU long-name and PAX records were applied.
pub(super) struct Entry {
    pub name: Vec<u8>,
    pub link: Vec<u8>,
    pub mode: u64,
    pub size: u64,
    pub typeflag: u8,
}

/// What a layer hashed to.
pub(super) struct Digests {
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
}

/// The decoded tar stream a [`TarReader`] parses, and the digests of both streams once it was
/// read to its end: decoded inline ([`Inline`]) or on a thread of its own ([`Relay`]).
pub(super) trait Decoded: Read {
    fn digests(self) -> Result<Digests, UnpackError>;
}

/// The tar stream decoded on the reading thread.
pub(super) struct Inline<R: Read>(Tap<Decoder<R>>);

impl<R: Read> Read for Inline<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read> Decoded for Inline<R> {
    /// Reads the rest of the compressed stream (after the decoder's end), then the digests.
    fn digests(self) -> Result<Digests, UnpackError> {
        let (decoder, diff) = self.0.into_parts();
        let mut compressed = decoder.into_source();
        let mut buf = [0u8; 8192];
        loop {
            let n = read_some(&mut compressed, &mut buf)?;
            if n == 0 {
                break;
            }
        }
        let (_, tap) = compressed.into_inner().into_inner();
        let (_, comp) = tap.into_parts();
        let (digest, size) = comp.finish();
        let (diff_id, _) = diff.finish();
        Ok(Digests {
            digest,
            size,
            diff_id,
        })
    }
}

/// A layer being read: entry headers via [`TarReader::next_entry`], their data via
/// [`TarReader::read_data`], [`TarReader::copy_data`] or [`TarReader::skip`].
pub(super) struct TarReader<D: Decoded> {
    tar: BufReader<D>,
}

impl<R: Read> TarReader<Inline<R>> {
    /// Sniffs the compression and sets up decoding on this thread. `size` (if known) is the
    /// compressed size: reading past it is an error at once, not after the whole stream was
    /// read.
    pub fn new(reader: R, size: Option<u64>) -> Result<Self, UnpackError> {
        Ok(TarReader {
            tar: BufReader::with_capacity(256 << 10, decoding(reader, size)?),
        })
    }
}

impl TarReader<Relay> {
    /// As [`TarReader::new`], with the decoding on a thread of `scope` (see [`Relay`]).
    pub fn threaded<'s, R: Read + Send + 's>(
        scope: &'s Scope<'s, '_>,
        reader: R,
        size: Option<u64>,
    ) -> Result<Self, UnpackError> {
        let stream = decoding(reader, size)?;
        Ok(TarReader {
            tar: BufReader::with_capacity(256 << 10, Relay::spawn(scope, stream)),
        })
    }
}

/// Sniffs the compression of `reader` and sets up its decoding and both hashes.
fn decoding<R: Read>(reader: R, size: Option<u64>) -> Result<Inline<R>, UnpackError> {
    let mut tap = Tap::source(reader, size);
    let mut magic = vec![0u8; 4];
    let mut got = 0;
    while got < magic.len() {
        let n = read_some(&mut tap, &mut magic[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    magic.truncate(got);
    let source = BufReader::with_capacity(128 << 10, Cursor::new(magic.clone()).chain(tap));
    let decoder = if magic.starts_with(&GZIP_MAGIC) {
        Decoder::Gzip(Box::new(MultiGzDecoder::new(source)))
    } else if magic == ZSTD_MAGIC {
        let mut d = zstd::stream::read::Decoder::with_buffer(source)
            .map_err(|e| io_error("starting the zstd decoder".into(), e))?;
        d.window_log_max(ZSTD_WINDOW_LOG_MAX)
            .map_err(|e| io_error("starting the zstd decoder".into(), e))?;
        Decoder::Zstd(Box::new(d))
    } else if got == 0 {
        return Err(UnpackError::Corrupt("empty layer".into()));
    } else {
        return Err(UnpackError::Corrupt(
            "not a layer: neither gzip nor zstd data".into(),
        ));
    };
    Ok(Inline(Tap::decoded(decoder)))
}

impl<D: Decoded> TarReader<D> {
    /// The next entry's header; `None` at the end-of-archive marker. GNU long-name/long-link
    /// and PAX records are read (bounded) and applied to the entry that follows them.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, UnpackError> {
        let mut meta = Meta::default();
        let mut block = [0u8; BLOCK];
        loop {
            if !read_block(&mut self.tar, &mut block)? {
                return Err(UnpackError::Corrupt(
                    "archive ends without the end-of-archive marker".into(),
                ));
            }
            if block.iter().all(|&b| b == 0) {
                if meta.count > 0 {
                    return Err(UnpackError::Corrupt(
                        "metadata header without an entry".into(),
                    ));
                }
                return Ok(None);
            }
            let h = parse_header(&block)?;
            if !matches!(h.typeflag, b'L' | b'K' | b'x' | b'g') {
                return Ok(Some(Entry {
                    name: meta.pax_path.or(meta.name).unwrap_or(h.name),
                    link: meta.pax_link.or(meta.link).unwrap_or(h.link),
                    size: meta.pax_size.unwrap_or(h.size),
                    mode: h.mode,
                    typeflag: h.typeflag,
                }));
            }
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
            read_exact(&mut self.tar, &mut data)?;
            data.truncate(h.size as usize);
            match h.typeflag {
                b'L' => meta.name = Some(trim_nul(&data).to_vec()),
                b'K' => meta.link = Some(trim_nul(&data).to_vec()),
                b'x' => meta.pax(&data)?,
                _ => {} // global PAX header: nothing in it matters here
            }
        }
    }

    /// Reads an entry's `size` data bytes (and its padding) into a new buffer. The caller has
    /// checked `size` against its limits.
    pub fn read_data(&mut self, size: u64) -> Result<Vec<u8>, UnpackError> {
        let len = usize::try_from(size).map_err(|_| UnpackError::TooLarge {
            what: "bytes in one entry",
            limit: usize::MAX as u64,
        })?;
        let mut data = vec![0u8; len];
        read_exact(&mut self.tar, &mut data)?;
        self.skip(padded(size) - size)?;
        Ok(data)
    }

    /// Copies an entry's `size` data bytes into `out` (then skips the padding).
    pub fn copy_data(
        &mut self,
        out: &mut impl Write,
        size: u64,
        path: &Path,
    ) -> Result<(), UnpackError> {
        let mut n = size;
        while n > 0 {
            let buf = self.tar.fill_buf().map_err(read_error)?;
            if buf.is_empty() {
                return Err(UnpackError::Corrupt("truncated archive".into()));
            }
            let k = (buf.len() as u64).min(n) as usize;
            out.write_all(&buf[..k])
                .map_err(|e| io_error(format!("writing {}", path.display()), e))?;
            self.tar.consume(k);
            n -= k as u64;
        }
        self.skip(padded(size) - size)
    }

    /// Skips `n` bytes of the tar stream.
    pub fn skip(&mut self, mut n: u64) -> Result<(), UnpackError> {
        while n > 0 {
            let buf = self.tar.fill_buf().map_err(read_error)?;
            if buf.is_empty() {
                return Err(UnpackError::Corrupt("truncated archive".into()));
            }
            let k = (buf.len() as u64).min(n) as usize;
            self.tar.consume(k);
            n -= k as u64;
        }
        Ok(())
    }

    /// Skips an entry's data and padding.
    pub fn skip_data(&mut self, size: u64) -> Result<(), UnpackError> {
        self.skip(padded(size))
    }

    /// Reads what follows the end-of-archive marker (bounded), then the rest of the compressed
    /// stream, and returns the digests of both streams.
    pub fn finish(self) -> Result<Digests, UnpackError> {
        let mut tar = self.tar;
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
        tar.into_inner().digests()
    }
}

/// `size` rounded up to whole blocks.
pub(super) fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK as u64) * BLOCK as u64
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

/// An error of the reader the layer comes from (the network, a file), as opposed to one of
/// the decoder (the data).
#[derive(Debug)]
struct SourceError(io::Error);

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SourceError {}

/// Maps a read error anywhere in the decoding chain.
pub(super) fn read_error(e: io::Error) -> UnpackError {
    if let Some(TooLong(n)) = e.get_ref().and_then(|i| i.downcast_ref::<TooLong>()) {
        return UnpackError::DigestMismatch {
            what: "size",
            expected: n.to_string(),
            actual: format!("more than {n}"),
        };
    }
    if e.get_ref().is_some_and(|i| i.is::<SourceError>()) {
        return io_error("reading layer".into(), e);
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof => UnpackError::Corrupt("truncated stream".into()),
        // Everything else comes from a decoder: the data is bad.
        _ => UnpackError::Corrupt(format!("decompressing: {e}")),
    }
}

/// Hashes and counts what is read through it; optionally refuses to read past a size. Errors
/// of the inner reader are marked as [`SourceError`].
struct Tap<R> {
    inner: R,
    hasher: Hasher,
    limit: Option<u64>,
    /// True for the tap on the layer's own reader: its errors become [`SourceError`]s.
    source: bool,
}

impl<R: Read> Tap<R> {
    fn source(inner: R, limit: Option<u64>) -> Self {
        Tap {
            inner,
            hasher: Hasher::new(),
            limit,
            source: true,
        }
    }
    fn decoded(inner: R) -> Self {
        Tap {
            inner,
            hasher: Hasher::new(),
            limit: None,
            source: false,
        }
    }
    fn into_parts(self) -> (R, Hasher) {
        (self.inner, self.hasher)
    }
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if self.source && e.kind() != io::ErrorKind::Interrupted => {
                return Err(io::Error::new(e.kind(), SourceError(e)));
            }
            Err(e) => return Err(e),
        };
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
        if e.kind() == io::ErrorKind::UnexpectedEof && e.get_ref().is_none() {
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
