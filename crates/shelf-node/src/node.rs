//! The node: store, index, embedders and streams, the supervised jobs that apply the
//! streams, index recovery and snapshots, the impression pipeline, training, model swaps
//! and expiry.

// Without Fluvio the embedded log is the only transport.
#![cfg_attr(not(feature = "fluvio"), allow(irrefutable_let_patterns))]

use crate::config::NodeConfig;
use crate::metrics::NodeMetrics;
use crate::streams::{self, Streams, Transport, ITEM_VECTORS_TOPIC};
use crate::supervisor::{spawn_supervised, JobBoard};
use anyhow::Context;
use shelf_embed::Embedder;
use shelf_engine::{
    follow, impression_record, EngineError, EventJob, ItemJob, Job, Progress, Retriever, StatsJob,
    EVENT_JOB, ITEM_JOB, STATS_JOB,
};
use shelf_index::{HnswIndex, IndexConfig};
use shelf_store::{Impression, Store};
use shelf_stream::{LogReader, Source};
use shelf_types::{ItemAttributes, ItemRecord, Ranker};
use std::collections::{HashSet, VecDeque};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify};

/// The retriever as a node runs it.
pub type ShelfRetriever = Retriever<Embedder, HnswIndex>;

/// How often the model watcher looks for a newly promoted model.
const MODEL_POLL: Duration = Duration::from_secs(10);

/// Dead letters kept per job and partition (the newest); older ones are deleted hourly.
/// Their total count (`shelf_dead_letters_*`) still counts every one.
pub const DEAD_LETTERS_KEPT: usize = 100_000;

/// How often the embedded logs' retention is applied.
const LOG_RETENTION_EVERY: Duration = Duration::from_secs(300);

/// Capacity of the queue of impressions waiting to be appended to the stream.
const IMPRESSION_QUEUE: usize = 16_384;

/// The engine core of one process. Nothing runs until [`Node::start`].
pub struct Node {
    pub config: NodeConfig,
    pub store: Arc<Store>,
    pub metrics: NodeMetrics,
    /// The jobs' states (shown by `/ready`, `/health` and `/metrics`).
    pub jobs: Arc<JobBoard>,
    retriever: OnceLock<ShelfRetriever>,
    transport: Transport,
    item_wake: Arc<Notify>,
    event_wake: Arc<Notify>,
    impressions: mpsc::Sender<Impression>,
    impressions_rx: Mutex<Option<mpsc::Receiver<Impression>>>,
    /// Impressions queued but not yet appended to the stream.
    impressions_pending: AtomicUsize,
    /// Offsets of items appended here with their append time (for freshness).
    pending_items: Mutex<VecDeque<(u64, Instant)>>,
    /// The item position of the newest index snapshot on disk (or of the index as built).
    snapshot_position: AtomicU64,
    ready: AtomicBool,
    /// The training report of the live learned model (none while the prior ranks).
    live_report: Mutex<Option<shelf_rank::TrainingReport>>,
    stop: watch::Sender<bool>,
    query_embedder: Embedder,
    item_embedder: Embedder,
    dim: usize,
    /// Jobs armed to panic once after their next batch (fault tests only).
    panic_once: Mutex<HashSet<&'static str>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("data_dir", &self.config.data_dir)
            .field("ready", &self.is_ready())
            .finish()
    }
}

