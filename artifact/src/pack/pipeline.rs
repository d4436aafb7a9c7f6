//! The packing pipeline: the tar stream is cut into fixed-size chunks, each chunk is compressed
//! independently on a worker thread, and the results are written in order.
//!
//! gzip (layer format 1): [`CHUNK_SIZE`] chunks of raw deflate, non-final chunks ending with a
//! sync flush so their concatenation is one deflate stream, in a single gzip member with the
//! crc32 combined from the chunks. zstd (layer format 2): [`ZSTD_CHUNK_SIZE`] chunks, each one
//! complete zstd frame (content size in the header, xxh64 checksum at the end); the layer is
//! the concatenation of the frames, which any zstd decoder reads as one stream. Chunk
//! boundaries depend only on the tar bytes, so the output does not depend on the thread count.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};

use flate2::{Compress, Compression, FlushCompress, Status};

use super::{
    BLOCK, LayerCompression, LayerInfo, PackData, PackEntry, PackError, PackKind, PackOptions,
    header, io_err,
};
use crate::Digest;
use crate::digest::Hasher;
use std::os::unix::fs::OpenOptionsExt;

/// Bytes of tar stream deflated independently per worker job in a gzip layer. Part of the
/// format: changing it changes the compressed bytes (not `diff_id`).
pub const CHUNK_SIZE: usize = 1 << 20;

/// Bytes of tar stream per zstd frame in a zstd layer (bigger than gzip's: zstd's window is
/// larger, and 4 MiB frames come within 1.2% of one single frame here). Part of the format.
pub const ZSTD_CHUNK_SIZE: usize = 4 << 20;

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
    /// Compressed bytes and, for gzip, the chunk's crc32.
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
    /// Chunk size of the codec; `buf` has this length.
    chunk: usize,
    fill: usize,
    index: u64,
    total: u64,
    pool: &'a Receiver<Vec<u8>>,
    work: &'a SyncSender<Job>,
}

impl TarOut<'_> {
    fn space(&mut self) -> Result<(), PackError> {
        if self.fill == self.chunk {
            let next = self.pool.recv().map_err(|_| aborted())?;
            let raw = std::mem::replace(&mut self.buf, next);
            self.work
                .send(Job {
                    index: self.index,
                    raw,
                    len: self.chunk,
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
            let n = (self.chunk - self.fill).min(data.len());
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
            let want = ((self.chunk - self.fill) as u64).min(left) as usize;
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

/// One worker's compressor.
enum Codec {
    Gzip(Compress),
    Zstd(zstd::bulk::Compressor<'static>),
}

impl Codec {
    fn new(compression: LayerCompression, level: u32) -> io::Result<Codec> {
        Ok(match compression {
            LayerCompression::Gzip => Codec::Gzip(Compress::new(Compression::new(level), false)),
            LayerCompression::Zstd => {
                let level = i32::try_from(level).map_err(io::Error::other)?;
                let mut c = zstd::bulk::Compressor::new(level)?;
                // Each frame carries its own checksum (xxh64, 4 bytes): a zstd layer checks
                // itself like a gzip one does, also where no digest is known (`zstd -t`).
                c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))?;
                Codec::Zstd(c)
            }
        })
    }

    fn chunk(&mut self, input: &[u8], last: bool) -> io::Result<(Vec<u8>, u32)> {
        match self {
            Codec::Gzip(c) => deflate_chunk(c, input, last),
            // An empty final chunk (the tar ended on a chunk boundary) adds no frame.
            Codec::Zstd(_) if input.is_empty() => Ok((Vec::new(), 0)),
            Codec::Zstd(c) => Ok((c.compress(input)?, 0)),
        }
    }
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

fn worker(
    compression: LayerCompression,
    level: u32,
    jobs: &Mutex<Receiver<Job>>,
    done: &std::sync::mpsc::Sender<Done>,
) {
    let mut codec = Codec::new(compression, level);
    loop {
        let job = {
            let rx = match jobs.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            rx.recv()
        };
        let Ok(job) = job else { return };
        let result = match &mut codec {
            Ok(c) => c.chunk(&job.raw[..job.len], job.last),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        };
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

pub(super) fn write_layer<W: Write>(
    entries: Vec<PackEntry>,
    opts: &PackOptions,
    out: W,
) -> Result<LayerInfo, PackError> {
    let threads = opts.threads.max(1);
    let compression = opts.compression;
    let level = compression.clamp_level(opts.level);
    let chunk = match compression {
        LayerCompression::Gzip => CHUNK_SIZE,
        LayerCompression::Zstd => ZSTD_CHUNK_SIZE,
    };
    let mtime = opts.mtime;
    let buffers = threads * 2 + 4;
    let (pool_tx, pool_rx) = channel::<Vec<u8>>();
    for _ in 1..buffers {
        let _ = pool_tx.send(vec![0u8; chunk]);
    }
    let (work_tx, work_rx) = sync_channel::<Job>(threads * 2);
    let work_rx = Arc::new(Mutex::new(work_rx));
    let (done_tx, done_rx) = channel::<Done>();

    std::thread::scope(|s| {
        let producer = s.spawn(move || {
            let tar = TarOut {
                buf: vec![0u8; chunk],
                chunk,
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
            s.spawn(move || worker(compression, level, &rx, &tx));
        }
        drop(done_tx);
        drop(work_rx);
        let written = consume(out, compression, level, done_rx, pool_tx);
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

/// Writes the compressed chunks in order (for gzip inside one member), hashing both streams.
/// `Ok(None)` when the chunks stopped before the last one (the producer failed).
fn consume<W: Write>(
    out: W,
    compression: LayerCompression,
    level: u32,
    done: Receiver<Done>,
    pool: std::sync::mpsc::Sender<Vec<u8>>,
) -> Result<Option<Written>, PackError> {
    let werr = |e| io_err("writing layer".into(), e);
    let mut out = crate::digest::HashingWriter::new(out);
    let gzip = compression == LayerCompression::Gzip;
    if gzip {
        let xfl = match level {
            9 => 2,
            1 => 4,
            _ => 0,
        };
        // No name, no comment, mtime 0, OS "unknown".
        out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 0xff])
            .map_err(werr)?;
    }
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
            if gzip {
                crc.combine(&crc32fast::Hasher::new_with_initial_len(
                    chunk_crc,
                    d.len as u64,
                ));
            }
            out.write_all(&comp).map_err(werr)?;
            next += 1;
            if d.last {
                let (diff_id, tar_size) = diff.finish();
                if gzip {
                    out.write_all(&crc.finalize().to_le_bytes()).map_err(werr)?;
                    out.write_all(&(tar_size as u32).to_le_bytes())
                        .map_err(werr)?;
                }
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
