//! The host fetch and prune of two builds that share their dependency layer (a source-only
//! change), through the real target code, against what a host did before the layer store
//! (every layer of every release unpacked into the release itself), in one run. Prints JSON.
//!
//! `cargo run --release -p applier --example layerbench -- STORE FIRST SECOND WORK`
//!
//! `STORE` is a store location; `FIRST` and `SECOND` resolve to builds in it (digest, commit or
//! unique prefix), `SECOND` a source-only change of `FIRST`; `WORK` must not exist (removed
//! after). Measures, on one host root under `WORK`:
//! - `cold_fetch`: `FIRST` into an empty root (download, verify, unpack every layer, link);
//! - `source_only_fetch`: then `SECOND` (only its source layer downloaded and unpacked);
//! - `source_only_full_unpack`: the baseline, `SECOND`'s layers all unpacked from the blob
//!   cache into a fresh release directory, as the fetch did before (no download either);
//! - `prune`: with `SECOND` current, the prune that removes `FIRST` (its links and its
//!   source tree; the dependency tree stays);
//! - `prune_full_copy`: the baseline, removing the release the full unpack made.

use std::path::Path;
use std::time::Instant;

use applier::protocol::ReleaseRef;
use applier::target::HostRoot;
use artifact::unpack::{Expected, UnpackLimits, Unpacker};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [store, first, second, work] = args.as_slice() else {
        eprintln!("usage: layerbench STORE FIRST SECOND WORK");
        std::process::exit(64);
    };
    let work = Path::new(work);
    std::fs::create_dir(work).expect("WORK must not exist");
    let store = artifact::store::open(store, &Default::default()).expect("store");
    let load = |q: &str| {
        let d = artifact::resolve::resolve(store.as_ref(), q).expect("resolve");
        let m = artifact::resolve::load_verified(store.as_ref(), &d).expect("manifest");
        (d, m)
    };
    let (a, b) = (load(first), load(second));
    let root = HostRoot::new(work.join("host"));
    let secs = |t: Instant| t.elapsed().as_secs_f64();

    let t = Instant::now();
    let ra = root
        .fetch(store.as_ref(), &a.0, &a.1, UnpackLimits::default())
        .expect("fetch first");
    let cold = secs(t);
    let t = Instant::now();
    let rb = root
        .fetch(store.as_ref(), &b.0, &b.1, UnpackLimits::default())
        .expect("fetch second");
    let source_only = secs(t);

    // The baseline: what the fetch of SECOND did before, every layer from the blob cache.
    let old = work.join("old");
    std::fs::create_dir(&old).unwrap();
    let dest = old.join(&b.1.source.commit);
    let t = Instant::now();
    let mut up = Unpacker::new(&dest, UnpackLimits::default()).unwrap();
    for l in &b.1.layers {
        let blob = root.root().join("cache/blobs/sha256").join(l.digest.hex());
        let f = std::fs::File::open(&blob).expect("cached blob");
        let expected = Expected {
            digest: Some(l.digest),
            size: Some(l.size),
            diff_id: Some(l.diff_id),
        };
        up.layer(std::io::BufReader::new(f), &expected).unwrap();
    }
    let full = up.finish().unwrap();
    let full_unpack = secs(t);

    let rel = ReleaseRef {
        commit: model::names::CommitId::parse(&b.1.source.commit).unwrap(),
        manifest: b.0,
    };
    root.switch(&rel).unwrap();
    let t = Instant::now();
    let p = root.prune(0).expect("prune");
    let prune = secs(t);
    let t = Instant::now();
    std::fs::remove_dir_all(&dest).unwrap();
    let prune_full = secs(t);
    assert_eq!(p.removed, vec![a.1.source.commit.clone()]);

    println!(
        "{}",
        serde_json::json!({
            "entries": rb.entries,
            "full_unpack_entries": full.entries,
            "downloaded_cold": ra.downloaded,
            "downloaded_source_only": rb.downloaded,
            "cold_fetch": cold,
            "source_only_fetch": source_only,
            "source_only_full_unpack": full_unpack,
            "prune": prune,
            "prune_host_ms": p.ms,
            "prune_layers_removed": p.layers_removed.len(),
            "prune_full_copy": prune_full,
        })
    );
    std::fs::remove_dir_all(work).unwrap();
}
