//! `shelf bench ingest`: the item and event jobs' throughput and item freshness, on the
//! embedded log and on Fluvio.

use super::*;

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
    /// Items per item-job batch (as `shelf serve --batch-size`).
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Most events per event-job batch (as `shelf serve --event-batch-size`).
    #[arg(long, default_value_t = shelf_engine::EVENT_BATCH_SIZE as u32,
        value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub event_batch_size: u32,
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
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Fluvio => "fluvio",
        }
    }
}

/// Appends payloads to one bench stream; returns the offset span.
pub(super) type Append = Box<dyn FnMut(&[Vec<u8>]) -> anyhow::Result<std::ops::Range<u64>> + Send>;

/// The item and event streams of one bench run: where records are appended, and how a
/// job reads them.
pub(super) struct BenchStreams {
    pub(super) source: BenchSource,
    pub(super) data: DataArgs,
    #[cfg(feature = "fluvio")]
    pub(super) fluvio: Option<(shelf_stream::FluvioCluster, [String; 2])>,
}

impl BenchStreams {
    pub(super) fn open(
        args: &IngestBenchArgs,
        source: BenchSource,
        data: DataArgs,
    ) -> anyhow::Result<Self> {
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

    pub(super) fn appender(&self, topic: Topic) -> anyhow::Result<Append> {
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

    pub(super) fn reader(&self, topic: Topic) -> anyhow::Result<Box<dyn shelf_stream::Source>> {
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

pub(super) async fn ingest(args: IngestBenchArgs) -> anyhow::Result<()> {
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

pub(super) async fn ingest_in(
    args: &IngestBenchArgs,
    streams: &BenchStreams,
) -> anyhow::Result<()> {
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
            args.event_batch_size as usize,
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
    let latencies: Arc<Mutex<Latencies>> = Arc::default();
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
                            latencies.record_ms((now - *at).as_secs_f64() * 1e3);
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
    let freshness = latencies.lock().expect("not poisoned");
    println!(
        "{}",
        serde_json::json!({
            "bench": "item_freshness", "source": transport, "items": freshness.len(),
            "rate_per_s": args.freshness_rate, "fsync": args.fsync,
            "p50_ms": round(freshness.quantile_ms(0.5)), "p99_ms": round(freshness.quantile_ms(0.99)),
            "max_ms": round(freshness.max_ms()),
        })
    );
    Ok(())
}
