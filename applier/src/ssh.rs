//! The ssh transport under its former path; see [`crate::host::ssh`].

pub use crate::host::ssh::*;
pub use crate::target::UrlStore;
