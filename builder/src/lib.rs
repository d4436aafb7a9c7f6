//! `builder`: a git commit becomes a reproducible, content-addressed artifact in a store.
//!
//! The pipeline ([`build::build`]) reads the commit straight from git objects ([`source`]),
//! packs it as the source layer, resolves `node_modules` with npm into the dependency layer
//! (reused by key when an earlier build already made it, [`deps`]), writes the manifest and
//! records `commits/<sha>`. [`inspect`] resolves, lists and verifies what is stored;
//! [`config`] resolves where the store is (flags > environment > defaults); [`refs`] records
//! the tags and branches pointing at a built commit.
//!
//! The library never prints, exits or reads the environment: the binary passes everything in
//! and renders what comes back. Progress goes through the [`progress::Progress`] trait.

pub mod build;
pub mod config;
pub mod deps;
mod error;
pub mod inspect;
pub mod progress;
pub mod refs;
pub mod service;
pub mod source;

pub use error::{Error, ErrorKind};

/// The builder's version, recorded in `commits/<sha>` build records (never in the manifest).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
