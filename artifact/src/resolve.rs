//! Resolving what a user typed to an artifact: a manifest digest (`sha256:<hex>` or bare hex),
//! a git commit, or a unique prefix of either (at least [`MIN_PREFIX`] hex digits).
//!
//! One resolver for every tool, so `builder show abcd` and `applier deploy abcd` agree on
//! what `abcd` names. Commits are looked up through their build records (`commits/<sha>`),
//! digests among the stored blobs that parse as manifests. [`load_verified`] then re-hashes
//! the manifest and checks that every layer it names is stored with the recorded size.

use std::collections::BTreeSet;

use crate::Digest;
use crate::keys;
use crate::manifest::{BuildRecord, Manifest, ManifestError};
use crate::store::{Store, StoreError};

/// The fewest hex digits accepted as a prefix.
pub const MIN_PREFIX: usize = 4;

/// Manifests are small: a blob bigger than this is never taken for one when resolving a prefix.
const MAX_MANIFEST_SIZE: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Not hex, too short or too long.
    #[error(
        "not an artifact hash or commit: {0:?} (expected hex digits, at least 4, optionally after `sha256:`)"
    )]
    BadInput(String),
    #[error("no artifact matches {0:?}")]
    NotFound(String),
    #[error("{input:?} is ambiguous; it matches: {}", .candidates.join(", "))]
    Ambiguous {
        input: String,
        /// Every matching manifest digest.
        candidates: Vec<String>,
    },
    /// A build record that does not parse.
    #[error("{key}: stored record is not valid: {detail}")]
    Corrupt { key: String, detail: String },
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

/// Resolves `query` to a manifest digest (without verifying the artifact: see
/// [`load_verified`]). `sha256:` restricts the lookup to digests; a full 64-digit digest only
/// has to be stored; a full 40-digit commit is read from its build record directly.
pub fn resolve(store: &dyn Store, query: &str) -> Result<Digest, ResolveError> {
    let q = query.trim();
    let (hex, digest_only) = match q.strip_prefix("sha256:") {
        Some(h) => (h, true),
        None => (q, false),
    };
    let hex = hex.to_ascii_lowercase();
    if hex.len() < MIN_PREFIX || hex.len() > 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ResolveError::BadInput(query.to_string()));
    }
    if hex.len() == 64 {
        let d: Digest = hex
            .parse()
            .map_err(|_| ResolveError::BadInput(query.to_string()))?;
        return match store.head(&keys::blob(&d))? {
            Some(_) => Ok(d),
            None => Err(ResolveError::NotFound(query.to_string())),
        };
    }
    if hex.len() == 40
        && !digest_only
        && let Some(rec) = build_record(store, &keys::commit(&hex))?
    {
        return Ok(rec.manifest);
    }
    let mut found: BTreeSet<Digest> = BTreeSet::new();
    if !digest_only {
        for meta in store.list(&format!("{}{hex}", keys::COMMITS_PREFIX))? {
            if let Some(rec) = build_record(store, &meta.key)? {
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
        if found.contains(&d) {
            continue;
        }
        let (bytes, _) = store.get_bytes(&meta.key)?;
        if Manifest::from_json(&bytes).is_ok() {
            found.insert(d);
        }
    }
    match found.len() {
        0 => Err(ResolveError::NotFound(query.to_string())),
        1 => Ok(found.into_iter().next().expect("one")),
        _ => Err(ResolveError::Ambiguous {
            input: query.to_string(),
            candidates: found.iter().map(|d| d.to_string()).collect(),
        }),
    }
}

/// Resolves `query` and loads the artifact's manifest, verified ([`load_verified`]).
pub fn resolve_verified(
    store: &dyn Store,
    query: &str,
) -> Result<(Digest, Manifest), ResolveError> {
    let d = resolve(store, query)?;
    Ok((d, load_verified(store, &d)?))
}

/// Reads the build record at `key`, `None` if there is none.
fn build_record(store: &dyn Store, key: &str) -> Result<Option<BuildRecord>, ResolveError> {
    let bytes = match store.get_bytes(key) {
        Ok((b, _)) => b,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ResolveError::Corrupt {
            key: key.to_string(),
            detail: e.to_string(),
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PutBody;
    use crate::store::fs::FsStore;

    fn put(s: &dyn Store, key: &str, b: &[u8]) {
        s.put_if_absent(key, PutBody::Bytes(b.to_vec()), None)
            .unwrap();
    }

    /// A manifest of `commit` with one (fake) layer, and its build record.
    fn artifact(s: &dyn Store, commit: &str) -> Digest {
        let layer = format!("layer {commit}").into_bytes();
        let ld = Digest::of(&layer);
        put(s, &keys::blob(&ld), &layer);
        let m: Manifest = serde_json::from_value(serde_json::json!({
            "format": 1, "service": "svc",
            "source": {"commit": commit, "tree": "0".repeat(40), "commit_time": 0,
                       "author": "a", "subject": "s"},
            "layers": [{"kind": "source", "media_type": crate::pack::GZIP_LAYER_MEDIA_TYPE, "digest": ld, "size": layer.len(),
                        "diff_id": ld, "entries": 1}],
            "platform": null, "deps": null, "storage": null,
        }))
        .unwrap();
        let bytes = m.to_canonical_json();
        let d = Digest::of(&bytes);
        put(s, &keys::blob(&d), &bytes);
        let rec = BuildRecord {
            commit: commit.into(),
            manifest: d,
            built_at: String::new(),
            builder_version: String::new(),
        };
        put(s, &keys::commit(commit), &serde_json::to_vec(&rec).unwrap());
        d
    }

    #[test]
    fn digests_commits_and_unique_prefixes_resolve_to_one_verified_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStore::open(dir.path()).unwrap();
        let a = artifact(&s, &"ab12".repeat(10));
        let b = artifact(&s, &"ab34".repeat(10));
        assert_eq!(resolve(&s, &"ab12".repeat(10)).unwrap(), a, "full commit");
        assert_eq!(resolve(&s, "ab12a").unwrap(), a, "commit prefix");
        assert_eq!(resolve(&s, &a.to_string()).unwrap(), a, "full digest");
        assert_eq!(resolve(&s, &a.hex()[..6]).unwrap(), a, "digest prefix");
        assert_eq!(resolve_verified(&s, "ab34").unwrap().0, b, "4 digits");
        match resolve(&s, "ab") {
            Err(ResolveError::BadInput(_)) => {}
            other => panic!("{other:?}"),
        }
        match resolve(&s, "ab1x") {
            Err(ResolveError::BadInput(_)) => {}
            other => panic!("{other:?}"),
        }
        // `sha256:` looks at digests only: a commit prefix does not match there.
        assert!(matches!(
            resolve(&s, "sha256:ab12ab12"),
            Err(ResolveError::NotFound(_))
        ));
        // A third commit that starts like the first: the shared prefix is ambiguous.
        let both = artifact(&s, &"ab1299".repeat(7)[..40]);
        match resolve(&s, "ab12") {
            Err(ResolveError::Ambiguous { candidates, .. }) => {
                assert_eq!(candidates.len(), 2, "{candidates:?}");
                assert!(
                    candidates.contains(&a.to_string()) && candidates.contains(&both.to_string())
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            resolve(&s, "ffff"),
            Err(ResolveError::NotFound(_))
        ));
    }
}
