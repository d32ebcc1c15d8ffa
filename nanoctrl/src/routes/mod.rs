//! The HTTP surface: every route of the original, same paths, methods and shapes, plus
//! `/health`, `/metrics` and `/obs` (the agents' observability snapshots). Every route sits behind the bearer-token check (`auth.rs`, when a token
//! is configured) and the early body-size check (`body.rs`).

mod agents;
mod entities;
mod health;
mod memory;
mod obs;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;

use crate::auth::{self, Token};
use crate::body::{self, MaxBody};
use crate::net::Credentials;
use crate::redis_store::Store;

pub struct AppState {
    pub store: Store,
    /// Redis credentials handed out with the Redis address: only when a bearer token is
    /// configured (so only to callers that presented it); never by an open NanoCtrl.
    pub shared_credentials: Option<Credentials>,
}

pub type SharedState = Arc<AppState>;

/// Health check text, byte-identical to the original's (clients may compare it).
pub const HEALTH_TEXT: &str = "NanoCtrl Server Running";

pub fn router(state: SharedState, max_body_bytes: usize, token: Option<Token>) -> Router {
    Router::new()
        .route("/", get(|| async { HEALTH_TEXT }))
        .route("/health", get(health::health))
        .route("/register", post(entities::register))
        .route("/unregister", post(entities::unregister))
        .route("/heartbeat", post(entities::heartbeat))
        .route("/get_entity_info", post(entities::get_entity_info))
        .route("/list_entities", post(entities::list_entities))
        .route("/start_peer_agent", post(agents::start_peer_agent))
        .route("/query", post(agents::query))
        .route("/cleanup", post(agents::cleanup))
        .route(
            "/v1/desired_topology/{agent_id}",
            post(agents::desired_topology),
        )
        .route("/register_mr", post(memory::register_mr))
        .route("/get_mr_info", post(memory::get_mr_info))
        .route("/get_redis_address", post(memory::get_redis_address))
        .route("/metrics", get(obs::metrics))
        .route("/obs", get(obs::obs))
        // Bodies without a Content-Length are cut off at the limit while being read.
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(
            MaxBody(max_body_bytes),
            body::reject_oversized,
        ))
        // Outermost: nothing is read or routed for a caller without the token.
        .layer(middleware::from_fn_with_state(token, auth::require_token))
        .with_state(state)
}
