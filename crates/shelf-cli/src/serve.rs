//! `shelf serve`: the HTTP API with the item and event jobs running in the same process.

use crate::data::{DataArgs, Topic};
use crate::model::ModelArgs;
use anyhow::Context;
use clap::Args;
use shelf_api::app::{ApiKeys, App, Limits, ServeConfig};
use shelf_engine::{Fusion, RetrievalConfig};
use shelf_node::{Node, NodeConfig, Streams};
use shelf_rank::PriorRanker;
use shelf_store::DecayConfig;
use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Work that runs beside the server once the node is ready (the lab's demo shoppers): given
/// the app, the server's base URL and the stop signal, it returns a future that `shelf serve`
/// spawns and awaits at shutdown; its error is reported like the server's.
pub type Companion = Box<
    dyn FnOnce(
            Arc<App>,
            String,
            tokio::sync::watch::Receiver<bool>,
        ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>
        + Send,
>;

/// How the event job pairs items into co-visits and decays the co-visit and trending lists
/// (the embedded event job's; the Arroyo pipelines have their own settings).
#[derive(Clone, Debug, Args)]
pub struct BehaviourArgs {
    /// Item events of one user at most this many hours apart are co-visits (e.g. a week
    /// for a shop whose baskets come days apart).
    #[arg(long, env = "SHELF_COVISIT_MAX_GAP_HOURS", default_value_t = 24.0)]
    pub covisit_max_gap_hours: f64,
    /// Half-life, in days, of co-visit scores by event time (separate from
    /// --half-life-days): a longer one lets older pairings keep their place in an item's
    /// 100-entry list.
    #[arg(long, env = "SHELF_COVISIT_HALF_LIFE_DAYS", default_value_t = 180.0)]
    pub covisit_half_life_days: f64,
    /// Days after which an item's trending weight has halved.
    #[arg(long, env = "SHELF_TRENDING_HALF_LIFE_DAYS", default_value_t = 3.0)]
    pub trending_half_life_days: f64,
}

impl BehaviourArgs {
    /// The settings, or an error naming the flag that is out of range.
    pub fn config(&self) -> anyhow::Result<shelf_store::BehaviourConfig> {
        anyhow::ensure!(
            self.covisit_max_gap_hours.is_finite() && self.covisit_max_gap_hours >= 0.0,
            "--covisit-max-gap-hours must be a number of hours, 0 or more"
        );
        anyhow::ensure!(
            self.covisit_half_life_days.is_finite() && self.covisit_half_life_days > 0.0,
            "--covisit-half-life-days must be positive"
        );
        anyhow::ensure!(
            self.trending_half_life_days.is_finite() && self.trending_half_life_days > 0.0,
            "--trending-half-life-days must be positive"
        );
        Ok(shelf_store::BehaviourConfig {
            covisit_max_gap_secs: self.covisit_max_gap_hours * 3600.0,
            covisit_half_life_secs: self.covisit_half_life_days * 86_400.0,
            trending_half_life_secs: self.trending_half_life_days * 86_400.0,
            ..Default::default()
        })
    }
}

/// Flags of `shelf serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub behaviour: BehaviourArgs,
    /// Address to listen on.
    #[arg(long, env = "SHELF_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Where items and events come from: `embedded` (the durable log in the data
    /// directory, fed by the API and `shelf ingest`) or `fluvio` (topics shelf-items or
    /// shelf-item-vectors, shelf-events and shelf-item-stats; needs the `fluvio` feature).
    #[arg(long, env = "SHELF_SOURCE", value_enum, default_value_t = SourceKind::Embedded)]
    pub source: SourceKind,
    /// Fluvio SC address (`HOST:PORT`) with `--source fluvio`.
    #[arg(long, env = "SHELF_FLUVIO_ENDPOINT", default_value = "127.0.0.1:9003")]
    pub fluvio_endpoint: String,
    /// Item topic read with `--source fluvio`: `shelf-items` (shelf embeds) or
    /// `shelf-item-vectors` (vectors from the Arroyo item pipeline, checked against this
    /// node's model id and dimension).
    #[arg(long, env = "SHELF_ITEM_TOPIC", default_value = "shelf-items", value_parser = ["shelf-items", "shelf-item-vectors"])]
    pub item_topic: String,
    /// Partitions this node consumes with `--source fluvio` (comma-separated; default all).
    #[arg(long, env = "SHELF_FLUVIO_PARTITIONS", value_delimiter = ',')]
    pub fluvio_partitions: Vec<u32>,

    /// API keys that may only search (`POST /v1/search`; comma-separated): what a
    /// storefront's backend holds. With no key of any scope the API is open.
    #[arg(long, env = "SHELF_API_KEYS_SEARCH", value_delimiter = ',')]
    pub api_keys_search: Vec<String>,
    /// API keys that may also read items, users' profiles and the models (comma-separated).
    #[arg(long, env = "SHELF_API_KEYS_READ", value_delimiter = ',')]
    pub api_keys_read: Vec<String>,
    /// API keys that may also write items and events and delete items and users
    /// (comma-separated).
    #[arg(long, env = "SHELF_API_KEYS_WRITE", value_delimiter = ',')]
    pub api_keys_write: Vec<String>,

    /// Largest request body in bytes.
    #[arg(long, env = "SHELF_MAX_BODY_BYTES", default_value_t = 8 << 20)]
    pub max_body_bytes: usize,
    /// Most records in one POST /v1/items or /v1/events.
    #[arg(long, env = "SHELF_MAX_BATCH", default_value_t = 10_000)]
    pub max_batch: usize,
    /// Longest query in bytes.
    #[arg(long, env = "SHELF_MAX_QUERY_BYTES", default_value_t = 2048)]
    pub max_query_bytes: usize,
    /// Searches running at once; more are answered 429.
    #[arg(long, env = "SHELF_MAX_CONCURRENT_SEARCHES", default_value_t = 64)]
    pub max_concurrent_searches: usize,
    /// Once uncached queries queue behind each other, how long (milliseconds) the query
    /// model may hold a forward pass open for more of them (up to 32 per pass). An idle
    /// server never waits. 0 turns the wait off; queued queries are still embedded together.
    #[arg(long, env = "SHELF_QUERY_BATCH_WAIT_MS", default_value_t = 2)]
    pub query_batch_wait_ms: u64,

    /// ANN candidates per retrieval list (query, and query+profile blend).
    #[arg(long, env = "SHELF_CANDIDATES", default_value_t = 100)]
    pub candidates: usize,
    /// Weight of the profile vector in the query/profile blend, 0..1.
    #[arg(long, env = "SHELF_PROFILE_BLEND", default_value_t = 0.35)]
    pub profile_blend: f32,
    /// Share of each response's slots filled by Thompson sampling over item CTR posteriors,
    /// so new items get impressions (0 turns it off; requests can opt out with
    /// `"explore": false`).
    #[arg(long, env = "SHELF_EXPLORATION_SHARE", default_value_t = 0.1)]
    pub exploration_share: f64,
    /// Seed of the exploration sampler (default: from the clock).
    #[arg(long, env = "SHELF_EXPLORATION_SEED")]
    pub exploration_seed: Option<u64>,
    /// With a query, candidates whose query cosine is below the best match's by more than
    /// this share of the best match's margin over the catalogue's mean item rank after the
    /// others, whatever their personal signals (10 turns it off).
    #[arg(long, env = "SHELF_RELEVANCE_GAP", default_value_t = 0.33)]
    pub relevance_gap: f32,
    /// The user's most recent distinct items whose co-visit lists feed the `covisit`
    /// feature and candidates (0 turns both off).
    #[arg(long, env = "SHELF_COVISIT_SEEDS", default_value_t = 20)]
    pub covisit_seeds: usize,
    /// Co-visited candidates added to a recommendation (a search without a query).
    #[arg(long, env = "SHELF_COVISIT_CANDIDATES", default_value_t = 100)]
    pub covisit_candidates: usize,
    /// Trending candidates added to a recommendation (all a user without history gets).
    #[arg(long, env = "SHELF_TRENDING_CANDIDATES", default_value_t = 50)]
    pub trending_candidates: usize,
    /// How a hybrid search fuses its lexical and vector lists: `rrf` (reciprocal rank
    /// fusion, `--rrf-k` and `--lexical-weight`) or `convex` (each list's scores scaled to
    /// [0, 1], `--lexical-share` of the lexical one).
    #[arg(long, env = "SHELF_FUSION", value_enum, default_value_t = FusionArg::Rrf)]
    pub fusion: FusionArg,
    /// Rank constant of the hybrid search's reciprocal rank fusion: a candidate's stage-1
    /// score is the sum over its lists of `weight / (rrf_k + rank)`.
    #[arg(long, env = "SHELF_RRF_K", default_value_t = RetrievalConfig::default().rrf_k)]
    pub rrf_k: f64,
    /// Weight of the lexical (BM25) list in the hybrid fusion; the vector lists weigh 1.
    #[arg(long, env = "SHELF_LEXICAL_WEIGHT", default_value_t = RetrievalConfig::default().lexical_weight)]
    pub lexical_weight: f64,
    /// Share of the lexical score in convex fusion (`--fusion convex`), 0 to 1.
    #[arg(long, env = "SHELF_LEXICAL_SHARE", default_value_t = RetrievalConfig::default().lexical_share)]
    pub lexical_share: f64,
    /// A lexical hit scoring at least this share of the best lexical score stays on topic
    /// whatever its query cosine (a SKU, a brand, a word the model does not know; 2: never).
    #[arg(long, env = "SHELF_LEXICAL_ON_TOPIC", default_value_t = RetrievalConfig::default().lexical_on_topic)]
    pub lexical_on_topic: f32,
    /// `exclude_seen` (on by default for `/v1/recommend`'s `for_user`) leaves out items the
    /// user bought, or viewed, clicked or carted this many times among their recent events.
    #[arg(long, env = "SHELF_SEEN_AFTER", default_value_t = RetrievalConfig::default().seen_after,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub seen_after: usize,
    /// Vector index graph: `shelf` (shelf's own HNSW) or `hnsw_rs` (hnsw_rs 0.3.5). A
    /// snapshot written by one is rebuilt into the other at start.
    #[arg(long, env = "SHELF_INDEX_BACKEND", default_value = "shelf")]
    pub index_backend: shelf_index::Backend,
    /// ANN search breadth (default: the index's, 64).
    #[arg(long, env = "SHELF_EF")]
    pub ef: Option<usize>,
    /// Items applied per batch by the item job (their texts are embedded together).
    #[arg(long, env = "SHELF_BATCH_SIZE", default_value_t = 256)]
    pub batch_size: usize,
    /// Most records applied per batch by the event job (and the item-stats job): a batch
    /// takes what the topic holds, up to this many, and reads and writes each list it
    /// touches once.
    #[arg(long, env = "SHELF_EVENT_BATCH_SIZE", default_value_t = shelf_engine::EVENT_BATCH_SIZE as u32,
        value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub event_batch_size: u32,
    /// Half-life of event weights in profiles and item stats, in days.
    #[arg(long, env = "SHELF_HALF_LIFE_DAYS", default_value_t = 14.0)]
    pub half_life_days: f64,
    /// Seconds between index snapshots while items change (one is also written at shutdown).
    #[arg(long, env = "SHELF_SNAPSHOT_INTERVAL_SECS", default_value_t = 600)]
    pub snapshot_interval_secs: u64,
    /// Retrain the ranker in the background every this many seconds when enough new
    /// impressions arrived (0: off; `shelf train` does the same on demand).
    #[arg(long, env = "SHELF_TRAIN_INTERVAL_SECS", default_value_t = 0)]
    pub train_interval_secs: u64,
    /// What the background training minimises (as `shelf train --objective`).
    #[arg(
        long,
        env = "SHELF_TRAIN_OBJECTIVE",
        value_enum,
        default_value = "pointwise"
    )]
    pub train_objective: crate::train::ObjectiveArg,
    /// The model the background training fits (as `shelf train --model`, default sizes).
    #[arg(
        long,
        env = "SHELF_TRAIN_MODEL",
        value_enum,
        default_value = "logistic"
    )]
    pub train_model: crate::train::Kind,
    /// New shown items needed since the last background training.
    #[arg(long, env = "SHELF_TRAIN_MIN_NEW_EXAMPLES", default_value_t = 5000)]
    pub train_min_new_examples: usize,
    /// Days impressions are kept for training.
    #[arg(long, env = "SHELF_IMPRESSION_RETENTION_DAYS", default_value_t = 30)]
    pub impression_retention_days: u64,
    /// Bytes of already-applied records each embedded log keeps (older whole segments
    /// beyond it are deleted, every 5 minutes).
    #[arg(long, env = "SHELF_LOG_RETENTION_BYTES", default_value_t = 1 << 30)]
    pub log_retention_bytes: u64,
    /// Hours an applied log segment is kept after its last write (0: no age limit).
    #[arg(long, env = "SHELF_LOG_RETENTION_HOURS", default_value_t = 168)]
    pub log_retention_hours: u64,
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<ServeConfig> {
        anyhow::ensure!(
            self.half_life_days > 0.0,
            "--half-life-days must be positive"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.profile_blend),
            "--profile-blend must be between 0 and 1"
        );
        anyhow::ensure!(self.batch_size > 0, "--batch-size must be positive");
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.exploration_share),
            "--exploration-share must be between 0 and 1"
        );
        anyhow::ensure!(self.candidates > 0, "--candidates must be positive");
        anyhow::ensure!(
            self.relevance_gap.is_finite() && self.relevance_gap >= 0.0,
            "--relevance-gap must be a number of at least 0 (10 turns it off)"
        );
        anyhow::ensure!(
            self.rrf_k.is_finite() && self.rrf_k > 0.0,
            "--rrf-k must be a positive number"
        );
        anyhow::ensure!(
            self.lexical_weight.is_finite() && self.lexical_weight >= 0.0,
            "--lexical-weight must be a number >= 0"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.lexical_share),
            "--lexical-share must be between 0 and 1"
        );
        anyhow::ensure!(
            self.lexical_on_topic.is_finite(),
            "--lexical-on-topic must be a number"
        );
        anyhow::ensure!(
            self.max_concurrent_searches > 0,
            "--max-concurrent-searches must be positive"
        );
        let keys = |v: &[String]| -> HashSet<String> {
            v.iter()
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
                .collect()
        };
        let decay = DecayConfig {
            half_life_secs: self.half_life_days * 86_400.0,
            ..Default::default()
        };
        let node = NodeConfig {
            data_dir: self.data.data_dir.clone(),
            retrieval: RetrievalConfig {
                candidates: self.candidates,
                profile_blend: self.profile_blend,
                relevance_gap: self.relevance_gap,
                ef: self.ef,
                exploration_share: self.exploration_share,
                exploration_seed: self.exploration_seed,
                decay: decay.clone(),
                covisit_seeds: self.covisit_seeds,
                covisit_candidates: self.covisit_candidates,
                trending_candidates: self.trending_candidates,
                fusion: self.fusion.into(),
                rrf_k: self.rrf_k,
                lexical_weight: self.lexical_weight,
                lexical_share: self.lexical_share,
                lexical_on_topic: self.lexical_on_topic,
                seen_after: self.seen_after,
                ..Default::default()
            },
            decay,
            behaviour: self.behaviour.config()?,
            batch_size: self.batch_size,
            event_batch_size: self.event_batch_size as usize,
            snapshot_interval: Duration::from_secs(self.snapshot_interval_secs),
            impression_retention: Duration::from_secs(self.impression_retention_days * 86_400),
            log_retention: shelf_stream::Retention {
                keep_bytes: Some(self.log_retention_bytes),
                max_age: (self.log_retention_hours > 0)
                    .then(|| Duration::from_secs(self.log_retention_hours * 3600)),
            },
            train_interval: (self.train_interval_secs > 0)
                .then(|| Duration::from_secs(self.train_interval_secs)),
            train_min_new_examples: self.train_min_new_examples.max(1),
            train_objective: self.train_objective.into(),
            train_model: self.train_model.with_default_sizes(),
            index_backend: self.index_backend,
        };
        Ok(ServeConfig {
            node,
            limits: Limits {
                max_body_bytes: self.max_body_bytes,
                max_batch: self.max_batch,
                max_query_bytes: self.max_query_bytes,
                max_concurrent_searches: self.max_concurrent_searches,
            },
            api_keys: ApiKeys {
                search: keys(&self.api_keys_search),
                read: keys(&self.api_keys_read),
                write: keys(&self.api_keys_write),
            },
        })
    }
}

