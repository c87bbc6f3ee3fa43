//! The HTTP API (axum): search, item and event ingestion, profiles, health, metrics and
//! the OpenAPI document. Errors are mapped to status codes in [`ApiError`] only.

mod analytics;
mod auth;
mod error;
mod experiments;
mod models;
mod openapi;
mod ops;
mod recommend;
mod records;
mod rules;
mod search;
mod users;

pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use experiments::{ArmBody, ExperimentBody, PromoteBody};
pub use models::{ModelList, ModelSummary};
pub use openapi::ApiDoc;
pub use recommend::{PlacementName, RecommendBody};
pub use records::Accepted;
pub use search::{ExplanationEntry, ResultItem, SearchBody, SearchResult, TimingsMs, MAX_K};
pub use users::{CategoryAffinity, Deleted, ProfileView, RecentView};

use self::analytics::*;
use self::auth::*;
use self::experiments::*;
use self::models::*;
use self::openapi::*;
use self::ops::*;
use self::recommend::*;
use self::records::*;
use self::rules::*;
use self::search::*;
use self::users::*;
use crate::app::App;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use axum::Router;
use std::sync::Arc;
use std::time::Instant;

/// The router with every route, limit and the metrics layer.
pub fn router(app: Arc<App>) -> Router {
    let max_body = app.limits.max_body_bytes;
    // The API key is checked before a handler runs, so an unauthorised request is answered
    // before its body is read.
    let keyed = Router::new()
        .route("/v1/search", post(search))
        .route("/v1/recommend", post(recommend))
        .route("/v1/items", post(post_items))
        .route("/v1/items/{id}", get(get_item).delete(delete_item))
        .route("/v1/events", post(post_events))
        .route("/v1/users/{id}/profile", get(get_profile))
        .route("/v1/users/{id}", delete(delete_user))
        .route("/v1/models", get(list_models))
        .route(
            "/v1/experiments",
            get(list_experiments).post(start_experiment),
        )
        .route("/v1/experiments/{id}", get(get_experiment))
        .route("/v1/experiments/{id}/stop", post(stop_experiment))
        .route("/v1/experiments/{id}/promote", post(promote_experiment))
        .route("/v1/rules", get(list_rules))
        .route("/v1/rules/{placement}", put(put_rules))
        .route("/v1/analytics/zero-results", get(zero_results))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            require_key,
        ));
    Router::new()
        .merge(keyed)
        .route("/", get(playground))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            record_metrics,
        ))
        .with_state(app)
}

async fn record_metrics(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    app.metrics
        .observe_request(&route, response.status().as_u16(), started.elapsed());
    response
}
