//! The directory store: the embedded default.
//!
//! Objects are files under the root, keyed by path. Creation writes a temp file in
//! `<root>/.tmp/`, fsyncs it and hard-links it into place (`link(2)` fails if the key exists,
//! so creation is atomic and never overwrites); a crash leaves at most a temp file, never a
//! partial object. Compare-and-swap holds an `flock` on a per-key lock file while it compares
//! the content digest (the etag) and renames the new version into place.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{ETag, GetResult, ObjectMeta, PutBody, PutOutcome, Store, StoreError};
use crate::Digest;

#[derive(Debug)]
pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    /// Opens (creating if missing) a directory store.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, StoreError> {
        let _ = root;
        todo!("FsStore::open")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Store for FsStore {
    fn location(&self) -> String {
        self.root.display().to_string()
    }
    fn put_if_absent(&self, key: &str, body: PutBody, sha256: Option<&Digest>) -> Result<PutOutcome, StoreError> {
        let _ = (key, body, sha256);
        todo!()
    }
    fn put_cas(&self, key: &str, data: &[u8], expected: Option<&ETag>) -> Result<ETag, StoreError> {
        let _ = (key, data, expected);
        todo!()
    }
    fn get(&self, key: &str) -> Result<GetResult, StoreError> {
        let _ = key;
        todo!()
    }
    fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let _ = key;
        todo!()
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let _ = prefix;
        todo!()
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let _ = key;
        todo!()
    }
    fn delete_if(&self, key: &str, expected: &ETag) -> Result<(), StoreError> {
        let _ = (key, expected);
        todo!()
    }
    fn presign_get(&self, key: &str, expires: Duration) -> Result<Option<String>, StoreError> {
        let _ = (key, expires);
        Ok(None)
    }
}
