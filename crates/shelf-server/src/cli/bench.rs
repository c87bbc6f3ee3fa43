//! `shelf bench`: measurements that print JSON lines — `ingest` (job throughput and item
//! freshness on the embedded log and through Fluvio) and `search` (a load generator against a running server).

use super::data::{DataArgs, Topic};
use super::model::ModelArgs;
use crate::client::{HttpTransport, Transport};
use crate::demo::shop::Shop;
use crate::demo::users;
use axum::http::{Method, StatusCode};
use clap::{Args, Subcommand};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use shelf_engine::{catch_up, follow, EventJob, ItemJob};
use shelf_index::{HnswIndex, IndexConfig};
use shelf_store::DecayConfig;
use shelf_stream::Sink;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

#[derive(Debug, Args)]
pub struct EmbedBenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Texts: `queries` (2–5 words), `titles` or `descriptions` of the demo shop.
    #[arg(long, value_enum, default_value_t = EmbedTexts::Queries)]
    pub texts: EmbedTexts,
    /// Batch sizes to measure, each in turn (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    pub batch: Vec<usize>,
    /// Seconds per batch size (after one warm-up batch).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Milliseconds of idleness between calls, as a server has between requests (0: back
    /// to back). Throughput then counts busy time only; latency and CPU per call say what
    /// idleness costs.
    #[arg(long, default_value_t = 0.0)]
    pub gap_ms: f64,
    /// Print the texts, one per line, instead of measuring (to feed another engine the
    /// same texts).
    #[arg(long)]
    pub print_texts: bool,
}

/// The demo-shop texts `shelf bench embed` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EmbedTexts {
    Queries,
    Titles,
    Descriptions,
}

/// 512 distinct texts of `kind`, the same on every run.
fn embed_texts(kind: EmbedTexts) -> Vec<String> {
    let shop = Shop::generate(512, 7);
    let mut rng = SmallRng::seed_from_u64(7);
    match kind {
        EmbedTexts::Queries => (0..512).map(|_| demo_query(&mut rng)).collect(),
        EmbedTexts::Titles => shop.products.iter().map(|p| p.item.title.clone()).collect(),
        // The demo's descriptions are one sentence; shop descriptions run longer, so each
        // gets the care and shipping paragraph a product page carries (~110 tokens in all).
        EmbedTexts::Descriptions => shop
            .products
            .iter()
            .map(|p| {
                format!(
                    "{} {} It is easy to clean, built to last for years and backed by a two \
                     year warranty. Ideal as a gift or for your own home, it ships in \
                     recyclable packaging. Dimensions and care instructions are included in \
                     the box, and our customer service team is happy to help with any \
                     questions about sizing or fit. Returns are free within thirty days.",
                    p.item.title,
                    p.item.description.as_deref().unwrap_or_default()
                )
            })
            .collect(),
    }
}

fn embed_bench(args: EmbedBenchArgs) -> anyhow::Result<()> {
    let texts = embed_texts(args.texts);
    if args.print_texts {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for t in &texts {
            // A closed pipe (`| head`) ends the listing quietly.
            if writeln!(out, "{t}").is_err() {
                return Ok(());
            }
        }
        let _ = out.flush();
        return Ok(());
    }
    let kind = format!("{:?}", args.texts).to_lowercase();
    for &batch in &args.batch {
        anyhow::ensure!(batch > 0, "--batch sizes must be positive");
        let embedder = args.model.start(batch)?;
        let chunk = |i: usize| -> Vec<String> {
            (0..batch)
                .map(|j| texts[(i * batch + j) % texts.len()].clone())
                .collect()
        };
        embedder.embed_blocking(chunk(0))?; // warm-up
        let gap = Duration::from_secs_f64(args.gap_ms.max(0.0) / 1000.0);
        let started = Instant::now();
        let cpu_before = process_cpu_seconds();
        let mut sentences = 0usize;
        let mut call_ms = Vec::new();
        let mut i = 1;
        while started.elapsed().as_secs_f64() < args.seconds {
            if !gap.is_zero() {
                std::thread::sleep(gap);
            }
            let call = Instant::now();
            sentences += embedder.embed_blocking(chunk(i))?.len();
            call_ms.push(call.elapsed().as_secs_f64() * 1000.0);
            i += 1;
        }
        let cpu_seconds = process_cpu_seconds() - cpu_before;
        let busy_seconds = call_ms.iter().sum::<f64>() / 1000.0;
        call_ms.sort_by(f64::total_cmp);
        println!(
            "{}",
            serde_json::json!({
                "bench": "embed", "engine": "shelf", "texts": kind, "batch": batch,
                "gap_ms": args.gap_ms, "calls": call_ms.len(),
                "sentences": sentences, "seconds": round(busy_seconds),
                "sentences_per_s": round(sentences as f64 / busy_seconds),
                "call_ms_p50": round(percentile(&call_ms, 0.5)),
                "call_ms_p99": round(percentile(&call_ms, 0.99)),
                "cpu_ms_per_call": round(cpu_seconds * 1000.0 / call_ms.len().max(1) as f64),
                "threads": candle_threads(), "device": embedder.device(),
                "quantize": embedder.quantization().name(),
            })
        );
    }
    Ok(())
}

