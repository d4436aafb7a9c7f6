//! Blobs and records in the store, as the builder reads and writes them.
//!
//! Everything read back is untrusted: a manifest is checked against its digest before it is
//! parsed ([`load_manifest`]), a blob about to be reused is checked for its recorded size
//! ([`check_size`]), and in verify mode ([`put_blob`] with `verify`) a stored blob is re-read
//! and re-hashed. A stored blob whose bytes do not hash to its name is garbage by definition:
//! only in verify mode (`build --rebuild`, `verify --repair`), and only with bytes that do hash
//! to the name, is it replaced (a conditional delete of exactly the bad object, then
//! create-if-absent). A plain build never deletes anything.

use std::io::{self, Read};

use artifact::manifest::{BuildRecord, Manifest};
use artifact::store::{PutBody, PutOutcome, Store};
use artifact::{Digest, keys};

use crate::Error;

/// What [`put_blob`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Put {
    /// This call stored the blob (it was missing, or it replaced a bad one).
    pub created: bool,
    /// A stored blob with the wrong content was replaced.
    pub repaired: bool,
}

/// Streams a stored object and returns the sha256 and size of its bytes, or `None` if absent.
pub fn stored_digest(store: &dyn Store, key: &str) -> Result<Option<(Digest, u64)>, Error> {
    let got = match store.get(key) {
        Ok(g) => g,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut r = artifact::digest::HashingReader::new(got.reader);
    io::copy(&mut r, &mut io::sink())
        .map_err(|e| Error::io(format!("reading {key} from {}", store.location()), e))?;
    Ok(Some(r.finish()))
}

/// Stores `body` (whose sha256 is `digest`) as its blob unless the store has it. With
/// `verify`, a blob the store has is re-read; if its bytes do not hash to `digest` it is
/// replaced by `body`.
pub fn put_blob(
    store: &dyn Store,
    digest: &Digest,
    body: PutBody,
    verify: bool,
) -> Result<Put, Error> {
    let key = keys::blob(digest);
    let Some(meta) = store.head(&key)? else {
        let created = store.put_if_absent(&key, body, Some(digest))? == PutOutcome::Created;
        return Ok(Put {
            created,
            repaired: false,
        });
    };
    if !verify {
        return Ok(Put::default());
    }
    match stored_digest(store, &key)? {
        Some((d, _)) if d == *digest => return Ok(Put::default()),
        // Vanished meanwhile: recreate below.
        None => {}
        // Bad bytes: remove exactly that object (not a good one written meanwhile).
        Some(_) => store.delete_if(&key, &meta.etag)?,
    }
    let created = store.put_if_absent(&key, body, Some(digest))? == PutOutcome::Created;
    Ok(Put {
        created,
        repaired: created,
    })
}

/// Checks that blob `digest` exists with `size` bytes, before a build reuses it.
pub fn check_size(store: &dyn Store, what: &str, digest: &Digest, size: u64) -> Result<(), Error> {
    let key = keys::blob(digest);
    match store.head(&key)? {
        Some(m) if m.size == size => Ok(()),
        Some(m) => Err(Error::BadBlob {
            what: what.to_string(),
            key,
            detail: format!("is {} bytes, {size} are recorded", m.size),
        }),
        None => Err(Error::BadBlob {
            what: what.to_string(),
            key,
            detail: "is missing from the store".into(),
        }),
    }
}

/// Reads a small blob and checks that its bytes hash to `digest`; `None` if absent.
pub fn get_verified(
    store: &dyn Store,
    what: &str,
    digest: &Digest,
) -> Result<Option<Vec<u8>>, Error> {
    let key = keys::blob(digest);
    let bytes = match store.get(&key) {
        Ok(mut g) => {
            let mut buf = Vec::with_capacity(g.meta.size.min(1 << 24) as usize);
            g.reader
                .read_to_end(&mut buf)
                .map_err(|e| Error::io(format!("reading {key} from {}", store.location()), e))?;
            buf
        }
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let actual = Digest::of(&bytes);
    if actual != *digest {
        return Err(Error::BadBlob {
            what: what.to_string(),
            key,
            detail: format!("content hashes to {actual} ({} bytes)", bytes.len()),
        });
    }
    Ok(Some(bytes))
}

/// Reads and parses a JSON record; `None` if absent.
pub fn get_json<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    key: &str,
) -> Result<Option<T>, Error> {
    match store.get_bytes(key) {
        Ok((bytes, _)) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Corrupt {
                key: key.to_string(),
                detail: e.to_string(),
            }),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Reads the `commits/<sha>` record, if any.
pub fn commit_record(store: &dyn Store, commit: &str) -> Result<Option<BuildRecord>, Error> {
    get_json(store, &keys::commit(commit))
}

/// Reads the manifest blob `digest`, checks that its bytes hash to `digest`, and parses it.
pub fn load_manifest(store: &dyn Store, digest: &Digest) -> Result<Manifest, Error> {
    let key = keys::blob(digest);
    let bytes = get_verified(store, "manifest", digest)?.ok_or_else(|| Error::BadBlob {
        what: "manifest".into(),
        key: key.clone(),
        detail: "is missing from the store".into(),
    })?;
    Manifest::from_json(&bytes).map_err(|e| Error::Corrupt {
        key,
        detail: e.to_string(),
    })
}
