//! Application errors and their HTTP mapping.
//!
//! The envelope `{"status":"error","message":…}` and the status codes are the
//! original's, so clients that branch on them keep working. Extractor errors
//! (415/400/422/413) are axum's own plain-text rejections, also as in the original.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug)]
pub enum AppError {
    /// Redis unreachable or a command failed: 500, the client may retry.
    Redis(redis::RedisError),
    /// The caller asked for an alias that is taken in this scope: 409.
    Conflict(String),
    /// A value could not be (de)serialized: 400.
    Serialization(serde_json::Error),
}

impl From<redis::RedisError> for AppError {
    fn from(e: redis::RedisError) -> Self {
        AppError::Redis(e)
    }
}

impl From<serde_json::Error> for AppError {
    fn from(e: serde_json::Error) -> Self {
        AppError::Serialization(e)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            AppError::Redis(e) => {
                tracing::warn!("redis error: {e}");
                (StatusCode::INTERNAL_SERVER_ERROR, format!("Redis: {e}"))
            }
            AppError::Conflict(m) => (StatusCode::CONFLICT, m),
            AppError::Serialization(e) => (StatusCode::BAD_REQUEST, format!("Serialization: {e}")),
        };
        let body = serde_json::json!({ "status": "error", "message": message });
        (status, Json(body)).into_response()
    }
}

pub type AppResult<T> = Result<T, AppError>;