/// CPU seconds this process has run so far, all threads together (Linux: the scheduler's
/// per-thread nanoseconds; elsewhere 0).
fn process_cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    nanos as f64 / 1e9
}

/// The threads the CPU forward pass uses: rayon's pool (`RAYON_NUM_THREADS`, else every core).
fn candle_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[derive(Debug, Args)]
pub struct SoakBenchArgs {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key (write scope: the soak sends events and items).
    #[arg(long, env = "SHELF_API_KEY")]
    pub api_key: Option<String>,
    /// Seconds to run.
    #[arg(long, default_value_t = 600)]
    pub seconds: u64,
    /// Searches per second (half with a demo user).
    #[arg(long, default_value_t = 20.0)]
    pub search_rate: f64,
    /// Events per second (sent in batches of 10).
    #[arg(long, default_value_t = 200.0)]
    pub event_rate: f64,
    /// Item updates per second (demo items with a new price).
    #[arg(long, default_value_t = 2.0)]
    pub item_rate: f64,
    /// Seconds between samples of the server's metrics.
    #[arg(long, default_value_t = 10)]
    pub sample_secs: u64,
    /// The demo catalog size and seed the server runs with (`--demo-items`, `--demo-seed`).
    #[arg(long, default_value_t = 20_000)]
    pub demo_items: usize,
    #[arg(long, default_value_t = 42)]
    pub demo_seed: u64,
}

#[derive(Debug, Args)]
pub struct IngestBenchArgs {
    /// Data directory; it must be empty or absent (default: a fresh temporary directory).
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Catalog items embedded and indexed by the item job.
    #[arg(long, default_value_t = 2_000)]
    pub items: usize,
    /// Events applied by the event job.
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,
    /// Items appended one by one (after the catalog) to measure freshness.
    #[arg(long, default_value_t = 200)]
    pub freshness_items: usize,
    /// Appends per second while measuring freshness.
    #[arg(long, default_value_t = 20.0)]
    pub freshness_rate: f64,
    /// Records per job batch.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Log fsync policy: always, never, or an interval like 100ms.
    #[arg(long, default_value = "always")]
    pub fsync: String,
    /// Transports to measure, one after the other in this run (comma-separated):
    /// `embedded` (the durable log) and `fluvio` (topics of their own on the cluster at
    /// --fluvio-endpoint, created for the bench and deleted after; needs the `fluvio`
    /// feature).
    #[arg(long, value_delimiter = ',', default_value = "embedded")]
    pub source: Vec<BenchSource>,
    /// Fluvio SC address with `--source fluvio`.
    #[arg(long, env = "SHELF_FLUVIO_ENDPOINT", default_value = "127.0.0.1:9003")]
    pub fluvio_endpoint: String,
    /// Partitions of each bench topic with `--source fluvio`.
    #[arg(long, default_value_t = 2)]
    pub fluvio_partitions: u32,
}

/// A transport `shelf bench ingest` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchSource {
    Embedded,
    Fluvio,
}

impl BenchSource {
    fn name(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Fluvio => "fluvio",
        }
    }
}

/// Appends payloads to one bench stream; returns the offset span.
type Append = Box<dyn FnMut(&[Vec<u8>]) -> anyhow::Result<std::ops::Range<u64>> + Send>;

