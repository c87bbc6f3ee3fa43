//! API keys: the scope a route needs and the check of the key a request presents.

use super::error::*;
use crate::app::{App, Scope};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Answers 401/403 unless the request's API key has the scope the route needs
/// ([`Scope::needed_for`]).
pub(crate) async fn require_key(
    State(app): State<Arc<App>>,
    request: Request,
    next: Next,
) -> Response {
    let needed = Scope::needed_for(request.method(), request.uri().path());
    match authorize(&app, request.headers(), needed) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// Checks the presented API key (`Authorization: Bearer KEY` or `x-api-key: KEY`).
pub(crate) fn authorize(app: &App, headers: &HeaderMap, needed: Scope) -> ApiResult<()> {
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
        Some(scope) if scope < needed => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            match scope {
                Scope::Search => {
                    "this API key may only search; items, profiles and models need a read key, \
                     writes a write key"
                }
                _ => "this API key may only search and read; writes need a write key",
            },
        )),
        Some(_) => Ok(()),
    }
}
