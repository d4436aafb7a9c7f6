//! The [`Host`] trait and the local host under their former path; see [`crate::host`].

pub use crate::host::{Host, LocalHost};
