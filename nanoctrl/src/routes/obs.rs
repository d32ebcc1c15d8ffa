//! The cluster view of the PeerAgents' observability snapshots: `GET /metrics` in the
//! Prometheus text format (`prometheus.rs`), `GET /obs` as JSON (what `nanoctrl obs`
//! reads). Both take an optional `?scope=`; without it every scope is shown, with the
//! scope as a label. Behind the bearer token like every route.

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::SharedState;
use crate::error::AppResult;
use crate::prometheus;

#[derive(Deserialize)]
pub struct ObsQuery {
    scope: Option<String>,
}

fn scope(q: &ObsQuery) -> Option<&str> {
    q.scope.as_deref().filter(|s| !s.is_empty())
}

pub async fn metrics(
    State(s): State<SharedState>,
    Query(q): Query<ObsQuery>,
) -> AppResult<impl IntoResponse> {
    let snaps = s.store.obs_snapshots(scope(&q)).await?;
    Ok((
        [(header::CONTENT_TYPE, prometheus::CONTENT_TYPE)],
        prometheus::render(&snaps, crate::routes::obs::now_ms()),
    ))
}

pub async fn obs(
    State(s): State<SharedState>,
    Query(q): Query<ObsQuery>,
) -> AppResult<Json<Value>> {
    let snaps = s.store.obs_snapshots(scope(&q)).await?;
    Ok(Json(
        json!({"status": "ok", "now_ms": now_ms(), "agents": snaps}),
    ))
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