/// The item and event streams of one bench run: where records are appended, and how a
/// job reads them.
struct BenchStreams {
    source: BenchSource,
    data: DataArgs,
    #[cfg(feature = "fluvio")]
    fluvio: Option<(shelf_stream::FluvioCluster, [String; 2])>,
}

impl BenchStreams {
    fn open(args: &IngestBenchArgs, source: BenchSource, data: DataArgs) -> anyhow::Result<Self> {
        match source {
            BenchSource::Embedded => Ok(Self {
                source,
                data,
                #[cfg(feature = "fluvio")]
                fluvio: None,
            }),
            #[cfg(feature = "fluvio")]
            BenchSource::Fluvio => {
                let cluster = shelf_stream::FluvioCluster::connect_within(
                    &args.fluvio_endpoint,
                    Duration::from_secs(30),
                )?;
                let run = format!(
                    "{}-{}",
                    std::process::id(),
                    time::OffsetDateTime::now_utc().unix_timestamp()
                );
                let topics = [
                    format!("shelf-bench-items-{run}"),
                    format!("shelf-bench-events-{run}"),
                ];
                for topic in &topics {
                    cluster.ensure_topic(topic, args.fluvio_partitions)?;
                    // The SPU takes a moment to host a new partition.
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while cluster
                        .end_offset(topic, args.fluvio_partitions - 1)
                        .is_err()
                    {
                        anyhow::ensure!(Instant::now() < deadline, "topic {topic} never came up");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
                Ok(Self {
                    source,
                    data,
                    fluvio: Some((cluster, topics)),
                })
            }
            #[cfg(not(feature = "fluvio"))]
            BenchSource::Fluvio => {
                let _ = args;
                anyhow::bail!("--source fluvio needs a shelf built with the `fluvio` feature")
            }
        }
    }

    fn appender(&self, topic: Topic) -> anyhow::Result<Append> {
        #[cfg(feature = "fluvio")]
        if let Some((cluster, topics)) = &self.fluvio {
            let (name, key) = match topic {
                Topic::Items => (&topics[0], "id"),
                Topic::Events => (&topics[1], "user_id"),
            };
            let sink = cluster.sink(name)?;
            return Ok(Box::new(move |payloads: &[Vec<u8>]| {
                let keys = shelf_node::record_keys(payloads, key);
                Ok(shelf_stream::offset_span(&sink.produce(&keys, payloads)?))
            }));
        }
        let mut log = self.data.open_log(topic)?;
        Ok(Box::new(move |payloads: &[Vec<u8>]| {
            Ok(log.append(payloads)?)
        }))
    }

    fn reader(&self, topic: Topic) -> anyhow::Result<Box<dyn shelf_stream::Source>> {
        #[cfg(feature = "fluvio")]
        if let Some((cluster, topics)) = &self.fluvio {
            let name = match topic {
                Topic::Items => &topics[0],
                Topic::Events => &topics[1],
            };
            return Ok(Box::new(cluster.source(name, &[])?));
        }
        Ok(Box::new(self.data.open_reader(topic)?))
    }
}

impl Drop for BenchStreams {
    fn drop(&mut self) {
        #[cfg(feature = "fluvio")]
        if let Some((cluster, topics)) = &self.fluvio {
            for topic in topics {
                let _ = cluster.delete_topic(topic);
            }
        }
    }
}

#[derive(Debug, Args)]
pub struct SearchBenchArgs {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key (read scope is enough).
    #[arg(long, env = "SHELF_API_KEY")]
    pub api_key: Option<String>,
    /// Concurrent clients of the closed-loop runs.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    pub concurrency: Vec<usize>,
    /// Requests per second of the open-loop run (0 skips it).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds per run.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Share of requests that carry a demo user id (personalised).
    #[arg(long, default_value_t = 0.5)]
    pub personalized_share: f64,
    /// Results per search.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Queries to send, one per line, in order (shared by all clients, starting over at
    /// the end), instead of generated demo-shop queries: with distinct lines and fewer
    /// requests than lines, no response comes from the query cache.
    #[arg(long)]
    pub queries: Option<std::path::PathBuf>,
}

/// Where the load's query texts come from.
enum Queries {
    /// Generated demo-shop queries.
    Demo,
    /// The lines of `--queries`, taken in turn.
    File {
        lines: Vec<String>,
        next: std::sync::atomic::AtomicUsize,
    },
}

impl Queries {
    fn load(path: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::Demo);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let lines: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        anyhow::ensure!(!lines.is_empty(), "{} holds no query", path.display());
        Ok(Self::File {
            lines,
            next: 0.into(),
        })
    }
}

/// The server's query-cache hits and misses so far (from `/metrics`).
async fn cache_counts(api: &HttpTransport) -> anyhow::Result<(u64, u64)> {
    let text = api.get_text("/metrics").await?;
    let counter = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    Ok((
        counter("shelf_query_cache_hits "),
        counter("shelf_query_cache_misses "),
    ))
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

async fn ingest(args: IngestBenchArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.data_dir {
        anyhow::ensure!(
            !dir.exists() || std::fs::read_dir(dir)?.next().is_none(),
            "{} is not empty: the bench needs a fresh data directory",
            dir.display()
        );
        anyhow::ensure!(
            args.source.len() == 1,
            "--data-dir takes one --source (each transport needs a fresh data directory)"
        );
    }
    for &source in &args.source {
        let data_dir = args.data_dir.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!(
                "shelf-bench-{}-{}",
                std::process::id(),
                source.name()
            ))
        });
        let data = DataArgs {
            data_dir: data_dir.clone(),
            fsync: args.fsync.parse().map_err(|e: String| anyhow::anyhow!(e))?,
            log_segment_bytes: shelf_stream::LogOptions::default().segment_bytes,
        };
        let result = match BenchStreams::open(&args, source, data) {
            Ok(streams) => ingest_in(&args, &streams).await,
            Err(e) => Err(e),
        };
        if args.data_dir.is_none() {
            let _ = std::fs::remove_dir_all(&data_dir);
        }
        result?;
    }
    Ok(())
}

