//! What a build reports: its outcome, layers, dependency layer, repairs and timings (the
//! binary renders it; `--format json` prints it as it is).

use artifact::Digest;
use artifact::manifest::{LayerKind, Manifest};
use artifact::store::Store;
use serde::Serialize;

/// How the build ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// This build created `commits/<sha>`.
    Built,
    /// `commits/<sha>` already existed (from an earlier or a concurrent build) and this build
    /// produced the same manifest.
    Identical,
    /// `commits/<sha>` already existed; nothing was built.
    AlreadyBuilt,
}

#[derive(Clone, Debug, Serialize)]
pub struct LayerReport {
    pub kind: LayerKind,
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
    pub entries: u64,
    /// True if this build uploaded the blob; false if the store had it.
    pub uploaded: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct DepsReport {
    pub key: String,
    /// True if the layer came from an earlier build (`deps/<key>`) and npm did not run.
    pub reused: bool,
    /// True if npm ran for a key that was already recorded and produced the same layer.
    pub reproduced: bool,
    pub native: bool,
    pub lockfile_generated: bool,
    pub npm_args: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Timing {
    pub step: &'static str,
    pub seconds: f64,
}

/// What a build did.
#[derive(Clone, Debug, Serialize)]
pub struct BuildReport {
    /// The artifact id: the manifest digest.
    pub id: Digest,
    pub commit: String,
    pub service: String,
    pub store: String,
    pub outcome: Outcome,
    pub layers: Vec<LayerReport>,
    pub deps: Option<DepsReport>,
    pub manifest_uploaded: bool,
    /// Blobs whose stored bytes did not match their digest and were replaced (rebuilds only).
    pub repaired: Vec<String>,
    pub skipped_submodules: Vec<String>,
    pub timings: Vec<Timing>,
}

pub(crate) fn report_from_manifest(
    id: Digest,
    m: &Manifest,
    store: &dyn Store,
    outcome: Outcome,
) -> BuildReport {
    BuildReport {
        id,
        commit: m.source.commit.clone(),
        service: m.service.clone(),
        store: store.location(),
        outcome,
        layers: m
            .layers
            .iter()
            .map(|l| LayerReport {
                kind: l.kind,
                media_type: l.media_type.clone(),
                digest: l.digest,
                size: l.size,
                diff_id: l.diff_id,
                entries: l.entries,
                uploaded: false,
            })
            .collect(),
        deps: m.deps.as_ref().map(|d| DepsReport {
            key: d.key.clone(),
            reused: true,
            reproduced: false,
            native: d.native,
            lockfile_generated: d.lockfile_generated,
            npm_args: d.npm_args.clone(),
        }),
        manifest_uploaded: false,
        repaired: Vec::new(),
        skipped_submodules: Vec::new(),
        timings: Vec::new(),
    }
}

/// `1.2 MB`-style sizes for humans (decimal units).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
