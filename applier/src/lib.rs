//! `applier`: rolling, checked, reversible deploys of built artifacts to a fleet.
//!
//! - [`config`]: the operator's inventory and settings, layered with provenance.
//! - [`service`]: the service's own `deploy/service.yaml` (inside the artifact).
//! - [`hostops`]: what happens on a target host (fetch, render, switch, start, stop, prune).
//! - [`transport`]: the [`transport::Host`] trait every host operation goes through.
//! - [`pool`]: load-balancer control.
//! - [`checks`]: http, logs and metrics checks.
//! - [`deploy`]: the rolling deploy, rollback, resume and status.
//! - [`records`]: env state and deploy journals in the store.
//! - [`resolve`]: digest/commit/prefix -> verified manifest.
//! - [`guard`]: the storage-schema guard seam.
//! - [`events`]: the progress event stream.
//!
//! The library never prints, exits or reads the environment.

pub mod checks;
pub mod config;
pub mod deploy;
pub mod events;
pub mod guard;
pub mod hostops;
pub mod pool;
pub mod records;
pub mod resolve;
pub mod service;
pub mod transport;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
