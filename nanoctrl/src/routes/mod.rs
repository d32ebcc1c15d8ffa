//! The HTTP surface: every route of the original, same paths, methods and shapes.

mod agents;
mod entities;
mod memory;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tower_http::limit::RequestBodyLimitLayer;

use crate::redis_store::Store;

pub struct AppState {
    pub store: Store,
    /// The effective Redis URL (after `NANOCTRL_REDIS_URL` precedence).
    pub redis_url: String,
}

pub type SharedState = Arc<AppState>;

/// Health check text, byte-identical to the original's (clients may compare it).
pub const HEALTH_TEXT: &str = "NanoCtrl Server Running";

pub fn router(state: SharedState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/", get(|| async { HEALTH_TEXT }))
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
        // Oversized bodies get 413. tower-http answers from Content-Length before the body
        // is read (so `Expect: 100-continue` clients never upload it); axum's own limit
        // covers chunked bodies without a length.
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(RequestBodyLimitLayer::new(max_body_bytes))
        .with_state(state)
}