/// `--fusion`: how a hybrid search fuses its lexical and vector lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FusionArg {
    Rrf,
    Convex,
}

impl From<FusionArg> for Fusion {
    fn from(arg: FusionArg) -> Self {
        match arg {
            FusionArg::Rrf => Fusion::Rrf,
            FusionArg::Convex => Fusion::Convex,
        }
    }
}

/// Where `shelf serve` reads items and events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceKind {
    Embedded,
    Fluvio,
}

/// The streams `args` ask for.
fn open_streams(args: &ServeArgs) -> anyhow::Result<Streams> {
    match args.source {
        SourceKind::Embedded => Ok(Streams::Embedded {
            items: args.data.open_log(Topic::Items)?,
            events: args.data.open_log(Topic::Events)?,
        }),
        #[cfg(feature = "fluvio")]
        SourceKind::Fluvio => {
            let cluster = shelf_stream::FluvioCluster::connect_within(
                &args.fluvio_endpoint,
                Duration::from_secs(120),
            )?;
            eprintln!("shelf: connected to Fluvio at {}", args.fluvio_endpoint);
            Ok(Streams::Fluvio(shelf_node::FluvioTopics {
                cluster,
                item_topic: args.item_topic.clone(),
                partitions: args.fluvio_partitions.clone(),
            }))
        }
        #[cfg(not(feature = "fluvio"))]
        SourceKind::Fluvio => anyhow::bail!(
            "--source fluvio needs a shelf built with the `fluvio` feature \
             (cargo build --release -p shelf --features fluvio)"
        ),
    }
}

