//! Online A/B tests of rankers: `POST /v1/experiments` starts one on a placement,
//! `GET /v1/experiments[/{id}]` lists them and reports an arm's outcomes with 95%
//! intervals, `POST /v1/experiments/{id}/stop` and `.../promote` end one.

use super::error::*;
use crate::app::App;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use shelf_node::experiments::{self, ArmSpec, Experiment, ExperimentError, Report};
use std::sync::Arc;
use utoipa::ToSchema;

/// `POST /v1/experiments`: a test of rankers on one placement.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExperimentBody {
    /// `search` (searches with a query), `for_user`, `similar_items` or `bought_together`.
    pub placement: String,
    /// 2 to 8 arms; the first is the control the others are compared with.
    pub arms: Vec<ArmBody>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArmBody {
    pub name: String,
    /// `live` (the live model, fixed when the test starts), `prior`, or a saved model's
    /// version (`GET /v1/models`).
    pub model: String,
    /// Share of the placement's traffic in (0, 1]; shares sum to at most 1, and the rest
    /// is served by the live ranker outside the test. Users keep their arm.
    pub share: f64,
}

/// `POST /v1/experiments/{id}/promote`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteBody {
    pub arm: String,
    /// Promote only if the arm's gain in clicks per response over the control is
    /// significant (95% interval above zero); default true.
    #[serde(default = "yes")]
    pub require_win: bool,
}

fn yes() -> bool {
    true
}

impl From<ExperimentError> for ApiError {
    fn from(e: ExperimentError) -> Self {
        match e {
            ExperimentError::Invalid(m) => ApiError::invalid(m),
            ExperimentError::UnknownModel(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_model",
                e.to_string(),
            ),
            ExperimentError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            ExperimentError::NotFound(m) => ApiError::not_found(m),
            ExperimentError::Internal(e) => ApiError::internal(e),
        }
    }
}

#[utoipa::path(post, path = "/v1/experiments", tag = "experiments", request_body = ExperimentBody,
    responses(
        (status = 201, description = "the experiment as stored (`live` resolved to the model it names)"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "a test already runs on the placement"),
        (status = 422, body = ErrorBody, description = "invalid arms or placement (`invalid_request`), or an unknown model (`unknown_model`)"),
    ))]
pub(crate) async fn start_experiment(
    State(app): State<Arc<App>>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Experiment>)> {
    let body: ExperimentBody = parse(&body(raw)?)?;
    let live = app
        .node
        .retriever()
        .map_or_else(|| "prior".to_string(), |r| r.ranker().name().to_string());
    let arms = body
        .arms
        .into_iter()
        .map(|a| ArmSpec {
            name: a.name,
            model: a.model,
            share: a.share,
        })
        .collect();
    let experiment = blocking(move || {
        app.node
            .experiments
            .start(&body.placement, arms, &live)
            .map_err(ApiError::from)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(experiment)))
}

#[utoipa::path(get, path = "/v1/experiments", tag = "experiments",
    responses((status = 200, description = "every experiment, running and stopped, newest first"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_experiments(State(app): State<Arc<App>>) -> Json<Vec<Experiment>> {
    Json(app.node.experiments.list())
}

#[utoipa::path(get, path = "/v1/experiments/{id}", tag = "experiments",
    params(("id" = String, Path, description = "Experiment id (`{placement}-{start ms}`)")),
    responses((status = 200, description = "the experiment and each arm's responses, clicks, carts and purchases per response with 95% intervals, its lift over the control, and the winner if one is significant"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_experiment(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Report>> {
    blocking(move || {
        let experiment = app
            .node
            .experiments
            .get(&id)
            .ok_or_else(|| ApiError::not_found(format!("no experiment `{id}`")))?;
        experiments::report(&app.node.store, &experiment).map_err(ApiError::internal)
    })
    .await
    .map(Json)
}

#[utoipa::path(post, path = "/v1/experiments/{id}/stop", tag = "experiments",
    params(("id" = String, Path, description = "Experiment id")),
    responses((status = 200, description = "the final report; the placement's traffic returns to the live ranker"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody, description = "no such running experiment")))]
pub(crate) async fn stop_experiment(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Report>> {
    blocking(move || {
        let running = app
            .node
            .experiments
            .list()
            .into_iter()
            .find(|e| e.id == id && e.stopped_ms.is_none())
            .ok_or_else(|| ApiError::not_found(format!("no running experiment `{id}`")))?;
        let stopped = app.node.experiments.stop(&running.placement)?;
        experiments::report(&app.node.store, &stopped).map_err(ApiError::internal)
    })
    .await
    .map(Json)
}

#[utoipa::path(post, path = "/v1/experiments/{id}/promote", tag = "experiments", request_body = PromoteBody,
    params(("id" = String, Path, description = "Experiment id")),
    responses((status = 200, description = "the report the promotion was decided on; the arm's model is live and the test stopped"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "require_win and the arm has not won"),
        (status = 422, body = ErrorBody, description = "no such arm")))]
pub(crate) async fn promote_experiment(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Report>> {
    let body: PromoteBody = parse(&body(raw)?)?;
    blocking(move || {
        app.node
            .promote_arm(&id, &body.arm, body.require_win)
            .map_err(ApiError::from)
    })
    .await
    .map(Json)
}
