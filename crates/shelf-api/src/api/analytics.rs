//! `GET /v1/analytics/zero-results`: the queries that found nothing.

use super::error::*;
use crate::app::App;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ZeroResultsParams {
    /// How many queries to list, 1..=1000 (default 20).
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ZeroResultsReport {
    /// Searches with a query that returned no item since the server started.
    pub total: u64,
    /// Distinct queries kept (at most 10,000; later new ones count in `total` only).
    pub distinct: usize,
    /// The most frequent first.
    pub queries: Vec<QueryCount>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueryCount {
    /// Lowercased and trimmed.
    pub query: String,
    pub count: u64,
}

#[utoipa::path(get, path = "/v1/analytics/zero-results", tag = "analytics",
    params(ZeroResultsParams),
    responses(
        (status = 200, body = ZeroResultsReport),
        (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "limit out of range"),
    ))]
pub(crate) async fn zero_results(
    State(app): State<Arc<App>>,
    params: Result<Query<ZeroResultsParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<ZeroResultsReport>> {
    let Query(params) = params.map_err(|e| ApiError::invalid(e.body_text()))?;
    let limit = params.limit.unwrap_or(20);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit must be between 1 and 1000, got {limit}"
        )));
    }
    let zero = &app.metrics.zero_results;
    let (top, distinct) = zero.top(limit);
    Ok(Json(ZeroResultsReport {
        total: zero.total(),
        distinct,
        queries: top
            .into_iter()
            .map(|(query, count)| QueryCount { query, count })
            .collect(),
    }))
}
