//! `model`: the vocabulary the builder, the applier and schema-guard share.
//!
//! - [`canonical`]: canonical JSON (sorted keys, no whitespace), the form every content
//!   address in the project is computed over.
//! - [`names`]: validated names and ids (environments, hosts, groups, deploy ids, commit ids).
//!   Everything read from a store, a host or a config file is parsed into these before use.
//! - [`dur`]: durations written as `30s`, `5m` or a number of seconds.
//! - [`service`]: the service's own `deploy/service.yaml` ([`service::ServiceSpec`]), read by
//!   the builder (validated at build time) and by the applier (start, stop, checks).
//!
//! The crate never prints, exits or reads the environment.

pub mod canonical;
pub mod dur;
pub mod names;
pub mod service;

pub use canonical::canonical_json;
pub use dur::Dur;