/// Opens the data directory and the model and builds the node and its HTTP state (not
/// started yet).
pub fn open_app(args: &ServeArgs) -> anyhow::Result<Arc<App>> {
    let config = args.config()?;
    let store = args.data.open_store()?;
    let streams = open_streams(args)?;
    // Queries get their own model worker so that catalog embedding never delays them.
    let query_wait = std::time::Duration::from_millis(args.query_batch_wait_ms);
    let query_embedder = args.model.start_waiting(32, query_wait)?;
    let item_embedder = args.model.start(32)?;
    let node = Node::open(config.node, store, streams, query_embedder, item_embedder)?;
    Ok(App::new(node, config.limits, config.api_keys))
}

/// Serves until Ctrl-C or SIGTERM, then drains the jobs and writes an index snapshot.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    run_with(args, None)
}

/// [`run`], with `companion` started once the node is ready.
pub fn run_with(args: ServeArgs, companion: Option<Companion>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let app = open_app(&args)?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let address = listener.local_addr()?;
        let base_url = format!("http://{address}");
        eprintln!(
            "shelf: listening on {base_url} (data in {})",
            args.data.data_dir.display()
        );

        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        });
        let server_app = Arc::clone(&app);
        let mut server_stop = stop_rx.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, shelf_api::router(server_app))
                .with_graceful_shutdown(async move {
                    let _ = server_stop.wait_for(|s| *s).await;
                })
                .await
        });

        let tasks = tokio::select! {
            tasks = app.node.start(Arc::new(PriorRanker::default())) => tasks?,
            _ = stop_rx.wait_for(|s| *s) => {
                app.node.shutdown();
                server.await??;
                return Ok(());
            }
        };
        eprintln!("shelf: ready; POST {base_url}/v1/search (API: {base_url}/openapi.json)");
        let companion = companion
            .map(|start| tokio::spawn(start(Arc::clone(&app), base_url.clone(), stop_rx.clone())));

        let served = server.await;
        eprintln!(
            "shelf: shutting down: finishing the current batches and writing an index snapshot"
        );
        app.node.shutdown();
        let companion = match companion {
            Some(companion) => companion.await.map_err(anyhow::Error::from).and_then(|r| r),
            None => Ok(()),
        };
        // Every job and task is waited for and the logs are synced even when something
        // failed; the first failure is reported after.
        let jobs = tasks.join().await;
        let synced = app.node.sync_logs();
        served??;
        companion?;
        jobs?;
        synced?;
        eprintln!("shelf: stopped cleanly");
        Ok(())
    })
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        behaviour: BehaviourArgs,
    }

    fn config(args: &[&str]) -> anyhow::Result<shelf_store::BehaviourConfig> {
        let cli = Cli::try_parse_from(std::iter::once("shelf").chain(args.iter().copied()))?;
        cli.behaviour.config()
    }

    #[test]
    fn behaviour_flags_become_seconds_and_bad_values_name_their_flag() {
        let c = config(&[
            "--covisit-max-gap-hours",
            "720",
            "--covisit-half-life-days",
            "30",
            "--trending-half-life-days",
            "7",
        ])
        .unwrap();
        assert_eq!(c.covisit_max_gap_secs, 720.0 * 3600.0);
        assert_eq!(c.covisit_half_life_secs, 30.0 * 86_400.0);
        assert_eq!(c.trending_half_life_secs, 7.0 * 86_400.0);
        // The defaults are the store's own.
        let defaults = config(&[]).unwrap();
        let store = shelf_store::BehaviourConfig::default();
        assert_eq!(
            defaults.covisit_half_life_secs,
            store.covisit_half_life_secs
        );
        assert_eq!(defaults.covisit_max_gap_secs, store.covisit_max_gap_secs);
        assert_eq!(
            defaults.trending_half_life_secs,
            store.trending_half_life_secs
        );
        for (flag, value) in [
            ("--covisit-half-life-days", "0"),
            ("--covisit-half-life-days", "inf"),
            ("--trending-half-life-days", "-1"),
            ("--covisit-max-gap-hours", "-1"),
        ] {
            let err = config(&[&format!("{flag}={value}")])
                .unwrap_err()
                .to_string();
            assert!(err.contains(flag), "{flag} {value}: {err}");
        }
    }
}
