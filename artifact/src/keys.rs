//! The store layout: every key the tools read or write, in one place.
//!
//! ```text
//! blobs/sha256/<hex>                  layers and manifests, immutable
//! commits/<git-sha>                   -> build record (manifest digest), immutable
//! deps/<dependency-key>               -> dependency layer record, immutable
//! sigs/<manifest-hex>/<key-id>        ed25519 signature record of an artifact, immutable
//! refs/tags/<name>                    -> the commit a tag named when it was built, immutable
//! refs/branches/<name>                -> the newest built commit of a branch, compare-and-swap
//! ```
//!
//! A ref name's `/` is written `~` in its key ([`model::names::RefName::key_segment`]).
//!
//! The environments' records (`envs/...`: state, lease, deploy journals) belong to the applier
//! and are laid out there; an artifact knows nothing of deploys.

use crate::Digest;

pub fn blob(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}
pub const BLOBS_PREFIX: &str = "blobs/sha256/";
pub fn commit(sha: &str) -> String {
    format!("commits/{sha}")
}
pub const COMMITS_PREFIX: &str = "commits/";
pub fn deps(key: &str) -> String {
    format!("deps/{key}")
}
/// Where the signature of the artifact `manifest` by the key `key_id` lives
/// ([`crate::sign`]).
pub fn signature(manifest: &Digest, key_id: &str) -> String {
    format!("sigs/{}/{key_id}", manifest.hex())
}
/// Prefix of every signature record of the artifact `manifest`.
pub fn signatures_prefix(manifest: &Digest) -> String {
    format!("sigs/{}/", manifest.hex())
}
pub const TAGS_PREFIX: &str = "refs/tags/";
pub const BRANCHES_PREFIX: &str = "refs/branches/";
/// The record of tag `name` ([`crate::refs`]).
pub fn tag(name: &model::names::RefName) -> String {
    format!("{TAGS_PREFIX}{}", name.key_segment())
}
/// The record of branch `name` ([`crate::refs`]).
pub fn branch(name: &model::names::RefName) -> String {
    format!("{BRANCHES_PREFIX}{}", name.key_segment())
}
