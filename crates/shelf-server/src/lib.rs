//! shelf-server: the `shelf` command's subcommands, the HTTP API and the demo shop.

pub mod api;
pub mod app;
pub mod cli;
pub mod client;
pub mod demo;
pub mod deploy;
pub mod metrics;
