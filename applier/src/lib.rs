//! `applier`: rolling, checked, reversible deploys of built artifacts to a fleet.
//!
//! - [`config`]: the operator's inventory and settings, layered with provenance.
//! - [`service`]: the service's own `deploy/service.yaml` (inside the artifact).
//! - [`protocol`]: the host protocol: one typed request and answer per host operation.
//! - [`target`]: what happens on a target host (fetch, render, switch, start, stop, prune),
//!   and the protocol session of `applier host`.
//! - [`host`]: the [`host::Host`] trait every host operation goes through, and its transports
//!   (local, ssh, in-memory).
//! - [`hostops`], [`transport`], [`ssh`]: the former paths of those, re-exported.
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
pub mod host;
pub mod hostops;
pub mod pool;
pub mod promotion;
pub mod protocol;
pub mod records;
pub mod resolve;
pub mod service;
pub mod ssh;
pub mod target;
pub mod transport;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
