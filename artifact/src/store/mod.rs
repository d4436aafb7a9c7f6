//! Object storage behind one trait, in the spirit of arrow-rs `object_store`.
//!
//! Two backends share one conformance suite (`artifact/tests/store_conformance.rs`):
//! [`fs::FsStore`], a directory (the embedded default), and `s3::S3Store` (feature `s3`),
//! any S3-compatible server. The trait is synchronous; the S3 backend drives its own runtime.
//!
//! Semantics every backend keeps:
//! - [`Store::put_if_absent`] never overwrites and never exposes a partial object.
//! - [`Store::put_cas`] is compare-and-swap on an opaque [`ETag`].
//! - Keys are `/`-separated relative paths without `..`, `.` or empty segments.

pub mod fs;
#[cfg(feature = "s3")]
pub mod s3;

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::Digest;

/// An opaque version tag of one object, for compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ETag(pub String);

/// What a store knows about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    pub etag: ETag,
}

/// The bytes of a new object.
#[derive(Debug)]
pub enum PutBody {
    Bytes(Vec<u8>),
    /// A file on local disk; large files go up in parts and a retry can re-read them.
    File(PathBuf),
}

/// Result of [`Store::put_if_absent`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    AlreadyExists,
}

/// A streaming read of one object.
pub struct GetResult {
    pub meta: ObjectMeta,
    pub reader: Box<dyn Read + Send>,
}

impl std::fmt::Debug for GetResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetResult")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{key}: not found in {store}")]
    NotFound { store: String, key: String },
    #[error("{key}: changed concurrently (compare-and-swap precondition failed)")]
    Conflict { key: String },
    #[error("invalid store key {0:?}")]
    InvalidKey(String),
    #[error("{key}: content does not match its checksum: {detail}")]
    Checksum { key: String, detail: String },
    #[error("store {store} is unreachable: {detail}")]
    Unavailable { store: String, detail: String },
    #[error("store {store}: access denied: {detail}")]
    Denied { store: String, detail: String },
    #[error("invalid store location {location:?}: {detail}")]
    BadLocation { location: String, detail: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("store {store}: {detail}")]
    Other { store: String, detail: String },
}

impl StoreError {
    /// True for errors a retry may cure (network, server down).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}

/// An object store holding artifacts and environment records.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Where this store is, for messages (`/srv/artifacts`, `s3://bucket/prefix`).
    fn location(&self) -> String;

    /// Creates `key` only if it does not exist. When `sha256` is given the backend verifies the
    /// body against it (S3: `x-amz-checksum-sha256`) and refuses a mismatch with
    /// [`StoreError::Checksum`]. A crash or error leaves no partial object visible.
    fn put_if_absent(
        &self,
        key: &str,
        body: PutBody,
        sha256: Option<&Digest>,
    ) -> Result<PutOutcome, StoreError>;

    /// Writes `key` if its current version is `expected` (`None`: only if absent).
    /// Returns the new version; [`StoreError::Conflict`] if someone else changed it.
    fn put_cas(&self, key: &str, data: &[u8], expected: Option<&ETag>) -> Result<ETag, StoreError>;

    /// Streams `key`. [`StoreError::NotFound`] if absent.
    fn get(&self, key: &str) -> Result<GetResult, StoreError>;

    /// Metadata of `key`, or `None` if absent.
    fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError>;

    /// Every object whose key starts with `prefix`, sorted by key.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;

    /// Deletes `key`; deleting an absent key is not an error.
    fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Deletes `key` only if its version is still `expected` (best effort on backends without
    /// conditional delete: re-checks the etag immediately before deleting).
    fn delete_if(&self, key: &str, expected: &ETag) -> Result<(), StoreError>;

    /// A URL a host without credentials can GET `key` from until `expires` passes.
    /// `None` for backends that have no such URL (a local directory: read it directly).
    fn presign_get(&self, key: &str, expires: Duration) -> Result<Option<String>, StoreError>;

    /// Reads a whole (small) object.
    fn get_bytes(&self, key: &str) -> Result<(Vec<u8>, ObjectMeta), StoreError> {
        let mut r = self.get(key)?;
        let mut buf = Vec::with_capacity(r.meta.size as usize);
        r.reader.read_to_end(&mut buf).map_err(|e| StoreError::Io {
            context: format!("reading {key} from {}", self.location()),
            source: e,
        })?;
        Ok((buf, r.meta))
    }
}

/// Checks a key against the rules every backend enforces.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.contains('\\')
        || key.contains('\0')
        || key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..");
    if bad {
        Err(StoreError::InvalidKey(key.to_string()))
    } else {
        Ok(())
    }
}

