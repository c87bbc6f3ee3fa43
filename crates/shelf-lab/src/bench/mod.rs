//! `shelf bench`: measurements that print JSON lines — `ingest` (job throughput and item
//! freshness on the embedded log and through Fluvio) and `search` (a load generator against a running server).

use crate::demo::shop::{Language, Shop};
use crate::demo::users;
use axum::http::{Method, StatusCode};
use clap::{Args, Subcommand};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use shelf_api::client::{HttpTransport, Transport};
use shelf_cli::data::{DataArgs, Topic};
use shelf_cli::model::ModelArgs;
use shelf_embed::TextRole;
use shelf_engine::{catch_up, follow, EventJob, ItemJob};
use shelf_index::{HnswIndex, IndexConfig};
use shelf_store::DecayConfig;
use shelf_stream::Sink;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod embed;
mod ingest;
mod search;
mod soak;

use embed::*;
pub use embed::{EmbedBenchArgs, EmbedTexts};
use ingest::*;
pub use ingest::{BenchSource, IngestBenchArgs};
pub use search::SearchBenchArgs;
use search::*;
pub use soak::SoakBenchArgs;
use soak::*;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Item job and event job throughput, and append-to-searchable freshness of items.
    Ingest(IngestBenchArgs),
    /// Load generator for POST /v1/search of a running server (closed loop per
    /// concurrency, then an open loop at a fixed rate).
    Search(SearchBenchArgs),
    /// A long mixed load (searches, events, item updates) against a running
    /// `shelf serve --demo`, sampling the server's memory, open files, log size and lag.
    Soak(SoakBenchArgs),
    /// Embedding throughput (sentences/s) of the model on demo-shop texts: short queries,
    /// titles or descriptions, at given batch sizes (`scripts/embed-vs-pytorch.sh` runs the
    /// same texts through sentence-transformers).
    Embed(EmbedBenchArgs),
}

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    if let BenchCommand::Embed(args) = command {
        return embed_bench(args); // no runtime: the model worker is driven blocking
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match command {
        BenchCommand::Ingest(args) => runtime.block_on(ingest(args)),
        BenchCommand::Search(args) => runtime.block_on(search(args)),
        BenchCommand::Soak(args) => runtime.block_on(soak(args)),
        BenchCommand::Embed(_) => unreachable!("handled above"),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
