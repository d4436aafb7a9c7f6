//! Optional ed25519 signatures of artifacts.
//!
//! A signature covers the artifact id (the manifest digest), which in turn pins every layer
//! by digest. The signed message is the domain-separation prefix [`DOMAIN`] followed by the
//! 32 raw digest bytes, so a key used here signs nothing that could be mistaken for another
//! protocol's message.
//!
//! Key files are one line of text:
//!
//! ```text
//! ed25519-secret <standard base64 of the 32-byte seed>
//! ed25519-public <standard base64 of the 32-byte public key>
//! ```
//!
//! Blank lines and lines starting with `#` are ignored. A key's id is the first 16 hex digits
//! of the sha256 of its 32 public-key bytes ([`PublicKey::key_id`]).
//!
//! A signature is stored as a small JSON [`SignatureRecord`] under
//! `sigs/<manifest hex>/<key id>` ([`crate::keys::signature`]), written with
//! `put_if_absent`. ed25519 signatures are deterministic, so signing an artifact again with
//! the same key writes nothing and is not an error.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::store::{PutBody, PutOutcome, Store, StoreError};
use crate::{Digest, keys};

/// Prefix of every signed message; the 32 manifest digest bytes follow it.
pub const DOMAIN: &[u8] = b"restbase-deploy-manifest-v1\0";
/// Version of the [`SignatureRecord`] document.
pub const SIGNATURE_FORMAT: u32 = 1;
/// First word of a secret key file.
pub const SECRET_TAG: &str = "ed25519-secret";
/// First word of a public key file (and of an inline public key in configuration).
pub const PUBLIC_TAG: &str = "ed25519-public";

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: not a valid key: {detail}")]
    BadKey { what: String, detail: String },
    #[error("signature record {key}: {detail}")]
    BadRecord { key: String, detail: String },
    #[error("signature by key {key_id} does not verify for {digest}")]
    Invalid { digest: Digest, key_id: String },
    #[error("signature by key {key_id} is not by a trusted key")]
    Untrusted { key_id: String },
    #[error(
        "artifact {digest} has no valid signature by a trusted key (trusted: {}){}",
        .trusted.join(", "),
        if .problems.is_empty() { " and no signatures at all".to_string() } else { format!("; found: {}", .problems.join("; ")) }
    )]
    NoValidSignature {
        digest: Digest,
        trusted: Vec<String>,
        /// One line per signature record found and why it did not count.
        problems: Vec<String>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The message a signature covers: [`DOMAIN`] followed by the digest bytes.
pub fn message(digest: &Digest) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 32);
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(digest.as_bytes());
    m
}

/// An ed25519 signing key (its 32-byte seed).
pub struct SecretKey(SigningKey);

/// An ed25519 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.public().key_id())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

/// Parses `<tag> <base64 of 32 bytes>` out of a key file's text.
fn parse_tagged(text: &str, tag: &str, what: &str) -> Result<[u8; 32], SignError> {
    let bad = |detail: String| SignError::BadKey {
        what: what.to_string(),
        detail,
    };
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let line = lines.next().ok_or_else(|| bad("empty".into()))?;
    if lines.next().is_some() {
        return Err(bad("more than one key line".into()));
    }
    let mut words = line.split_whitespace();
    let found = words.next().unwrap_or_default();
    if found != tag {
        return Err(bad(format!(
            "expected `{tag} <base64>`, found `{found} ...`"
        )));
    }
    let b64 = words
        .next()
        .ok_or_else(|| bad(format!("`{tag}` without a key")))?;
    if words.next().is_some() {
        return Err(bad("trailing words after the key".into()));
    }
    let bytes = B64
        .decode(b64)
        .map_err(|e| bad(format!("bad base64: {e}")))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| bad(format!("{} bytes, expected 32", b.len())))
}

fn read_file(path: &Path) -> Result<String, SignError> {
    std::fs::read_to_string(path).map_err(|source| SignError::Io {
        path: path.display().to_string(),
        source,
    })
}

impl SecretKey {
    /// A new random key.
    pub fn generate() -> Self {
        SecretKey(SigningKey::from_bytes(&rand::random::<[u8; 32]>()))
    }

