//! Request bodies: the JSON extractor every POST route uses ([`Body`]) and the early
//! size check ([`reject_oversized`]).
//!
//! `Body<T>` is axum's `Json<T>` (same content-type, syntax and shape checks, same
//! messages) with two differences: rejections use the JSON error envelope, and the
//! parsed body is checked field by field against `limits.rs` ([`Validate`]) before the
//! handler sees it.

use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;

use crate::error::AppError;

/// Field-level checks of a parsed body (sizes, value ranges).
pub trait Validate {
    fn validate(&self) -> Result<(), AppError>;
}

/// A JSON body that passed [`Validate`].
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    T: DeserializeOwned + Validate,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let Json(v) = Json::<T>::from_request(req, state)
            .await
            .map_err(|r| AppError::Rejected(r.status(), r.body_text()))?;
        v.validate()?;
        Ok(Body(v))
    }
}

/// The largest body a route accepts (`--max-body-bytes`).
#[derive(Clone, Copy)]
pub struct MaxBody(pub usize);

/// 413 from the declared `Content-Length`, before the body is read: a client that sent
/// `Expect: 100-continue` never uploads it. Bodies without a length are cut off at the
/// same limit while being read (axum's `DefaultBodyLimit`, answered by [`Body`]).
pub async fn reject_oversized(
    axum::extract::State(max): axum::extract::State<MaxBody>,
    req: Request,
    next: Next,
) -> Response {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared {
        if n > max.0 as u64 {
            return AppError::TooLarge(format!(
                "request body is {n} bytes; the limit is {} (--max-body-bytes)",
                max.0
            ))
            .into_response();
        }
    }
    next.run(req).await
}
