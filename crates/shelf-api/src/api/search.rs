//! `POST /v1/search`: the request and response types and the handler.

use super::error::*;
use super::records::*;
use crate::app::App;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use shelf_engine::{FacetField, SearchMode, SearchRequest, SortOrder};
use shelf_types::{Rules, SearchFilter, UserId};
use std::sync::Arc;
use utoipa::ToSchema;

/// Largest `k` (and `offset + k`) a search may ask for.
pub const MAX_K: usize = 1000;

/// Most price bucket edges a search may ask for.
const MAX_PRICE_BUCKETS: usize = 50;

/// `fields` in order, each once.
fn dedup(fields: impl Iterator<Item = FacetField>) -> Vec<FacetField> {
    let mut out = Vec::new();
    for f in fields {
        if !out.contains(&f) {
            out.push(f);
        }
    }
    out
}

pub(crate) fn default_k() -> usize {
    10
}

/// A search (with `query`), a recommendation (with `user_id` only), or a personalised
/// search (both).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    /// Free-text query. Any text is valid: it is never parsed as a query language.
    pub query: Option<String>,
    /// Where a query's candidates come from: `hybrid` (words and meaning, fused),
    /// `semantic` (the embedding only) or `lexical` (the words only; nothing is embedded).
    #[serde(default)]
    pub mode: Mode,
    /// The user; their profile personalises the results when they have one.
    pub user_id: Option<UserId>,
    /// Number of results, 1..=1000.
    #[serde(default = "default_k")]
    #[schema(default = 10, minimum = 1, maximum = 1000)]
    pub k: usize,
    /// Results to skip: the page is items `offset..offset + k` (`offset + k` at most
    /// 1000). Pages of the same request are disjoint and in order.
    #[serde(default)]
    pub offset: usize,
    /// `relevance` (the ranker's order), `price_asc`, `price_desc` or `newest`. A sorted
    /// listing holds the items that match the query only.
    #[serde(default)]
    pub sort: Sort,
    /// Fields to count the matched items by: `category` (every level of the path),
    /// `brand`, `price` (by `price_buckets`), `in_stock`.
    #[serde(default)]
    pub facets: Vec<Facet>,
    /// Edges of the price facet's buckets, ascending: `[50, 100]` counts prices below 50,
    /// from 50 to below 100, and from 100. At most 50 edges.
    #[serde(default)]
    pub price_buckets: Vec<f64>,
    /// Conditions every result meets.
    #[serde(default)]
    pub filters: Option<SearchFilter>,
    /// Business rules: boosts and buries by filter, pinned items, blocked items, caps per
    /// category or brand.
    #[serde(default)]
    pub rules: Option<Rules>,
    /// Add each feature's contribution to every result's score.
    #[serde(default)]
    pub explain: bool,
    /// Let exploration fill its share of the slots (see `--exploration-share`).
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub explore: bool,
}

/// Retrieval mode of a search.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Hybrid,
    Semantic,
    Lexical,
}

impl From<Mode> for SearchMode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Hybrid => SearchMode::Hybrid,
            Mode::Semantic => SearchMode::Semantic,
            Mode::Lexical => SearchMode::Lexical,
        }
    }
}

impl From<SearchMode> for Mode {
    fn from(mode: SearchMode) -> Self {
        match mode {
            SearchMode::Hybrid => Mode::Hybrid,
            SearchMode::Semantic => Mode::Semantic,
            SearchMode::Lexical => Mode::Lexical,
        }
    }
}

/// Order of a search's results.
#[derive(Clone, Copy, Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    #[default]
    Relevance,
    PriceAsc,
    PriceDesc,
    Newest,
}

/// A field a search counts its matched items by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Facet {
    Category,
    Brand,
    Price,
    InStock,
}

