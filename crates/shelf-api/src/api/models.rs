//! `GET /v1/models`: the trained ranking models and which one is live.

use super::error::*;
use crate::app::App;
use axum::extract::State;
use axum::Json;
use serde::Serialize;
use std::sync::Arc;
use utoipa::ToSchema;

/// A trained model as listed by `GET /v1/models`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelSummary {
    pub version: String,
    pub kind: String,
    /// Whether this model ranks searches now.
    pub live: bool,
    pub validation_auc: f64,
    pub validation_log_loss: f64,
    pub prior_validation_auc: f64,
    /// AUC over validation pairs shown at the same position, of the model and of the prior
    /// (what promotion compares: plain AUC on logged clicks favours the ranker that was live).
    pub validation_position_matched_auc: f64,
    pub prior_validation_position_matched_auc: f64,
    /// Mean NDCG@10 of the clicks in the validation responses re-ordered by the model, and
    /// by the prior.
    pub validation_clicks_ndcg_at_10: f64,
    pub prior_validation_clicks_ndcg_at_10: f64,
    pub train_examples: usize,
    pub validation_examples: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// The ranker in use (`prior` until a model is promoted).
    pub live: String,
    pub models: Vec<ModelSummary>,
}

#[utoipa::path(get, path = "/v1/models", tag = "models",
    responses((status = 200, body = ModelList), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_models(State(app): State<Arc<App>>) -> ApiResult<Json<ModelList>> {
    let live = app
        .node
        .retriever()
        .map_or_else(|| "prior".to_string(), |r| r.ranker().name().to_string());
    let data_dir = app.node.config.data_dir.clone();
    let models = tokio::task::spawn_blocking(move || shelf_node::models::list(&data_dir))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|m| ModelSummary {
            kind: m.params.kind().into(),
            live: m.version == live,
            validation_auc: m.report.validation_auc,
            validation_log_loss: m.report.validation_log_loss,
            prior_validation_auc: m.report.prior_validation_auc,
            validation_position_matched_auc: m.report.validation_position_matched_auc,
            prior_validation_position_matched_auc: m.report.prior_validation_position_matched_auc,
            validation_clicks_ndcg_at_10: m.report.validation_clicks_ndcg_at_10,
            prior_validation_clicks_ndcg_at_10: m.report.prior_validation_clicks_ndcg_at_10,
            train_examples: m.report.train_examples,
            validation_examples: m.report.validation_examples,
            version: m.version,
        })
        .collect();
    Ok(Json(ModelList { live, models }))
}
