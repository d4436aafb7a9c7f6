//! The directory store: the embedded default.
//!
//! Objects are files under the root, keyed by path. Creation writes a temp file in
//! `<root>/.tmp/`, verifies the expected sha256 while writing, fsyncs it and hard-links it into
//! place (`link(2)` fails if the key exists, so creation is atomic and never overwrites); a
//! crash leaves at most a temp file, never a partial object. Temp files older than an hour are
//! removed when the store is opened.
//!
//! An object's etag is the sha256 hex of its content for objects up to [`CONTENT_ETAG_MAX`]
//! (env records, leases: what compare-and-swap is used on; equal content means an equal state,
//! so an etag that comes back with the content is harmless), and its file identity
//! (`<inode>-<mtime>-<size>`) above that, so `head` and `list` over layer blobs of hundreds of
//! MB cost a `stat`, not a read. Compare-and-swap holds an
//! exclusive `flock` on a per-key lock file under `<root>/.locks/` while it compares the current
//! etag and renames the new version into place; `delete_if` re-checks the etag under the same
//! lock. A lock held past [`LOCK_WAIT`] (its writer stopped or hung) fails the write as
//! unavailable rather than hanging it. The names `.tmp` and `.locks` are reserved: keys starting with them are refused.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::{ETag, GetResult, ObjectMeta, PutBody, PutOutcome, Store, StoreError, validate_key};
use crate::Digest;
use crate::digest::{HashingReader, HashingWriter};

const TMP_DIR: &str = ".tmp";
const LOCK_DIR: &str = ".locks";
/// Objects up to this size get content etags; larger ones metadata etags.
pub const CONTENT_ETAG_MAX: u64 = 1 << 20;
/// Temp files older than this are leftovers of a crashed writer.
const STALE_TMP_AGE: Duration = Duration::from_secs(3600);

#[derive(Debug)]
pub struct FsStore {
    root: PathBuf,
    /// How long a write waits for a key's lock held by another writer before it fails.
    lock_wait: Duration,
}

/// The default bound on a key lock's wait: a write holds the lock for milliseconds, so a lock
/// held longer belongs to a writer that is stopped or hung, and waiting on forever would hang
/// this one too.
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

