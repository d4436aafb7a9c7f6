//! `applier`: rolling, checked, reversible deploys of built artifacts to a fleet.
//!
//! - [`config`]: the operator's inventory and settings, layered with provenance.
//! - [`service`]: the service's own `deploy/service.yaml` (inside the artifact).
//! - [`hostops`]: what happens on a target host (fetch, render, switch, start, stop, prune).
//! - [`transport`]: the [`transport::Host`] trait every host operation goes through.
//! - [`ssh`]: the ssh transport (`applier host` on the targets, presigned fetch).
//! - [`haproxy`]: the HAProxy runtime-API pool driver.
//! - [`pool`]: load-balancer control.
//! - [`checks`]: http, logs and metrics checks.
//! - [`deploy`]: the rolling deploy, rollback, resume and status.
//! - [`promotion`]: the `promotion.requires` gate and what `promote` takes from an env.
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
pub mod haproxy;
pub mod hostops;
pub mod pool;
pub mod promotion;
pub mod records;
pub mod resolve;
pub mod service;
pub mod ssh;
pub mod transport;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
