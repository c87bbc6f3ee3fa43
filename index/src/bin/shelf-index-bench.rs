//! shelf-index-bench: builds the index (either backend) on a base file, computes exact
//! ground truth, and prints one JSON line per ef (and per filter selectivity) with build
//! time, single-thread QPS, recall@k, latency percentiles and the memory the build added.
//! `scripts/hnswlib-bench.py` prints the same lines for hnswlib on the same files, and
//! `scripts/index-bench.sh` runs all three side by side.

use clap::Parser;
use rayon::prelude::*;
use shelf_index::synthetic::{exact_top_k, Rng};
use shelf_index::vecfile::read_vectors;
use shelf_index::{normalized, Backend, HnswIndex, IndexConfig};
use shelf_types::{ItemAttributes, ItemId, SearchFilter};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Parser)]
#[command(
    about = "Measure shelf-index against exact search on vector files (.npy float32 2-D or .fvecs)"
)]
struct Args {
    /// Vectors to index.
    #[arg(long)]
    base: PathBuf,
    /// Query vectors.
    #[arg(long)]
    queries: PathBuf,
    /// Graph implementation: `shelf` (shelf's own) or `hnsw_rs`.
    #[arg(long, default_value = "shelf")]
    index_backend: Backend,
    /// Filtered walks below this pass rate score only matching nodes (two-hop expansion).
    #[arg(long)]
    two_hop_below: Option<f64>,
    /// Graph degree (HNSW M).
    #[arg(long, default_value_t = 16)]
    m: usize,
    /// Candidate list size while building.
    #[arg(long, default_value_t = 200)]
    ef_construction: usize,
    /// Comma-separated ef values to sweep.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,128,256")]
    ef: Vec<usize>,
    /// Neighbours per query (recall@k).
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Filtered mode: comma-separated shares of the base that pass a price filter
    /// (e.g. 0.01,0.1,0.5). Prices are assigned uniformly at random (seeded).
    #[arg(long, value_delimiter = ',')]
    filter_selectivity: Vec<f64>,
    /// Largest candidate set answered by an exact scan in filtered search.
    #[arg(long)]
    exact_threshold: Option<usize>,
    /// Threads for building (default: all cores). Searches always run on one thread.
    #[arg(long)]
    threads: Option<usize>,
    /// Use at most this many queries.
    #[arg(long)]
    max_queries: Option<usize>,
    /// Also write a snapshot into this directory, restore it, and report both times (the
    /// searches then run on the restored index).
    #[arg(long)]
    snapshot_dir: Option<PathBuf>,
}