impl FsStore {
    /// Opens (creating if missing) a directory store, removing stale temp files.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, StoreError> {
        let root = root.as_ref().to_path_buf();
        for dir in [root.clone(), root.join(TMP_DIR), root.join(LOCK_DIR)] {
            fs::create_dir_all(&dir)
                .map_err(|e| io_err(format!("creating {}", dir.display()), e))?;
        }
        let meta =
            fs::metadata(&root).map_err(|e| io_err(format!("opening {}", root.display()), e))?;
        if !meta.is_dir() {
            return Err(StoreError::BadLocation {
                location: root.display().to_string(),
                detail: "not a directory".into(),
            });
        }
        let store = FsStore {
            root,
            lock_wait: LOCK_WAIT,
        };
        store.clean_stale_temps();
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Best effort: a temp file nobody has touched for an hour belongs to a dead writer.
    fn clean_stale_temps(&self) {
        let Ok(entries) = fs::read_dir(self.root.join(TMP_DIR)) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > STALE_TMP_AGE);
            if stale {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    fn check_key(&self, key: &str) -> Result<PathBuf, StoreError> {
        validate_key(key)?;
        let first = key.split('/').next().unwrap_or_default();
        if first == TMP_DIR || first == LOCK_DIR {
            return Err(StoreError::InvalidKey(key.to_string()));
        }
        Ok(self.root.join(key))
    }

    /// A new, uniquely named temp file under `.tmp/`.
    fn temp_file(&self) -> Result<tempfile::NamedTempFile, StoreError> {
        let dir = self.root.join(TMP_DIR);
        tempfile::Builder::new()
            .prefix("put-")
            .tempfile_in(&dir)
            .map_err(|e| io_err(format!("creating a temp file in {}", dir.display()), e))
    }

    /// The same store with another bound on the wait for a key's lock.
    pub fn with_lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    /// Holds the exclusive lock of `key` until the returned file is dropped. A lock another
    /// writer holds past the bound fails as [`StoreError::Unavailable`], naming the key.
    fn lock_key(&self, key: &str) -> Result<File, StoreError> {
        let path = self.root.join(LOCK_DIR).join(format!("{key}.lock"));
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| io_err(format!("creating {}", parent.display()), e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io_err(format!("opening lock {}", path.display()), e))?;
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(TryLockError::WouldBlock) if start.elapsed() < self.lock_wait => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(StoreError::Unavailable {
                        store: self.root.display().to_string(),
                        detail: format!(
                            "the lock of {key} has been held by another writer for over {} s (a deployer that is stopped or hung holds it: {})",
                            self.lock_wait.as_secs(),
                            path.display()
                        ),
                    });
                }
                Err(TryLockError::Error(e)) => {
                    return Err(io_err(format!("locking {}", path.display()), e));
                }
            }
        }
    }

    /// Metadata of the object at `path`, or `None` if absent.
    fn meta_of(&self, key: &str, path: &Path) -> Result<Option<ObjectMeta>, StoreError> {
        match File::open(path) {
            Ok(f) => Ok(Some(self.meta_of_file(key, f)?.0)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(format!("opening {}", path.display()), e)),
        }
    }

    /// Metadata of an open object file (small objects are hashed, then the handle rewound).
    fn meta_of_file(&self, key: &str, mut f: File) -> Result<(ObjectMeta, File), StoreError> {
        let ctx = || format!("reading {key} in {}", self.root.display());
        let md = f.metadata().map_err(|e| io_err(ctx(), e))?;
        if md.is_dir() {
            return Err(StoreError::NotFound {
                store: self.location(),
                key: key.to_string(),
            });
        }
        let etag = if md.len() <= CONTENT_ETAG_MAX {
            let mut r = HashingReader::new(&mut f);
            io::copy(&mut r, &mut io::sink()).map_err(|e| io_err(ctx(), e))?;
            let digest = r.finish().0;
            f.seek(SeekFrom::Start(0)).map_err(|e| io_err(ctx(), e))?;
            ETag(digest.hex())
        } else {
            etag_of(&md)
        };
        Ok((
            ObjectMeta {
                key: key.to_string(),
                size: md.len(),
                etag,
            },
            f,
        ))
    }

    /// Writes `body` into a synced temp file; verifies `sha256` when given.
    fn write_temp(
        &self,
        key: &str,
        body: &mut dyn Read,
        sha256: Option<&Digest>,
    ) -> Result<(tempfile::NamedTempFile, Digest), StoreError> {
        let tmp = self.temp_file()?;
        let ctx = || format!("writing {key} to {}", tmp.path().display());
        let mut w = HashingWriter::new(io::BufWriter::new(tmp.as_file()));
        io::copy(body, &mut w).map_err(|e| io_err(ctx(), e))?;
        let (mut buf, digest, _) = w.finish();
        buf.flush().map_err(|e| io_err(ctx(), e))?;
        drop(buf);
        if let Some(want) = sha256
            && *want != digest
        {
            // Dropping `tmp` removes the temp file.
            return Err(StoreError::Checksum {
                key: key.to_string(),
                detail: format!("expected {want}, got {digest}"),
            });
        }
        tmp.as_file().sync_all().map_err(|e| io_err(ctx(), e))?;
        Ok((tmp, digest))
    }

    fn ensure_parent(&self, path: &Path) -> Result<(), StoreError> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| io_err(format!("creating {}", parent.display()), e))?;
        }
        Ok(())
    }

    /// Links a synced temp file to `path`: `false` if `path` already exists.
    fn link_new(&self, tmp: &Path, path: &Path) -> Result<bool, StoreError> {
        self.ensure_parent(path)?;
        match fs::hard_link(tmp, path) {
            Ok(()) => {
                sync_parent(path)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io_err(format!("linking {}", path.display()), e)),
        }
    }
}

fn io_err(context: String, source: io::Error) -> StoreError {
    StoreError::Io { context, source }
}

fn sync_parent(path: &Path) -> Result<(), StoreError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(format!("syncing directory {}", parent.display()), e))
}

