//! `applier`: rolling, checked, reversible deploys of built artifacts to a fleet.
//!
//! - [`config`]: the operator's inventory and settings, layered with provenance.
//! - [`envconfig`]: the three layers of the service config (artifact, inventory, the host's
//!   ops file), merged at render, with ownership and masking.
//! - [`srclayer`]: a read-only look inside an artifact's source layer in the store.
//! - [`service`]: the service's own `deploy/service.yaml` (inside the artifact).
//! - [`protocol`]: the host protocol: one typed request and answer per host operation.
//! - [`target`]: what happens on a target host (fetch, render, switch, start, stop, prune),
//!   and the protocol session of `applier host`.
//! - [`host`]: the [`host::Host`] trait every host operation goes through, and its transports
//!   (local, ssh, in-memory).
//! - [`haproxy`]: the HAProxy runtime-API pool driver; [`conftool`]: Wikimedia's conftool
//!   (`confctl` over etcd).
//! - [`pool`]: load-balancer control.
//! - [`cd`]: continuous deployment of a branch's newest built commit (`applier cd`).
//! - [`checks`]: http, logs and metrics checks, their policies (no data, shadow, k of n),
//!   the canary's samples and the fleet-wide watch's readings.
//! - [`analysis`]: canary against baseline (Mann-Whitney U, effect size, sample counts).
//! - [`diff`]: what a deploy would change: rendered config per host, code, dependencies,
//!   storage.
//! - [`shell`]: command templates whose values reach `sh -c` quoted and as variables.
//! - [`engine`]: the deploy engine (plan, gates, lease, run, host path, journal) and its entry
//!   points deploy, promote, rollback, resume and status.
//! - [`promotion`]: the `promotion.requires` records and what `promote` takes from an env.
//! - [`refs`]: naming what to deploy: a digest, a commit, a tag or a branch.
//! - [`records`]: env state and deploy journals in the store, and the [`records::Step`] names.
//! - [`report`]: the deploy report (self-contained HTML), `show` and `history`, from journals.
//! - [`keys`]: where the environment records live in the store; [`store_meter`]: the cap on
//!   store requests in flight, their counts per deploy, one presigned URL per blob.
//! - [`guard`]: the storage-schema guard seam.
//! - [`events`]: the progress event stream; [`notify`]: start, finish, abort, rollback and
//!   needs-human notices to the env's command and webhook sinks.
//! - [`identity`]: who deploys (`--who`, `SUDO_USER`, a CI job, `USER`) and how that is known.
//! - [`failure_lock`]: the lock a failed deploy leaves on its env, until `applier unlock`.
//! - [`freeze`]: freeze windows (cron fields or dates) in which an env takes no deploys.
//!
//! The library never prints or exits, and reads no environment variables of its own: the
//! binary passes them in (see [`config::Layers`]).

pub mod analysis;
pub mod cd;
pub mod checks;
pub mod config;
pub mod conftool;
pub mod diff;
pub mod engine;
pub mod envconfig;
pub mod events;
pub mod failure_lock;
pub mod freeze;
pub mod guard;
pub mod haproxy;
pub mod host;
pub mod identity;
pub mod keys;
pub mod notify;
pub mod pool;
pub mod promotion;
pub mod protocol;
pub mod records;
pub mod refs;
pub mod report;
pub mod service;
pub mod shell;
pub mod srclayer;
pub mod store_meter;
pub mod target;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