    /// Parses the text of a secret key file; `what` names it in errors.
    pub fn from_text(text: &str, what: &str) -> Result<Self, SignError> {
        let seed = parse_tagged(text, SECRET_TAG, what)?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    /// Reads a secret key file.
    pub fn load(path: &Path) -> Result<Self, SignError> {
        Self::from_text(&read_file(path)?, &path.display().to_string())
    }

    /// The key file text: `ed25519-secret <base64>` and a newline.
    pub fn to_text(&self) -> String {
        format!("{SECRET_TAG} {}\n", B64.encode(self.0.to_bytes()))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs the artifact `digest`.
    pub fn sign(&self, digest: &Digest) -> SignatureRecord {
        let sig = self.0.sign(&message(digest));
        let public = self.public();
        SignatureRecord {
            format: SIGNATURE_FORMAT,
            key_id: public.key_id(),
            public_key: B64.encode(public.0.as_bytes()),
            signature: B64.encode(sig.to_bytes()),
        }
    }
}

impl PublicKey {
    /// Parses the text of a public key file; `what` names it in errors.
    pub fn from_text(text: &str, what: &str) -> Result<Self, SignError> {
        let bytes = parse_tagged(text, PUBLIC_TAG, what)?;
        Self::from_bytes(&bytes, what)
    }

    fn from_bytes(bytes: &[u8; 32], what: &str) -> Result<Self, SignError> {
        VerifyingKey::from_bytes(bytes)
            .map(PublicKey)
            .map_err(|e| SignError::BadKey {
                what: what.to_string(),
                detail: format!("not an ed25519 point: {e}"),
            })
    }

    /// Reads a public key file.
    pub fn load(path: &Path) -> Result<Self, SignError> {
        Self::from_text(&read_file(path)?, &path.display().to_string())
    }

    /// An inline key (`ed25519-public <base64>`) or else the path of a public key file, as
    /// configuration lists trusted keys.
    pub fn from_spec(spec: &str) -> Result<Self, SignError> {
        let s = spec.trim();
        if s.starts_with(PUBLIC_TAG) {
            Self::from_text(s, "inline public key")
        } else {
            Self::load(Path::new(s))
        }
    }

    /// The key file text: `ed25519-public <base64>` and a newline.
    pub fn to_text(&self) -> String {
        format!("{PUBLIC_TAG} {}\n", B64.encode(self.0.as_bytes()))
    }

    /// First 16 hex digits of the sha256 of the 32 public-key bytes.
    pub fn key_id(&self) -> String {
        Digest::of(self.0.as_bytes()).hex()[..16].to_string()
    }
}

/// One stored signature: `sigs/<manifest hex>/<key id>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureRecord {
    pub format: u32,
    /// [`PublicKey::key_id`] of `public_key`.
    pub key_id: String,
    /// Standard base64 of the 32 public-key bytes.
    pub public_key: String,
    /// Standard base64 of the 64 signature bytes over [`message`].
    pub signature: String,
}

impl SignatureRecord {
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a signature record serialises");
        v.push(b'\n');
        v
    }

    /// Parses a stored record; `key` names it in errors.
    pub fn from_json(bytes: &[u8], key: &str) -> Result<Self, SignError> {
        let r: SignatureRecord =
            serde_json::from_slice(bytes).map_err(|e| SignError::BadRecord {
                key: key.to_string(),
                detail: e.to_string(),
            })?;
        if r.format != SIGNATURE_FORMAT {
            return Err(SignError::BadRecord {
                key: key.to_string(),
                detail: format!("unknown format {}", r.format),
            });
        }
        Ok(r)
    }
}