async fn ingest_in(args: &IngestBenchArgs, streams: &BenchStreams) -> anyhow::Result<()> {
    let transport = streams.source.name();
    let store = Arc::new(streams.data.open_store()?);
    let embedder = args.model.start(32)?;
    let dim = embedder.dim();
    let index = HnswIndex::new(IndexConfig::new(dim))?;
    let shop = Shop::generate(args.items + args.freshness_items, 42);
    let (catalog, fresh) = shop.products.split_at(args.items);

    // 1. The item job over the catalog: parse, embed, store, index.
    let mut append_item = streams.appender(Topic::Items)?;
    let payloads = catalog
        .iter()
        .map(|p| serde_json::to_vec(&shelf_types::ItemRecord::Upsert(p.item.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    append_item(&payloads)?;
    let mut item_job = ItemJob::new(Arc::clone(&store), embedder.clone(), Some(index.clone()))?;
    let mut reader = streams.reader(Topic::Items)?;
    let started = Instant::now();
    let progress = catch_up(
        &mut item_job,
        &mut reader,
        &store,
        args.batch_size,
        |_, _| {},
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "bench": "item_job", "source": transport, "items": progress.records,
            "seconds": round(seconds), "items_per_s": round(progress.records as f64 / seconds),
            "embedded": item_job.embed_counts().0, "device": embedder.device(),
        })
    );

    // 2. The event job: views, clicks, carts and purchases of 1000 users on the catalog.
    let mut rng = SmallRng::seed_from_u64(7);
    let base = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    let kinds = [
        "view",
        "view",
        "view",
        "click",
        "click",
        "add_to_cart",
        "purchase",
    ];
    let events: Vec<Vec<u8>> = (0..args.events)
        .map(|i| {
            let item = &catalog[rng.random_range(0..catalog.len())].item.id;
            let ts = base + time::Duration::seconds(i as i64 * 2);
            serde_json::to_vec(&serde_json::json!({
                "user_id": format!("user-{}", rng.random_range(0..1000)),
                "kind": kinds[rng.random_range(0..kinds.len())],
                "item_id": item,
                "ts": ts.format(&time::format_description::well_known::Rfc3339).expect("formats"),
            }))
        })
        .collect::<Result<_, _>>()?;
    let mut append_event = streams.appender(Topic::Events)?;
    let started = Instant::now();
    for chunk in events.chunks(10_000) {
        append_event(chunk)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "bench": "append_events", "source": transport, "events": events.len(),
            "fsync": args.fsync, "seconds": round(seconds),
            "events_per_s": round(events.len() as f64 / seconds),
        })
    );
    let mut event_job = EventJob::new(Arc::clone(&store), DecayConfig::default(), dim);
    let mut reader = streams.reader(Topic::Events)?;
    let target = shelf_engine::source_end(&mut reader)?;
    let started = Instant::now();
    let mut progress = shelf_engine::Progress::default();
    let mut idle_since = Instant::now();
    // A remote source can pause delivery: catch up again until every event is applied.
    while progress.offset < target {
        let more = catch_up(
            &mut event_job,
            &mut reader,
            &store,
            args.batch_size,
            |_, _| {},
        )
        .await?;
        if more.records > 0 {
            idle_since = Instant::now();
        }
        anyhow::ensure!(
            idle_since.elapsed() < Duration::from_secs(60),
            "the event job stopped at {} of {target} for 60 s",
            more.offset
        );
        progress.records += more.records;
        progress.dead_letters += more.dead_letters;
        progress.offset = more.offset;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "bench": "event_job", "source": transport, "events": progress.records,
            "seconds": round(seconds), "events_per_s": round(progress.records as f64 / seconds),
            "dead_letters": progress.dead_letters,
        })
    );

    // 3. Freshness: single items appended at a steady rate while the item job follows the
    //    stream; time from the start of the append to the end of the batch that stored
    //    and indexed it.
    if fresh.is_empty() {
        return Ok(());
    }
    let wake = Arc::new(tokio::sync::Notify::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let appended: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let follower = {
        let (store, wake, appended, latencies) = (
            Arc::clone(&store),
            Arc::clone(&wake),
            Arc::clone(&appended),
            Arc::clone(&latencies),
        );
        let mut reader = streams.reader(Topic::Items)?;
        let batch_size = args.batch_size;
        tokio::spawn(async move {
            follow(
                &mut item_job,
                &mut reader,
                &store,
                batch_size,
                &wake,
                stop_rx,
                |_, _, outcome| {
                    if outcome.is_err() {
                        return;
                    }
                    let now = Instant::now();
                    let mut appended = appended.lock().expect("not poisoned");
                    let mut latencies = latencies.lock().expect("not poisoned");
                    appended.retain(|(id, at)| {
                        let done = store.item(id).is_ok_and(|item| item.is_some());
                        if done {
                            latencies.push((now - *at).as_secs_f64() * 1e3);
                        }
                        !done
                    });
                },
            )
            .await
        })
    };
    let pause = Duration::from_secs_f64(1.0 / args.freshness_rate.max(0.1));
    let append_item = Arc::new(Mutex::new(append_item));
    for p in fresh {
        let payload = serde_json::to_vec(&shelf_types::ItemRecord::Upsert(p.item.clone()))?;
        let at = Instant::now();
        appended
            .lock()
            .expect("not poisoned")
            .push((p.item.id.to_string(), at));
        let append_item = Arc::clone(&append_item);
        tokio::task::spawn_blocking(move || {
            (append_item.lock().expect("not poisoned"))(&[payload])
        })
        .await??;
        wake.notify_one();
        tokio::time::sleep(pause).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !appended.lock().expect("not poisoned").is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    follower.await??;
    let mut latencies = latencies.lock().expect("not poisoned").clone();
    latencies.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({
            "bench": "item_freshness", "source": transport, "items": latencies.len(),
            "rate_per_s": args.freshness_rate, "fsync": args.fsync,
            "p50_ms": round(percentile(&latencies, 0.5)), "p99_ms": round(percentile(&latencies, 0.99)),
            "max_ms": round(latencies.last().copied().unwrap_or(f64::NAN)),
        })
    );
    Ok(())
}

