//! Packs a directory into a layer file and prints what it took as JSON.
//!
//! `cargo run --release -p artifact --example packbench -- DIR OUT.tgz [THREADS] [LEVEL]`
//! prints `{"seconds", "tar_size", "size", "diff_id", "digest", "entries", "threads"}`.
//! The time covers walking, reading, tar, compression and both sha256s.

use std::io::BufWriter;
use std::path::PathBuf;
use std::time::Instant;

use artifact::pack::{PackOptions, pack_dir};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
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