/// Checks that `record` is a valid signature of `digest` by one of `trusted`; returns that
/// key's id.
pub fn verify(
    digest: &Digest,
    record: &SignatureRecord,
    trusted: &[PublicKey],
) -> Result<String, SignError> {
    let bad = |detail: String| SignError::BadRecord {
        key: keys::signature(digest, &record.key_id),
        detail,
    };
    let pk: [u8; 32] = B64
        .decode(&record.public_key)
        .map_err(|e| bad(format!("public_key: bad base64: {e}")))?
        .try_into()
        .map_err(|b: Vec<u8>| bad(format!("public_key: {} bytes, expected 32", b.len())))?;
    let sig: [u8; 64] = B64
        .decode(&record.signature)
        .map_err(|e| bad(format!("signature: bad base64: {e}")))?
        .try_into()
        .map_err(|b: Vec<u8>| bad(format!("signature: {} bytes, expected 64", b.len())))?;
    let Some(key) = trusted.iter().find(|k| k.0.as_bytes() == &pk) else {
        return Err(SignError::Untrusted {
            key_id: record.key_id.clone(),
        });
    };
    let id = key.key_id();
    if id != record.key_id {
        return Err(bad(format!(
            "key_id {} does not match its public key ({id})",
            record.key_id
        )));
    }
    key.0
        .verify_strict(&message(digest), &Signature::from_bytes(&sig))
        .map_err(|_| SignError::Invalid {
            digest: *digest,
            key_id: id.clone(),
        })?;
    Ok(id)
}

/// Signs `digest` with `key` and stores the record (`put_if_absent`). Signing again with the
/// same key finds the same record and is not an error; a different record already stored
/// under that key id is reported as [`SignError::BadRecord`].
pub fn sign_artifact(
    store: &dyn Store,
    digest: &Digest,
    key: &SecretKey,
) -> Result<(SignatureRecord, PutOutcome), SignError> {
    let record = key.sign(digest);
    let k = keys::signature(digest, &record.key_id);
    let outcome = store.put_if_absent(&k, PutBody::Bytes(record.to_json()), None)?;
    if outcome == PutOutcome::AlreadyExists {
        let (bytes, _) = store.get_bytes(&k)?;
        let existing = SignatureRecord::from_json(&bytes, &k)?;
        if existing != record {
            return Err(SignError::BadRecord {
                key: k,
                detail: "differs from the signature this key makes; delete it and sign again"
                    .into(),
            });
        }
    }
    Ok((record, outcome))
}

/// A stored signature's key and its record (or why it is unreadable).
pub type StoredSignature = (String, Result<SignatureRecord, SignError>);

/// Every signature record stored for `digest`, by store key; unreadable records as errors.
pub fn list_signatures(
    store: &dyn Store,
    digest: &Digest,
) -> Result<Vec<StoredSignature>, SignError> {
    let mut out = Vec::new();
    for meta in store.list(&keys::signatures_prefix(digest))? {
        let (bytes, _) = store.get_bytes(&meta.key)?;
        let rec = SignatureRecord::from_json(&bytes, &meta.key);
        out.push((meta.key, rec));
    }
    Ok(out)
}

