//! Resolving what the operator typed (a manifest digest, a git commit, or a unique prefix of
//! either) to a verified manifest in the store.

use artifact::manifest::{BuildRecord, Manifest, ManifestError};
use artifact::store::{Store, StoreError};
use artifact::{Digest, keys};

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{0:?} is not a digest, commit or prefix of at least 7 hex digits")]
    BadInput(String),
    #[error("nothing in the store matches {0:?}")]
    NotFound(String),
    #[error("{input:?} is ambiguous: {candidates}")]
    Ambiguous { input: String, candidates: String },
    #[error("{digest} is not a valid manifest: {source}")]
    BadManifest {
        digest: Digest,
        #[source]
        source: ManifestError,
    },
    #[error("manifest {digest}: {detail}")]
    Verify { digest: Digest, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Resolves and verifies an artifact.
pub fn resolve(store: &dyn Store, input: &str) -> Result<(Digest, Manifest), ResolveError> {
    let s = input
        .trim()
        .strip_prefix("sha256:")
        .unwrap_or(input.trim())
        .to_ascii_lowercase();
    if s.len() < 7 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ResolveError::BadInput(input.to_string()));
    }
    let mut candidates: Vec<Digest> = Vec::new();
    for meta in store.list(&format!("{}{s}", keys::COMMITS_PREFIX))? {
        let (b, _) = store.get_bytes(&meta.key)?;
        if let Ok(rec) = serde_json::from_slice::<BuildRecord>(&b)
            && !candidates.contains(&rec.manifest)
        {
            candidates.push(rec.manifest);
        }
    }
    for meta in store.list(&format!("{}{s}", keys::BLOBS_PREFIX))? {
        if meta.size > 4 << 20 {
            continue;
        }
        let Ok(d) = meta.key[keys::BLOBS_PREFIX.len()..].parse::<Digest>() else {
            continue;
        };
        if candidates.contains(&d) {
            continue;
        }
        let (b, _) = store.get_bytes(&meta.key)?;
        if Manifest::from_json(&b).is_ok() {
            candidates.push(d);
        }
    }
    match candidates.len() {
        0 => Err(ResolveError::NotFound(input.to_string())),
        1 => {
            let d = candidates[0];
            Ok((d, load_verified(store, &d)?))
        }
        _ => Err(ResolveError::Ambiguous {
            input: input.to_string(),
            candidates: candidates
                .iter()
                .map(|d| d.short(19))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Loads a manifest by digest and verifies it: its bytes hash to the digest, it parses and
/// validates, and every layer blob is in the store with the recorded size.
pub fn load_verified(store: &dyn Store, digest: &Digest) -> Result<Manifest, ResolveError> {
    let (bytes, _) = store.get_bytes(&keys::blob(digest))?;
    let actual = Digest::of(&bytes);
    if &actual != digest {
        return Err(ResolveError::Verify {
            digest: *digest,
            detail: format!("stored bytes hash to {actual}"),
        });
    }
    let m = Manifest::from_json(&bytes).map_err(|source| ResolveError::BadManifest {
        digest: *digest,
        source,
    })?;
    for layer in &m.layers {
        match store.head(&keys::blob(&layer.digest))? {
            None => {
                return Err(ResolveError::Verify {
                    digest: *digest,
                    detail: format!("layer {} is missing", layer.digest),
                });
            }
            Some(meta) if meta.size != layer.size => {
                return Err(ResolveError::Verify {
                    digest: *digest,
                    detail: format!(
                        "layer {} has {} bytes, the manifest says {}",
                        layer.digest, meta.size, layer.size
                    ),
                });
            }
            Some(_) => {}
        }
    }
    Ok(m)
}
