//! The serving process's shared state: store, logs, retriever, jobs, limits and metrics.

use crate::metrics::Metrics;
use anyhow::Context;
use shelf_embed::Embedder;
use shelf_engine::{
    follow, impression_record, EventJob, ItemJob, Progress, RetrievalConfig, Retriever, StatsJob,
    EVENT_JOB, ITEM_JOB,
};
use shelf_index::{Backend, HnswIndex, IndexConfig};
use shelf_store::{DecayConfig, Impression, Store};
use shelf_stream::{Log, LogReader, Sink, Source};
use shelf_types::{ItemAttributes, ItemRecord, Ranker};
use std::collections::{HashSet, VecDeque};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify, Semaphore};

/// Where the jobs read records and the API writes them.
#[derive(Debug)]
pub enum Streams {
    /// The embedded durable log in the data directory.
    Embedded { items: Log, events: Log },
    /// Fluvio topics (`shelf serve --source fluvio`).
    #[cfg(feature = "fluvio")]
    Fluvio(FluvioTopics),
}

/// The Fluvio side of a node.
#[cfg(feature = "fluvio")]
#[derive(Clone, Debug)]
pub struct FluvioTopics {
    pub cluster: shelf_stream::FluvioCluster,
    /// The item topic consumed: `shelf-items` (embedded here) or `shelf-item-vectors`
    /// (vectors from the Arroyo item pipeline). The API always writes to `shelf-items`.
    pub item_topic: String,
    /// Partitions this node consumes (empty: all).
    pub partitions: Vec<u32>,
}

/// The item topic that carries vectors computed by the Arroyo item pipeline.
pub const ITEM_VECTORS_TOPIC: &str = "shelf-item-vectors";

/// The open streams of a running app.
enum Transport {
    Embedded {
        items: Arc<Mutex<Log>>,
        events: Arc<Mutex<Log>>,
    },
    #[cfg(feature = "fluvio")]
    Fluvio {
        topics: FluvioTopics,
        items: shelf_stream::FluvioSink,
        events: shelf_stream::FluvioSink,
    },
}

impl Transport {
    fn open(streams: Streams) -> anyhow::Result<Self> {
        Ok(match streams {
            Streams::Embedded { items, events } => Transport::Embedded {
                items: Arc::new(Mutex::new(items)),
                events: Arc::new(Mutex::new(events)),
            },
            #[cfg(feature = "fluvio")]
            Streams::Fluvio(topics) => Transport::Fluvio {
                items: topics.cluster.sink("shelf-items")?,
                events: topics.cluster.sink("shelf-events")?,
                topics,
            },
        })
    }
}

/// The retriever as the server runs it.
pub type ShelfRetriever = Retriever<Embedder, HnswIndex>;

/// Request limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body in bytes (413 above).
    pub max_body_bytes: usize,
    /// Most records in one `POST /v1/items` or `/v1/events` (413 above).
    pub max_batch: usize,
    /// Longest query in bytes (422 above).
    pub max_query_bytes: usize,
    /// Searches running at once; more are refused with 429.
    pub max_concurrent_searches: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 << 20,
            max_batch: 10_000,
            max_query_bytes: 1024,
            max_concurrent_searches: 64,
        }
    }
}

/// API keys: when neither set has a key, the API is open.
#[derive(Clone, Debug, Default)]
pub struct ApiKeys {
    /// Keys allowed to search and read profiles.
    pub read: HashSet<String>,
    /// Keys allowed everything (writes include reads).
    pub write: HashSet<String>,
}

/// What a request is allowed to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Read,
    Write,
}

impl ApiKeys {
    pub fn is_open(&self) -> bool {
        self.read.is_empty() && self.write.is_empty()
    }

    /// The scope a presented key has, if any. Every configured key is compared, each in
    /// constant time, so the answer's timing tells nothing about how close a guess came.
    pub fn scope_of(&self, key: &str) -> Option<Scope> {
        use subtle::ConstantTimeEq;
        let any = |set: &HashSet<String>| {
            set.iter().fold(subtle::Choice::from(0), |found, k| {
                found | k.as_bytes().ct_eq(key.as_bytes())
            })
        };
        let (write, read) = (any(&self.write), any(&self.read));
        if bool::from(write) {
            Some(Scope::Write)
        } else if bool::from(read) {
            Some(Scope::Read)
        } else {
            None
        }
    }
}

