//! Reading what is stored: resolve a hash or commit to an artifact, list artifacts by commit,
//! and verify an artifact by re-reading and re-hashing every blob it names.

use std::collections::BTreeSet;
use std::io::{self, Read};

use artifact::manifest::{BuildRecord, LayerKind, Manifest};
use artifact::store::Store;
use artifact::{Digest, keys};
use flate2::read::MultiGzDecoder;
use serde::Serialize;

use crate::Error;
use crate::build::{commit_record, load_manifest};

/// Manifests are small; a blob bigger than this is never considered one when resolving a prefix.
const MAX_MANIFEST_SIZE: u64 = 1 << 20;

/// Resolves `query` to a manifest digest. `query` is a manifest digest (`sha256:<hex>` or hex,
/// full or a unique prefix of at least 4 digits) or a git commit id (full or unique prefix),
/// looked up through `commits/`.
pub fn resolve(store: &dyn Store, query: &str) -> Result<Digest, Error> {
    let q = query.trim();
    let (hex, digest_only) = match q.strip_prefix("sha256:") {
        Some(h) => (h, true),
        None => (q, false),
    };
    let hex = hex.to_ascii_lowercase();
    if hex.len() < 4 || hex.len() > 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::BadQuery(query.to_string()));
    }
    if hex.len() == 64 {
        let d: Digest = hex
            .parse()
            .map_err(|_| Error::BadQuery(query.to_string()))?;
        return match store.head(&keys::blob(&d))? {
            Some(_) => Ok(d),
            None => Err(Error::NotFound(query.to_string())),
        };
    }
    if hex.len() == 40
        && !digest_only
        && let Some(rec) = commit_record(store, &hex)?
    {
        return Ok(rec.manifest);
    }

    let mut found: BTreeSet<Digest> = BTreeSet::new();
    if !digest_only {
        for meta in store.list(&format!("{}{hex}", keys::COMMITS_PREFIX))? {
            let sha = &meta.key[keys::COMMITS_PREFIX.len()..];
            if let Some(rec) = commit_record(store, sha)? {
                found.insert(rec.manifest);
            }
        }
    }
    for meta in store.list(&format!("{}{hex}", keys::BLOBS_PREFIX))? {
        if meta.size > MAX_MANIFEST_SIZE {
            continue;
        }
        let Ok(d) = meta.key[keys::BLOBS_PREFIX.len()..].parse::<Digest>() else {
            continue;
        };
        let (bytes, _) = store.get_bytes(&meta.key)?;
        if Manifest::from_json(&bytes).is_ok() {
            found.insert(d);
        }
    }
    match found.len() {
        0 => Err(Error::NotFound(query.to_string())),
        1 => Ok(found.into_iter().next().expect("one")),
        _ => Err(Error::Ambiguous {
            query: query.to_string(),
            candidates: found.iter().map(|d| d.to_string()).collect(),
        }),
    }
}

/// Resolves `query` and reads its manifest.
pub fn show(store: &dyn Store, query: &str) -> Result<(Digest, Manifest), Error> {
    let d = resolve(store, query)?;
    Ok((d, load_manifest(store, &d)?))
}

/// One built commit.
#[derive(Clone, Debug, Serialize)]
pub struct ListEntry {
    pub commit: String,
    pub manifest: Digest,
    pub built_at: String,
    pub builder_version: String,
    /// From the manifest; `None` if it could not be read.
    pub service: Option<String>,
    pub commit_time: Option<i64>,
    pub subject: Option<String>,
}

/// Every `commits/<sha>` record with a summary of its manifest, newest commit first.
pub fn list(store: &dyn Store) -> Result<Vec<ListEntry>, Error> {
    let mut out = Vec::new();
    for meta in store.list(keys::COMMITS_PREFIX)? {
        let key = meta.key.clone();
        let (bytes, _) = store.get_bytes(&key)?;
        let rec: BuildRecord = serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
            key,
            detail: e.to_string(),
        })?;
        let m = load_manifest(store, &rec.manifest).ok();
        out.push(ListEntry {
            commit: rec.commit,
            manifest: rec.manifest,
            built_at: rec.built_at,
            builder_version: rec.builder_version,
            service: m.as_ref().map(|m| m.service.clone()),
            commit_time: m.as_ref().map(|m| m.source.commit_time),
            subject: m.as_ref().map(|m| m.source.subject.clone()),
        });
    }
    out.sort_by(|a, b| {
        b.commit_time
            .cmp(&a.commit_time)
            .then_with(|| a.commit.cmp(&b.commit))
    });
    Ok(out)
}

/// The check of one blob.
#[derive(Clone, Debug, Serialize)]
pub struct BlobCheck {
    /// `manifest`, `source layer`, `deps layer`, `lockfile`.
    pub what: String,
    pub key: String,
    /// `None` if the blob is good; what is wrong otherwise.
    pub problem: Option<String>,
}

/// The result of verifying one artifact.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub id: Digest,
    pub checks: Vec<BlobCheck>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.problem.is_none())
    }
    pub fn bad(&self) -> impl Iterator<Item = &BlobCheck> {
        self.checks.iter().filter(|c| c.problem.is_some())
    }
}

struct Hashes {
    digest: Digest,
    size: u64,
    diff_id: Option<Digest>,
}

