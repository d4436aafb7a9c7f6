//! The build directory npm runs in, at a path that does not vary between builds.
//!
//! Native modules record where they were built: node-gyp writes the project directory, the
//! module directory and npm's cache path into `build/config.gypi`, `build/Makefile`, the
//! `*.mk` files and the dependency files under `build/Release/.deps/` (whose directory names
//! repeat the absolute path). A random temp directory made every such layer different. So npm
//! runs in `<work dir>/builder-npm-<first 16 hex digits of the dependency key>/project`, with
//! its cache at `.../cache` (a fresh directory, or a symlink to a shared `--npm-cache`, so the
//! recorded path is the same either way) and its logs at `.../logs`.
//!
//! Builds of the same key on one machine take an exclusive `flock` on `builder-npm-<k>.lock`
//! beside it, so they run one after the other (the second then usually finds the layer
//! recorded and reuses it). A directory left by a killed build is removed before use, and the
//! directory is removed when the build is done with it. npm's log of a failed run is copied to
//! `builder-npm-<k>.failed.log`, which outlives the directory.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use artifact::pack::{PackData, PackEntry, PackKind};

use crate::Error;

/// The name prefix of the build directories (and their lock and log files) in the work dir.
pub const DIR_PREFIX: &str = "builder-npm-";

/// A locked build directory for one dependency key; removed on drop.
#[derive(Debug)]
pub struct NpmDir {
    root: PathBuf,
    failed_log: PathBuf,
    _lock: File,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::io(context, e)
}

impl NpmDir {
    /// Takes the build directory of `key` under `base` (an absolute path), waiting for another
    /// build of the same key to finish with it first; `waiting` is called before waiting.
    pub fn acquire(base: &Path, key: &str, waiting: &dyn Fn(&Path)) -> Result<Self, Error> {
        if !base.is_absolute() {
            return Err(Error::Config(format!(
                "the work directory must be an absolute path, not {}",
                base.display()
            )));
        }
        fs::create_dir_all(base).map_err(io(format!("creating {}", base.display())))?;
        let name = format!("{DIR_PREFIX}{}", &key[..16.min(key.len())]);
        let lock_path = base.join(format!("{name}.lock"));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(format!("opening {}", lock_path.display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                waiting(&lock_path);
                lock.lock()
                    .map_err(io(format!("locking {}", lock_path.display())))?;
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(Error::io(format!("locking {}", lock_path.display()), e));
            }
        }
        let root = base.join(&name);
        match fs::symlink_metadata(&root) {
            Ok(m) if m.is_dir() => {
                fs::remove_dir_all(&root).map_err(io(format!(
                    "removing {} (left by an earlier build)",
                    root.display()
                )))?;
            }
            Ok(_) => fs::remove_file(&root).map_err(io(format!("removing {}", root.display())))?,
            Err(_) => {}
        }
        // Created new (fails if someone made it meanwhile) and private.
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&root)
            .map_err(io(format!("creating {}", root.display())))?;
        let dir = NpmDir {
            failed_log: base.join(format!("{name}.failed.log")),
            root,
            _lock: lock,
        };
        for sub in [dir.project(), dir.logs()] {
            fs::create_dir(&sub).map_err(io(format!("creating {}", sub.display())))?;
        }
        Ok(dir)
    }

    /// The directory npm runs in (`package.json` and `node_modules`).
    pub fn project(&self) -> PathBuf {
        self.root.join("project")
    }

    /// npm's cache path as npm sees it.
    pub fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// npm's `--logs-dir`.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// Where npm's log of a failed run is kept.
    pub fn failed_log(&self) -> &Path {
        &self.failed_log
    }

    /// Makes [`NpmDir::cache`] a fresh directory, or a symlink to the shared cache `shared`.
    pub fn set_cache(&self, shared: Option<&Path>) -> Result<(), Error> {
        let cache = self.cache();
        match shared {
            Some(dir) => std::os::unix::fs::symlink(dir, &cache),
            None => fs::create_dir(&cache),
        }
        .map_err(io(format!("creating {}", cache.display())))
    }

    /// Writes `entries` (files, directories and symlinks of the source tree) into the project
    /// directory.
    pub fn write_entries(&self, entries: &[PackEntry]) -> Result<(), Error> {
        let project = self.project();
        for e in entries {
            let path = project.join(&e.path);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
            }
            match &e.kind {
                PackKind::Dir => {
                    fs::create_dir_all(&path).map_err(io(format!("creating {}", path.display())))?
                }
                PackKind::File { data, executable } => {
                    match data {
                        PackData::Bytes(b) => fs::write(&path, b),
                        PackData::Path(from) => fs::copy(from, &path).map(|_| ()),
                    }
                    .map_err(io(format!("writing {}", path.display())))?;
                    let mode = if *executable { 0o755 } else { 0o644 };
                    fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                        .map_err(io(format!("setting the mode of {}", path.display())))?;
                }
                PackKind::Symlink { target } => std::os::unix::fs::symlink(target, &path)
                    .map_err(io(format!("creating symlink {}", path.display())))?,
            }
        }
        Ok(())
    }
}

impl Drop for NpmDir {
    fn drop(&mut self) {
        // Does not follow symlinks: a shared cache linked in stays untouched.
        let _ = fs::remove_dir_all(&self.root);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_path_removed_after_and_shared_cache_kept() {
        let t = tempfile::tempdir().unwrap();
        let shared = t.path().join("shared-cache");
        fs::create_dir(&shared).unwrap();
        fs::write(shared.join("keep"), "x").unwrap();
        let key = "ab".repeat(32);
        let first = {
            let d = NpmDir::acquire(t.path(), &key, &|_| panic!("no one else holds it")).unwrap();
            d.set_cache(Some(&shared)).unwrap();
            fs::write(d.project().join("package.json"), "{}").unwrap();
            d.project()
        };
        assert!(!first.exists(), "removed on drop");
        assert!(shared.join("keep").exists(), "shared cache untouched");
        // A leftover of a killed build is cleared.
        fs::create_dir_all(first.join("node_modules/stale")).unwrap();
        let d = NpmDir::acquire(t.path(), &key, &|_| {}).unwrap();
        assert_eq!(d.project(), first);
        assert!(!first.join("node_modules").exists());
        assert!(NpmDir::acquire(Path::new("relative"), &key, &|_| {}).is_err());
    }
}
