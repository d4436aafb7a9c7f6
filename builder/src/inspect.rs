//! Reading what is stored: resolve a hash or commit to an artifact, list artifacts by commit,
//! verify an artifact by re-reading and re-hashing every blob it names, and repair one by
//! rebuilding its commit and replacing the blobs whose bytes do not match their digest.

use std::io::{self, Read};

use artifact::manifest::{BuildRecord, LayerKind, Manifest};
use artifact::resolve::ResolveError;
use artifact::store::Store;
use artifact::{Digest, keys};
use serde::Serialize;

use crate::Error;
use crate::blobs::{commit_record, load_manifest};
use crate::build::{self, BuildOptions, BuildReport};
use crate::progress::Progress;

/// Resolves `query` to a manifest digest with the one resolver every tool uses
/// ([`artifact::resolve`]): a manifest digest (`sha256:<hex>` or hex, full or a unique prefix of
/// at least 4 digits) or a git commit id (full or unique prefix), looked up through `commits/`.
pub fn resolve(store: &dyn Store, query: &str) -> Result<Digest, Error> {
    artifact::resolve::resolve(store, query).map_err(|e| match e {
        ResolveError::BadInput(q) => Error::BadQuery(q),
        ResolveError::NotFound(q) => Error::NotFound(q),
        ResolveError::Ambiguous { input, candidates } => Error::Ambiguous {
            query: input,
            candidates,
        },
        ResolveError::Corrupt { key, detail } => Error::Corrupt { key, detail },
        ResolveError::Store(e) => Error::Store(e),
        // Only `load_verified` verifies; `resolve` never returns these.
        e @ (ResolveError::BadManifest { .. } | ResolveError::Verify { .. }) => Error::Corrupt {
            key: query.to_string(),
            detail: e.to_string(),
        },
    })
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
        let decoder: Box<dyn Read + '_> = match compression.decoder(&mut outer) {
            Ok(d) => d,
            Err(e) => return Ok(Err(format!("{}: {e}", compression.name()))),
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

/// What [`repair`] did.
#[derive(Clone, Debug, Serialize)]
pub struct RepairReport {
    /// The verification before the repair.
    pub before: VerifyReport,
    /// The rebuild, if one was needed.
    pub rebuild: Option<BuildReport>,
    /// The verification after it.
    pub after: VerifyReport,
}

/// The commit artifact `id` was built from: from its manifest, or, when the manifest itself is
/// unreadable, from the `commits/` record that names `id`.
fn commit_of(store: &dyn Store, id: &Digest) -> Result<(String, Option<Manifest>), Error> {
    if let Ok(m) = load_manifest(store, id) {
        return Ok((m.source.commit.clone(), Some(m)));
    }
    for meta in store.list(keys::COMMITS_PREFIX)? {
        let sha = &meta.key[keys::COMMITS_PREFIX.len()..];
        if let Ok(Some(rec)) = commit_record(store, sha)
            && rec.manifest == *id
        {
            return Ok((rec.commit, None));
        }
    }
    Err(Error::CannotRepair {
        key: keys::blob(id),
        detail: "the manifest is unreadable and no commits/ record names this artifact, so its \
                 commit is unknown"
            .into(),
    })
}

/// Verifies artifact `id`; if a blob is missing or bad, rebuilds its commit from the
/// repository in `template.repo` (with `rebuild`, which re-creates missing blobs and replaces
/// those whose bytes do not match their digest, and proves the rebuild gives the same artifact)
/// and verifies again. Only blobs that fail their digest are ever replaced, and only with bytes
/// that hash to it. The recorded service directory and npm arguments are reused.
pub fn repair(
    store: &dyn Store,
    id: &Digest,
    template: &BuildOptions,
    progress: &dyn Progress,
) -> Result<RepairReport, Error> {
    let before = verify(store, id)?;
    if before.ok() {
        return Ok(RepairReport {
            after: before.clone(),
            before,
            rebuild: None,
        });
    }
    let (commit, manifest) = commit_of(store, id)?;
    let mut opts = template.clone();
    opts.rev = commit;
    opts.rebuild = true;
    if let Some(m) = &manifest {
        opts.service_dir = m.labels.get("source.dir").cloned();
        if let Some(d) = &m.deps {
            let base = crate::deps::recorded_npm_args(&[]);
            if let Some(user) = d.npm_args.strip_prefix(&base[..]) {
                opts.npm_args = Some(user.to_vec());
            }
        }
    }
    let report = build::build(store, &opts, progress)?;
    if report.id != *id {
        return Err(Error::NotReproducible {
            commit: report.commit,
            existing: id.to_string(),
            produced: report.id.to_string(),
        });
    }
    let after = verify(store, id)?;
    Ok(RepairReport {
        before,
        rebuild: Some(report),
        after,
    })
}
