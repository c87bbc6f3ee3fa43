//! `POST /v1/recommend`: the lists a shop places on its pages (for you, similar items,
//! bought together, recently viewed, trending), served by the search path's re-rank.

use super::error::*;
use super::records::*;
use super::search::{check_page, default_k, run, validate_rules, yes, SearchResult, MAX_K};
use crate::app::App;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use shelf_engine::{Placement, SearchRequest};
use shelf_types::{ItemId, Rules, SearchFilter, UserId};
use std::sync::Arc;
use utoipa::ToSchema;

/// Most items a `bought_together` request may name (a large cart).
const MAX_SEED_ITEMS: usize = 50;

/// The list a recommendation asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlacementName {
    /// The home page's "for you" (needs `user_id`): the profile's nearest items, the items
    /// co-visited with the user's recent ones, and trending items (of the filter's
    /// category when it names one), re-ranked.
    ForUser,
    /// A product page's "similar items" (needs `item_id`): the item's nearest vectors and
    /// the items co-visited with it, re-ranked by similarity to it (and the user, if given).
    SimilarItems,
    /// A cart's "bought together" (needs `item_ids`): the items co-visited (viewed, carted,
    /// bought in the same sessions) with them, re-ranked.
    BoughtTogether,
    /// The account page's "recently viewed" (needs `user_id`): newest first.
    RecentlyViewed,
    /// "Trending" overall, or in `category` and the categories below it, in trend order.
    Trending,
}

/// A recommendation for a page of the shop.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecommendBody {
    pub placement: PlacementName,
    /// The shopper: needed by `for_user` and `recently_viewed`, personalises the others.
    pub user_id: Option<UserId>,
    /// The item of a `similar_items` list.
    pub item_id: Option<ItemId>,
    /// The items of a `bought_together` list (1 to 50: a cart, an order).
    #[serde(default)]
    pub item_ids: Vec<ItemId>,
    /// The category of a `trending` list (its path; the categories below it count too).
    pub category: Option<String>,
    /// Number of results, 1..=1000.
    #[serde(default = "default_k")]
    #[schema(default = 10, minimum = 1, maximum = 1000)]
    pub k: usize,
    /// Results to skip (`offset + k` at most 1000).
    #[serde(default)]
    pub offset: usize,
    /// Conditions every result meets (as on `/v1/search`).
    #[serde(default)]
    pub filters: Option<SearchFilter>,
    /// Items never returned (at most 1000). A placement's own items never are either.
    #[serde(default)]
    pub exclude_ids: Vec<ItemId>,
    /// Leave out what the user has seen enough of: items they bought, or viewed, clicked
    /// or carted `--seen-after` (3) times among their recent events. Default: true for
    /// `for_user`, false for the others.
    pub exclude_seen: Option<bool>,
    /// Business rules, as on `/v1/search`.
    #[serde(default)]
    pub rules: Option<Rules>,
    /// Add each feature's contribution and the candidate sources to every result.
    #[serde(default)]
    pub explain: bool,
    /// Let exploration fill its share of the slots (re-ranked placements only).
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub explore: bool,
}

#[utoipa::path(post, path = "/v1/recommend", tag = "search", request_body = RecommendBody,
    responses(
        (status = 200, body = SearchResult, description = "the list; `reason` says why when it is empty"),
        (status = 400, body = ErrorBody, description = "malformed JSON"),
        (status = 401, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "unknown placement or field, a field the placement does not take, a missing one, invalid values"),
        (status = 429, body = ErrorBody, description = "too many requests in flight"),
        (status = 503, body = ErrorBody, description = "index still loading"),
    ))]
pub(crate) async fn recommend(
    State(app): State<Arc<App>>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<SearchResult>> {
    let body: RecommendBody = parse(&body(raw)?)?;
    let request = validate_recommend(body)?;
    run(&app, request).await.map(Json)
}

fn validate_recommend(body: RecommendBody) -> ApiResult<SearchRequest> {
    use PlacementName::*;
    let p = body.placement;
    let name = |p: PlacementName| match p {
        ForUser => "for_user",
        SimilarItems => "similar_items",
        BoughtTogether => "bought_together",
        RecentlyViewed => "recently_viewed",
        Trending => "trending",
    };
    let refuse = |field: &str| {
        Err(ApiError::invalid(format!(
            "{field} is not used by placement `{}`",
            name(p)
        )))
    };
    let require = |field: &str| {
        Err(ApiError::invalid(format!(
            "placement `{}` needs {field}",
            name(p)
        )))
    };
    if body.item_id.is_some() && p != SimilarItems {
        return refuse("item_id");
    }
    if !body.item_ids.is_empty() && p != BoughtTogether {
        return refuse("item_ids");
    }
    if body.category.is_some() && p != Trending {
        return refuse("category (filter with filters.category_prefix)");
    }
    if matches!(p, ForUser | RecentlyViewed) && body.user_id.is_none() {
        return require("user_id");
    }
    check_page(body.k, body.offset)?;
    if body.exclude_ids.len() > MAX_K {
        return Err(ApiError::invalid(format!(
            "exclude_ids holds {} ids; at most {MAX_K}",
            body.exclude_ids.len()
        )));
    }
    if body.item_ids.len() > MAX_SEED_ITEMS {
        return Err(ApiError::invalid(format!(
            "item_ids holds {} ids; at most {MAX_SEED_ITEMS}",
            body.item_ids.len()
        )));
    }
    if let Some(user) = &body.user_id {
        check_id("user_id", user.as_str())?;
    }
    for id in body.item_id.iter().chain(&body.item_ids) {
        check_id("item_id", id.as_str())?;
    }
    for id in &body.exclude_ids {
        check_id("exclude_ids", id.as_str())?;
    }
    let placement = match p {
        ForUser => Placement::ForUser,
        SimilarItems => match body.item_id {
            Some(id) => Placement::SimilarItems(id),
            None => return require("item_id"),
        },
        BoughtTogether if body.item_ids.is_empty() => return require("item_ids"),
        BoughtTogether => Placement::BoughtTogether(body.item_ids),
        RecentlyViewed => Placement::RecentlyViewed,
        Trending => Placement::Trending(
            body.category
                .map(|c| c.trim().trim_end_matches('/').to_string())
                .filter(|c| !c.is_empty()),
        ),
    };
    let mut filter = body.filters.unwrap_or_default();
    filter
        .validate()
        .map_err(|e| ApiError::invalid(format!("filters: {e}")))?;
    if let Placement::Trending(Some(category)) = &placement {
        // The category's own list comes first; what tops it up must lie in it too.
        filter.must.push(SearchFilter {
            category_prefix: Some(category.clone()),
            ..Default::default()
        });
    }
    Ok(SearchRequest {
        query: None,
        user_id: body.user_id,
        k: body.k,
        offset: body.offset,
        filter,
        explain: body.explain,
        explore: body.explore,
        exclude_seen: body.exclude_seen.unwrap_or(p == ForUser),
        exclude_ids: body.exclude_ids,
        rules: validate_rules(body.rules)?,
        placement,
        ..Default::default()
    })
}
