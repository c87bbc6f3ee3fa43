//! shelf-api: the HTTP layer over a node: router, handlers, request and response types, API
//! keys and their scopes, the Prometheus metrics, and a small client for HTTP APIs.

mod api;
pub mod app;
pub mod client;
pub mod metrics;

pub use api::*;
