//! A user's data: `GET /v1/users/{id}/profile` and `DELETE /v1/users/{id}`.

use super::error::*;
use super::records::*;
use crate::app::App;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use std::sync::Arc;
use utoipa::ToSchema;

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

pub(crate) fn rfc3339(ms: i64) -> Option<String> {
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
pub(crate) async fn get_profile(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<Json<ProfileView>> {
    check_id("user id", &id)?;
    let store = Arc::clone(&app.node.store);
    let lookup = id.clone();
    let profile = blocking(move || store.profile(&lookup).map_err(ApiError::internal)).await?;
    let Some(profile) = profile else {
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
    let recent: Vec<RecentView> = profile
        .recent
        .iter()
        .map(|r| RecentView {
            item_id: r.item_id.clone(),
            kind: r.kind.as_str().to_string(),
            at: rfc3339(r.ts_ms),
        })
        .collect();
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
pub(crate) async fn delete_user(
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