/// A demo-shop query: a random leaf category, with a colour three times in ten.
fn demo_query(rng: &mut SmallRng) -> String {
    let leaf = rng.random_range(0..Shop::leaves());
    let color =
        (rng.random::<f64>() < 0.3).then(|| rng.random_range(0..crate::demo::shop::COLORS.len()));
    Shop::query_for(leaf, color, rng)
}

/// One request body of the load: a demo-shop query, sometimes with a demo user.
fn search_body(
    rng: &mut SmallRng,
    users: &[users::SimUser],
    args: &SearchBenchArgs,
    queries: &Queries,
) -> serde_json::Value {
    let query = match queries {
        Queries::Demo => demo_query(rng),
        Queries::File { lines, next } => {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            lines[i % lines.len()].clone()
        }
    };
    let mut body = serde_json::json!({ "query": query, "k": args.k });
    if rng.random::<f64>() < args.personalized_share {
        body["user_id"] = serde_json::json!(users[rng.random_range(0..users.len())].id);
    }
    body
}

#[derive(Default)]
struct Tally {
    latencies: Vec<f64>,
    /// The server's own stage timings of each answer (`timings`: embed, ann, rerank), ms.
    stages: [Vec<f64>; 3],
    errors: u64,
}

impl Tally {
    /// Counts one answer: its latency as the client saw it and the server's stage timings.
    fn answered(&mut self, ms: f64, body: &serde_json::Value) {
        self.latencies.push(ms);
        for (stage, name) in self.stages.iter_mut().zip(["embed", "ann", "rerank"]) {
            if let Some(t) = body["timings"][name].as_f64() {
                stage.push(t);
            }
        }
    }

