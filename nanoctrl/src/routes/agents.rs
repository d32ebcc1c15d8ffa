//! PeerAgent control: registration, discovery, desired topology, cleanup.

use axum::extract::{Path, State};
use axum::Json;

use super::SharedState;
use crate::error::{AppError, AppResult};
use crate::models::*;
use crate::net;

pub async fn start_peer_agent(
    State(s): State<SharedState>,
    Json(b): Json<StartPeerAgentBody>,
) -> AppResult<Json<StartPeerAgentResponse>> {
    let scope = b.scope.as_deref();
    // Only a caller-chosen alias can conflict; generated names upsert (original semantics).
    let (name, reject) = match b.alias.as_deref() {
        Some(a) => (a.to_string(), true),
        None => (s.store.next_agent_name(scope, &b.name_prefix).await?, false),
    };
    if !s.store.register_agent(scope, &name, reject, &b).await? {
        return Err(AppError::Conflict(format!(
            "Peer agent alias '{name}' already exists in this scope"
        )));
    }
    tracing::info!(
        "registered peer agent {name} (scope={:?})",
        scope.unwrap_or("")
    );
    Ok(Json(StartPeerAgentResponse {
        status: "ok",
        redis_address: net::redis_address_for_client(&s.redis_url, &b.address),
        name,
        resource: b.resource,
    }))
}

/// A bare JSON array, not an envelope (the original's shape).
pub async fn query(
    State(s): State<SharedState>,
    Json(b): Json<ScopeBody>,
) -> AppResult<Json<Vec<PeerAgentInfo>>> {
    Ok(Json(s.store.query_agents(b.scope.as_deref()).await?))
}

/// Always "ok", even for an unknown agent.
pub async fn cleanup(
    State(s): State<SharedState>,
    Json(b): Json<CleanupBody>,
) -> AppResult<Json<StatusMessage>> {
    let notified = s
        .store
        .cleanup_agent(b.scope.as_deref(), &b.agent_name)
        .await?;
    tracing::info!(
        "cleaned up agent {} (notified {:?})",
        b.agent_name,
        notified
    );
    Ok(Json(StatusMessage {
        status: "ok",
        message: format!("Cleaned up agent: {}", b.agent_name),
    }))
}

pub async fn desired_topology(
    State(s): State<SharedState>,
    Path(agent_id): Path<String>,
    Json(spec): Json<DesiredTopologySpec>,
) -> AppResult<Json<OkResponse>> {
    s.store.set_desired_topology(&agent_id, &spec).await?;
    tracing::debug!(
        "desired topology {agent_id} -> {:?} symmetric={}",
        spec.target_peers,
        spec.symmetric
    );
    Ok(Json(OkResponse { status: "ok" }))
}
