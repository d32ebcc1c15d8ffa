//! Memory-region records and the Redis address lookup.

use axum::extract::State;
use axum::Json;

use super::SharedState;
use crate::error::AppResult;
use crate::models::*;
use crate::net;

pub async fn register_mr(
    State(s): State<SharedState>,
    Json(b): Json<RegisterMrBody>,
) -> AppResult<Json<OkResponse>> {
    s.store.register_mr(&b).await?;
    Ok(Json(OkResponse { status: "ok" }))
}

pub async fn get_mr_info(
    State(s): State<SharedState>,
    Json(b): Json<GetMrInfoBody>,
) -> AppResult<Json<MrInfoResponse>> {
    let mr_info = s
        .store
        .get_mr_info(b.scope.as_deref(), &b.dst, &b.mr_name)
        .await?;
    Ok(Json(MrInfoResponse { mr_info }))
}

/// Full `redis://` URL, unlike `/start_peer_agent`'s bare `host:port` (as in the original).
pub async fn get_redis_address(
    State(s): State<SharedState>,
    Json(_): Json<EmptyBody>,
) -> Json<RedisAddressResponse> {
    Json(RedisAddressResponse {
        status: "ok",
        redis_address: net::redis_url_for_clients(&s.redis_url),
    })
}
