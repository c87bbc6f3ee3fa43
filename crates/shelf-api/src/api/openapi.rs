//! The OpenAPI document (`GET /openapi.json`), generated from the handlers and types.

use super::analytics::*;
use super::error::*;
use super::experiments::*;
use super::models::*;
use super::ops::*;
use super::recommend::*;
use super::records::*;
use super::rules::*;
use super::search::*;
use super::users::*;
use axum::response::IntoResponse;
use axum::Json;
use shelf_types::{Event, ItemRecord};
use utoipa::OpenApi;

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "shelf",
        description = "Real-time retrieval and ranking for e-commerce search and recommendation."
    ),
    paths(
        search,
        recommend,
        post_items,
        get_item,
        delete_item,
        post_events,
        get_profile,
        delete_user,
        list_models,
        start_experiment,
        list_experiments,
        get_experiment,
        stop_experiment,
        promote_experiment,
        list_rules,
        put_rules,
        zero_results,
        health,
        ready,
        metrics
    ),
    components(schemas(
        SearchBody,
        RecommendBody,
        SearchResult,
        ErrorBody,
        ExperimentBody,
        ArmBody,
        PromoteBody,
        Accepted,
        ProfileView,
        ItemView,
        Deleted,
        ItemRecord,
        Event
    ))
)]
pub struct ApiDoc;

pub(crate) async fn openapi() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}