/// Settings for opening a store that do not fit in its location string. Binaries fill these
/// from flags and environment; the library reads no environment itself (the AWS SDK's own
/// credential chain aside).
#[derive(Clone, Debug, Default)]
pub struct StoreOptions {
    /// S3 endpoint URL for S3-compatible servers (`http://127.0.0.1:9000`).
    pub s3_endpoint: Option<String>,
    /// S3 region; the SDK's default chain when unset, `us-east-1` as the last resort.
    pub s3_region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), which most S3-compatible servers need.
    /// Forced on when an endpoint is set.
    pub s3_force_path_style: bool,
    /// Uploads larger than this go up as multipart uploads (default 64 MiB).
    pub s3_multipart_threshold: Option<u64>,
    /// Part size of multipart uploads (default 16 MiB; S3 needs at least 5 MiB but the last part).
    pub s3_part_size: Option<u64>,
}

/// The location forms [`open`] accepts, for error messages and help texts.
pub const ACCEPTED_LOCATIONS: &str = "a directory path (/srv/artifacts, ./artifacts), \
     file:///absolute/path, or s3://bucket[/prefix]";

/// A parsed store location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A directory store (created if missing).
    Dir(PathBuf),
    /// An S3 bucket and an optional key prefix (without a trailing `/`).
    S3 { bucket: String, prefix: String },
}

/// Parses a store location. The accepted forms ([`ACCEPTED_LOCATIONS`]):
/// - `s3://bucket[/prefix]`: the scheme in lower case; the bucket named as S3 requires
///   (3-63 characters of `a-z`, `0-9`, `.`, `-`, starting and ending with a letter or digit);
///   the prefix a relative key path (no empty, `.` or `..` segments).
/// - `file:///absolute/path`: a directory.
/// - a plain path, absolute or relative: a directory. A location whose first `/`-separated
///   segment contains `:` is read as `scheme:...` (the way git tells URLs from paths), so a
///   typo such as `S3://b`, `s3:/b` or `gs://b` is refused instead of becoming a local directory
///   named after it; write `./a:b` for a directory that really has a colon in its first segment.
pub fn parse_location(location: &str) -> Result<Location, StoreError> {
    let bad = |detail: String| StoreError::BadLocation {
        location: location.to_string(),
        detail: format!("{detail}; accepted forms: {ACCEPTED_LOCATIONS}"),
    };
    if location.is_empty() {
        return Err(bad("empty location".into()));
    }
    let first_segment = location.split('/').next().unwrap_or_default();
    let Some((scheme, rest)) = first_segment
        .contains(':')
        .then(|| location.split_once(':'))
        .flatten()
    else {
        return Ok(Location::Dir(PathBuf::from(location)));
    };
    match (scheme, rest.strip_prefix("//")) {
        ("s3", Some(rest)) => {
            let (bucket, prefix) = match rest.split_once('/') {
                Some((b, p)) => (b, p.trim_end_matches('/')),
                None => (rest, ""),
            };
            if !valid_bucket(bucket) {
                return Err(bad(format!(
                    "{bucket:?} is not a valid S3 bucket name (3-63 characters of a-z, 0-9, `.` \
                     and `-`, starting and ending with a letter or digit)"
                )));
            }
            if !prefix.is_empty() && validate_key(prefix).is_err() {
                return Err(bad(format!(
                    "the prefix {prefix:?} must be a relative path without empty, `.` or `..` segments"
                )));
            }
            Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            })
        }
        ("file", Some(path)) if path.starts_with('/') => Ok(Location::Dir(PathBuf::from(path))),
        ("file", Some(path)) => Err(bad(format!(
            "file:// must be followed by an absolute path (file:///srv/artifacts), not {path:?}"
        ))),
        (s, Some(_)) if ["s3", "file"].contains(&s.to_ascii_lowercase().as_str()) => {
            Err(bad(format!(
                "the scheme must be written in lower case: {}:{rest}",
                s.to_ascii_lowercase()
            )))
        }
        (s, _) if ["s3", "file"].contains(&s.to_ascii_lowercase().as_str()) => Err(bad(format!(
            "{s}: must be followed by `//` ({}://...)",
            s.to_ascii_lowercase()
        ))),
        (s, _) => Err(bad(format!(
            "unknown scheme {s:?} (for a directory whose name has a colon, write ./{location})"
        ))),
    }
}

