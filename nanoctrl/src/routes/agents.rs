//! PeerAgent control: registration, discovery, desired topology, cleanup.

use axum::extract::{Path, State};
use axum::Json;

use super::SharedState;
use crate::body::Body;
use crate::error::{AppError, AppResult};
use crate::limits;
use crate::models::*;
use crate::net;
use crate::owner;
use crate::redis_store::Owned;

/// A caller-chosen alias conflicts when it is taken (409); generated names upsert
/// (original semantics). With an owner token (`owner_token`, or `owned: true` for one
/// NanoCtrl generates) the alias is owned: see `owner.rs`.
pub async fn start_peer_agent(
    State(s): State<SharedState>,
    Body(b): Body<StartPeerAgentBody>,
) -> AppResult<Json<StartPeerAgentResponse>> {
    let scope = b.scope.as_deref();
    let owner_token = match (&b.owner_token, b.owned) {
        (Some(t), _) => Some(t.clone()),
        (None, true) => Some(owner::generate()),
        (None, false) => None,
    };
    let Some(name) = s
        .store
        .register_agent(scope, &b, owner_token.as_deref())
        .await?
    else {
        return Err(AppError::Conflict(match &b.alias {
            Some(a) => format!("Peer agent alias '{a}' already exists in this scope"),
            None => format!("no free generated name with prefix '{}'", b.name_prefix),
        }));
    };
    tracing::info!(
        "registered peer agent {name} (scope={:?}{})",
        scope.unwrap_or(""),
        if owner_token.is_some() { ", owned" } else { "" }
    );
    let redis_url = s.store.url();
    Ok(Json(StartPeerAgentResponse {
        status: "ok",
        redis_address: net::redis_address_for_client(&redis_url, &b.address),
        redis_url: s
            .shared_credentials
            .as_ref()
            .map(|c| net::redis_url_for_client(&redis_url, Some(&b.address), Some(c))),
        name,
        resource: b.resource,
        owner_token,
    }))
}

/// A bare JSON array, not an envelope (the original's shape).
pub async fn query(
    State(s): State<SharedState>,
    Body(b): Body<ScopeBody>,
) -> AppResult<Json<Vec<PeerAgentInfo>>> {
    Ok(Json(s.store.query_agents(b.scope.as_deref()).await?))
}

/// "ok", even for an unknown agent; 403 for an owned, live agent without its token.
pub async fn cleanup(
    State(s): State<SharedState>,
    Body(b): Body<CleanupBody>,
) -> AppResult<Json<StatusMessage>> {
    let notified = match s
        .store
        .cleanup_agent(b.scope.as_deref(), &b.agent_name, b.owner_token.as_deref())
        .await?
    {
        Owned::Done(n) => n,
        Owned::Refused => return Err(owner::refused(&b.agent_name)),
    };
    tracing::info!(
        "cleaned up agent {} (notified {:?})",
        b.agent_name,
        notified
    );
    Ok(Json(StatusMessage::ok(format!(
        "Cleaned up agent: {}",
        b.agent_name
    ))))
}

/// 403 for an owned, live agent without its token.
pub async fn desired_topology(
    State(s): State<SharedState>,
    Path(agent_id): Path<String>,
    Body(spec): Body<DesiredTopologySpec>,
) -> AppResult<Json<OkResponse>> {
    limits::name("agent_id", &agent_id)?;
    if s.store.set_desired_topology(&agent_id, &spec).await? == Owned::Refused {
        return Err(owner::refused(&agent_id));
    }
    tracing::debug!(
        "desired topology {agent_id} -> {:?} symmetric={}",
        spec.target_peers,
        spec.symmetric
    );
    Ok(Json(OkResponse { status: "ok" }))
}
