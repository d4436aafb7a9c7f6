//! Packs a directory into a layer file, or unpacks one, and prints what it took as JSON.
//!
//! `cargo run --release -p artifact --example packbench -- DIR OUT [THREADS] [gzip|zstd] [LEVEL]`
//! prints `{"seconds", "tar_size", "size", "diff_id", "digest", "entries", "threads",
//! "compression"}`. The time covers walking, reading, tar, compression and both sha256s.
//!
//! `... --example packbench -- --unpack LAYER DEST [WRITERS]` unpacks a layer (gzip or zstd)
//! into a new directory (verifying its digest while reading, durable, renamed into place) and
//! prints `{"seconds", "finish_seconds", "entries", "bytes", "digest", "writers"}` (finish =
//! flush to disk and rename).

use std::io::BufWriter;
use std::path::PathBuf;
use std::time::Instant;

use artifact::pack::{LayerCompression, PackOptions, pack_dir};
use artifact::unpack::{Expected, UnpackLimits, Unpacker};

fn round(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

fn unpack(layer: &str, dest: &str, writers: Option<usize>) {
    let (digest, size) = artifact::Digest::of_file(layer.as_ref()).expect("cannot read layer");
    let start = Instant::now();
    let file = std::fs::File::open(layer).expect("cannot open layer");
    let mut u =
        Unpacker::new(dest.as_ref(), UnpackLimits::default()).expect("cannot start unpacking");
    if let Some(w) = writers {
        u = u.with_writers(w);
    }
    let expected = Expected {
        digest: Some(digest),
        size: Some(size),
        diff_id: None,
    };
    u.layer(file, &expected).expect("unpack failed");
    let extracted = start.elapsed().as_secs_f64();
    let stats = u.finish().expect("finish failed");
    let seconds = start.elapsed().as_secs_f64();
    let json = serde_json::json!({
        "seconds": round(seconds),
        "finish_seconds": round(seconds - extracted),
        "entries": stats.entries,
        "bytes": stats.bytes,
        "digest": digest.to_string(),
        "writers": writers,
    });
    println!("{json}");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if (3..=4).contains(&args.len()) && args[0] == "--unpack" {
        let writers = args
            .get(3)
            .map(|w| w.parse().expect("WRITERS must be a number"));
        unpack(&args[1], &args[2], writers);
        return;
    }
    if args.len() < 2 {
        eprintln!("usage: packbench DIR OUT [THREADS] [gzip|zstd] [LEVEL]");
        eprintln!("       packbench --unpack LAYER DEST [WRITERS]");
        std::process::exit(2);
    }
    let dir = PathBuf::from(&args[0]);
    let out = PathBuf::from(&args[1]);
    let compression: LayerCompression = args
        .get(3)
        .map(|c| c.parse().expect("COMPRESSION must be gzip or zstd"))
        .unwrap_or_default();
    let mut opts = PackOptions::with_compression(compression);
    if let Some(t) = args.get(2) {
        opts.threads = t.parse().expect("THREADS must be a number");
    }
    if let Some(l) = args.get(4) {
        opts.level = l.parse().expect("LEVEL must be a number");
    }
    let start = Instant::now();
    let file = std::fs::File::create(&out).expect("cannot create output file");
    let info =
        pack_dir(&dir, "", &opts, BufWriter::with_capacity(1 << 20, file)).expect("pack failed");
    let seconds = start.elapsed().as_secs_f64();
    let json = serde_json::json!({
        "seconds": round(seconds),
        "tar_size": info.tar_size,
        "size": info.size,
        "diff_id": info.diff_id.to_string(),
        "digest": info.digest.to_string(),
        "entries": info.entries,
        "threads": opts.threads,
        "compression": compression.name(),
    });
    println!("{json}");
}
