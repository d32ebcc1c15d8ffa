//! `nanoctrl server`: connect to Redis, bind, serve until SIGTERM/SIGINT, then drain.

use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::redis_store::Store;
use crate::routes::{self, AppState};

/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// How long startup waits for Redis before giving up with a clear error.
const REDIS_CONNECT_DEADLINE: Duration = Duration::from_secs(10);

pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub redis_url: String,
    pub max_body_bytes: usize,
}

pub async fn run(cfg: ServerConfig) -> Result<(), String> {
    let redis_hint = "set NANOCTRL_REDIS_URL or --redis-url to a reachable Redis";
    let store =
        match tokio::time::timeout(REDIS_CONNECT_DEADLINE, Store::connect(&cfg.redis_url)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(format!(
                    "Failed to connect to Redis at {}: {e}; {redis_hint}",
                    cfg.redis_url
                ))
            }
            Err(_) => {
                return Err(format!(
                    "Failed to connect to Redis at {}: no answer within {}s; {redis_hint}",
                    cfg.redis_url,
                    REDIS_CONNECT_DEADLINE.as_secs()
                ))
            }
        };
    tracing::info!("connected to Redis at {}", cfg.redis_url);

    // Resolving (host, port) accepts hostnames such as `localhost`, which the
    // original's SocketAddr parse rejected.
    let listener = TcpListener::bind((cfg.host.as_str(), cfg.port))
        .await
        .map_err(|e| format!("Cannot listen on {}:{}: {e}", cfg.host, cfg.port))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!("NanoCtrl listening on http://{local}");

    let state = Arc::new(AppState {
        store,
        redis_url: cfg.redis_url,
    });
    let app = routes::router(state, cfg.max_body_bytes);

    let signalled = Arc::new(tokio::sync::Notify::new());
    let on_signal = signalled.clone();
    // TCP_NODELAY on accepted connections: small JSON replies must not wait on Nagle.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!("shutdown signal received; draining in-flight requests");
        on_signal.notify_one();
    });
    tokio::select! {
        r = server => r.map_err(|e| format!("server error: {e}"))?,
        _ = async { signalled.notified().await; tokio::time::sleep(DRAIN_DEADLINE).await } => {
            tracing::warn!("drain deadline passed; exiting with requests still open");
        }
    }
    tracing::info!("NanoCtrl stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
