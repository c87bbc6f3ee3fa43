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

/// Latencies in milliseconds, kept in an HDR histogram (1 µs to 1 hour at three significant
/// digits): percentiles in constant memory, whatever the run's length.
pub(super) struct Latencies(hdrhistogram::Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Self(
            hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds"),
        )
    }
}

impl Latencies {
    /// Records one latency (values past an hour count as an hour).
    pub(super) fn record_ms(&mut self, ms: f64) {
        self.0.saturating_record((ms * 1e3).round().max(1.0) as u64);
    }

    pub(super) fn add(&mut self, other: &Latencies) {
        self.0.add(&other.0).expect("same bounds");
    }

    pub(super) fn len(&self) -> u64 {
        self.0.len()
    }

    /// The latency at quantile `q` (0..=1) in ms; NaN when nothing was recorded.
    pub(super) fn quantile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.value_at_quantile(q) as f64 / 1e3
    }

    pub(super) fn max_ms(&self) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.max() as f64 / 1e3
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::Latencies;

    #[test]
    fn latency_quantiles_match_the_exact_ones_within_the_histograms_precision() {
        let mut a = Latencies::default();
        let mut b = Latencies::default();
        // 1..=10_000 ms in 0.1 ms steps, split over two histograms then merged.
        for i in 1..=100_000u32 {
            let ms = f64::from(i) / 10.0;
            if i % 2 == 0 {
                a.record_ms(ms)
            } else {
                b.record_ms(ms)
            }
        }
        a.add(&b);
        assert_eq!(a.len(), 100_000);
        for (q, exact) in [
            (0.5, 5_000.0),
            (0.9, 9_000.0),
            (0.99, 9_900.0),
            (0.999, 9_990.0),
        ] {
            let got = a.quantile_ms(q);
            assert!(
                (got - exact).abs() / exact < 1e-3,
                "q{q}: {got} against {exact}"
            );
        }
        assert!((a.max_ms() - 10_000.0).abs() / 10_000.0 < 1e-3);
        assert!(Latencies::default().quantile_ms(0.5).is_nan());
    }
}
