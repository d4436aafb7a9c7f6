//! The host fetch of one layer, as a deploy target does it, timed by phase and printed as JSON:
//! download over HTTP, verify (size, sha256 of the blob, sha256 of the tar), unpack into a new
//! release directory, make it durable and rename it into place, and keep the blob in the
//! host's cache (written while downloading, fsynced and renamed after), then write
//! `.release.json` atomically.
//!
//! `cargo run --release -p artifact --example fetchbench -- URL DIGEST SIZE DIFF_ID ROOT [WRITERS [EARLY [DECODE]]]`
//!
//! `WRITERS` is the writer-thread count (0: every file on the reading thread); `EARLY` 0 turns
//! the early writeback off (one `syncfs` at the end only); `DECODE` 0 decodes on the reading
//! thread (no decoding thread).
//!
//! `ROOT` must not exist; the example creates `ROOT/releases/r` and
//! `ROOT/cache/blobs/sha256/<hex>`. Prints `{"seconds", "layer_seconds", "finish_seconds",
//! "cache_seconds", "entries", "bytes"}`: `layer` is download+verify+extract, `finish` the
//! durable pass and rename, `cache` the blob cache's fsync+rename and `.release.json`.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::time::Instant;

use artifact::Digest;
use artifact::unpack::{Expected, UnpackLimits, Unpacker};

/// Copies what is read into the cache file.
struct Tee<R> {
    inner: R,
    out: BufWriter<File>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

fn round(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    File::open(path.parent().expect("has a parent"))?.sync_all()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !(5..=8).contains(&args.len()) {
        eprintln!("usage: fetchbench URL DIGEST SIZE DIFF_ID ROOT [WRITERS [EARLY [DECODE]]]");
        std::process::exit(2);
    }
    let url = &args[0];
    let digest: Digest = args[1].parse().expect("DIGEST");
    let size: u64 = args[2].parse().expect("SIZE");
    let diff_id: Digest = args[3].parse().expect("DIFF_ID");
    let root = Path::new(&args[4]);
    let writers: Option<usize> = args.get(5).map(|w| w.parse().expect("WRITERS"));
    let early = args.get(6).is_none_or(|e| e != "0");
    let decode_thread = args.get(7).is_none_or(|e| e != "0");

    let start = Instant::now();
    let cache_dir = root.join("cache/blobs/sha256");
    std::fs::create_dir_all(&cache_dir).expect("creating the cache");
    std::fs::create_dir_all(root.join("releases")).expect("creating releases/");
    let dest = root.join("releases/r");
    let mut u = Unpacker::new(&dest, UnpackLimits::default()).expect("starting the unpacker");
    if let Some(w) = writers {
        u = u.with_writers(w);
    }
    u = u
        .with_early_writeback(early)
        .with_decode_thread(decode_thread);
    let mut resp = ureq::get(url).call().expect("GET");
    let body = resp.body_mut().with_config().limit(u64::MAX).reader();
    let cache = cache_dir.join(digest.hex());
    let tmp = cache.with_extension("tmp");
    let mut tee = Tee {
        inner: body,
        out: BufWriter::with_capacity(1 << 20, File::create(&tmp).expect("cache file")),
    };
    let expected = Expected {
        digest: Some(digest),
        size: Some(size),
        diff_id: Some(diff_id),
    };
    u.layer(&mut tee, &expected).expect("unpack failed");
    let t_layer = start.elapsed().as_secs_f64();
    let stats = u.finish().expect("finish failed");
    let t_finish = start.elapsed().as_secs_f64();
    let f = tee.out.into_inner().expect("flushing the cache file");
    f.sync_all().expect("fsync of the cache file");
    std::fs::rename(&tmp, &cache).expect("renaming the cache file");
    write_atomic(&dest.join(".release.json"), br#"{"fetched":true}"#).expect(".release.json");
    let seconds = start.elapsed().as_secs_f64();
    let json = serde_json::json!({
        "seconds": round(seconds),
        "layer_seconds": round(t_layer),
        "finish_seconds": round(t_finish - t_layer),
        "cache_seconds": round(seconds - t_finish),
        "entries": stats.entries,
        "bytes": stats.bytes,
        "writers": writers,
        "early_writeback": early,
        "decode_thread": decode_thread,
    });
    println!("{json}");
}
