//! Directory stores in tests: where a blob lives and how to damage one on purpose.

use std::path::{Path, PathBuf};

/// The file of blob `digest` (`sha256:<hex>` or bare hex) in the directory store at `store`
/// (layout `blobs/sha256/<hex>`, see docs/ARCHITECTURE.md).
pub fn blob_path(store: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    store.join("blobs/sha256").join(hex)
}

/// Flips one byte in the middle of `file` (stored blobs are read-only: made writable first).
pub fn corrupt_file(file: &Path) {
    let mut perm = std::fs::metadata(file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(file, perm).unwrap();
    let mut bytes = std::fs::read(file).unwrap();
    assert!(!bytes.is_empty(), "{} is empty", file.display());
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(file, bytes).unwrap();
}

/// Flips one byte of blob `digest` in the directory store at `store`; returns its path.
pub fn corrupt_blob(store: &Path, digest: &str) -> PathBuf {
    let p = blob_path(store, digest);
    corrupt_file(&p);
    p
}

/// A fresh directory store (`<tempdir>/store`, not created: the store creates it).
pub fn dir_store() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new().prefix("store-").tempdir().unwrap();
    let store = dir.path().join("store");
    (dir, store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupted_blob_differs_in_exactly_one_byte() {
        let (dir, store) = dir_store();
        let hex = "ab".repeat(32);
        let p = blob_path(&store, &format!("sha256:{hex}"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"0123456789").unwrap();
        let mut ro = std::fs::metadata(&p).unwrap().permissions();
        ro.set_readonly(true);
        std::fs::set_permissions(&p, ro).unwrap();
        corrupt_blob(&store, &hex);
        let after = std::fs::read(&p).unwrap();
        let diff = after
            .iter()
            .zip(b"0123456789")
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(diff, 1);
        drop(dir);
    }
}
