//! Application errors and their HTTP mapping.
//!
//! The envelope `{"status":"error","message":…}` and the status codes of the original
//! (409, 400, 500) are kept, so clients that branch on them keep working. Body
//! rejections (415/400/422/413) carry axum's messages in the same JSON envelope; the
//! original answered them in plain text, clients only look at the status.

use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::throttle::{suppressed_note, Throttle};

/// At most one Redis error line per this window during an outage.
const REDIS_LOG_WINDOW: Duration = Duration::from_secs(10);
pub static REDIS_ERRORS: Throttle = Throttle::new(REDIS_LOG_WINDOW);

#[derive(Debug)]
pub enum AppError {
    /// Redis unreachable or a command failed: 500, the client may retry.
    Redis(redis::RedisError),
    /// The caller asked for an alias that is taken in this scope: 409.
    Conflict(String),
    /// A value could not be (de)serialized: 400.
    Serialization(serde_json::Error),
    /// The body was refused before it reached the handler (content type, JSON syntax,
    /// shape, size): axum's status and message.
    Rejected(StatusCode, String),
    /// A field over its limit (`limits.rs`): 413.
    TooLarge(String),
    /// A field of the right type with a value the route cannot take: 422.
    Invalid(String),
    /// No valid bearer token while NanoCtrl requires one: 401.
    Unauthorized,
    /// The agent is owned by someone else (owner token missing or wrong): 403.
    Forbidden(String),
    /// A dependency is down (`/health` while Redis is unreachable): 503.
    Unavailable(String),
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

/// Logs a Redis error, rate-limited: an outage fails every request the same way.
pub fn log_redis_error(e: &dyn std::fmt::Display) {
    if let Some(n) = REDIS_ERRORS.admit() {
        tracing::warn!("redis error: {e}{}", suppressed_note(n));
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            AppError::Redis(e) => {
                log_redis_error(&e);
                (StatusCode::INTERNAL_SERVER_ERROR, format!("Redis: {e}"))
            }
            AppError::Conflict(m) => (StatusCode::CONFLICT, m),
            AppError::Serialization(e) => (StatusCode::BAD_REQUEST, format!("Serialization: {e}")),
            AppError::Rejected(s, m) => (s, m),
            AppError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, m),
            AppError::Invalid(m) => (StatusCode::UNPROCESSABLE_ENTITY, m),
            AppError::Unauthorized => {
                let body = envelope(
                    "NanoCtrl requires a token: send `Authorization: Bearer <token>`".into(),
                );
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer realm=\"nanoctrl\"")],
                    body,
                )
                    .into_response();
            }
            AppError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            AppError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
        };
        (status, envelope(message)).into_response()
    }
}

fn envelope(message: String) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "error", "message": message }))
}

pub type AppResult<T> = Result<T, AppError>;
