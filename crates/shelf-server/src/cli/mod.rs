//! Subcommands of the `shelf` binary and the flags they share.

pub mod embed;
pub mod model;
