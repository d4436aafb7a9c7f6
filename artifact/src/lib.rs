//! The artifact: what a deploy unit is and where it lives.
//!
//! An artifact is a content-addressed [`manifest::Manifest`] naming a source layer and a
//! dependency layer. Layers are deterministic tar+gzip streams ([`pack`]) with two digests:
//! the sha256 of the uncompressed canonical tar (`diff_id`, content identity) and the sha256
//! and size of the compressed bytes (`digest`, checked in transport). [`unpack`] verifies
//! while it extracts and refuses hostile entries. Everything is stored through the [`store::Store`]
//! trait (directory or S3) under the layout in [`keys`]; [`resolve`] turns a digest, commit or
//! unique prefix into a verified manifest; [`sign`] holds the optional ed25519 signatures of
//! artifacts; [`refs`] records which tags and branches pointed at a built commit. Nothing here knows about environments or deploys (that is the applier's).
//!
//! This crate never prints and never exits; every failure is a typed error.

pub mod digest;
pub mod keys;
pub mod manifest;
pub mod pack;
pub mod refs;
pub mod resolve;
pub mod sign;
pub mod store;
pub mod unpack;

pub use digest::Digest;
pub use manifest::Manifest;
pub use store::{Store, StoreError};
