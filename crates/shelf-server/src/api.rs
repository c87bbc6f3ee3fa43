//! The HTTP API (axum): search, item and event ingestion, profiles, health, metrics and
//! the OpenAPI document. Errors are mapped to status codes in [`ApiError`] only.

use crate::app::{App, Scope};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shelf_engine::SearchRequest;
use shelf_node::supervisor::JobState;
use shelf_types::{Event, ItemRecord, SearchFilter, UserId};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use utoipa::{OpenApi, ToSchema};

/// Largest `k` a search may ask for.
pub const MAX_K: usize = 1000;

/// An error answered as `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code: malformed_json, unauthorized, forbidden, not_found,
    /// body_too_large, invalid_request, overloaded, not_ready, job_down,
    /// stream_unavailable, internal.
    pub code: String,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_json", message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message)
    }
    /// A 500: the error is logged with an id and only the id is returned (internal error
    /// text can name paths, keys and data).
    /// The stream did not take the records (the embedded log's disk, or a Fluvio cluster
    /// that is restarting): 503 with Retry-After, the details logged under an id.
    pub fn stream_unavailable(error: impl std::fmt::Display) -> Self {
        let id = shelf_engine::new_request_id();
        tracing::error!(%error, error_id = %id, "appending to the stream failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "stream_unavailable",
            format!(
                "the stream did not accept the records (error {id} in the server log); retry \
                 shortly (on Fluvio, records acknowledged before the failure are kept, so a \
                 retry can repeat them)"
            ),
        )
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        let id = shelf_engine::new_request_id();
        tracing::error!(%error, error_id = %id, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("internal error {id}; the server log has the details"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The router with every route, limit and the metrics layer.
pub fn router(app: Arc<App>) -> Router {
    let max_body = app.limits.max_body_bytes;
    // The API key is checked before a handler runs, so an unauthorised request is answered
    // before its body is read.
    let keyed = Router::new()
        .route("/v1/search", post(search))
        .route("/v1/items", post(post_items))
        .route("/v1/items/{id}", get(get_item).delete(delete_item))
        .route("/v1/events", post(post_events))
        .route("/v1/users/{id}/profile", get(get_profile))
        .route("/v1/users/{id}", delete(delete_user))
        .route("/v1/models", get(list_models))
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

/// Answers 401/403 unless the request's API key allows it: `GET` and `POST /v1/search`
/// need a read key, every other method a write key.
async fn require_key(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let needed =
        if request.method() == axum::http::Method::GET || request.uri().path() == "/v1/search" {
            Scope::Read
        } else {
            Scope::Write
        };
    match authorize(&app, request.headers(), needed) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// Checks the presented API key (`Authorization: Bearer KEY` or `x-api-key: KEY`).
fn authorize(app: &App, headers: &HeaderMap, needed: Scope) -> ApiResult<()> {
    let keys = &app.api_keys;
    if keys.is_open() {
        return Ok(());
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    let Some(key) = presented else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an API key is required (Authorization: Bearer KEY)",
        ));
    };
    match keys.scope_of(key.trim()) {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown API key",
        )),
        Some(Scope::Read) if needed == Scope::Write => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this API key may only read; writes need a write key",
        )),
        Some(_) => Ok(()),
    }
}

fn body(body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(rejection.body_text())
        } else {
            ApiError::malformed(rejection.body_text())
        }
    })
}

/// Parses JSON: syntax errors are 400, values of the wrong shape 422.
fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(json_error)
}

fn json_error(e: serde_json::Error) -> ApiError {
    match e.classify() {
        serde_json::error::Category::Data => ApiError::invalid(e.to_string()),
        _ => ApiError::malformed(e.to_string()),
    }
}

fn default_k() -> usize {
    10
}

/// A search (with `query`), a recommendation (with `user_id` only), or a personalised
/// search (both).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    /// Free-text query.
    pub query: Option<String>,
    /// The user; their profile personalises the results when they have one.
    pub user_id: Option<UserId>,
    /// Number of results, 1..=1000.
    #[serde(default = "default_k")]
    #[schema(default = 10, minimum = 1, maximum = 1000)]
    pub k: usize,
    /// Conditions every result meets.
    #[serde(default)]
    pub filters: Option<SearchFilter>,
    /// Add each feature's contribution to every result's score.
    #[serde(default)]
    pub explain: bool,
    /// Let exploration fill its share of the slots (see `--exploration-share`).
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub explore: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResult {
    /// Send this back with clicks (`request_id` on events) so they become training data.
    pub request_id: String,
    /// The ranking model that scored the results.
    pub model: String,
    /// Whether the user's profile took part.
    pub personalized: bool,
    pub items: Vec<ResultItem>,
    pub timings: TimingsMs,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResultItem {
    pub id: String,
    pub score: f32,
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<Vec<ExplanationEntry>>,
    /// With `explain`: the candidate sources that proposed the item (`query_ann`,
    /// `profile_ann`, `covisit`, `trending`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<&'static str>>,
    /// Placed by exploration (Thompson sampling over CTR posteriors), not by score.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub explored: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExplanationEntry {
    pub feature: String,
    pub value: f32,
    /// This feature's additive part of the score.
    pub contribution: f32,
}

/// Milliseconds per stage.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimingsMs {
    pub embed: f64,
    pub ann: f64,
    pub rerank: f64,
    pub total: f64,
}

