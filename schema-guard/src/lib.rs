//! `schema-guard`: finds storage schema changes that fail a deploy or cannot be rolled back.
//!
//! A revision's storage manifest ([`StorageManifest`]) lists every table schema the service
//! asks its table backend for, normalised as RESTBase's table spec does, plus domains,
//! storage groups, storage config version and backend module versions. It comes from
//! [`extract::static_manifest`] (git tree only) or [`extract::capture`] (runs the service's
//! code with a recording backend). [`diff`] compares two manifests under the rules
//! SG001...SG090 ([`rules`]) and returns a [`Report`]; [`render`] turns it into text, JSON,
//! SARIF, GitLab, GitHub, Gerrit or markdown output.
//!
//! The library never prints, exits or reads the environment; the `schema-guard` binary does.

pub mod ack;
pub mod config;
pub mod error;
pub mod extract;
pub mod manifest;
pub mod render;
pub mod report;
pub mod rules;

pub use error::{Error, Result};
pub use manifest::{Location, STORAGE_MANIFEST_FORMAT, StorageManifest, TableEntry};
pub use report::{Ack, AckSource, Backend, FailOn, Finding, Report, Severity, TableChange};
pub use rules::{Options, diff};

/// Version of this crate (reported in SARIF and manifests).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
