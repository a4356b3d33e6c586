//! The API's error answers: one enum, one JSON shape per status.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::script::validation::FieldErrors;
use crate::store::StoreError;

/// Every way a request can fail, each with its status code.
#[derive(Debug)]
pub enum ApiError {
    /// 401 `{"message": "Unauthenticated."}`.
    Unauthenticated,
    /// 403 `{"message": "This action is unauthorized."}`: a permission is missing.
    Forbidden,
    /// 429 with `Retry-After`: too many failed authentications from this address.
    TooManyAttempts(std::time::Duration),
    /// 422 with the field errors.
    Validation(FieldErrors),
    /// 404.
    NotFound(&'static str),
    /// 413: the body is over the limit.
    TooLarge,
    /// 503 with `Retry-After`: the database stayed locked.
    Busy,
    /// 503 with `Retry-After`: PostgreSQL cannot be reached (stopped, the network); the
    /// cause is logged.
    Unavailable(String),
    /// 500; the cause is logged, not returned.
    Internal(String),
}

impl ApiError {
    /// A 422 on one field.
    pub fn field(path: &str, reason: impl Into<String>) -> ApiError {
        ApiError::Validation(FieldErrors::single(path, reason))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Busy | StoreError::Replaced => ApiError::Busy,
            e @ StoreError::Unreachable { .. } => ApiError::Unavailable(e.to_string()),
            StoreError::Invalid(errors) => ApiError::Validation(errors),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<FieldErrors> for ApiError {
    fn from(e: FieldErrors) -> Self {
        ApiError::Validation(e)
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::Internal(format!("request task failed: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Unauthenticated => {
                (StatusCode::UNAUTHORIZED, Json(json!({"message": "Unauthenticated."})))
                    .into_response()
            }
            ApiError::Forbidden => {
                (StatusCode::FORBIDDEN, Json(json!({"message": "This action is unauthorized."})))
                    .into_response()
            }
            ApiError::TooManyAttempts(retry) => {
                let mut r = (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(json!({"message": "Too many failed authentication attempts."})),
                )
                    .into_response();
                let secs = retry.as_secs() + u64::from(retry.subsec_nanos() > 0);
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
                r
            }
            ApiError::Validation(errors) => {
                (StatusCode::UNPROCESSABLE_ENTITY, Json(errors.to_body())).into_response()
            }
            ApiError::NotFound(what) => {
                (StatusCode::NOT_FOUND, Json(json!({"message": format!("{what} not found.")})))
                    .into_response()
            }
            ApiError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                Json(json!({"message": "The request body is larger than 1 MiB."})),
            )
                .into_response(),
            ApiError::Busy => {
                let mut r = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"message": "The database is busy; retry shortly."})),
                )
                    .into_response();
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r
            }
            ApiError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "request refused: the database cannot be reached");
                let mut r = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"message": "The database cannot be reached; retry shortly."})),
                )
                    .into_response();
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r
            }
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({"message": "Internal server error."})),
                )
                    .into_response()
            }
        }
    }
}
