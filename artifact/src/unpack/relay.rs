//! Decoding a layer on a thread of its own: the read of the compressed stream, its hash,
//! the decompression and the hash of the tar run on one thread; the tar's headers, the
//! hostile-archive checks and the file writes on the caller's. The two meet in a bounded
//! channel of chunks, so memory stays at a few MiB whatever the layer.
//!
//! The decoding thread is a scoped one ([`std::thread::Scope`]): it ends before the unpack
//! returns. If the caller stops reading (a bad entry, a limit), the channel closes and the
//! thread stops at its next chunk. Errors reach the caller as the same `io::Error`s the
//! decoding chain raises inline, so they are mapped alike.

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::Scope;

use super::UnpackError;
use super::tar::{Decoded, Digests};

/// Bytes of decoded tar per message.
const CHUNK: usize = 256 << 10;
/// Chunks in flight: 2 MiB at most between the two threads.
const DEPTH: usize = 8;

enum Msg {
    Data(Vec<u8>),
    Failed(io::Error),
    /// The decoded stream ended; the digests of both streams (or why they could not be had).
    Done(Result<Digests, UnpackError>),
}

/// The decoded tar stream, as the decoding thread sends it.
pub(in crate::unpack) struct Relay {
    rx: Receiver<Msg>,
    chunk: Vec<u8>,
    pos: usize,
    done: Option<Result<Digests, UnpackError>>,
}

impl Relay {
    /// Starts decoding `stream` on a thread of `scope`.
    pub fn spawn<'s, D>(scope: &'s Scope<'s, '_>, stream: D) -> Relay
    where
        D: Decoded + Send + 's,
    {
        let (tx, rx) = sync_channel(DEPTH);
        scope.spawn(move || decode(stream, tx));
        Relay {
            rx,
            chunk: Vec::new(),
            pos: 0,
            done: None,
        }
    }
}

/// The decoding thread: chunks until the end of the stream, then the digests.
fn decode<D: Decoded>(mut stream: D, tx: SyncSender<Msg>) {
    loop {
        let mut buf = vec![0u8; CHUNK];
        let mut n = 0;
        let mut end = false;
        while n < CHUNK {
            match stream.read(&mut buf[n..]) {
                Ok(0) => {
                    end = true;
                    break;
                }
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(Msg::Failed(e));
                    return;
                }
            }
        }
        buf.truncate(n);
        // A closed channel: the reader stopped (an error of its own); so does this thread.
        if n > 0 && tx.send(Msg::Data(buf)).is_err() {
            return;
        }
        if end {
            let _ = tx.send(Msg::Done(stream.digests()));
            return;
        }
    }
}

impl Read for Relay {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.chunk.len() {
                let k = out.len().min(self.chunk.len() - self.pos);
                out[..k].copy_from_slice(&self.chunk[self.pos..self.pos + k]);
                self.pos += k;
                return Ok(k);
            }
            if self.done.is_some() || out.is_empty() {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Msg::Data(c)) => {
                    self.chunk = c;
                    self.pos = 0;
                }
                Ok(Msg::Failed(e)) => return Err(e),
                Ok(Msg::Done(r)) => self.done = Some(r),
                Err(_) => return Err(io::Error::other("the layer's decoding thread ended")),
            }
        }
    }
}

impl Decoded for Relay {
    fn digests(mut self) -> Result<Digests, UnpackError> {
        // The caller read to the end of the stream, so the digests are here; should it not
        // have, what is left is read and dropped first.
        io::copy(&mut self, &mut io::sink()).map_err(super::tar::read_error)?;
        self.done
            .take()
            .unwrap_or_else(|| Err(super::tar::read_error(io::ErrorKind::UnexpectedEof.into())))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::super::{Expected, UnpackError, UnpackLimits, Unpacker};
    use super::*;

    /// A layer's source that counts the bytes read from it.
    struct Counting<'a>(&'a [u8], Arc<AtomicU64>);

    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1.fetch_add(n as u64, Ordering::SeqCst);
            Ok(n)
        }
    }

    fn header(name: &str, size: u64) -> Vec<u8> {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h.to_vec()
    }

    #[test]
    fn a_refusal_early_in_a_big_layer_stops_the_decoding_thread() {
        // An escaping entry first, then 24 MiB that do not compress.
        let big = 24u64 << 20;
        let mut tar = header("../escape", 0);
        tar.extend(header("big", big));
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        tar.extend((0..big / 8).flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        }));
        tar.extend([0u8; 1024]);
        let layer = zstd::bulk::compress(&tar, 1).unwrap();
        assert!(layer.len() as u64 > big, "{} bytes", layer.len());

        let dir = tempfile::tempdir().unwrap();
        let read = Arc::new(AtomicU64::new(0));
        let mut u = Unpacker::new(&dir.path().join("r"), UnpackLimits::default()).unwrap();
        let err = u
            .layer(Counting(&layer, read.clone()), &Expected::default())
            .unwrap_err();
        assert!(matches!(err, UnpackError::Refused { .. }), "{err:?}");
        // The chunks in flight and the buffers of both streams: a few MiB, not the layer.
        let n = read.load(Ordering::SeqCst);
        assert!(n < 8 << 20, "{n} of {} bytes read", layer.len());
    }
}