impl Store for FsStore {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn put_if_absent(
        &self,
        key: &str,
        body: PutBody,
        sha256: Option<&Digest>,
    ) -> Result<PutOutcome, StoreError> {
        let path = self.check_key(key)?;
        if path.exists() {
            // Cheap early answer; the link below is what decides.
            return Ok(PutOutcome::AlreadyExists);
        }
        let (tmp, _) = match body {
            PutBody::Bytes(data) => self.write_temp(key, &mut data.as_slice(), sha256)?,
            PutBody::File(src) => {
                let mut f = File::open(&src)
                    .map_err(|e| io_err(format!("opening {}", src.display()), e))?;
                self.write_temp(key, &mut f, sha256)?
            }
        };
        let created = self.link_new(tmp.path(), &path)?;
        // Dropping `tmp` unlinks the temp name; the object keeps its own link.
        drop(tmp);
        Ok(if created {
            PutOutcome::Created
        } else {
            PutOutcome::AlreadyExists
        })
    }

    fn put_cas(&self, key: &str, data: &[u8], expected: Option<&ETag>) -> Result<ETag, StoreError> {
        let path = self.check_key(key)?;
        let _lock = self.lock_key(key)?;
        let current = self.meta_of(key, &path)?.map(|m| m.etag);
        if current.as_ref() != expected {
            return Err(StoreError::Conflict {
                key: key.to_string(),
            });
        }
        let (tmp, digest) = self.write_temp(key, &mut &data[..], None)?;
        match expected {
            // Absent: link, so a concurrent `put_if_absent` (which takes no lock) cannot be
            // overwritten either.
            None => {
                if !self.link_new(tmp.path(), &path)? {
                    return Err(StoreError::Conflict {
                        key: key.to_string(),
                    });
                }
            }
            Some(_) => {
                self.ensure_parent(&path)?;
                tmp.persist(&path)
                    .map_err(|e| io_err(format!("renaming into {}", path.display()), e.error))?;
                sync_parent(&path)?;
            }
        }
        if data.len() as u64 <= CONTENT_ETAG_MAX {
            return Ok(ETag(digest.hex()));
        }
        match self.meta_of(key, &path)? {
            Some(m) => Ok(m.etag),
            None => Err(StoreError::Conflict {
                key: key.to_string(),
            }),
        }
    }

    fn get(&self, key: &str) -> Result<GetResult, StoreError> {
        let path = self.check_key(key)?;
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound {
                    store: self.location(),
                    key: key.to_string(),
                });
            }
            Err(e) => return Err(io_err(format!("opening {}", path.display()), e)),
        };
        let (meta, f) = self.meta_of_file(key, f)?;
        Ok(GetResult {
            meta,
            reader: Box::new(io::BufReader::new(f)),
        })
    }

    fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let path = self.check_key(key)?;
        match self.meta_of(key, &path) {
            Err(StoreError::NotFound { .. }) => Ok(None),
            other => other,
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        if prefix.contains('\0') || prefix.contains('\\') || prefix.starts_with('/') {
            return Err(StoreError::InvalidKey(prefix.to_string()));
        }
        // Walk only the deepest directory the prefix names completely.
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        if !dir_part.is_empty() && validate_key(dir_part).is_err() {
            return Err(StoreError::InvalidKey(prefix.to_string()));
        }
        let mut keys = Vec::new();
        let start = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.root.join(dir_part)
        };
        let mut stack = vec![(start, dir_part.to_string())];
        while let Some((dir, rel)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(io_err(format!("listing {}", dir.display()), e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| io_err(format!("listing {}", dir.display()), e))?;
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if rel.is_empty() && (name == TMP_DIR || name == LOCK_DIR) {
                    continue;
                }
                let key = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let ft = entry
                    .file_type()
                    .map_err(|e| io_err(format!("listing {}", dir.display()), e))?;
                if ft.is_dir() {
                    // Descend only where keys can still match the prefix.
                    let as_dir = format!("{key}/");
                    if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                        stack.push((entry.path(), key));
                    }
                } else if ft.is_file() && key.starts_with(prefix) {
                    keys.push(key);
                }
            }
        }
        keys.sort();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            // An object deleted between the walk and now is simply not listed.
            if let Some(meta) = self.meta_of(&key, &self.root.join(&key))? {
                out.push(meta);
            }
        }
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.check_key(key)?;
        let _lock = self.lock_key(key)?;
        match fs::remove_file(&path) {
            Ok(()) => sync_parent(&path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(format!("deleting {}", path.display()), e)),
        }
    }

    fn delete_if(&self, key: &str, expected: &ETag) -> Result<(), StoreError> {
        let path = self.check_key(key)?;
        let _lock = self.lock_key(key)?;
        match self.meta_of(key, &path)? {
            Some(m) if &m.etag == expected => {
                fs::remove_file(&path)
                    .map_err(|e| io_err(format!("deleting {}", path.display()), e))?;
                sync_parent(&path)
            }
            _ => Err(StoreError::Conflict {
                key: key.to_string(),
            }),
        }
    }

    fn presign_get(&self, key: &str, expires: Duration) -> Result<Option<String>, StoreError> {
        self.check_key(key)?;
        let _ = expires;
        Ok(None)
    }
}