pub(crate) fn yes() -> bool {
    true
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResult {
    /// Send this back with clicks (`request_id` on events) so they become training data.
    pub request_id: String,
    /// The ranking model that scored the results.
    pub model: String,
    /// The A/B test arm that served this response, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experiment: Option<ExperimentArm>,
    /// Whether the user's profile took part.
    pub personalized: bool,
    /// The mode the search ran in.
    pub mode: Mode,
    /// The placement of a recommendation (`for_user` for `/v1/search` without a query).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<&'static str>,
    /// Why a recommendation is empty (an unknown item, a user without history, nothing
    /// passing the filters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Pinned items (`rules.pin`) that are not in the list, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped_pins: Vec<SkippedPin>,
    /// Query words no item holds, which were looked up again allowing typos (one edit in
    /// words of 4 to 7 characters, two from 8).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub corrected: Vec<String>,
    /// Items matched: on topic for the query (every candidate for a recommendation), up
    /// to the depth retrieved (the larger of `--candidates` and `offset + k`).
    pub total: usize,
    /// The counts asked for with `facets`, over the matched items (not only this page).
    #[serde(skip_serializing_if = "FacetCounts::is_empty")]
    pub facets: FacetCounts,
    pub items: Vec<ResultItem>,
    pub timings: TimingsMs,
}

/// An A/B test and the arm of it that served a response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExperimentArm {
    /// The experiment's id (`GET /v1/experiments/{id}` reports it).
    pub id: String,
    pub arm: String,
}

/// Facet counts, most frequent first (price buckets in price order).
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct FacetCounts {
    /// Every level of the category path: `Furniture` counts the items of `Furniture/Sofas`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<Vec<ValueCount>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brand: Option<Vec<ValueCount>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<Vec<PriceBucket>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_stock: Option<Vec<StockCount>>,
}

