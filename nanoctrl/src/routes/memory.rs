//! Memory-region records and the Redis address lookup.

use axum::extract::State;
use axum::Json;

use super::SharedState;
use crate::body::Body;
use crate::error::AppResult;
use crate::models::*;
use crate::net;
use crate::owner;
use crate::redis_store::Owned;

/// Refused (403) for an owned, live agent without its owner token.
pub async fn register_mr(
    State(s): State<SharedState>,
    Body(b): Body<RegisterMrBody>,
) -> AppResult<Json<OkResponse>> {
    match s.store.register_mr(&b).await? {
        Owned::Done(()) => Ok(Json(OkResponse { status: "ok" })),
        Owned::Refused => Err(owner::refused(&b.agent_name)),
    }
}

pub async fn get_mr_info(
    State(s): State<SharedState>,
    Body(b): Body<GetMrInfoBody>,
) -> AppResult<Json<MrInfoResponse>> {
    let mr_info = s
        .store
        .get_mr_info(b.scope.as_deref(), &b.dst, &b.mr_name)
        .await?;
    Ok(Json(MrInfoResponse { mr_info }))
}

/// Full `redis://` URL of the Redis node in use, unlike `/start_peer_agent`'s bare
/// `host:port` (as in the original). Credentials only with a bearer token configured.
pub async fn get_redis_address(
    State(s): State<SharedState>,
    Body(b): Body<RedisAddressBody>,
) -> Json<RedisAddressResponse> {
    Json(RedisAddressResponse {
        status: "ok",
        redis_address: net::redis_url_for_client(
            &s.store.url(),
            b.address.as_deref(),
            s.shared_credentials.as_ref(),
        ),
    })
}