fn valid_bucket(b: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (3..=63).contains(&b.len())
        && b.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && edge(b.chars().next())
        && edge(b.chars().last())
}

/// Opens a store from a location string ([`parse_location`]):
/// - `s3://bucket[/prefix]`: S3; credentials come from the SDK's default chain
///   (`AWS_ACCESS_KEY_ID`, profiles, instance roles), endpoint and region from `opts`.
/// - `file:///path` or a plain path: a directory store (created if missing).
pub fn open(location: &str, opts: &StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    match parse_location(location)? {
        Location::S3 { bucket, prefix } => {
            #[cfg(feature = "s3")]
            {
                let rest = if prefix.is_empty() {
                    bucket
                } else {
                    format!("{bucket}/{prefix}")
                };
                Ok(Arc::new(s3::S3Store::from_url(&rest, opts)?))
            }
            #[cfg(not(feature = "s3"))]
            {
                let _ = (bucket, prefix, opts);
                Err(StoreError::BadLocation {
                    location: location.to_string(),
                    detail: "this build has no S3 support (feature `s3`)".into(),
                })
            }
        }
        Location::Dir(path) => Ok(Arc::new(fs::FsStore::open(path)?)),
    }
}

#[cfg(test)]
mod location_tests {
    use super::*;

    fn err(s: &str) -> String {
        match parse_location(s) {
            Err(e @ StoreError::BadLocation { .. }) => e.to_string(),
            other => panic!("{s:?} should be refused, got {other:?}"),
        }
    }

    #[test]
    fn accepted_forms() {
        let dir = |p: &str| Location::Dir(PathBuf::from(p));
        assert_eq!(parse_location("/srv/a").unwrap(), dir("/srv/a"));
        assert_eq!(parse_location("./.artifacts").unwrap(), dir("./.artifacts"));
        assert_eq!(parse_location("rel/dir").unwrap(), dir("rel/dir"));
        assert_eq!(parse_location("./a:b").unwrap(), dir("./a:b"));
        assert_eq!(parse_location("/x/a:b").unwrap(), dir("/x/a:b"));
        assert_eq!(parse_location("file:///srv/a").unwrap(), dir("/srv/a"));
        let s3 = |b: &str, p: &str| Location::S3 {
            bucket: b.into(),
            prefix: p.into(),
        };
        assert_eq!(parse_location("s3://bkt").unwrap(), s3("bkt", ""));
        assert_eq!(parse_location("s3://bkt/").unwrap(), s3("bkt", ""));
        assert_eq!(
            parse_location("s3://my.bkt-1/a/b/").unwrap(),
            s3("my.bkt-1", "a/b")
        );
    }

    #[test]
    fn refused_forms_name_the_problem_and_the_accepted_forms() {
        for (s, why) in [
            ("S3://bkt/p", "lower case: s3://bkt/p"),
            ("File:///srv", "lower case: file:///srv"),
            ("s3:/bkt", "must be followed by `//`"),
            ("s3:bkt", "must be followed by `//`"),
            ("gs://bkt", "unknown scheme \"gs\""),
            ("https://example.org/x", "unknown scheme \"https\""),
            ("a:b", "write ./a:b"),
            ("s3://", "not a valid S3 bucket name"),
            ("s3://Bucket", "not a valid S3 bucket name"),
            ("s3://b_k", "not a valid S3 bucket name"),
            ("s3://bkt/a/../b", "prefix"),
            ("s3://bkt//x", "prefix"),
            ("file://srv/a", "absolute path"),
            ("file://", "absolute path"),
            ("", "empty location"),
        ] {
            let e = err(s);
            assert!(e.contains(why), "{s:?}: {e}");
            assert!(e.contains("accepted forms: a directory path"), "{s:?}: {e}");
            assert!(e.contains("s3://bucket[/prefix]"), "{s:?}: {e}");
        }
    }

    #[test]
    fn open_refuses_before_creating_anything() {
        // Before, each of these became a directory store named after the typo.
        let cwd = std::env::current_dir().unwrap();
        for (s, made) in [("S3://bkt", "S3:"), ("gs://bkt", "gs:"), ("s3:/bkt", "s3:")] {
            assert!(open(s, &StoreOptions::default()).is_err(), "{s}");
            assert!(!cwd.join(made).exists(), "{s} created {made}");
        }
    }
}