/// Everything the server is configured with.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub limits: Limits,
    pub api_keys: ApiKeys,
    pub retrieval: RetrievalConfig,
    pub decay: DecayConfig,
    pub batch_size: usize,
    /// How often the index is snapshotted while items change (also at shutdown).
    pub snapshot_interval: Duration,
    /// Impressions older than this are deleted.
    pub impression_retention: Duration,
    /// Retrain the ranker this often (`None`: never in the server; run `shelf train`).
    pub train_interval: Option<Duration>,
    /// Fewest new shown items since the last training before retraining.
    pub train_min_new_examples: usize,
    /// Graph implementation of the vector index.
    pub index_backend: Backend,
}

/// The shared state of a running server.
pub struct App {
    pub config: ServeConfig,
    pub store: Arc<Store>,
    pub metrics: Metrics,
    retriever: OnceLock<ShelfRetriever>,
    transport: Transport,
    item_wake: Arc<Notify>,
    event_wake: Arc<Notify>,
    impressions: mpsc::Sender<Impression>,
    impressions_rx: Mutex<Option<mpsc::Receiver<Impression>>>,
    /// Impressions queued but not yet appended to the log.
    impressions_pending: AtomicUsize,
    pub search_slots: Semaphore,
    /// Offsets of items appended through the API with their append time (for freshness).
    pending_items: Mutex<VecDeque<(u64, Instant)>>,
    ready: AtomicBool,
    /// The training report of the live learned model (none while the prior ranks).
    live_report: Mutex<Option<shelf_rank::TrainingReport>>,
    stop: watch::Sender<bool>,
    query_embedder: Embedder,
    item_embedder: Embedder,
    dim: usize,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("data_dir", &self.config.data_dir)
            .field("ready", &self.is_ready())
            .finish()
    }
}

/// How often the model watcher looks for a newly promoted model.
const MODEL_POLL: Duration = Duration::from_secs(10);

/// Capacity of the queue of impressions waiting to be appended to the log.
const IMPRESSION_QUEUE: usize = 16_384;

/// Largest log record the readers accept (the log's own default).
fn max_record_bytes() -> usize {
    shelf_stream::LogOptions::default().max_record_bytes
}

impl App {
    /// Opens the data directory. Nothing runs until [`App::start`].
    pub fn open(
        config: ServeConfig,
        store: Store,
        streams: Streams,
        query_embedder: Embedder,
        item_embedder: Embedder,
    ) -> anyhow::Result<Arc<Self>> {
        let (tx, rx) = mpsc::channel(IMPRESSION_QUEUE);
        let dim = query_embedder.dim();
        let slots = config.limits.max_concurrent_searches;
        Ok(Arc::new(Self {
            config,
            store: Arc::new(store),
            metrics: Metrics::default(),
            retriever: OnceLock::new(),
            transport: Transport::open(streams)?,
            item_wake: Arc::new(Notify::new()),
            event_wake: Arc::new(Notify::new()),
            impressions: tx,
            impressions_rx: Mutex::new(Some(rx)),
            impressions_pending: AtomicUsize::new(0),
            search_slots: Semaphore::new(slots),
            pending_items: Mutex::new(VecDeque::new()),
            ready: AtomicBool::new(false),
            live_report: Mutex::new(None),
            stop: watch::channel(false).0,
            query_embedder,
            item_embedder,
            dim,
        }))
    }

