//! Generic entity registry: register / unregister / heartbeat / lookup / list.

use axum::extract::State;
use axum::Json;

use super::SharedState;
use crate::body::Body;
use crate::error::AppResult;
use crate::models::*;
use crate::owner;
use crate::redis_store::Beat;

pub async fn register(
    State(s): State<SharedState>,
    Body(b): Body<RegisterEntityBody>,
) -> AppResult<Json<StatusMessage>> {
    let rev = s.store.register_entity(&b).await?;
    tracing::debug!(
        "registered {}:{} kind={} rev={rev}",
        b.entity_type,
        b.entity_id,
        b.kind
    );
    Ok(Json(StatusMessage::ok(format!(
        "Entity {}:{} registered successfully",
        b.entity_type, b.entity_id
    ))))
}

/// Unregistering a missing entity is still "ok" (no event, no revision bump).
pub async fn unregister(
    State(s): State<SharedState>,
    Body(b): Body<EntityRefBody>,
) -> AppResult<Json<StatusMessage>> {
    let rev = s
        .store
        .unregister_entity(b.scope.as_deref(), &b.entity_type, &b.entity_id)
        .await?;
    tracing::debug!("unregistered {}:{} rev={rev}", b.entity_type, b.entity_id);
    Ok(Json(StatusMessage::ok(format!(
        "Entity {}:{} unregistered successfully",
        b.entity_type, b.entity_id
    ))))
}

/// 200 either way: `not_found` tells the client to register again. 403 for an owned
/// agent without its owner token.
pub async fn heartbeat(
    State(s): State<SharedState>,
    Body(b): Body<HeartbeatBody>,
) -> AppResult<Json<StatusMessage>> {
    let ty = &b.entity_type;
    let id = &b.entity_id;
    let beat = s
        .store
        .heartbeat(b.scope.as_deref(), ty, id, b.owner_token.as_deref())
        .await?;
    Ok(Json(match beat {
        Beat::Ok => StatusMessage::ok(format!("Heartbeat successful for {ty} {id}")),
        Beat::NotFound => StatusMessage {
            status: "not_found",
            message: format!("{ty} {id} not found. Please register first."),
        },
        Beat::Refused => return Err(owner::refused(id)),
    }))
}

pub async fn get_entity_info(
    State(s): State<SharedState>,
    Body(b): Body<EntityRefBody>,
) -> AppResult<Json<EntityInfoResponse>> {
    let info = s
        .store
        .get_entity_info(b.scope.as_deref(), &b.entity_type, &b.entity_id)
        .await?;
    let status = if info.is_some() { "ok" } else { "not_found" };
    Ok(Json(EntityInfoResponse {
        status,
        entity_info: info,
    }))
}

pub async fn list_entities(
    State(s): State<SharedState>,
    Body(b): Body<ListEntitiesBody>,
) -> AppResult<Json<ListEntitiesResponse>> {
    let entities = s.store.list_entities(&b).await?;
    Ok(Json(ListEntitiesResponse {
        status: "ok",
        entities,
    }))
}
