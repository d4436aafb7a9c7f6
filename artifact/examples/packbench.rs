//! Packs a directory into a layer file and prints what it took as JSON.
//!
//! `cargo run --release -p artifact --example packbench -- DIR OUT.tgz [THREADS] [LEVEL]`
//! prints `{"seconds", "tar_size", "size", "diff_id", "digest", "entries", "threads"}`.
//! The time covers walking, reading, tar, compression and both sha256s.
//!
//! `... --example packbench -- --unpack LAYER.tgz DEST` unpacks a layer into a new directory
//! (verifying its digest while reading, renaming into place) and prints
//! `{"seconds", "finish_seconds", "entries", "bytes", "digest"}` (finish = flush to disk and rename).

use std::io::BufWriter;
use std::path::PathBuf;
use std::time::Instant;

use artifact::pack::{PackOptions, pack_dir};
use artifact::unpack::{Expected, UnpackLimits, Unpacker};

fn unpack(layer: &str, dest: &str) {
    let (digest, size) = artifact::Digest::of_file(layer.as_ref()).expect("cannot read layer");
    let start = Instant::now();
    let file = std::fs::File::open(layer).expect("cannot open layer");
    let mut u =
        Unpacker::new(dest.as_ref(), UnpackLimits::default()).expect("cannot start unpacking");
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
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "finish_seconds": ((seconds - extracted) * 1000.0).round() / 1000.0,
        "entries": stats.entries,
        "bytes": stats.bytes,
        "digest": digest.to_string(),
    });
    println!("{json}");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() == 3 && args[0] == "--unpack" {
        unpack(&args[1], &args[2]);
        return;
    }
    if args.len() < 2 {
        eprintln!("usage: packbench DIR OUT.tgz [THREADS] [LEVEL]");
        std::process::exit(2);
    }
    let dir = PathBuf::from(&args[0]);
    let out = PathBuf::from(&args[1]);
    let mut opts = PackOptions::default();
    if let Some(t) = args.get(2) {
        opts.threads = t.parse().expect("THREADS must be a number");
    }
    if let Some(l) = args.get(3) {
        opts.level = l.parse().expect("LEVEL must be a number");
    }
    let start = Instant::now();
    let file = std::fs::File::create(&out).expect("cannot create output file");
    let info =
        pack_dir(&dir, "", &opts, BufWriter::with_capacity(1 << 20, file)).expect("pack failed");
    let seconds = start.elapsed().as_secs_f64();
    let json = serde_json::json!({
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "tar_size": info.tar_size,
        "size": info.size,
        "diff_id": info.diff_id.to_string(),
        "digest": info.digest.to_string(),
        "entries": info.entries,
        "threads": opts.threads,
    });
    println!("{json}");
}
