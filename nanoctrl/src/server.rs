//! `nanoctrl server`: connect to Redis, bind, serve until SIGTERM/SIGINT, then drain.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::auth::Token;
use crate::conn_limit::{fit_fd_limit, ConnLimits, LimitedListener};
use crate::net::{redact, Credentials};
use crate::redis_store::Store;
use crate::routes::{self, AppState};

/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// Tokens shorter than this get a warning at start-up (32 hex digits = 128 bits).
const MIN_STRONG_TOKEN: usize = 32;
/// How long startup waits for Redis before giving up with a clear error.
const REDIS_CONNECT_DEADLINE: Duration = Duration::from_secs(10);

pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// One URL, or a primary and its replicas (see `redis_conn`).
    pub redis_urls: Vec<String>,
    pub max_body_bytes: usize,
    pub conn_limits: ConnLimits,
    pub token: Option<Token>,
    /// Credentials to hand out instead of those of the Redis URL (token mode only).
    pub agent_redis_auth: Option<Credentials>,
}

pub async fn run(cfg: ServerConfig) -> Result<(), String> {
    let redis_hint = "set NANOCTRL_REDIS_URL or --redis-url to a reachable Redis";
    let shown: Vec<String> = cfg.redis_urls.iter().map(|u| redact(u)).collect();
    let shown = shown.join(",");
    let store = match tokio::time::timeout(
        REDIS_CONNECT_DEADLINE,
        Store::connect(cfg.redis_urls.clone()),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(format!(
                "Failed to connect to Redis at {shown}: {e}; {redis_hint}"
            ))
        }
        Err(_) => {
            return Err(format!(
                "Failed to connect to Redis at {shown}: no answer within {}s; {redis_hint}",
                REDIS_CONNECT_DEADLINE.as_secs()
            ))
        }
    };
    tracing::info!("connected to Redis at {}", redact(&store.url()));

    // Resolving (host, port) accepts hostnames such as `localhost`, which the
    // original's SocketAddr parse rejected.
    let listener = TcpListener::bind((cfg.host.as_str(), cfg.port))
        .await
        .map_err(|e| format!("Cannot listen on {}:{}: {e}", cfg.host, cfg.port))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!("NanoCtrl listening on http://{local}");

    let shared_credentials = match &cfg.token {
        Some(_) => {
            tracing::info!("NanoCtrl requires a bearer token on every route");
            if cfg
                .token
                .as_ref()
                .is_some_and(|t| t.as_str().len() < MIN_STRONG_TOKEN)
            {
                tracing::warn!(
                    "the token is shorter than {MIN_STRONG_TOKEN} characters and can be \
                     guessed; use a random one (e.g. `openssl rand -hex 32`)"
                );
            }
            cfg.agent_redis_auth
                .clone()
                .or_else(|| Credentials::of_url(&store.url()))
        }
        None => {
            tracing::warn!(
                "NanoCtrl is OPEN: no bearer token is configured (--token, NANOCTRL_TOKEN or \
                 --token-file), so anyone who can reach http://{local} can register agents, \
                 read their records and clean them up. Set a token unless every client is trusted."
            );
            if cfg.agent_redis_auth.is_some() || Credentials::of_url(&store.url()).is_some() {
                tracing::warn!(
                    "Redis credentials are not handed out by an open NanoCtrl: configure \
                     clients with their own Redis URL, or set a token"
                );
            }
            None
        }
    };
    let state = Arc::new(AppState {
        store,
        shared_credentials,
    });
    let app = routes::router(state, cfg.max_body_bytes, cfg.token);

    let signalled = Arc::new(tokio::sync::Notify::new());
    let on_signal = signalled.clone();
    let limits = ConnLimits {
        max: fit_fd_limit(cfg.conn_limits.max),
        ..cfg.conn_limits
    };
    let listener = LimitedListener::new(listener, limits);
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