#[utoipa::path(post, path = "/v1/search", tag = "search", request_body = SearchBody,
    responses(
        (status = 200, body = SearchResult),
        (status = 400, body = ErrorBody, description = "malformed JSON"),
        (status = 401, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "invalid values: k, filters, unknown fields"),
        (status = 429, body = ErrorBody, description = "too many searches in flight"),
        (status = 503, body = ErrorBody, description = "index still loading"),
    ))]
async fn search(
    State(app): State<Arc<App>>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<SearchResult>> {
    let request: SearchBody = parse(&body(raw)?)?;
    let request = validate_search(&app, request)?;
    if app.node.retriever().is_none() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the index is still loading; see GET /ready",
        ));
    };
    let Ok(_slot) = app.search_slots.try_acquire() else {
        app.metrics
            .searches_rejected
            .fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "overloaded",
            "too many searches in flight; retry shortly",
        ));
    };
    // The ANN walk and the re-rank's store reads block: they run on the blocking pool
    // (bounded by the search slots), never on the runtime's workers.
    let node = Arc::clone(&app.node);
    let runtime = tokio::runtime::Handle::current();
    let response = tokio::task::spawn_blocking(move || {
        let retriever = node.retriever().expect("checked above; never unset");
        runtime.block_on(retriever.search(&request))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let t = response.timings;
    let m = &app.metrics;
    m.search_embed.observe_ms(t.embed_ms);
    m.search_ann.observe_ms(t.ann_ms);
    m.search_rerank.observe_ms(t.rerank_ms);
    m.search_total.observe_ms(t.total_ms);
    if !response.impression.items.is_empty() {
        app.node.log_impression(response.impression);
    }
    Ok(Json(SearchResult {
        request_id: response.request_id,
        model: response.model,
        personalized: response.personalized,
        items: response
            .items
            .into_iter()
            .map(|item| ResultItem {
                id: item.id.0,
                score: item.score,
                title: item.title,
                category: item.category,
                price: item.price,
                explored: item.explored,
                sources: item.explanation.is_some().then(|| item.sources.names()),
                explanation: item.explanation.map(|e| {
                    e.into_iter()
                        .map(|c| ExplanationEntry {
                            feature: c.feature.to_string(),
                            value: c.value,
                            contribution: c.contribution,
                        })
                        .collect()
                }),
            })
            .collect(),
        timings: TimingsMs {
            embed: round3(t.embed_ms),
            ann: round3(t.ann_ms),
            rerank: round3(t.rerank_ms),
            total: round3(t.total_ms),
        },
    }))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn validate_search(app: &App, body: SearchBody) -> ApiResult<SearchRequest> {
    if !(1..=MAX_K).contains(&body.k) {
        return Err(ApiError::invalid(format!(
            "k must be between 1 and {MAX_K}, got {}",
            body.k
        )));
    }
    let query = body.query.map(|q| q.trim().to_string());
    if let Some(q) = &query {
        let max = app.limits.max_query_bytes;
        if q.len() > max {
            return Err(ApiError::invalid(format!(
                "query is {} bytes; the limit is {max}",
                q.len()
            )));
        }
    }
    let has_query = query.as_deref().is_some_and(|q| !q.is_empty());
    if let Some(user) = &body.user_id {
        check_id("user_id", user.as_str())?;
    }
    if !has_query && body.user_id.is_none() {
        return Err(ApiError::invalid(
            "give a non-empty query, a user_id (recommendations), or both",
        ));
    }
    let filter = body.filters.unwrap_or_default();
    filter
        .validate()
        .map_err(|e| ApiError::invalid(format!("filters: {e}")))?;
    Ok(SearchRequest {
        query: query.filter(|q| !q.is_empty()),
        user_id: body.user_id,
        k: body.k,
        filter,
        explain: body.explain,
        explore: body.explore,
    })
}

/// The id rules of [`shelf_types::check_id`], as a 422.
fn check_id(field: &'static str, id: &str) -> ApiResult<()> {
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
fn parse_batch<T: serde::de::DeserializeOwned>(
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
async fn post_items(
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
fn accepted(count: usize, range: std::ops::Range<u64>) -> (StatusCode, Json<Accepted>) {
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
async fn delete_item(
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
struct ItemView {
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
struct ItemStatsView {
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
async fn get_item(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<Json<ItemView>> {
    check_id("id", &id)?;
    let Some(item) = app.node.store.item(&id).map_err(ApiError::internal)? else {
        return Err(ApiError::not_found(format!("no item `{id}`")));
    };
    let stats = app
        .node
        .store
        .item_stats(&id)
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
    let window_stats = app
        .node
        .store
        .item_window(&id)
        .map_err(ApiError::internal)?;
    Ok(Json(ItemView {
        item,
        stats,
        window_stats,
    }))
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
async fn post_events(
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
    let range = app
        .node
        .append_events(payloads)
        .await
        .map_err(ApiError::stream_unavailable)?;
    app.metrics.events_appended.fetch_add(n, Ordering::Relaxed);
    Ok(accepted(n as usize, range))
}

/// What shelf holds about a user (the interest vector is summarised by its weight).
#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileView {
    pub user_id: String,
    /// Event time of the latest applied event (RFC 3339).
    pub last_event_at: Option<String>,
    /// Decayed total weight behind the interest vector.
    pub interest_weight: f64,
    /// Decayed category affinities, strongest first.
    pub categories: Vec<CategoryAffinity>,
    /// Mean price of interacted items, weighted by decayed event weight.
    pub price_preference: Option<f64>,
    /// Most recent interactions, newest first.
    pub recent: Vec<RecentView>,
    /// Events applied, by kind.
    #[schema(value_type = Object)]
    pub counts: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CategoryAffinity {
    pub category: String,
    pub weight: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecentView {
    pub item_id: String,
    pub kind: String,
    pub at: Option<String>,
}

fn rfc3339(ms: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
}

#[utoipa::path(get, path = "/v1/users/{id}/profile", tag = "users",
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = ProfileView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_profile(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<Json<ProfileView>> {
    check_id("user id", &id)?;
    let Some(profile) = app.node.store.profile(&id).map_err(ApiError::internal)? else {
        return Err(ApiError::not_found(format!("no profile for user `{id}`")));
    };
    let mut categories: Vec<CategoryAffinity> = profile
        .categories
        .iter()
        .map(|(category, weight)| CategoryAffinity {
            category: category.clone(),
            weight: *weight,
        })
        .collect();
    categories.sort_by(|a, b| b.weight.total_cmp(&a.weight));
    let mut recent: Vec<RecentView> = profile
        .recent
        .iter()
        .map(|r| RecentView {
            item_id: r.item_id.clone(),
            kind: r.kind.as_str().to_string(),
            at: rfc3339(r.ts_ms),
        })
        .collect();
    recent.reverse();
    Ok(Json(ProfileView {
        user_id: profile.user_id.clone(),
        last_event_at: (profile.last_ts_ms != i64::MIN)
            .then(|| rfc3339(profile.last_ts_ms))
            .flatten(),
        interest_weight: profile.weight,
        categories,
        price_preference: profile.price_preference(),
        recent,
        counts: serde_json::to_value(&profile.counts).map_err(ApiError::internal)?,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    /// Records removed: the profile and the impressions of the user's requests.
    pub deleted_records: usize,
}

#[utoipa::path(delete, path = "/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = Deleted), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn delete_user(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Deleted>> {
    check_id("user id", &id)?;
    // Apply what was already sent about the user first, so nothing of it lands afterwards.
    let drained = app
        .node
        .drain_events(std::time::Duration::from_secs(10))
        .await
        .map_err(ApiError::internal)?;
    if !drained {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the event job is behind; retry the deletion shortly",
        ));
    }
    let store = Arc::clone(&app.node.store);
    let removed = tokio::task::spawn_blocking(move || store.delete_user(&id))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(Deleted {
        deleted_records: removed,
    }))
}

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
async fn list_models(State(app): State<Arc<App>>) -> ApiResult<Json<ModelList>> {
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
            kind: match m.params {
                shelf_rank::Params::Logistic { .. } => "logistic".into(),
                shelf_rank::Params::Mlp { .. } => "mlp".into(),
            },
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

/// The search playground: one static page (built into the binary) that uses only the
/// public API.
async fn playground() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("../assets/playground.html"))
}

#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "the process is up; each background job's state, failures and restarts")))]
async fn health(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
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
async fn ready(State(app): State<Arc<App>>) -> ApiResult<Json<serde_json::Value>> {
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
async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let text = app.metrics.render(&app.node);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "shelf",
        description = "Real-time retrieval and ranking for e-commerce search and recommendation."
    ),
    paths(
        search,
        post_items,
        get_item,
        delete_item,
        post_events,
        get_profile,
        delete_user,
        list_models,
        health,
        ready,
        metrics
    ),
    components(schemas(
        SearchBody,
        SearchResult,
        ErrorBody,
        Accepted,
        ProfileView,
        ItemView,
        Deleted,
        ItemRecord,
        Event
    ))
)]
pub struct ApiDoc;

async fn openapi() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}
