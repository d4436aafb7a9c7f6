//! `schema-guard` library. See the crate description.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