/// Streams a blob, hashing the stored bytes, and (for a layer: `decompress` names its
/// compression) the decompressed tar.
fn hash_blob(
    store: &dyn Store,
    key: &str,
    decompress: Option<artifact::pack::LayerCompression>,
) -> Result<Result<Hashes, String>, Error> {
    let got = match store.get(key) {
        Ok(g) => g,
        Err(e) if e.is_not_found() => return Ok(Err("missing from the store".into())),
        Err(e) => return Err(e.into()),
    };
    let mut outer = artifact::digest::HashingReader::new(got.reader);
    if let Some(compression) = decompress {
        let decoder: Box<dyn Read + '_> = match compression {
            artifact::pack::LayerCompression::Gzip => Box::new(MultiGzDecoder::new(&mut outer)),
            artifact::pack::LayerCompression::Zstd => {
                match zstd::stream::read::Decoder::new(&mut outer) {
                    Ok(d) => Box::new(d),
                    Err(e) => return Ok(Err(format!("zstd: {e}"))),
                }
            }
        };
        let mut inner = artifact::digest::HashingReader::new(decoder);
        if let Err(e) = io::copy(&mut inner, &mut io::sink()) {
            return Ok(Err(format!("not a valid {compression} stream: {e}")));
        }
        // `finish` consumes `inner`, which releases the borrow of `outer`.
        let (diff_id, _) = inner.finish();
        // Anything after the gzip members still counts towards the stored digest.
        if let Err(e) = io::copy(&mut outer, &mut io::sink()) {
            return Ok(Err(format!("read error: {e}")));
        }
        let (digest, size) = outer.finish();
        Ok(Ok(Hashes {
            digest,
            size,
            diff_id: Some(diff_id),
        }))
    } else {
        let mut buf = Vec::new();
        if let Err(e) = outer.read_to_end(&mut buf) {
            return Ok(Err(format!("read error: {e}")));
        }
        let (digest, size) = outer.finish();
        Ok(Ok(Hashes {
            digest,
            size,
            diff_id: None,
        }))
    }
}

/// Re-reads every blob of artifact `id`: the manifest's own digest, each layer's compressed
/// digest and size and its diff_id (by decompressing), and the recorded lockfile. Store errors
/// are errors; bad or missing blobs are reported in the result.
pub fn verify(store: &dyn Store, id: &Digest) -> Result<VerifyReport, Error> {
    let mut checks = Vec::new();
    let mkey = keys::blob(id);
    let manifest = match store.get_bytes(&mkey) {
        Err(e) if e.is_not_found() => {
            checks.push(BlobCheck {
                what: "manifest".into(),
                key: mkey,
                problem: Some("missing from the store".into()),
            });
            return Ok(VerifyReport { id: *id, checks });
        }
        Err(e) => return Err(e.into()),
        Ok((bytes, _)) => {
            let actual = Digest::of(&bytes);
            if actual != *id {
                checks.push(BlobCheck {
                    what: "manifest".into(),
                    key: mkey,
                    problem: Some(format!("content hashes to {actual}, not {id}")),
                });
                return Ok(VerifyReport { id: *id, checks });
            }
            match Manifest::from_json(&bytes) {
                Ok(m) => {
                    checks.push(BlobCheck {
                        what: "manifest".into(),
                        key: mkey,
                        problem: None,
                    });
                    m
                }
                Err(e) => {
                    checks.push(BlobCheck {
                        what: "manifest".into(),
                        key: mkey,
                        problem: Some(e.to_string()),
                    });
                    return Ok(VerifyReport { id: *id, checks });
                }
            }
        }
    };

    for layer in &manifest.layers {
        let what = match layer.kind {
            LayerKind::Source => "source layer",
            LayerKind::Deps => "deps layer",
        };
        let key = keys::blob(&layer.digest);
        let problem = match hash_blob(store, &key, layer.compression())? {
            Err(p) => Some(p),
            Ok(h) => {
                let mut p = Vec::new();
                if h.digest != layer.digest {
                    p.push(format!(
                        "content hashes to {}, not {}",
                        h.digest, layer.digest
                    ));
                }
                if h.size != layer.size {
                    p.push(format!(
                        "size is {} bytes, the manifest says {}",
                        h.size, layer.size
                    ));
                }
                if h.diff_id != Some(layer.diff_id) {
                    p.push(format!(
                        "uncompressed tar hashes to {}, the manifest's diff_id is {}",
                        h.diff_id.map(|d| d.to_string()).unwrap_or_default(),
                        layer.diff_id
                    ));
                }
                (!p.is_empty()).then(|| p.join("; "))
            }
        };
        checks.push(BlobCheck {
            what: what.into(),
            key,
            problem,
        });
    }
    if let Some(deps) = &manifest.deps {
        let key = keys::blob(&deps.lockfile_blob);
        let problem = match hash_blob(store, &key, None)? {
            Err(p) => Some(p),
            Ok(h) if h.digest != deps.lockfile_blob => Some(format!(
                "content hashes to {}, not {}",
                h.digest, deps.lockfile_blob
            )),
            Ok(_) => None,
        };
        checks.push(BlobCheck {
            what: "lockfile".into(),
            key,
            problem,
        });
    }
    Ok(VerifyReport { id: *id, checks })
}