/// Finds a valid signature of `digest` by one of `trusted`; returns the signing key's id,
/// or [`SignError::NoValidSignature`] listing what was found and why none counts.
pub fn require_signature(
    store: &dyn Store,
    digest: &Digest,
    trusted: &[PublicKey],
) -> Result<String, SignError> {
    let mut problems = Vec::new();
    for (key, rec) in list_signatures(store, digest)? {
        match rec.and_then(|r| verify(digest, &r, trusted)) {
            Ok(id) => return Ok(id),
            Err(e) => problems.push(format!("{key}: {e}")),
        }
    }
    Err(SignError::NoValidSignature {
        digest: *digest,
        trusted: trusted.iter().map(PublicKey::key_id).collect(),
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fs::FsStore;

    fn digest(n: u8) -> Digest {
        Digest::of(&[n])
    }

    #[test]
    fn round_trip_through_text_and_record() {
        let sk = SecretKey::generate();
        let sk2 = SecretKey::from_text(&sk.to_text(), "t").unwrap();
        let pk = PublicKey::from_text(&sk.public().to_text(), "t").unwrap();
        assert_eq!(sk2.public(), pk);
        assert_eq!(pk.key_id().len(), 16);
        let rec = sk2.sign(&digest(1));
        let rec = SignatureRecord::from_json(&rec.to_json(), "k").unwrap();
        assert_eq!(
            verify(&digest(1), &rec, std::slice::from_ref(&pk)).unwrap(),
            pk.key_id()
        );
        // ed25519 is deterministic: the same key signs the same digest identically.
        assert_eq!(sk.sign(&digest(1)), rec);
    }

    #[test]
    fn wrong_key_is_untrusted() {
        let sk = SecretKey::generate();
        let other = SecretKey::generate().public();
        let rec = sk.sign(&digest(1));
        assert!(matches!(
            verify(&digest(1), &rec, &[other]),
            Err(SignError::Untrusted { key_id }) if key_id == sk.public().key_id()
        ));
    }

    #[test]
    fn other_digest_does_not_verify() {
        let sk = SecretKey::generate();
        let rec = sk.sign(&digest(1));
        assert!(matches!(
            verify(&digest(2), &rec, &[sk.public()]),
            Err(SignError::Invalid { .. })
        ));
        // A signature of the bare digest (no domain prefix) is not accepted either.
        let bare = sk.0.sign(digest(1).as_bytes());
        let mut r = rec.clone();
        r.signature = B64.encode(bare.to_bytes());
        assert!(matches!(
            verify(&digest(1), &r, &[sk.public()]),
            Err(SignError::Invalid { .. })
        ));
    }

    #[test]
    fn corrupt_records_are_refused() {
        let sk = SecretKey::generate();
        let d = digest(1);
        let rec = sk.sign(&d);
        let mut flipped = rec.clone();
        let mut sig = B64.decode(&flipped.signature).unwrap();
        sig[5] ^= 1;
        flipped.signature = B64.encode(&sig);
        assert!(verify(&d, &flipped, &[sk.public()]).is_err());
        let mut short = rec.clone();
        short.signature = B64.encode([0u8; 10]);
        assert!(matches!(
            verify(&d, &short, &[sk.public()]),
            Err(SignError::BadRecord { .. })
        ));
        let mut wrong_id = rec.clone();
        wrong_id.key_id = "0000000000000000".into();
        assert!(matches!(
            verify(&d, &wrong_id, &[sk.public()]),
            Err(SignError::BadRecord { .. })
        ));
        assert!(SignatureRecord::from_json(b"{\"format\":1}", "k").is_err());
        let mut v: serde_json::Value = serde_json::from_slice(&rec.to_json()).unwrap();
        v["format"] = 2.into();
        assert!(SignatureRecord::from_json(v.to_string().as_bytes(), "k").is_err());
    }

    #[test]
    fn key_text_is_checked() {
        let sk = SecretKey::generate();
        let public_text = sk.public().to_text();
        assert!(SecretKey::from_text(&public_text, "t").is_err());
        assert!(PublicKey::from_text(&sk.to_text(), "t").is_err());
        assert!(PublicKey::from_text("ed25519-public AAAA", "t").is_err());
        assert!(PublicKey::from_text("", "t").is_err());
        let commented = format!("# deploy key\n\n{public_text}");
        assert_eq!(PublicKey::from_text(&commented, "t").unwrap(), sk.public());
        assert_eq!(PublicKey::from_spec(&public_text).unwrap(), sk.public());
    }

    #[test]
    fn store_sign_is_idempotent_and_required_signature_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let d = digest(7);
        let sk = SecretKey::generate();
        let other = SecretKey::generate();
        let err = require_signature(&store, &d, &[sk.public()]).unwrap_err();
        assert!(err.to_string().contains("no signatures at all"), "{err}");
        let (_, o) = sign_artifact(&store, &d, &other).unwrap();
        assert_eq!(o, PutOutcome::Created);
        let err = require_signature(&store, &d, &[sk.public()]).unwrap_err();
        assert!(err.to_string().contains("not by a trusted key"), "{err}");
        let (_, o) = sign_artifact(&store, &d, &sk).unwrap();
        assert_eq!(o, PutOutcome::Created);
        let (_, o) = sign_artifact(&store, &d, &sk).unwrap();
        assert_eq!(o, PutOutcome::AlreadyExists);
        assert_eq!(
            require_signature(&store, &d, &[sk.public()]).unwrap(),
            sk.public().key_id()
        );
        // The signature of one artifact does not count for another.
        assert!(require_signature(&store, &digest(8), &[sk.public()]).is_err());
    }
}
