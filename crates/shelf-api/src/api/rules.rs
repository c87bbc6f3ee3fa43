//! Stored business rules: `GET /v1/rules` lists every placement's, `PUT /v1/rules/{placement}`
//! sets one placement's (empty rules remove them); searches and recommendations of the
//! placement run with them under their own rules.

use super::error::*;
use crate::app::App;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::Json;
use shelf_node::rules::RulesError;
use shelf_types::Rules;
use std::collections::BTreeMap;
use std::sync::Arc;

impl From<RulesError> for ApiError {
    fn from(e: RulesError) -> Self {
        match e {
            RulesError::UnknownPlacement(_) | RulesError::Invalid(_) => {
                ApiError::invalid(e.to_string())
            }
            RulesError::Io(e) => ApiError::internal(e),
        }
    }
}

#[utoipa::path(get, path = "/v1/rules", tag = "rules",
    responses((status = 200, description = "each placement's stored rules (`search`, `for_user`, `similar_items`, `bought_together`, `recently_viewed`, `trending`); placements without any are absent"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_rules(State(app): State<Arc<App>>) -> Json<BTreeMap<String, Rules>> {
    Json(app.node.rules.all())
}

#[utoipa::path(put, path = "/v1/rules/{placement}", tag = "rules", request_body = Rules,
    params(("placement" = String, Path, description = "`search` (searches with a query), `for_user`, `similar_items`, `bought_together`, `recently_viewed` or `trending`")),
    responses(
        (status = 200, body = Rules, description = "stored (replacing the placement's rules; `{}` removes them); every later request of the placement runs with them: their boosts then the request's, the request's pins then theirs (at ids and positions the request neither pins nor blocks), both block lists (less the ids the request pins), and each of their diversity settings the request does not set"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "an unknown placement or rule field, invalid values, or a pinned id that is also blocked"),
    ))]
pub(crate) async fn put_rules(
    State(app): State<Arc<App>>,
    Path(placement): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Rules>> {
    let rules: Rules = parse(&body(raw)?)?;
    let stored = rules.clone();
    blocking(move || {
        app.node
            .rules
            .set(&placement, stored)
            .map_err(ApiError::from)
    })
    .await?;
    Ok(Json(rules))
}
