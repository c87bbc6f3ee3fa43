//! Items and events: `POST /v1/items`, `GET`/`DELETE /v1/items/{id}`, `POST /v1/events`.

use super::error::*;
use super::users::*;
use crate::app::App;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use shelf_types::{Event, ItemRecord};
use std::sync::Arc;
use utoipa::ToSchema;

/// The id rules of [`shelf_types::check_id`], as a 422.
pub(crate) fn check_id(field: &'static str, id: &str) -> ApiResult<()> {
    shelf_types::check_id(field, id).map_err(|e| ApiError::invalid(e.to_string()))
}

/// Records appended to a log.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// Number of records appended.
    pub accepted: u64,
    /// Offset of the first appended record in its log. With Fluvio (several partitions,
    /// each with its own offsets) the lowest offset any of them got.
    pub first_offset: u64,
    /// Offset the next record will get (first_offset + accepted on the embedded log). With
    /// Fluvio, one past the highest offset any of them got.
    pub next_offset: u64,
}

/// Parses a body holding one record or an array of records, validating each; errors name
/// the record's position.
pub(crate) fn parse_batch<T: serde::de::DeserializeOwned>(
    app: &App,
    bytes: &[u8],
    validate: impl Fn(&T) -> Result<(), String>,
) -> ApiResult<Vec<T>> {
    let value: serde_json::Value = parse(bytes)?;
    let values = match value {
        serde_json::Value::Array(values) => values,
        one @ serde_json::Value::Object(_) => vec![one],
        _ => {
            return Err(ApiError::invalid(
                "expected a JSON object or an array of objects",
            ))
        }
    };
    if values.is_empty() {
        return Err(ApiError::invalid("the batch is empty"));
    }
    let max = app.limits.max_batch;
    if values.len() > max {
        return Err(ApiError::too_large(format!(
            "{} records in one batch; the limit is {max}",
            values.len()
        )));
    }
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let record: T = serde_json::from_value(v)
                .map_err(|e| ApiError::invalid(format!("record {i}: {e}")))?;
            validate(&record).map_err(|e| ApiError::invalid(format!("record {i}: {e}")))?;
            Ok(record)
        })
        .collect()
}

#[utoipa::path(post, path = "/v1/items", tag = "ingest",
    request_body(content = Vec<ItemRecord>, description = "One item record or an array of them"),
    responses(
        (status = 202, body = Accepted, description = "appended durably to the item log"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "the stream did not accept the records; retry"),
    ))]
pub(crate) async fn post_items(
    State(app): State<Arc<App>>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    let records: Vec<ItemRecord> = parse_batch(&app, &body(raw)?, |r: &ItemRecord| {
        check_id("id", r.id().as_str()).map_err(|e| e.message)?;
        match r {
            ItemRecord::Upsert(item) => item.validate().map_err(|e| e.to_string()),
            ItemRecord::Delete { .. } => Ok(()),
        }
    })?;
    let payloads = records
        .iter()
        .map(|r| serde_json::to_vec(r).map_err(ApiError::internal))
        .collect::<ApiResult<Vec<_>>>()?;
    let count = payloads.len();
    let range = app
        .node
        .append_items(payloads)
        .await
        .map_err(ApiError::stream_unavailable)?;
    Ok(accepted(count, range))
}

/// The 202 answer: `count` records, placed at offsets within `range`.
pub(crate) fn accepted(count: usize, range: std::ops::Range<u64>) -> (StatusCode, Json<Accepted>) {
    (
        StatusCode::ACCEPTED,
        Json(Accepted {
            accepted: count as u64,
            first_offset: range.start,
            next_offset: range.end,
        }),
    )
}

#[utoipa::path(delete, path = "/v1/items/{id}", tag = "ingest",
    params(("id" = String, Path, description = "Item id")),
    responses((status = 202, body = Accepted), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn delete_item(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    check_id("id", &id)?;
    let record = ItemRecord::Delete { id: id.into() };
    let payload = serde_json::to_vec(&record).map_err(ApiError::internal)?;
    let range = app
        .node
        .append_items(vec![payload])
        .await
        .map_err(ApiError::stream_unavailable)?;
    Ok(accepted(1, range))
}

/// An item as the store holds it, with its activity.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ItemView {
    item: shelf_types::Item,
    /// Decayed counters kept by the event job (impressions, views, clicks, carts,
    /// purchases) and the smoothed CTR the ranker uses.
    stats: Option<ItemStatsView>,
    /// The newest window of `shelf-item-stats` (from the Arroyo item stats pipeline; only
    /// with `--source fluvio`).
    #[schema(value_type = Option<Object>)]
    window_stats: Option<shelf_store::ItemWindow>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ItemStatsView {
    impressions: f64,
    views: f64,
    clicks: f64,
    carts: f64,
    purchases: f64,
    ctr: f64,
    /// When the counters were last updated (event time).
    at: Option<String>,
}

#[utoipa::path(get, path = "/v1/items/{id}", tag = "items",
    params(("id" = String, Path, description = "Item id")),
    responses((status = 200, body = ItemView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_item(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<Json<ItemView>> {
    check_id("id", &id)?;
    blocking(move || read_item(&app, &id)).await.map(Json)
}

/// An item with its stats, read from the store.
fn read_item(app: &App, id: &str) -> ApiResult<ItemView> {
    let Some(item) = app.node.store.item(id).map_err(ApiError::internal)? else {
        return Err(ApiError::not_found(format!("no item `{id}`")));
    };
    let stats = app
        .node
        .store
        .item_stats(id)
        .map_err(ApiError::internal)?
        .map(|s| ItemStatsView {
            impressions: s.impressions,
            views: s.views,
            clicks: s.clicks,
            carts: s.carts,
            purchases: s.purchases,
            ctr: s.ctr(&app.node.config.decay),
            at: rfc3339(s.last_ts_ms),
        });
    let window_stats = app.node.store.item_window(id).map_err(ApiError::internal)?;
    Ok(ItemView {
        item,
        stats,
        window_stats,
    })
}

#[utoipa::path(post, path = "/v1/events", tag = "ingest",
    request_body(content = Vec<Event>, description = "One event or an array of them"),
    responses(
        (status = 202, body = Accepted, description = "appended durably to the event log"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "the stream did not accept the records; retry"),
    ))]
pub(crate) async fn post_events(
    State(app): State<Arc<App>>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    let events: Vec<Event> = parse_batch(&app, &body(raw)?, |e: &Event| {
        check_id("user_id", e.user_id.as_str()).map_err(|e| e.message)?;
        e.validate().map_err(|e| e.to_string())
    })?;
    let payloads = events
        .iter()
        .map(|e| serde_json::to_vec(e).map_err(ApiError::internal))
        .collect::<ApiResult<Vec<_>>>()?;
    let n = payloads.len() as u64;
    // After the impressions already queued, so that a click on a response just served is
    // applied after that response's impression (and labels it).
    let range = app
        .node
        .append_events_after_impressions(payloads)
        .await
        .map_err(ApiError::stream_unavailable)?;
    app.metrics.events_appended.inc_by(n);
    Ok(accepted(n as usize, range))
}
