//! What a node is configured with (the HTTP layer's limits and keys live in shelf-api).

use shelf_engine::RetrievalConfig;
use shelf_index::Backend;
use shelf_store::DecayConfig;
use std::path::PathBuf;
use std::time::Duration;

/// Everything a [`crate::Node`] is configured with.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub retrieval: RetrievalConfig,
    pub decay: DecayConfig,
    /// Co-visit pairing and trending decay of the event job.
    pub behaviour: shelf_store::BehaviourConfig,
    /// Records per item-job batch (their texts are embedded together).
    pub batch_size: usize,
    /// Records per event-job and item-stats-job batch.
    pub event_batch_size: usize,
    /// How often the index is snapshotted while items change (also at shutdown).
    pub snapshot_interval: Duration,
    /// Impressions older than this are deleted.
    pub impression_retention: Duration,
    /// How much applied history the embedded logs keep.
    pub log_retention: shelf_stream::Retention,
    /// Retrain the ranker this often (`None`: never in the node; run `shelf train`).
    pub train_interval: Option<Duration>,
    /// Fewest new shown items since the last training before retraining.
    pub train_min_new_examples: usize,
    /// What background training minimises.
    pub train_objective: shelf_rank::Objective,
    /// The model background training fits.
    pub train_model: shelf_rank::ModelKind,
    /// Graph implementation of the vector index.
    pub index_backend: Backend,
}
