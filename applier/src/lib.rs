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
//! - [`engine`]: the deploy engine (plan, gates, lease, run, host path, journal) and its entry
//!   points deploy, promote, rollback, resume and status.
//! - [`promotion`]: the `promotion.requires` records and what `promote` takes from an env.
//! - [`records`]: env state and deploy journals in the store, and the [`records::Step`] names.
//! - [`keys`]: where the environment records live in the store.
//! - [`guard`]: the storage-schema guard seam.
//! - [`events`]: the progress event stream.
//!
//! The library never prints or exits, and reads no environment variables of its own: the
//! binary passes them in (see [`config::Layers`]).

pub mod checks;
pub mod config;
pub mod engine;
pub mod events;
pub mod guard;
pub mod haproxy;
pub mod hostops;
pub mod keys;
pub mod pool;
pub mod promotion;
pub mod records;
pub mod service;
pub mod ssh;
pub mod transport;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