/// The version of an object file: identity plus change time plus size.
fn etag_of(md: &fs::Metadata) -> ETag {
    use std::os::unix::fs::MetadataExt;
    ETag(format!(
        "{:x}-{:x}.{:09}-{:x}",
        md.ino(),
        md.mtime(),
        md.mtime_nsec(),
        md.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_lock_held_past_the_bound_fails_the_write_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path())
            .unwrap()
            .with_lock_wait(Duration::from_millis(300));
        let key = "envs/a/state.json";
        let v1 = store.put_cas(key, b"v1", None).unwrap();
        // Another writer (here another open file description) holds the key's lock and hangs.
        let held = store.lock_key(key).unwrap();
        let t = Instant::now();
        let e = store.put_cas(key, b"v2", Some(&v1)).unwrap_err();
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "it waited the bound"
        );
        assert!(e.is_transient(), "{e}");
        assert!(e.to_string().contains("held by another writer"), "{e}");
        assert_eq!(store.get_bytes(key).unwrap().0, b"v1", "nothing changed");
        drop(held);
        store.put_cas(key, b"v2", Some(&v1)).unwrap();
        assert_eq!(store.get_bytes(key).unwrap().0, b"v2");
    }

    #[test]
    fn crash_leftovers_are_invisible_and_stale_ones_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        store
            .put_if_absent("a/b", PutBody::Bytes(b"x".to_vec()), None)
            .unwrap();
        // A writer that died mid-write leaves a temp file only.
        let stale = dir.path().join(TMP_DIR).join("put-dead");
        fs::write(&stale, b"partial").unwrap();
        let old = SystemTime::now() - Duration::from_secs(2 * 3600);
        File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let fresh = dir.path().join(TMP_DIR).join("put-alive");
        fs::write(&fresh, b"partial").unwrap();
        let keys: Vec<_> = store.list("").unwrap().into_iter().map(|m| m.key).collect();
        assert_eq!(keys, vec!["a/b".to_string()]);
        drop(store);
        let _store = FsStore::open(dir.path()).unwrap();
        assert!(!stale.exists(), "stale temp should be removed on open");
        assert!(fresh.exists(), "a fresh temp may belong to a live writer");
    }

    #[test]
    fn reserved_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        for key in [".tmp/x", ".locks/y"] {
            assert!(
                matches!(
                    store.put_cas(key, b"x", None),
                    Err(StoreError::InvalidKey(_))
                ),
                "{key}"
            );
        }
    }

    #[test]
    fn small_objects_have_content_etags() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let etag = store.put_cas("k", b"hello", None).unwrap();
        assert_eq!(etag.0, Digest::of(b"hello").hex());
        assert_eq!(store.head("k").unwrap().unwrap().etag, etag);
    }

    #[test]
    fn large_objects_have_metadata_etags_that_change_on_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let big = vec![1u8; CONTENT_ETAG_MAX as usize + 1];
        let e1 = store.put_cas("k", &big, None).unwrap();
        assert_ne!(e1.0, Digest::of(&big).hex());
        assert_eq!(store.head("k").unwrap().unwrap().etag, e1);
        assert_eq!(store.list("").unwrap()[0].etag, e1);
        let mut big2 = big.clone();
        big2[0] = 2;
        let e2 = store.put_cas("k", &big2, Some(&e1)).unwrap();
        assert_ne!(e1, e2);
        assert!(matches!(
            store.put_cas("k", &big, Some(&e1)),
            Err(StoreError::Conflict { .. })
        ));
    }
}