    fn extend(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        for (mine, theirs) in self.stages.iter_mut().zip(other.stages) {
            mine.extend(theirs);
        }
        self.errors += other.errors;
    }
}

fn report(
    mode: &str,
    label: serde_json::Value,
    mut tally: Tally,
    seconds: f64,
    cache: ((u64, u64), (u64, u64)),
) {
    tally.latencies.sort_by(f64::total_cmp);
    for stage in &mut tally.stages {
        stage.sort_by(f64::total_cmp);
    }
    let [embed, ann, rerank] = &tally.stages;
    let l = &tally.latencies;
    let mut line = serde_json::json!({
        "bench": "search", "mode": mode,
        "requests": l.len(), "errors": tally.errors,
        "qps": round(l.len() as f64 / seconds),
        "p50_ms": round(percentile(l, 0.5)), "p90_ms": round(percentile(l, 0.9)),
        "p99_ms": round(percentile(l, 0.99)), "max_ms": round(l.last().copied().unwrap_or(f64::NAN)),
        "query_cache_hits": cache.1 .0.saturating_sub(cache.0 .0),
        "query_cache_misses": cache.1 .1.saturating_sub(cache.0 .1),
        "server_embed_p50_ms": round(percentile(embed, 0.5)),
        "server_embed_p99_ms": round(percentile(embed, 0.99)),
        "server_ann_p50_ms": round(percentile(ann, 0.5)),
        "server_ann_p99_ms": round(percentile(ann, 0.99)),
        "server_rerank_p50_ms": round(percentile(rerank, 0.5)),
        "server_rerank_p99_ms": round(percentile(rerank, 0.99)),
    });
    if let (Some(obj), Some(extra)) = (line.as_object_mut(), label.as_object()) {
        obj.extend(extra.clone());
    }
    println!("{line}");
}

