//! The node: store, index, embedders and streams, the supervised jobs that apply the
//! streams, index recovery and snapshots, the impression pipeline, training, model swaps
//! and expiry.

// Without Fluvio the embedded log is the only transport.
#![cfg_attr(not(feature = "fluvio"), allow(irrefutable_let_patterns))]

mod impressions;
mod ingest;
mod maintenance;
mod readings;
mod recovery;
mod training;

use crate::config::NodeConfig;
use crate::experiments::{self, ExperimentError};
use crate::metrics::{NodeMetrics, Reading};
use crate::streams::{self, Streams, Transport, ITEM_VECTORS_TOPIC};
use crate::supervisor::{spawn_supervised, JobBoard};
use anyhow::Context;
use shelf_embed::Embedder;
use shelf_engine::{
    follow, impression_record, EngineError, EventJob, ItemJob, Job, Progress, Retriever, StatsJob,
    EVENT_JOB, ITEM_JOB, STATS_JOB,
};
use shelf_index::{HnswIndex, IndexConfig};
use shelf_lexical::LexicalIndex;
use shelf_store::{Impression, Store};
use shelf_stream::{LogReader, Source};
use shelf_types::{ItemAttributes, ItemId, ItemRecord, Ranker};
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
    /// The online A/B tests of rankers (`DATA/experiments.json`).
    pub experiments: crate::experiments::Experiments,
    /// The business rules stored per placement (`DATA/rules.json`).
    pub rules: crate::rules::StoredRules,
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
    /// Impressions ever queued, and ever settled (appended, failed or dropped): in queue
    /// order, so once `settled` reaches a value of `queued`, every impression queued before
    /// that read is in the stream ([`Node::append_events_after_impressions`]).
    impressions_queued: AtomicU64,
    impressions_settled: AtomicU64,
    impressions_settled_wake: Notify,
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
        let experiments = crate::experiments::Experiments::open(&config.data_dir)?;
        let rules = crate::rules::StoredRules::open(&config.data_dir)?;
        Ok(Arc::new(Self {
            config,
            store: Arc::new(store),
            metrics: NodeMetrics::default(),
            experiments,
            rules,
            jobs: Arc::default(),
            retriever: OnceLock::new(),
            transport: Transport::open(streams)?,
            item_wake: Arc::new(Notify::new()),
            event_wake: Arc::new(Notify::new()),
            impressions: tx,
            impressions_rx: Mutex::new(Some(rx)),
            impressions_pending: AtomicUsize::new(0),
            impressions_queued: AtomicU64::new(0),
            impressions_settled: AtomicU64::new(0),
            impressions_settled_wake: Notify::new(),
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
        let (index, lexical) = tokio::task::spawn_blocking(move || {
            anyhow::Ok((node.load_index()?, Arc::new(node.load_lexical()?)))
        })
        .await
        .context("index loading panicked")??;
        let retriever = Retriever::new(
            Arc::clone(&self.store),
            self.query_embedder.clone(),
            index.clone(),
            ranker,
            self.config.retrieval.clone(),
        )
        .with_lexical(Arc::clone(&lexical));
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
                    node.repair_index_after_failure(&index, &lexical)?;
                }
                rt.block_on(node.run_item_job(&index, &lexical))
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

    /// Asks every job and task to stop after its current batch.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// A receiver that turns true at shutdown.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }
}
