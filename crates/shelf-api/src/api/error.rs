//! The API's one error type and how each maps to a status code and a JSON body; request
//! bodies read and parsed (syntax errors 400, wrong shapes 422, body limit 413).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

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
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
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

pub(crate) type ApiResult<T> = Result<T, ApiError>;

pub(crate) fn body(body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(rejection.body_text())
        } else {
            ApiError::malformed(rejection.body_text())
        }
    })
}

/// Parses JSON: syntax errors are 400, values of the wrong shape 422.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(json_error)
}

pub(crate) fn json_error(e: serde_json::Error) -> ApiError {
    match e.classify() {
        serde_json::error::Category::Data => ApiError::invalid(e.to_string()),
        _ => ApiError::malformed(e.to_string()),
    }
}

/// Runs `read` (RocksDB reads, file IO) on the blocking pool, off the async runtime's workers.
pub(crate) async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(read)
        .await
        .map_err(ApiError::internal)?
}