async fn search(args: SearchBenchArgs) -> anyhow::Result<()> {
    let api = Arc::new(HttpTransport::new(&args.url, args.api_key.clone()));
    let (status, body) = api.call(Method::GET, "/ready", None).await?;
    anyhow::ensure!(
        status == StatusCode::OK,
        "{} is not ready: {status} {body}",
        args.url
    );
    let users = Arc::new(users::users(500, 42 ^ 0x5eed));
    let queries = Arc::new(Queries::load(args.queries.as_deref())?);
    let args = Arc::new(args);
    // No warm-up: each distinct query is embedded on first sight (then cached), as in
    // production, where shop queries repeat heavily too.
    for &concurrency in &args.concurrency {
        let cache_before = cache_counts(&api).await?;
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let started = Instant::now();
        let mut workers = Vec::new();
        for w in 0..concurrency {
            let (api, users, args) = (Arc::clone(&api), Arc::clone(&users), Arc::clone(&args));
            let queries = Arc::clone(&queries);
            workers.push(tokio::spawn(async move {
                let mut rng = SmallRng::seed_from_u64(w as u64);
                let mut tally = Tally::default();
                while Instant::now() < deadline {
                    let body = search_body(&mut rng, &users, &args, &queries);
                    let t = Instant::now();
                    match api.call(Method::POST, "/v1/search", Some(body)).await {
                        Ok((StatusCode::OK, body)) => {
                            tally.answered(t.elapsed().as_secs_f64() * 1e3, &body)
                        }
                        _ => tally.errors += 1,
                    }
                }
                tally
            }));
        }
        let mut total = Tally::default();
        for w in workers {
            total.extend(w.await?);
        }
        let seconds = started.elapsed().as_secs_f64();
        let cache = (cache_before, cache_counts(&api).await?);
        report(
            "closed_loop",
            serde_json::json!({ "concurrency": concurrency }),
            total,
            seconds,
            cache,
        );
    }
    if args.rate > 0.0 {
        // Open loop: requests start on schedule whether or not earlier ones finished, and
        // latency counts from the scheduled start (no coordinated omission).
        let interval = Duration::from_secs_f64(1.0 / args.rate);
        let n = (args.rate * args.seconds as f64) as usize;
        let cache_before = cache_counts(&api).await?;
        let started = Instant::now();
        let mut rng = SmallRng::seed_from_u64(99);
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let scheduled = started + interval.mul_f64(i as f64);
            tokio::time::sleep_until(scheduled.into()).await;
            let body = search_body(&mut rng, &users, &args, &queries);
            let api = Arc::clone(&api);
            handles.push(tokio::spawn(async move {
                match api.call(Method::POST, "/v1/search", Some(body)).await {
                    Ok((StatusCode::OK, body)) => {
                        Some((scheduled.elapsed().as_secs_f64() * 1e3, body))
                    }
                    _ => None,
                }
            }));
        }
        let mut tally = Tally::default();
        for h in handles {
            match h.await? {
                Some((ms, body)) => tally.answered(ms, &body),
                None => tally.errors += 1,
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let cache = (cache_before, cache_counts(&api).await?);
        report(
            "open_loop",
            serde_json::json!({ "rate": args.rate }),
            tally,
            seconds,
            cache,
        );
    }
    Ok(())
}

/// The server's gauges and counters the soak samples, by name (from `/metrics`).
async fn sample_metrics(api: &HttpTransport) -> anyhow::Result<BTreeMap<String, f64>> {
    const NAMES: [&str; 7] = [
        "process_resident_memory_bytes",
        "process_open_fds",
        "shelf_log_bytes",
        "shelf_ingest_lag_items",
        "shelf_ingest_lag_events",
        "shelf_index_items",
        "shelf_dead_letters_events",
    ];
    let text = api.get_text("/metrics").await?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            NAMES
                .contains(&name)
                .then(|| Some((name.to_string(), value.trim().parse::<f64>().ok()?)))?
        })
        .collect())
}

