//! The artifact manifest: a versioned JSON document, itself content-addressed.
//!
//! The manifest holds only what determines the artifact, so rebuilding a commit gives the same
//! manifest digest: no build time, no build host, no builder version (those go in the
//! [`BuildRecord`] under `commits/<sha>`). It is serialised canonically ([`model::canonical_json`]:
//! object keys sorted, no whitespace), so its digest is stable.
//!
//! Formats: 1 has gzip layers only; 2 adds zstd layers. A manifest is written in the lowest
//! format that describes its layers ([`Manifest::format_for`]), so an all-gzip build keeps the
//! digest it always had and older readers keep reading it, while a reader that predates zstd
//! refuses a format-2 manifest up front (it never starts to unpack a layer it cannot read).
//!
//! [`Manifest::from_json`] is the one way in for stored bytes: it is fed untrusted input and
//! must give a result or an error, never panic (`tests/proptest_parsers.rs`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use model::canonical_json;

use crate::Digest;
use crate::pack::LayerCompression;

/// The newest version of the manifest document (zstd layers). Readers refuse versions they do
/// not know.
pub const MANIFEST_FORMAT: u32 = 2;
/// The manifest versions this crate reads: 1 (gzip layers) and 2 (gzip or zstd layers).
pub const MANIFEST_FORMATS: std::ops::RangeInclusive<u32> = 1..=MANIFEST_FORMAT;
/// Media type of a manifest blob.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.restbase-deploy.manifest.v1+json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    /// Service name (`deploy/service.yaml`, else package.json `name`).
    pub service: String,
    pub source: SourceInfo,
    /// Source layer first, then the dependency layer (if any).
    pub layers: Vec<Layer>,
    /// The platform the dependency layer was built for; `None` if it holds no native code
    /// or there is no dependency layer.
    pub platform: Option<Platform>,
    pub deps: Option<DepsInfo>,
    /// The storage manifest from schema-guard (its own versioned format), if extracted.
    pub storage: Option<serde_json::Value>,
    /// Free-form labels (e.g. `ci.pipeline`), sorted.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceInfo {
    /// Full git commit id.
    pub commit: String,
    /// Git tree id of the commit.
    pub tree: String,
    /// Committer time, seconds since the epoch (also every entry's mtime).
    pub commit_time: i64,
    /// `Name <email>` of the author.
    pub author: String,
    /// First line of the commit message.
    pub subject: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    Source,
    Deps,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub kind: LayerKind,
    pub media_type: String,
    /// sha256 of the compressed bytes (the blob key).
    pub digest: Digest,
    /// Size of the compressed bytes.
    pub size: u64,
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    pub entries: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Platform {
    /// `linux`, `darwin` (Node's `process.platform`).
    pub os: String,
    /// `x64`, `arm64` (Node's `process.arch`).
    pub arch: String,
    /// `glibc`, `musl` or `unknown`.
    pub libc: String,
    /// Node's `process.versions.modules` (the native module ABI).
    pub node_abi: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepsInfo {
    /// The dependency key (sha256 over lockfile, flags, node, ABI, platform).
    pub key: String,
    pub node_version: String,
    pub npm_version: String,
    /// npm arguments used (`ci --omit=dev ...`).
    pub npm_args: Vec<String>,
    /// sha256 of the lockfile the layer was resolved from.
    pub lockfile_digest: Digest,
    /// True if the commit had no lockfile and npm produced the recorded one.
    pub lockfile_generated: bool,
    /// Blob holding that lockfile, so the resolution is never lost.
    pub lockfile_blob: Digest,
    /// True if node_modules holds native (`.node`) modules.
    pub native: bool,
}

/// The `commits/<sha>` record: which manifest a commit built to, and provenance that must not
/// change the manifest digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRecord {
    pub commit: String,
    pub manifest: Digest,
    pub built_at: String,
    pub builder_version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not a manifest: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("manifest format {found} is not supported (this tool reads formats 1 to {supported})")]
    Format { found: u32, supported: u32 },
    #[error("manifest is invalid: {0}")]
    Invalid(String),
}

impl Manifest {
    /// Canonical bytes: what is stored and hashed.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        let v = serde_json::to_value(self).expect("manifest serialises");
        canonical_json(&v)
    }

    /// The manifest digest: the artifact id.
    pub fn digest(&self) -> Digest {
        Digest::of(&self.to_canonical_json())
    }

    /// Parses and validates stored manifest bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        #[derive(Deserialize)]
        struct Probe {
            format: u32,
        }
        let probe: Probe = serde_json::from_slice(bytes)?;
        if !MANIFEST_FORMATS.contains(&probe.format) {
            return Err(ManifestError::Format {
                found: probe.format,
                supported: MANIFEST_FORMAT,
            });
        }
        let m: Manifest = serde_json::from_slice(bytes)?;
        m.validate()?;
        Ok(m)
    }

    /// The format a manifest with these layers is written in: 1 when every layer is gzip (what
    /// readers before zstd understand), else 2.
    pub fn format_for(layers: &[Layer]) -> u32 {
        let all_gzip = layers.iter().all(|l| {
            LayerCompression::from_media_type(&l.media_type) == Some(LayerCompression::Gzip)
        });
        if all_gzip { 1 } else { MANIFEST_FORMAT }
    }

    /// Structural checks: a known format, a commit id, the source layer first, at most one
    /// dependency layer, and every layer of a media type this crate unpacks (gzip only in
    /// format 1).
    pub fn validate(&self) -> Result<(), ManifestError> {
        if !MANIFEST_FORMATS.contains(&self.format) {
            return Err(ManifestError::Format {
                found: self.format,
                supported: MANIFEST_FORMAT,
            });
        }
        for l in &self.layers {
            match LayerCompression::from_media_type(&l.media_type) {
                Some(LayerCompression::Gzip) => {}
                Some(LayerCompression::Zstd) if self.format >= 2 => {}
                Some(c) => {
                    return Err(ManifestError::Invalid(format!(
                        "a format {} manifest cannot have {c} layers",
                        self.format
                    )));
                }
                None => {
                    return Err(ManifestError::Invalid(format!(
                        "unknown layer media type {:?}",
                        l.media_type
                    )));
                }
            }
        }
        let is_sha = |s: &str| s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_sha(&self.source.commit) {
            return Err(ManifestError::Invalid(format!(
                "bad commit id {:?}",
                self.source.commit
            )));
        }
        if self.layers.first().map(|l| l.kind) != Some(LayerKind::Source) {
            return Err(ManifestError::Invalid(
                "first layer must be the source layer".into(),
            ));
        }
        if self
            .layers
            .iter()
            .filter(|l| l.kind == LayerKind::Deps)
            .count()
            > 1
        {
            return Err(ManifestError::Invalid(
                "more than one dependency layer".into(),
            ));
        }
        Ok(())
    }

    pub fn layer(&self, kind: LayerKind) -> Option<&Layer> {
        self.layers.iter().find(|l| l.kind == kind)
    }
}

impl Layer {
    /// The layer's compression (a validated manifest only holds known media types).
    pub fn compression(&self) -> Option<LayerCompression> {
        LayerCompression::from_media_type(&self.media_type)
    }
}
