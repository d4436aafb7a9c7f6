//! The names the engine has always used for host operations, kept as one stable path while
//! the engine moves: the wire types live in [`crate::protocol`], the target side in
//! [`crate::target`].

pub use crate::protocol::*;
pub use crate::target::*;