/// Sends one request every `1 / rate` seconds until `deadline` (each built by `make`);
/// returns (sent, failed).
async fn at_rate(
    api: Arc<HttpTransport>,
    rate: f64,
    deadline: Instant,
    mut make: impl FnMut() -> (&'static str, serde_json::Value) + Send + 'static,
) -> (u64, u64) {
    let (mut sent, mut failed) = (0, 0);
    if rate <= 0.0 {
        return (0, 0);
    }
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < deadline {
        tick.tick().await;
        let (path, body) = make();
        sent += 1;
        match api.call(Method::POST, path, Some(body)).await {
            Ok((status, _)) if status.is_success() => {}
            _ => failed += 1,
        }
    }
    (sent, failed)
}

async fn soak(args: SoakBenchArgs) -> anyhow::Result<()> {
    let api = Arc::new(HttpTransport::new(&args.url, args.api_key.clone()));
    let (status, body) = api.call(Method::GET, "/ready", None).await?;
    anyhow::ensure!(
        status == StatusCode::OK,
        "{} is not ready: {status} {body}",
        args.url
    );
    let shop = Arc::new(Shop::generate(args.demo_items, args.demo_seed));
    let users = Arc::new(users::users(500, 42 ^ 0x5eed));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let search_args = SearchBenchArgs {
        url: args.url.clone(),
        api_key: None,
        concurrency: Vec::new(),
        rate: 0.0,
        seconds: 0,
        personalized_share: 0.5,
        k: 10,
        queries: None,
    };
    let searches = {
        let (users, mut rng) = (Arc::clone(&users), SmallRng::seed_from_u64(1));
        tokio::spawn(at_rate(
            Arc::clone(&api),
            args.search_rate,
            deadline,
            move || {
                (
                    "/v1/search",
                    search_body(&mut rng, &users, &search_args, &Queries::Demo),
                )
            },
        ))
    };
    let events = {
        let (shop, users, mut rng) = (
            Arc::clone(&shop),
            Arc::clone(&users),
            SmallRng::seed_from_u64(2),
        );
        tokio::spawn(at_rate(
            Arc::clone(&api),
            args.event_rate / 10.0,
            deadline,
            move || {
                let now = time::OffsetDateTime::now_utc()
                    .format(&time::format_description::well_known::Rfc3339)
                    .expect("formats");
                let batch: Vec<serde_json::Value> = (0..10)
                    .map(|_| {
                        let item = &shop.products[rng.random_range(0..shop.products.len())].item;
                        let kind = ["view", "view", "click", "add_to_cart"][rng.random_range(0..4)];
                        serde_json::json!({"user_id": users[rng.random_range(0..users.len())].id,
                                       "kind": kind, "item_id": item.id, "ts": now})
                    })
                    .collect();
                ("/v1/events", serde_json::json!(batch))
            },
        ))
    };
    let items = {
        let (shop, mut rng) = (Arc::clone(&shop), SmallRng::seed_from_u64(3));
        tokio::spawn(at_rate(
            Arc::clone(&api),
            args.item_rate,
            deadline,
            move || {
                let mut item = shop.products[rng.random_range(0..shop.products.len())]
                    .item
                    .clone();
                item.price = item
                    .price
                    .map(|p| (p * rng.random_range(0.9..1.1) * 100.0).round() / 100.0);
                (
                    "/v1/items",
                    serde_json::json!([shelf_types::ItemRecord::Upsert(item)]),
                )
            },
        ))
    };
    let started = Instant::now();
    let mut samples: Vec<BTreeMap<String, f64>> = Vec::new();
    while Instant::now() < deadline {
        let mut sample = sample_metrics(&api).await?;
        sample.insert("seconds".into(), started.elapsed().as_secs_f64().round());
        println!(
            "{}",
            serde_json::json!({"bench": "soak_sample", "metrics": sample})
        );
        samples.push(sample);
        tokio::time::sleep(
            Duration::from_secs(args.sample_secs).min(deadline - Instant::now().min(deadline)),
        )
        .await;
    }
    let (searched, search_errors) = searches.await?;
    let (event_batches, event_errors) = events.await?;
    let (updates, update_errors) = items.await?;
    let last = sample_metrics(&api).await?;
    let first = samples.first().cloned().unwrap_or_default();
    let of = |s: &BTreeMap<String, f64>, k: &str| s.get(k).copied().unwrap_or(f64::NAN);
    let max = |k: &str| {
        samples
            .iter()
            .map(|s| of(s, k))
            .fold(of(&last, k), f64::max)
    };
    println!(
        "{}",
        serde_json::json!({
            "bench": "soak", "seconds": round(started.elapsed().as_secs_f64()),
            "searches": searched, "search_errors": search_errors,
            "events": event_batches * 10, "event_errors": event_errors,
            "item_updates": updates, "item_errors": update_errors,
            "rss_mib_first": round(of(&first, "process_resident_memory_bytes") / 1048576.0),
            "rss_mib_last": round(of(&last, "process_resident_memory_bytes") / 1048576.0),
            "rss_mib_max": round(max("process_resident_memory_bytes") / 1048576.0),
            "open_fds_first": of(&first, "process_open_fds"), "open_fds_last": of(&last, "process_open_fds"),
            "open_fds_max": max("process_open_fds"),
            "log_mib_last": round(of(&last, "shelf_log_bytes") / 1048576.0),
            "lag_events_last": of(&last, "shelf_ingest_lag_events"),
        })
    );
    Ok(())
}