    /// True once the index is loaded and searches are answered.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn retriever(&self) -> Option<&ShelfRetriever> {
        self.retriever.get()
    }

    fn snapshot_dir(&self) -> PathBuf {
        self.config.data_dir.join("index")
    }

    fn log_dir(&self, topic: &str) -> PathBuf {
        self.config.data_dir.join("log").join(topic)
    }

    /// Loads the index (snapshot plus the item changes since, or a build from the store's
    /// vectors), then starts the item job, the event job, the impression writer, the
    /// impression expiry and the model watcher. Searches are ranked by the live model
    /// (`DATA/models/live.json`) when there is one, else by `fallback`. Returns the tasks,
    /// which end after [`App::shutdown`].
    pub async fn start(
        self: &Arc<Self>,
        fallback: Arc<dyn Ranker>,
    ) -> anyhow::Result<Vec<tokio::task::JoinHandle<anyhow::Result<()>>>> {
        let ranker: Arc<dyn Ranker> = match crate::models::load_live(&self.config.data_dir) {
            Ok(Some(model)) => {
                tracing::info!(version = %model.version, "ranking with the live model");
                *self.live_report.lock().expect("not poisoned") = Some(model.report.clone());
                Arc::new(model)
            }
            Ok(None) => fallback,
            Err(e) => {
                tracing::error!(error = %e, "the live model is unusable; ranking with the prior");
                fallback
            }
        };
        let mut tasks = Vec::new();

        // Events do not need the index: start them first.
        let app = Arc::clone(self);
        tasks.push(tokio::spawn(async move { app.run_event_job().await }));
        #[cfg(feature = "fluvio")]
        if let Transport::Fluvio { .. } = &self.transport {
            let app = Arc::clone(self);
            tasks.push(tokio::spawn(async move { app.run_stats_job().await }));
        }
        let app = Arc::clone(self);
        tasks.push(tokio::spawn(
            async move { app.run_impression_writer().await },
        ));
        let app = Arc::clone(self);
        tasks.push(tokio::spawn(
            async move { app.run_impression_expiry().await },
        ));
        let app = Arc::clone(self);
        tasks.push(tokio::spawn(async move { app.run_log_syncer().await }));

        let app = Arc::clone(self);
        let index = tokio::task::spawn_blocking(move || app.load_index())
            .await
            .context("index loading panicked")??;
        let retriever = Retriever::new(
            Arc::clone(&self.store),
            self.query_embedder.clone(),
            index.clone(),
            ranker,
            self.config.retrieval.clone(),
        );
        self.retriever
            .set(retriever)
            .map_err(|_| anyhow::anyhow!("the server was started twice"))?;
        self.ready.store(true, Ordering::Release);
        tracing::info!(items = index.len(), "index loaded; ready");

        let app = Arc::clone(self);
        tasks.push(tokio::spawn(async move { app.run_item_job(index).await }));
        let app = Arc::clone(self);
        tasks.push(tokio::spawn(async move { app.run_model_watcher().await }));
        if let Some(interval) = self.config.train_interval {
            let app = Arc::clone(self);
            tasks.push(tokio::spawn(async move { app.run_trainer(interval).await }));
        }
        Ok(tasks)
    }

    /// Retrains on the logged impressions every `interval` when enough new ones arrived;
    /// promotion (and the swap, by the watcher) happens only when the new model's validation
    /// AUC is not below the live one's.
    async fn run_trainer(self: Arc<Self>, interval: Duration) -> anyhow::Result<()> {
        let mut stop = self.stop.subscribe();
        let mut trained_on = 0usize;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return Ok(()),
            }
            let app = Arc::clone(&self);
            let min_new = self.config.train_min_new_examples;
            let result = tokio::task::spawn_blocking(
                move || -> anyhow::Result<Option<(usize, crate::models::TrainOutcome)>> {
                    let examples = crate::models::examples(&app.store)?.len();
                    if examples < trained_on + min_new {
                        return Ok(None);
                    }
                    let config = shelf_rank::TrainConfig::default();
                    let outcome = crate::models::train_and_promote(
                        &app.config.data_dir,
                        &app.store,
                        &config,
                        min_new,
                    )?;
                    Ok(Some((examples, outcome)))
                },
            )
            .await?;
            match result {
                Ok(None) => {}
                Ok(Some((examples, outcome))) => {
                    trained_on = examples;
                    tracing::info!(
                        version = %outcome.model.version,
                        matched_auc = outcome.model.report.validation_position_matched_auc,
                        incumbent_matched_auc = outcome.incumbent_position_matched_auc,
                        promoted = outcome.promoted,
                        "ranker retrained"
                    );
                }
                Err(e) => tracing::warn!(error = %e, "retraining failed"),
            }
        }
    }

    /// Swaps in `live.json` whenever it changes (promoted by `shelf train`), without
    /// stopping searches: each search uses the ranker it started with.
    async fn run_model_watcher(self: Arc<Self>) -> anyhow::Result<()> {
        let path = crate::models::dir(&self.config.data_dir).join(crate::models::LIVE);
        let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let mut seen = modified(&path);
        let mut stop = self.stop.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(MODEL_POLL) => {}
                _ = stop.changed() => return Ok(()),
            }
            let now = modified(&path);
            if now == seen {
                continue;
            }
            seen = now;
            match crate::models::load_live(&self.config.data_dir) {
                Ok(Some(model)) => {
                    tracing::info!(version = %model.version, auc = model.report.validation_auc, "live model swapped in");
                    *self.live_report.lock().expect("not poisoned") = Some(model.report.clone());
                    if let Some(r) = self.retriever() {
                        r.set_ranker(Arc::new(model));
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "the new live model is unusable; keeping the current one")
                }
            }
        }
    }

    /// Asks every job to stop after its current batch.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    fn index_config(&self) -> IndexConfig {
        IndexConfig {
            backend: self.config.index_backend,
            ..IndexConfig::new(self.dim)
        }
    }

    /// The index as of the item job's committed offset.
    fn load_index(&self) -> anyhow::Result<HnswIndex> {
        let committed = self.item_position()?;
        let dir = self.snapshot_dir();
        if dir.exists() {
            match HnswIndex::restore(&dir, self.index_config()) {
                // From Fluvio the index is restored only when nothing changed since.
                Ok((index, info))
                    if info.position == committed
                        || (info.position < committed && self.is_embedded()) =>
                {
                    let replayed = self.catch_up_index(&index, info.position, committed)?;
                    tracing::info!(
                        position = info.position,
                        replayed,
                        "index restored from its snapshot"
                    );
                    return Ok(index);
                }
                Ok((_, info)) => tracing::warn!(
                    snapshot = info.position,
                    committed,
                    "index snapshot is ahead of the store; rebuilding from the store"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "index snapshot unusable; rebuilding from the store")
                }
            }
        }
        let mut rows = Vec::new();
        self.store.for_each_item_vector(|item, vector| {
            let attrs = ItemAttributes::of(&item);
            rows.push((item.id, vector.vector, attrs));
        })?;
        tracing::info!(items = rows.len(), "building the index from the store");
        let index = HnswIndex::build(
            self.index_config(),
            rows.iter().map(|(id, v, a)| (id, &v[..], a.clone())),
        )?;
        Ok(index)
    }

    /// Brings a restored index from `from` to `to` on the item log: every item touched in
    /// between gets the store's current state (the store is already at `to`).
    fn catch_up_index(&self, index: &HnswIndex, from: u64, to: u64) -> anyhow::Result<u64> {
        if from >= to {
            return Ok(0);
        }
        let mut reader = LogReader::open(&self.log_dir("items"), max_record_bytes())?;
        reader.seek(0, from)?;
        let mut replayed = 0;
        let mut offset = from;
        while offset < to {
            let records = reader.poll(1024, Duration::ZERO)?;
            if records.is_empty() {
                break;
            }
            for record in records {
                offset = record.offset + 1;
                if record.offset >= to {
                    break;
                }
                let Ok(parsed) = serde_json::from_slice::<ItemRecord>(&record.payload) else {
                    continue; // a dead letter: it never reached the store
                };
                let id = parsed.id();
                match (
                    self.store.item(id.as_str())?,
                    self.store.vector(id.as_str())?,
                ) {
                    (Some(item), Some(vector)) => {
                        index.upsert(id, &vector.vector, ItemAttributes::of(&item))?;
                    }
                    _ => {
                        index.delete(id);
                    }
                }
                replayed += 1;
            }
        }
        Ok(replayed)
    }

    fn is_embedded(&self) -> bool {
        matches!(self.transport, Transport::Embedded { .. })
    }

    /// The source a job reads `topic` from.
    fn source(&self, topic: &str) -> anyhow::Result<Box<dyn Source>> {
        match &self.transport {
            Transport::Embedded { .. } => Ok(Box::new(LogReader::open(
                &self.log_dir(topic.trim_start_matches("shelf-")),
                max_record_bytes(),
            )?)),
            #[cfg(feature = "fluvio")]
            Transport::Fluvio { topics, .. } => {
                Ok(Box::new(topics.cluster.source(topic, &topics.partitions)?))
            }
        }
    }

    /// The item topic the item job reads.
    fn item_topic(&self) -> &str {
        match &self.transport {
            Transport::Embedded { .. } => "shelf-items",
            #[cfg(feature = "fluvio")]
            Transport::Fluvio { topics, .. } => &topics.item_topic,
        }
    }

    /// The item job's committed offsets summed over its partitions (the index snapshot's
    /// position).
    fn item_position(&self) -> anyhow::Result<u64> {
        let source = self.source(self.item_topic())?;
        let mut position = 0;
        for partition in source.partitions() {
            position += self.store.partition_offset(ITEM_JOB, partition)?;
        }
        Ok(position)
    }

    async fn run_item_job(self: Arc<Self>, index: HnswIndex) -> anyhow::Result<()> {
        let mut job = if self.item_topic() == ITEM_VECTORS_TOPIC {
            ItemJob::with_upstream_vectors(
                Arc::clone(&self.store),
                self.item_embedder.clone(),
                Some(index.clone()),
            )?
        } else {
            ItemJob::new(
                Arc::clone(&self.store),
                self.item_embedder.clone(),
                Some(index.clone()),
            )?
        };
        let mut source = self.source(self.item_topic())?;
        let mut last_snapshot = Instant::now();
        let mut snapshotted_at = self.item_position()?;
        let interval = self.config.snapshot_interval;
        let app = Arc::clone(&self);
        let index_for_batches = index.clone();
        let progress = follow(
            &mut job,
            &mut source,
            &self.store,
            self.config.batch_size,
            &self.item_wake,
            self.stop.subscribe(),
            move |_, progress: &Progress, _end| {
                app.observe_freshness(progress.offset);
                if last_snapshot.elapsed() >= interval && progress.offset > snapshotted_at {
                    app.snapshot(&index_for_batches, progress.offset);
                    last_snapshot = Instant::now();
                    snapshotted_at = progress.offset;
                }
            },
        )
        .await?;
        if progress.offset > snapshotted_at || !self.snapshot_dir().exists() {
            self.snapshot(&index, self.item_position()?);
        }
        Ok(())
    }

    fn snapshot(&self, index: &HnswIndex, position: u64) {
        let started = Instant::now();
        match index.snapshot(&self.snapshot_dir(), position) {
            Ok(info) => tracing::info!(
                position,
                live = info.live,
                seconds = started.elapsed().as_secs_f64(),
                "index snapshot written"
            ),
            Err(e) => tracing::error!(error = %e, "index snapshot failed"),
        }
    }

    async fn run_event_job(self: Arc<Self>) -> anyhow::Result<()> {
        let mut job = EventJob::new(Arc::clone(&self.store), self.config.decay.clone(), self.dim);
        let mut source = self.source("shelf-events")?;
        follow(
            &mut job,
            &mut source,
            &self.store,
            self.config.batch_size,
            &self.event_wake,
            self.stop.subscribe(),
            |_, _, _| {},
        )
        .await?;
        Ok(())
    }

    /// Applies `shelf-item-stats` (windowed item activity from Arroyo).
    #[cfg(feature = "fluvio")]
    async fn run_stats_job(self: Arc<Self>) -> anyhow::Result<()> {
        let mut job = StatsJob::new(Arc::clone(&self.store));
        let mut source = self.source("shelf-item-stats")?;
        follow(
            &mut job,
            &mut source,
            &self.store,
            self.config.batch_size,
            &Notify::new(),
            self.stop.subscribe(),
            |_, _, _| {},
        )
        .await?;
        Ok(())
    }

    /// Appends queued impressions to the events log in batches.
    async fn run_impression_writer(self: Arc<Self>) -> anyhow::Result<()> {
        let Some(mut rx) = self.impressions_rx.lock().expect("not poisoned").take() else {
            return Ok(());
        };
        let mut stop = self.stop.subscribe();
        let mut buffer = Vec::new();
        loop {
            tokio::select! {
                n = rx.recv_many(&mut buffer, 4096) => {
                    if n == 0 {
                        return Ok(());
                    }
                }
                _ = stop.changed() => {
                    // Drain what is queued, then stop.
                    while let Ok(impression) = rx.try_recv() {
                        buffer.push(impression);
                    }
                    if !buffer.is_empty() {
                        self.append_events(buffer.iter().map(impression_record).collect()).await?;
                        self.impressions_pending.fetch_sub(buffer.len(), Ordering::AcqRel);
                    }
                    return Ok(());
                }
            }
            let payloads: Vec<Vec<u8>> = buffer.drain(..).map(|i| impression_record(&i)).collect();
            let n = payloads.len();
            if let Err(e) = self.append_events(payloads).await {
                tracing::error!(error = %e, "appending impressions failed; they are lost");
            }
            self.impressions_pending.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// Deletes impressions older than the retention, hourly.
    async fn run_impression_expiry(self: Arc<Self>) -> anyhow::Result<()> {
        let mut stop = self.stop.subscribe();
        loop {
            let retention = self.config.impression_retention;
            let now_ms =
                (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
            let cutoff = shelf_engine::request_id_floor(now_ms - retention.as_millis() as i64);
            let store = Arc::clone(&self.store);
            match tokio::task::spawn_blocking(move || store.expire_impressions(&cutoff)).await? {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "old impressions deleted"),
                Err(e) => tracing::error!(error = %e, "expiring impressions failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                _ = stop.changed() => return Ok(()),
            }
        }
    }

    /// Queues an impression for the log; when the queue is full it is dropped and counted.
    pub fn log_impression(&self, impression: Impression) {
        self.impressions_pending.fetch_add(1, Ordering::AcqRel);
        if self.impressions.try_send(impression).is_err() {
            self.impressions_pending.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!("impression queue full; an impression was dropped");
        }
    }

    /// Appends item records durably; returns their offsets.
    pub async fn append_items(&self, payloads: Vec<Vec<u8>>) -> anyhow::Result<Range<u64>> {
        let n = payloads.len() as u64;
        let started = Instant::now();
        let range = match &self.transport {
            Transport::Embedded { items, .. } => append(items, payloads).await?,
            #[cfg(feature = "fluvio")]
            Transport::Fluvio { items, .. } => produce(items, payloads, "id").await?,
        };
        if self.is_embedded() {
            let mut pending = self.pending_items.lock().expect("not poisoned");
            // Bounded: freshness is sampled, never a memory leak when the job lags.
            if pending.len() < 100_000 {
                pending.push_back((range.end - 1, started));
            }
        }
        self.metrics
            .items_appended
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        self.item_wake.notify_one();
        Ok(range)
    }

    /// Appends events durably; returns their offsets.
    pub async fn append_events(&self, payloads: Vec<Vec<u8>>) -> anyhow::Result<Range<u64>> {
        let range = match &self.transport {
            Transport::Embedded { events, .. } => append(events, payloads).await?,
            #[cfg(feature = "fluvio")]
            Transport::Fluvio { events, .. } => produce(events, payloads, "user_id").await?,
        };
        self.event_wake.notify_one();
        Ok(range)
    }

    fn observe_freshness(&self, applied_up_to: u64) {
        let mut pending = self.pending_items.lock().expect("not poisoned");
        while let Some(&(offset, appended)) = pending.front() {
            if offset >= applied_up_to {
                break;
            }
            self.metrics.item_freshness.observe(appended.elapsed());
            pending.pop_front();
        }
    }

    /// Gauges read at scrape time: index size, tombstones, lag and dead letters.
    pub fn gauges(&self) -> Vec<(&'static str, &'static str, f64)> {
        let mut out = vec![(
            "shelf_ready",
            "1 once the index is loaded and searches are answered.",
            f64::from(u8::from(self.is_ready())),
        )];
        if let Some(r) = self.retriever() {
            let stats = r.index().stats();
            let (hits, misses) = r.cache_counts();
            out.extend([
                (
                    "shelf_index_items",
                    "Items searchable in the vector index.",
                    stats.live as f64,
                ),
                (
                    "shelf_index_graph_points",
                    "Points in the HNSW graph, live and tombstoned.",
                    stats.graph_points as f64,
                ),
                (
                    "shelf_index_tombstones",
                    "Deleted graph nodes still linked (reused by later inserts, or cleared by a rebuild).",
                    stats.tombstones as f64,
                ),
                (
                    "shelf_index_memory_bytes",
                    "Bytes held by the vector index's graph (vectors, links, per-node state).",
                    stats.memory_bytes as f64,
                ),
                (
                    "shelf_index_rebuilds",
                    "Background graph rebuilds completed.",
                    stats.rebuilds as f64,
                ),
                (
                    "shelf_query_cache_hits",
                    "Query embeddings served from the cache.",
                    hits as f64,
                ),
                (
                    "shelf_query_cache_misses",
                    "Query embeddings computed.",
                    misses as f64,
                ),
            ]);
        }
        let live = self.live_report.lock().expect("not poisoned");
        out.extend([
            (
                "shelf_model_learned",
                "1 when a trained model ranks searches, 0 while the hand-set prior does.",
                f64::from(u8::from(live.is_some())),
            ),
            (
                "shelf_model_validation_auc",
                "Validation AUC of the live trained model (0 while the prior ranks).",
                live.as_ref().map_or(0.0, |r| r.validation_auc),
            ),
            (
                "shelf_model_position_matched_auc",
                "Validation AUC of the live trained model over pairs shown at the same position (0 while the prior ranks).",
                live.as_ref().map_or(0.0, |r| r.validation_position_matched_auc),
            ),
        ]);
        drop(live);
        let Transport::Embedded { items, events } = &self.transport else {
            return out; // Fluvio's lag is read from the cluster (`fluvio partition list`).
        };
        let items_end = items.lock().map(|l| l.next_offset()).unwrap_or(0);
        let events_end = events.lock().map(|l| l.next_offset()).unwrap_or(0);
        let items_at = self.store.offset(ITEM_JOB).unwrap_or(0);
        let events_at = self.store.offset(EVENT_JOB).unwrap_or(0);
        out.extend([
            (
                "shelf_ingest_lag_items",
                "Item records in the log not yet applied.",
                items_end.saturating_sub(items_at) as f64,
            ),
            (
                "shelf_ingest_lag_events",
                "Events (and impressions) in the log not yet applied.",
                events_end.saturating_sub(events_at) as f64,
            ),
            (
                "shelf_dead_letters_items",
                "Item records rejected by the item job.",
                self.store.dead_letter_count(ITEM_JOB).unwrap_or(0) as f64,
            ),
            (
                "shelf_dead_letters_events",
                "Events rejected by the event job.",
                self.store.dead_letter_count(EVENT_JOB).unwrap_or(0) as f64,
            ),
        ]);
        out
    }

    /// Waits (at most `timeout`) until the event job has applied everything appended to
    /// the event stream so far (the embedded log, or every partition of `shelf-events` this
    /// node applies), impressions still queued included. Returns whether it has.
    pub async fn drain_events(&self, timeout: Duration) -> anyhow::Result<bool> {
        let deadline = Instant::now() + timeout;
        // Queued impressions are appended within milliseconds; wait for them first.
        while self.impressions_pending.load(Ordering::Acquire) > 0 {
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The end of every partition of the event stream this node applies, now: whatever
        // was sent before lies below it.
        let ends: Vec<(Option<u32>, u64)> = match &self.transport {
            Transport::Embedded { events, .. } => {
                vec![(None, events.lock().map(|l| l.next_offset()).unwrap_or(0))]
            }
            #[cfg(feature = "fluvio")]
            Transport::Fluvio { topics, .. } => {
                let topics = topics.clone();
                tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(Option<u32>, u64)>> {
                    let count = topics.cluster.partition_count("shelf-events")?.unwrap_or(0);
                    let partitions: Vec<u32> = if topics.partitions.is_empty() {
                        (0..count).collect()
                    } else {
                        topics.partitions.clone()
                    };
                    partitions
                        .into_iter()
                        .map(|p| Ok((Some(p), topics.cluster.end_offset("shelf-events", p)?)))
                        .collect()
                })
                .await??
            }
        };
        for (partition, end) in ends {
            loop {
                let applied = match partition {
                    None => self.store.offset(EVENT_JOB)?,
                    Some(p) => self.store.partition_offset(EVENT_JOB, p)?,
                };
                if applied >= end {
                    break;
                }
                if Instant::now() >= deadline {
                    return Ok(false);
                }
                self.event_wake.notify_one();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Ok(true)
    }

    /// Item records ever appended to the item log (its next offset).
    pub fn items_appended_ever(&self) -> u64 {
        match &self.transport {
            Transport::Embedded { items, .. } => items.lock().map(|l| l.next_offset()).unwrap_or(0),
            #[cfg(feature = "fluvio")]
            Transport::Fluvio { .. } => 0,
        }
    }

    /// A receiver that turns true at shutdown.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// With `--fsync Nms`, fsyncs the embedded logs every N ms, so an accepted record is on
    /// disk within N ms even when nothing is appended after it (the log itself syncs only
    /// on appends).
    async fn run_log_syncer(self: Arc<Self>) -> anyhow::Result<()> {
        let Transport::Embedded { items, .. } = &self.transport else {
            return Ok(());
        };
        let Some(every) = items.lock().expect("not poisoned").sync_interval() else {
            return Ok(());
        };
        let mut stop = self.stopping();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return Ok(()),
            }
            let app = Arc::clone(&self);
            tokio::task::spawn_blocking(move || app.sync_logs())
                .await
                .context("the log syncer panicked")??;
        }
    }

    /// Whether either embedded log holds appended records not yet fsynced.
    pub fn logs_unsynced(&self) -> bool {
        match &self.transport {
            Transport::Embedded { items, events } => {
                items.lock().expect("not poisoned").has_unsynced()
                    || events.lock().expect("not poisoned").has_unsynced()
            }
            #[cfg(feature = "fluvio")]
            Transport::Fluvio { .. } => false,
        }
    }

    /// Flushes the logs to disk.
    pub fn sync_logs(&self) -> anyhow::Result<()> {
        if let Transport::Embedded { items, events } = &self.transport {
            items.lock().expect("not poisoned").sync()?;
            events.lock().expect("not poisoned").sync()?;
        }
        Ok(())
    }
}

async fn append(log: &Arc<Mutex<Log>>, payloads: Vec<Vec<u8>>) -> anyhow::Result<Range<u64>> {
    let log = Arc::clone(log);
    tokio::task::spawn_blocking(move || {
        let mut log = log
            .lock()
            .map_err(|_| anyhow::anyhow!("log lock poisoned"))?;
        Ok(log.append(&payloads)?)
    })
    .await?
}

/// The partitioning key of each JSON record: the string value of its `field` (`id` for
/// items, `user_id` for events), so that the records of one item or one user stay in one
/// partition, in order; `None` where the field is missing (any partition).
pub fn record_keys(payloads: &[Vec<u8>], field: &str) -> Vec<Option<Vec<u8>>> {
    payloads
        .iter()
        .map(|p| {
            serde_json::from_slice::<serde_json::Value>(p)
                .ok()
                .and_then(|v| v.get(field)?.as_str().map(|k| k.as_bytes().to_vec()))
        })
        .collect()
}

/// Produces `payloads` to Fluvio, each keyed by its `key_field` (records of one item, or
/// one user, stay in one partition and in order).
#[cfg(feature = "fluvio")]
async fn produce(
    sink: &shelf_stream::FluvioSink,
    payloads: Vec<Vec<u8>>,
    key_field: &'static str,
) -> anyhow::Result<Range<u64>> {
    let sink = sink.clone();
    tokio::task::spawn_blocking(move || {
        let keys = record_keys(&payloads, key_field);
        let placed = sink.produce(&keys, &payloads)?;
        Ok(shelf_stream::offset_span(&placed))
    })
    .await?
}
