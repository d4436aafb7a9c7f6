//! What the source tree's content is, in digests: the manifest labels that let the applier
//! tell a config-only deploy from a code deploy, and the entry hashing they and the dependency
//! key's local files share.

use artifact::Digest;
use artifact::digest::Hasher;
use artifact::pack::{PackData, PackEntry, PackKind};

use crate::source::SourceTree;

/// Feeds one entry's path, kind and content into `h`, each part length-prefixed.
pub fn hash_entry(h: &mut Hasher, e: &PackEntry) {
    let (kind, body): (&[u8], &[u8]) = match &e.kind {
        PackKind::Dir => (b"d", b""),
        PackKind::File {
            data: PackData::Bytes(b),
            executable,
        } => (if *executable { b"x" } else { b"f" }, b),
        // Entries read from git objects always hold their bytes.
        PackKind::File { .. } => (b"f", b""),
        PackKind::Symlink { target } => (b"l", target.as_bytes()),
    };
    for part in [e.path.as_bytes(), kind, body] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
}

/// Manifest label: digest of the source tree outside `deploy/` (the code).
pub const LABEL_CODE_DIGEST: &str = "content.code";
/// Manifest label: digest of `deploy/` (service definition and per-environment config).
pub const LABEL_CONFIG_DIGEST: &str = "content.config";

/// Digests of the code and of the deploy config in the source tree, so the applier can tell a
/// config-only deploy from a code deploy without reading layers. Each digest covers the sorted
/// (path, kind, content) of its files.
pub fn content_digests(source: &SourceTree) -> (Digest, Digest) {
    let mut entries: Vec<&PackEntry> = source.entries.iter().collect();
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let (mut code, mut config) = (Hasher::new(), Hasher::new());
    for e in entries {
        let h = if e.path == "deploy" || e.path.starts_with("deploy/") {
            &mut config
        } else {
            &mut code
        };
        hash_entry(h, e);
    }
    (code.finish().0, config.finish().0)
}
