//! `builder`: a git commit becomes a reproducible, content-addressed artifact in a store.
//!
//! The pipeline ([`build::build`]) reads the commit straight from git objects ([`source`]),
//! packs it as the source layer, resolves `node_modules` with npm into the dependency layer
//! (reused by key when an earlier build already made it, [`deps`]), writes the manifest and
//! records `commits/<sha>`. npm runs in a build directory whose path depends only on the
//! dependency key ([`npm_dir`]), so native modules build to the same bytes every time; a
//! rebuild compares layers file by file ([`compare`]). Blobs read back are checked before they
//! are trusted or reused ([`blobs`]). [`inspect`] resolves, lists, verifies and repairs what is stored;
//! [`config`] resolves where the store is (flags > environment > defaults); [`refs`] records
//! the tags and branches pointing at a built commit.
//!
//! The library never prints, exits or reads the environment: the binary passes everything in
//! and renders what comes back. Progress goes through the [`progress::Progress`] trait.

pub mod blobs;
pub mod build;
pub mod compare;
pub mod config;
pub mod content;
pub mod deps;
mod deps_layer;
mod error;
pub mod inspect;
pub mod npm_dir;
pub mod progress;
pub mod refs;
pub mod report;
pub mod service;
pub mod source;
pub mod storage;

pub use error::{Error, ErrorKind};

/// The builder's version, recorded in `commits/<sha>` build records (never in the manifest).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