/// The threads and tasks of a started node; [`NodeTasks::join`] waits for all of them.
#[derive(Debug, Default)]
pub struct NodeTasks {
    threads: Vec<(&'static str, std::thread::JoinHandle<()>)>,
    tasks: Vec<(&'static str, tokio::task::JoinHandle<anyhow::Result<()>>)>,
}

impl NodeTasks {
    fn spawn(
        &mut self,
        name: &'static str,
        task: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        self.tasks.push((name, tokio::spawn(task)));
    }

    /// Waits (after [`Node::shutdown`]) until every job and task has ended. Every one is
    /// waited for even when some failed; returns the first failure.
    pub async fn join(self) -> anyhow::Result<()> {
        let mut first_error = None;
        for (name, task) in self.tasks {
            let result = match task.await {
                Ok(result) => result,
                Err(e) => Err(anyhow::anyhow!("{name} panicked: {e}")),
            };
            if let Err(e) = result {
                tracing::error!(task = name, error = %e, "task failed");
                first_error.get_or_insert(e.context(name));
            }
        }
        for (name, thread) in self.threads {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!(job = name, "job thread panicked");
                first_error.get_or_insert(anyhow::anyhow!("the {name} thread panicked"));
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Node {
    /// Opens a node over `store` and `streams`. Queries are embedded by `query_embedder`
    /// and catalog items by `item_embedder` (separate workers, so catalog embedding never
    /// delays a query).
    pub fn open(
        config: NodeConfig,
        store: Store,
        streams: Streams,
        query_embedder: Embedder,
        item_embedder: Embedder,
    ) -> anyhow::Result<Arc<Self>> {
        let (tx, rx) = mpsc::channel(IMPRESSION_QUEUE);
        let dim = query_embedder.dim();
        Ok(Arc::new(Self {
            config,
            store: Arc::new(store),
            metrics: NodeMetrics::default(),
            jobs: Arc::default(),
            retriever: OnceLock::new(),
            transport: Transport::open(streams)?,
            item_wake: Arc::new(Notify::new()),
            event_wake: Arc::new(Notify::new()),
            impressions: tx,
            impressions_rx: Mutex::new(Some(rx)),
            impressions_pending: AtomicUsize::new(0),
            pending_items: Mutex::new(VecDeque::new()),
            snapshot_position: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            live_report: Mutex::new(None),
            stop: watch::channel(false).0,
            query_embedder,
            item_embedder,
            dim,
            panic_once: Mutex::new(HashSet::new()),
        }))
    }

    /// True once the index is loaded and searches are answered.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn retriever(&self) -> Option<&ShelfRetriever> {
        self.retriever.get()
    }

    /// The training report of the live learned model (none while the prior ranks).
    pub fn live_report(&self) -> Option<shelf_rank::TrainingReport> {
        self.live_report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn snapshot_dir(&self) -> PathBuf {
        self.config.data_dir.join("index")
    }

    /// Loads the index (snapshot plus the item changes since, or a build from the store's
    /// vectors), then starts the item job, the event job (and the stats job on Fluvio) on
    /// supervised threads of their own, and the impression writer, impression expiry, log
    /// syncer, model watcher and trainer as tasks. Searches are ranked by the live model
    /// (`DATA/models/live.json`) when there is one, else by `fallback`. Everything ends
    /// after [`Node::shutdown`]; wait for it with [`NodeTasks::join`].
    pub async fn start(self: &Arc<Self>, fallback: Arc<dyn Ranker>) -> anyhow::Result<NodeTasks> {
        let data_dir = self.config.data_dir.clone();
        let live = tokio::task::spawn_blocking(move || crate::models::load_live(&data_dir))
            .await
            .context("loading the live model panicked")?;
        let ranker: Arc<dyn Ranker> = match live {
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
        let mut tasks = NodeTasks::default();

        // Events do not need the index: start them first.
        let node = Arc::clone(self);
        tasks.threads.push((
            EVENT_JOB,
            self.supervise(EVENT_JOB, move |rt, _| rt.block_on(node.run_event_job()))?,
        ));
        if !self.is_embedded() {
            let node = Arc::clone(self);
            tasks.threads.push((
                STATS_JOB,
                self.supervise(STATS_JOB, move |rt, _| rt.block_on(node.run_stats_job()))?,
            ));
        }
        tasks.spawn("impression writer", self.clone().run_impression_writer());
        tasks.spawn("impression expiry", self.clone().run_impression_expiry());
        tasks.spawn("log syncer", self.clone().run_log_syncer());
        tasks.spawn("log retention", self.clone().run_log_retention());

        let node = Arc::clone(self);
        let index = tokio::task::spawn_blocking(move || node.load_index())
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
            .map_err(|_| anyhow::anyhow!("the node was started twice"))?;
        self.ready.store(true, Ordering::Release);
        tracing::info!(items = index.len(), "index loaded; ready");

        let node = Arc::clone(self);
        tasks.threads.push((
            ITEM_JOB,
            self.supervise(ITEM_JOB, move |rt, attempt| {
                if attempt > 0 {
                    node.repair_index_after_failure(&index)?;
                }
                rt.block_on(node.run_item_job(&index))
            })?,
        ));
        tasks.spawn("model watcher", self.clone().run_model_watcher());
        if let Some(interval) = self.config.train_interval {
            tasks.spawn("trainer", self.clone().run_trainer(interval));
        }
        Ok(tasks)
    }

    fn supervise(
        &self,
        name: &'static str,
        job: impl FnMut(&tokio::runtime::Runtime, u64) -> anyhow::Result<()> + Send + 'static,
    ) -> anyhow::Result<std::thread::JoinHandle<()>> {
        spawn_supervised(name, Arc::clone(&self.jobs), self.stop.subscribe(), job)
            .with_context(|| format!("starting the {name} thread"))
    }

    /// Arms `job` (`item-job`, `event-job`) to panic once, right after its next committed
    /// batch: fault tests use it to check that the supervisor restarts it and that nothing
    /// is lost or applied twice.
    #[doc(hidden)]
    pub fn panic_once_after_next_batch(&self, job: &'static str) {
        self.panic_once
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job);
    }

    fn maybe_panic(&self, job: &'static str) {
        let armed = self
            .panic_once
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(job);
        if armed {
            panic!("fault injected into {job}");
        }
    }

    /// What every job's `follow` callback records: a committed batch marks the job
    /// running, a failed one marks it down (with the error) until a batch succeeds.
    fn observe_batch(&self, job: &'static str, outcome: &Result<u64, &EngineError>) {
        match outcome {
            Ok(_) => self.jobs.running(job),
            Err(e) => self
                .jobs
                .failed(job, format!("batch failed: {e}; retrying")),
        }
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
            let node = Arc::clone(&self);
            let min_new = self.config.train_min_new_examples;
            let result = tokio::task::spawn_blocking(
                move || -> anyhow::Result<Option<(usize, crate::models::TrainOutcome)>> {
                    let examples = crate::models::count_examples(&node.store)?;
                    if examples < trained_on + min_new {
                        return Ok(None);
                    }
                    let config = shelf_rank::TrainConfig::default();
                    let outcome = crate::models::train_and_promote(
                        &node.config.data_dir,
                        &node.store,
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
            let data_dir = self.config.data_dir.clone();
            let loaded = tokio::task::spawn_blocking(move || crate::models::load_live(&data_dir))
                .await
                .context("loading the live model panicked")?;
            match loaded {
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

    /// Asks every job and task to stop after its current batch.
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
                    self.snapshot_position
                        .store(info.position, Ordering::Release);
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
        let index = self.build_index()?;
        self.snapshot_position.store(committed, Ordering::Release);
        Ok(index)
    }

    /// A new index of every vector in the store.
    fn build_index(&self) -> anyhow::Result<HnswIndex> {
        let mut rows = Vec::new();
        self.store.for_each_item_vector(|item, vector| {
            let attrs = ItemAttributes::of(&item);
            rows.push((item.id, vector.vector, attrs));
        })?;
        tracing::info!(items = rows.len(), "building the index from the store");
        Ok(HnswIndex::build(
            self.index_config(),
            rows.iter().map(|(id, v, a)| (id, &v[..], a.clone())),
        )?)
    }

    /// Brings a restored index from `from` to `to` on the item log: every item touched in
    /// between gets the store's current state (the store is already at `to`).
    fn catch_up_index(&self, index: &HnswIndex, from: u64, to: u64) -> anyhow::Result<u64> {
        if from >= to {
            return Ok(0);
        }
        let mut reader = LogReader::open(
            &streams::log_dir(&self.config.data_dir, "shelf-items"),
            streams::max_record_bytes(),
        )?;
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

    /// After the item job failed or panicked, its last batch may be committed in the
    /// store but not (wholly) applied to the index. On the embedded log the items touched
    /// since the last snapshot are replayed from the store into the index. On Fluvio (no
    /// replayable log here) every stored vector is written to the index again.
    fn repair_index_after_failure(&self, index: &HnswIndex) -> anyhow::Result<()> {
        let committed = self.item_position()?;
        if self.is_embedded() {
            let from = self.snapshot_position.load(Ordering::Acquire);
            let replayed = self.catch_up_index(index, from, committed)?;
            tracing::info!(
                from,
                to = committed,
                replayed,
                "index repaired from the log"
            );
        } else {
            let mut rewritten = 0u64;
            self.store.for_each_item_vector(|item, vector| {
                let attrs = ItemAttributes::of(&item);
                if index.upsert(&item.id, &vector.vector, attrs).is_ok() {
                    rewritten += 1;
                }
            })?;
            tracing::info!(rewritten, "index repaired from the store");
        }
        Ok(())
    }

    fn is_embedded(&self) -> bool {
        matches!(self.transport, Transport::Embedded { .. })
    }

    fn source(&self, topic: &str) -> anyhow::Result<Box<dyn Source>> {
        self.transport.source(&self.config.data_dir, topic)
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

    /// The item job (on its own thread): applies the item topic to the store and the
    /// index, and snapshots the index every `snapshot_interval` while items change, only
    /// when the index holds every committed change.
    async fn run_item_job(self: &Arc<Self>, index: &HnswIndex) -> anyhow::Result<()> {
        let store = Arc::clone(&self.store);
        let embedder = self.item_embedder.clone();
        let mut job = if self.item_topic() == ITEM_VECTORS_TOPIC {
            ItemJob::with_upstream_vectors(store, embedder, Some(index.clone()))?
        } else {
            ItemJob::new(store, embedder, Some(index.clone()))?
        };
        let mut source = self.source(self.item_topic())?;
        let mut last_snapshot = Instant::now();
        let interval = self.config.snapshot_interval;
        self.jobs.running(ITEM_JOB);
        let progress = follow(
            &mut job,
            &mut source,
            &self.store,
            self.config.batch_size,
            &self.item_wake,
            self.stop.subscribe(),
            |job: &ItemJob<_, _>, progress: &Progress, outcome| {
                self.observe_batch(ITEM_JOB, &outcome);
                if outcome.is_err() {
                    return;
                }
                self.observe_freshness(progress.offset);
                if last_snapshot.elapsed() >= interval
                    && progress.offset > self.snapshot_position.load(Ordering::Acquire)
                    && job.index_in_step()
                {
                    self.snapshot(index, progress.offset);
                    last_snapshot = Instant::now();
                }
                self.maybe_panic(ITEM_JOB);
            },
        )
        .await?;
        if job.index_in_step()
            && (progress.offset > self.snapshot_position.load(Ordering::Acquire)
                || !self.snapshot_dir().exists())
        {
            self.snapshot(index, self.item_position()?);
        }
        Ok(())
    }

    fn snapshot(&self, index: &HnswIndex, position: u64) {
        let started = Instant::now();
        match index.snapshot(&self.snapshot_dir(), position) {
            Ok(info) => {
                self.snapshot_position.store(position, Ordering::Release);
                tracing::info!(
                    position,
                    live = info.live,
                    seconds = started.elapsed().as_secs_f64(),
                    "index snapshot written"
                )
            }
            Err(e) => tracing::error!(error = %e, "index snapshot failed"),
        }
    }

    /// The event job (on its own thread): applies the event topic to profiles, item
    /// statistics, co-visitation and trending lists, and impression labels.
    async fn run_event_job(self: &Arc<Self>) -> anyhow::Result<()> {
        let job = EventJob::new(Arc::clone(&self.store), self.config.decay.clone(), self.dim);
        self.follow_topic(job, "shelf-events", &self.event_wake)
            .await
    }

    /// Applies `shelf-item-stats` (windowed item activity from Arroyo; Fluvio only).
    async fn run_stats_job(self: &Arc<Self>) -> anyhow::Result<()> {
        let job = StatsJob::new(Arc::clone(&self.store));
        self.follow_topic(job, "shelf-item-stats", &Notify::new())
            .await
    }

    /// Runs `job` over `topic` until the node stops, recording its batches on the board
    /// under the job's name.
    async fn follow_topic<J: Job>(
        self: &Arc<Self>,
        mut job: J,
        topic: &str,
        wake: &Notify,
    ) -> anyhow::Result<()> {
        let name = job.name();
        let mut source = self.source(topic)?;
        self.jobs.running(name);
        follow(
            &mut job,
            &mut source,
            &self.store,
            self.config.batch_size,
            wake,
            self.stop.subscribe(),
            |_, _, outcome| {
                self.observe_batch(name, &outcome);
                if outcome.is_ok() {
                    self.maybe_panic(name);
                }
            },
        )
        .await?;
        Ok(())
    }

    /// Appends queued impressions to the event stream in batches.
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

    /// Deletes impressions older than the retention and dead letters beyond the newest
    /// [`DEAD_LETTERS_KEPT`] of each job's partition, hourly.
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
            for job in [ITEM_JOB, EVENT_JOB, STATS_JOB] {
                let store = Arc::clone(&self.store);
                let pruned = tokio::task::spawn_blocking(move || {
                    store.prune_dead_letters(job, DEAD_LETTERS_KEPT)
                })
                .await?;
                match pruned {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(job, deleted = n, "old dead letters deleted"),
                    Err(e) => tracing::error!(job, error = %e, "pruning dead letters failed"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                _ = stop.changed() => return Ok(()),
            }
        }
    }

    /// Queues an impression for the event stream; when the queue is full it is dropped
    /// and counted.
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
            Transport::Embedded { items, .. } => items.append(payloads).await?,
            #[cfg(feature = "fluvio")]
            Transport::Fluvio { items, .. } => streams::produce(items, payloads, "id").await?,
        };
        if self.is_embedded() {
            let mut pending = self.pending_items.lock().expect("not poisoned");
            // Bounded: freshness is sampled, never a memory leak when the job lags.
            if pending.len() < 100_000 {
                pending.push_back((range.end - 1, started));
            }
        }
        self.metrics.items_appended.fetch_add(n, Ordering::Relaxed);
        self.item_wake.notify_one();
        Ok(range)
    }

    /// Appends events durably; returns their offsets.
    pub async fn append_events(&self, payloads: Vec<Vec<u8>>) -> anyhow::Result<Range<u64>> {
        let range = match &self.transport {
            Transport::Embedded { events, .. } => events.append(payloads).await?,
            #[cfg(feature = "fluvio")]
            Transport::Fluvio { events, .. } => {
                streams::produce(events, payloads, "user_id").await?
            }
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

    /// Gauges read at scrape time: readiness, index size, cache, model, lag and dead
    /// letters (name, help, value). Nothing here waits for a log append.
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
        let live = self.live_report();
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
        let Transport::Embedded { items, events } = &self.transport else {
            return out; // Fluvio's lag is read from the cluster (`fluvio partition list`).
        };
        let items_at = self.store.offset(ITEM_JOB).unwrap_or(0);
        let events_at = self.store.offset(EVENT_JOB).unwrap_or(0);
        let log_bytes: u64 = ["shelf-items", "shelf-events"]
            .iter()
            .filter_map(|t| std::fs::read_dir(streams::log_dir(&self.config.data_dir, t)).ok())
            .flatten()
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum();
        out.extend([
            (
                "shelf_log_bytes",
                "Bytes of the embedded item and event logs on disk (bounded by the log retention).",
                log_bytes as f64,
            ),
            (
                "shelf_ingest_lag_items",
                "Item records in the log not yet applied.",
                items.next_offset().saturating_sub(items_at) as f64,
            ),
            (
                "shelf_ingest_lag_events",
                "Events (and impressions) in the log not yet applied.",
                events.next_offset().saturating_sub(events_at) as f64,
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
            Transport::Embedded { events, .. } => vec![(None, events.next_offset())],
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
                let store = Arc::clone(&self.store);
                let applied = tokio::task::spawn_blocking(move || match partition {
                    None => store.offset(EVENT_JOB),
                    Some(p) => store.partition_offset(EVENT_JOB, p),
                })
                .await??;
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

    /// Item records in the embedded item log not yet applied (embedded and indexed); `None`
    /// on Fluvio, whose lag is read from the cluster.
    pub fn pending_items(&self) -> Option<u64> {
        match &self.transport {
            Transport::Embedded { items, .. } => Some(
                items
                    .next_offset()
                    .saturating_sub(self.store.offset(ITEM_JOB).unwrap_or(0)),
            ),
            #[cfg(feature = "fluvio")]
            Transport::Fluvio { .. } => None,
        }
    }

    /// Item records ever appended to the embedded item log (its next offset; 0 on Fluvio).
    pub fn items_appended_ever(&self) -> u64 {
        match &self.transport {
            Transport::Embedded { items, .. } => items.next_offset(),
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
        let Some(every) = items.lock().sync_interval() else {
            return Ok(());
        };
        let mut stop = self.stopping();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return Ok(()),
            }
            let node = Arc::clone(&self);
            tokio::task::spawn_blocking(move || node.sync_logs())
                .await
                .context("the log syncer panicked")??;
        }
    }

    /// Applies the log retention every 5 minutes (embedded log only).
    async fn run_log_retention(self: Arc<Self>) -> anyhow::Result<()> {
        if !self.is_embedded() {
            return Ok(());
        }
        let mut stop = self.stopping();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(LOG_RETENTION_EVERY) => {}
                _ = stop.changed() => return Ok(()),
            }
            let node = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || node.apply_log_retention()).await? {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(segments = deleted, "old log segments deleted"),
                Err(e) => tracing::error!(error = %e, "applying the log retention failed"),
            }
        }
    }

    /// Deletes the embedded logs' segments that `log_retention` lets go, of records already
    /// applied: by the event job for events; by the item job and the last index snapshot
    /// for items (a restart replays the item log from the snapshot's position). Returns
    /// the number of segments deleted.
    pub fn apply_log_retention(&self) -> anyhow::Result<usize> {
        let Transport::Embedded { items, events } = &self.transport else {
            return Ok(0);
        };
        let retention = &self.config.log_retention;
        let items_applied = self
            .store
            .offset(ITEM_JOB)?
            .min(self.snapshot_position.load(Ordering::Acquire));
        let events_applied = self.store.offset(EVENT_JOB)?;
        let (_, from_items) = items.lock().apply_retention(items_applied, retention)?;
        let (_, from_events) = events.lock().apply_retention(events_applied, retention)?;
        Ok(from_items + from_events)
    }

    /// Whether either embedded log holds appended records not yet fsynced.
    pub fn logs_unsynced(&self) -> bool {
        match &self.transport {
            Transport::Embedded { items, events } => {
                items.lock().has_unsynced() || events.lock().has_unsynced()
            }
            #[cfg(feature = "fluvio")]
            Transport::Fluvio { .. } => false,
        }
    }

    /// Flushes the logs to disk.
    pub fn sync_logs(&self) -> anyhow::Result<()> {
        if let Transport::Embedded { items, events } = &self.transport {
            items.lock().sync()?;
            events.lock().sync()?;
        }
        Ok(())
    }
}
