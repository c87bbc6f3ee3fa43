//! shelf-rank: models that score (user, query, item) candidates from their features — the
//! hand-set prior, and logistic regression, an MLP and gradient-boosted trees trained on
//! logged impressions.

mod boost;
mod forest;
mod learned;
mod metrics;
mod prior;
mod train;

pub use forest::{Forest, Tree};
pub use learned::{
    input_names, inputs, sigmoid, LearnedModel, Params, TrainingReport, INPUT_COUNT,
    SCHEMA_VERSION, SERVING_POSITION,
};
pub use metrics::{
    auc, clicks_ndcg_at, log_loss, ndcg_at, position_matched_auc, recall_at, reciprocal_rank,
    Judgments,
};
pub use prior::PriorRanker;
pub use train::{train, Example, ModelKind, Objective, TrainConfig, TrainError, TreeSettings};
