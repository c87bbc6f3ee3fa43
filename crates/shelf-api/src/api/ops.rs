//! Operations: the playground page, `/health`, `/ready` and `/metrics`.

use super::error::*;
use crate::app::App;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use shelf_node::supervisor::JobState;
use std::sync::Arc;

/// The search playground: one static page (built into the binary) that uses only the
/// public API.
pub(crate) async fn playground() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("../../assets/playground.html"))
}

#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "the process is up; each background job's state, failures and restarts")))]
pub(crate) async fn health(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    let jobs: serde_json::Map<String, serde_json::Value> = app
        .node
        .jobs
        .statuses()
        .into_iter()
        .map(|(name, s)| {
            let (state, reason) = match s.state {
                JobState::Starting => ("starting", None),
                JobState::Running => ("running", None),
                JobState::Down { reason } => ("down", Some(reason)),
                JobState::Stopped => ("stopped", None),
            };
            let job = serde_json::json!({
                "state": state,
                "reason": reason,
                "seconds_in_state": s.since.elapsed().as_secs(),
                "failures": s.failures,
                "restarts": s.restarts,
            });
            (name.to_string(), job)
        })
        .collect();
    Json(serde_json::json!({ "status": "ok", "jobs": jobs }))
}

#[utoipa::path(get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "the index is loaded and every background job is running: searches are answered. `status` is `indexing` while item records wait in the log to be embedded (`pending_items`), else `ready`"),
        (status = 503, body = ErrorBody, description = "the index is still loading, or a job is down (the message names it and its last error)"),
    ))]
pub(crate) async fn ready(State(app): State<Arc<App>>) -> ApiResult<Json<serde_json::Value>> {
    let Some(retriever) = app.node.retriever() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the index is still loading",
        ));
    };
    let down = app.node.jobs.down();
    if !down.is_empty() {
        let reasons: Vec<String> = down
            .iter()
            .map(|(job, reason)| format!("{job} is down ({reason})"))
            .collect();
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "job_down",
            format!("{}; it is restarted with backoff", reasons.join("; ")),
        ));
    }
    // Searches are answered while the catalogue is still being embedded; say so.
    let pending = app.node.pending_items().unwrap_or(0);
    let status = if pending > 0 { "indexing" } else { "ready" };
    Ok(Json(serde_json::json!({
        "status": status,
        "items": retriever.index().len(),
        "pending_items": pending,
    })))
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub(crate) async fn metrics(State(app): State<Arc<App>>) -> ApiResult<impl IntoResponse> {
    // Rendering reads RocksDB, the log directories and /proc: blocking work.
    let text = tokio::task::spawn_blocking(move || app.metrics.render(&app.node))
        .await
        .map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text))
}
