//! Subcommands of the `shelf` binary and the flags they share.

pub mod baselines;
pub mod bench;
pub mod data;
pub mod deploy;
pub mod embed;
pub mod eval;
pub mod ingest;
pub mod inspect;
pub mod model;
pub mod process;
pub mod serve;
pub mod train;
