//! `GET /health`: whether NanoCtrl can serve, i.e. whether Redis answers. `GET /` stays
//! the original's liveness text (it answers while Redis is down).

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::SharedState;
use crate::error::{AppError, AppResult};

/// How long the Redis PING may take before Redis counts as down.
const PING_DEADLINE: Duration = Duration::from_secs(2);

/// 200 `{"status":"ok","redis":"ok"}`, or 503 `{"status":"error","message":"Redis: …"}`.
pub async fn health(State(s): State<SharedState>) -> AppResult<Json<Value>> {
    match tokio::time::timeout(PING_DEADLINE, s.store.ping()).await {
        Ok(Ok(())) => Ok(Json(json!({"status": "ok", "redis": "ok"}))),
        Ok(Err(e)) => Err(AppError::Unavailable(format!("Redis: {e}"))),
        Err(_) => Err(AppError::Unavailable(format!(
            "Redis: no answer to PING within {PING_DEADLINE:?}"
        ))),
    }
}
