//! shelf's integration tests, one module per subject, linked into one test binary: a binary
//! per file would link RocksDB, candle and tantivy fifteen times, and run one after another
//! instead of side by side. Run one subject with a filter: `cargo test --test it crash::`.

mod common;

mod api;
mod browser;
mod compose;
mod crash;
mod deploy;
mod embed_cli;
mod eval_cli;
mod experiments;
mod fluvio;
mod hostile;
mod personalization;
mod pipelines;
mod recommend;
mod search;
mod serve_binary;
mod training;