fn main() {
    if let Err(message) = run(Args::parse()) {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    if let Some(threads) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .map_err(|e| e.to_string())?;
    }
    let base = read_vectors(&args.base)?;
    let mut queries = read_vectors(&args.queries)?;
    if base.dim != queries.dim {
        return Err(format!(
            "base has {} dimensions, queries {}",
            base.dim, queries.dim
        ));
    }
    if let Some(max) = args.max_queries {
        queries.rows.truncate(max);
    }
    let dim = base.dim;
    let unit = |rows: Vec<Vec<f32>>| -> Result<Vec<Vec<f32>>, String> {
        rows.iter()
            .map(|r| normalized(r, dim).map_err(|e| e.to_string()))
            .collect()
    };
    let base_rows = unit(base.rows)?;
    let query_rows = unit(queries.rows)?;
    eprintln!(
        "{} base vectors, {} queries, {dim} dimensions",
        base_rows.len(),
        query_rows.len()
    );

    let mut rng = Rng::new(7);
    let prices: Vec<f64> = (0..base_rows.len()).map(|_| rng.uniform()).collect();
    let ids: Vec<ItemId> = (0..base_rows.len())
        .map(|i| ItemId::from(i.to_string()))
        .collect();
    let mut config = IndexConfig::new(dim);
    config.backend = args.index_backend;
    // Room for exactly the base set, as hnswlib's max_elements.
    config.capacity_growth = 1.0;
    config.initial_capacity = 0;
    if let Some(share) = args.two_hop_below {
        config.two_hop_below = share;
    }
    config.m = args.m;
    config.ef_construction = args.ef_construction;
    if let Some(threshold) = args.exact_threshold {
        config.exact_search_threshold = threshold;
    }

    let rss_before = rss_bytes();
    let started = Instant::now();
    let items = ids
        .iter()
        .zip(&base_rows)
        .zip(&prices)
        .map(|((id, v), price)| {
            (
                id,
                &v[..],
                ItemAttributes {
                    price: Some(*price),
                    ..Default::default()
                },
            )
        });
    let index = HnswIndex::build(config, items).map_err(|e| e.to_string())?;
    let build_s = started.elapsed().as_secs_f64();
    // Resident memory the build added (the index and its catalog), measured the same way
    // as scripts/hnswlib-bench.py does for hnswlib; the graph's own count where /proc is absent.
    let memory_bytes = match (rss_before, rss_bytes()) {
        (Some(before), Some(after)) => after.saturating_sub(before),
        _ => index.stats().memory_bytes,
    };
    eprintln!(
        "{} built in {build_s:.1}s, {:.1} MiB",
        args.index_backend,
        memory_bytes as f64 / (1 << 20) as f64
    );

    let index = match &args.snapshot_dir {
        None => index,
        Some(dir) => {
            let started = Instant::now();
            let info = index
                .snapshot(&dir.join("index"), 0)
                .map_err(|e| e.to_string())?;
            let snapshot_s = started.elapsed().as_secs_f64();
            let config = index.config().clone();
            drop(index);
            let started = Instant::now();
            let (restored, _) =
                HnswIndex::restore(&dir.join("index"), config).map_err(|e| e.to_string())?;
            let restore_s = started.elapsed().as_secs_f64();
            println!(
                "{}",
                serde_json::json!({
                    "index": args.index_backend.name(),
                    "snapshot_s": round(snapshot_s, 3),
                    "restore_s": round(restore_s, 3),
                    "live": info.live,
                })
            );
            restored
        }
    };

    let modes: Vec<Option<f64>> = if args.filter_selectivity.is_empty() {
        vec![None]
    } else {
        args.filter_selectivity.iter().map(|s| Some(*s)).collect()
    };
    for selectivity in modes {
        let filter = SearchFilter {
            price_max: selectivity,
            ..Default::default()
        };
        let truth: Vec<HashSet<usize>> = query_rows
            .par_iter()
            .map(|q| {
                let keep = |i: usize| selectivity.is_none_or(|s| prices[i] <= s);
                exact_top_k(&base_rows, q, args.k, keep)
                    .into_iter()
                    .collect()
            })
            .collect();
        for &ef in &args.ef {
            let mut latencies = Vec::with_capacity(query_rows.len());
            let mut found = 0usize;
            let mut expected = 0usize;
            let sweep = Instant::now();
            for (query, truth) in query_rows.iter().zip(&truth) {
                let t = Instant::now();
                let hits = index
                    .search(query, args.k, Some(ef), &filter)
                    .map_err(|e| e.to_string())?;
                latencies.push(t.elapsed().as_secs_f64() * 1e3);
                found += hits
                    .iter()
                    .filter(|h| truth.contains(&h.id.as_str().parse::<usize>().unwrap()))
                    .count();
                expected += truth.len();
            }
            let elapsed = sweep.elapsed().as_secs_f64();
            latencies.sort_by(f64::total_cmp);
            let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
            let mut line = serde_json::json!({
                "index": args.index_backend.name(),
                "ef": ef,
                "build_s": round(build_s, 3),
                "qps": round(query_rows.len() as f64 / elapsed, 1),
            });
            line[format!("recall_at_{}", args.k)] =
                serde_json::json!(round(found as f64 / expected.max(1) as f64, 4));
            line["p50_ms"] = serde_json::json!(round(pct(0.5), 3));
            line["p99_ms"] = serde_json::json!(round(pct(0.99), 3));
            line["memory_bytes"] = serde_json::json!(memory_bytes);
            if let Some(s) = selectivity {
                line["selectivity"] = serde_json::json!(s);
            }
            println!("{line}");
        }
    }
    Ok(())
}

/// Resident set size of this process (Linux), in bytes.
fn rss_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}
