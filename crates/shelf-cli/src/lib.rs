//! shelf-cli: the production commands of the `shelf` binary and the flags they share (where
//! the data lives, which model embeds). The binary itself is the `shelf` crate.

pub mod data;
pub mod deploy;
pub mod embed;
pub mod ingest;
pub mod inspect;
pub mod model;
pub mod process;
pub mod serve;
pub mod train;