impl FacetCounts {
    fn is_empty(&self) -> bool {
        self.category.is_none()
            && self.brand.is_none()
            && self.price.is_none()
            && self.in_stock.is_none()
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ValueCount {
    pub value: String,
    pub count: usize,
}

/// Items priced in `[from, to)`; an open end is absent.
#[derive(Debug, Serialize, ToSchema)]
pub struct PriceBucket {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<f64>,
    pub count: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StockCount {
    pub value: bool,
    pub count: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SkippedPin {
    pub id: String,
    /// Not in the catalog, excluded, or failing the filters.
    pub reason: String,
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
    /// `profile_ann`, `lexical`, `exact_id`, `covisit`, `trending`, `similar_ann`,
    /// `recent`, `pinned`).
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
    pub lexical: f64,
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
pub(crate) async fn search(
    State(app): State<Arc<App>>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<SearchResult>> {
    let request: SearchBody = parse(&body(raw)?)?;
    let request = validate_search(&app, request)?;
    run(&app, request).await.map(Json)
}

/// Runs a validated search or recommendation on the blocking pool, records its timings
/// and impression, and shapes the response.
pub(crate) async fn run(app: &Arc<App>, mut request: SearchRequest) -> ApiResult<SearchResult> {
    let query = request.query.clone();
    let placement = request.query.is_none().then(|| request.placement.name());
    // The placement's stored rules, under the request's own.
    let own = std::mem::take(&mut request.rules);
    request.rules = app.node.rules.apply(placement.unwrap_or("search"), own);
    if app.node.retriever().is_none() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the index is still loading; see GET /ready",
        ));
    };
    let Ok(_slot) = app.search_slots.try_acquire() else {
        app.metrics.searches_rejected.inc();
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "overloaded",
            "too many searches in flight; retry shortly",
        ));
    };
    // The ANN walk and the re-rank's store reads block: they run on the blocking pool
    // (bounded by the search slots), never on the runtime's workers.
    // An A/B test on the placement picks the ranker (a user keeps their arm).
    let assignment = app.node.experiments.assign(
        placement.unwrap_or("search"),
        request.user_id.as_ref().map(|u| u.as_str()),
    );
    let (arm, ranker) = assignment.unzip();
    let node = Arc::clone(&app.node);
    let runtime = tokio::runtime::Handle::current();

    let mut response = tokio::task::spawn_blocking(move || {
        let retriever = node.retriever().expect("checked above; never unset");
        let ranker = ranker.unwrap_or_else(|| retriever.ranker());
        runtime.block_on(retriever.search_with(&request, ranker))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    response.impression.arm = arm.clone();
    let t = response.timings;
    let m = &app.metrics;
    for (histogram, ms) in [
        (&m.search_embed, t.embed_ms),
        (&m.search_lexical, t.lexical_ms),
        (&m.search_ann, t.ann_ms),
        (&m.search_rerank, t.rerank_ms),
        (&m.search_total, t.total_ms),
    ] {
        histogram.observe(ms.max(0.0) / 1e3);
    }
    if let Some(placement) = placement {
        m.recommended(placement, response.items.is_empty());
    }
    if !response.impression.items.is_empty() {
        app.node.log_impression(response.impression);
    }
    // Nothing matched (a page past the end is not a zero-result search).
    if let (0, true, Some(query)) = (response.total, response.items.is_empty(), &query) {
        app.metrics.zero_results.record(query);
    }
    Ok(SearchResult {
        request_id: response.request_id,
        experiment: arm.map(|tag| ExperimentArm {
            id: tag.experiment,
            arm: tag.arm,
        }),
        placement,
        reason: response.reason,
        skipped_pins: response
            .skipped_pins
            .into_iter()
            .map(|(id, reason)| SkippedPin { id: id.0, reason })
            .collect(),
        model: response.model,
        personalized: response.personalized,
        mode: response.mode.into(),
        corrected: response.corrected,
        total: response.total,
        facets: facet_counts(response.facets),
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
            lexical: round3(t.lexical_ms),
            ann: round3(t.ann_ms),
            rerank: round3(t.rerank_ms),
            total: round3(t.total_ms),
        },
    })
}

fn facet_counts(facets: shelf_engine::Facets) -> FacetCounts {
    let values = |v: Vec<(String, usize)>| {
        v.into_iter()
            .map(|(value, count)| ValueCount { value, count })
            .collect()
    };
    FacetCounts {
        category: facets.category.map(values),
        brand: facets.brand.map(values),
        price: facets.price.map(|buckets| {
            buckets
                .into_iter()
                .map(|(from, to, count)| PriceBucket { from, to, count })
                .collect()
        }),
        in_stock: facets.in_stock.map(|v| {
            v.into_iter()
                .map(|(value, count)| StockCount { value, count })
                .collect()
        }),
    }
}

/// `k` in 1..=MAX_K and `offset + k` at most MAX_K.
pub(crate) fn check_page(k: usize, offset: usize) -> ApiResult<()> {
    if !(1..=MAX_K).contains(&k) {
        return Err(ApiError::invalid(format!(
            "k must be between 1 and {MAX_K}, got {k}"
        )));
    }
    if offset.saturating_add(k) > MAX_K {
        return Err(ApiError::invalid(format!(
            "offset + k must be at most {MAX_K}, got offset {offset} + k {k}"
        )));
    }
    Ok(())
}

/// The request's rules, checked.
pub(crate) fn validate_rules(rules: Option<Rules>) -> ApiResult<Rules> {
    let rules = rules.unwrap_or_default();
    rules
        .validate()
        .map_err(|e| ApiError::invalid(format!("rules: {e}")))?;
    Ok(rules)
}

pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub(crate) fn validate_search(app: &App, body: SearchBody) -> ApiResult<SearchRequest> {
    check_page(body.k, body.offset)?;
    if body.price_buckets.len() > MAX_PRICE_BUCKETS
        || body.price_buckets.iter().any(|p| !p.is_finite())
        || body.price_buckets.windows(2).any(|w| w[0] >= w[1])
    {
        return Err(ApiError::invalid(format!(
            "price_buckets must be at most {MAX_PRICE_BUCKETS} finite numbers in ascending order"
        )));
    }
    if !body.price_buckets.is_empty() && !body.facets.contains(&Facet::Price) {
        return Err(ApiError::invalid(
            "price_buckets is given but facets does not ask for `price`",
        ));
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
        mode: body.mode.into(),
        offset: body.offset,
        sort: match body.sort {
            Sort::Relevance => SortOrder::Relevance,
            Sort::PriceAsc => SortOrder::PriceAsc,
            Sort::PriceDesc => SortOrder::PriceDesc,
            Sort::Newest => SortOrder::Newest,
        },
        facets: dedup(body.facets.iter().map(|f| match f {
            Facet::Category => FacetField::Category,
            Facet::Brand => FacetField::Brand,
            Facet::Price => FacetField::Price,
            Facet::InStock => FacetField::InStock,
        })),
        price_buckets: body.price_buckets,
        user_id: body.user_id,
        k: body.k,
        filter,
        explain: body.explain,
        explore: body.explore,
        rules: validate_rules(body.rules)?,
        ..Default::default()
    })
}
