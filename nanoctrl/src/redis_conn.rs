//! NanoCtrl's connection to Redis: one `ConnectionManager` (multiplexed: every request is
//! pipelined on one socket; it reconnects on its own after Redis restarts), following the
//! primary when several Redis URLs are configured.
//!
//! With one URL nothing else happens. With several (`--redis-url a,b,…`: a primary and
//! its replicas, e.g. under Sentinel or for a promotion by hand), an error that says the
//! node is gone or no longer the primary (connection refused/dropped, timeout,
//! `READONLY`, `MASTERDOWN`) starts a resolution in the background: each URL is asked
//! `ROLE`, the first `master` becomes the current node. Requests in between fail with
//! 500 (`Redis: …`) and clients retry, as in any Redis outage. NanoCtrl holds nothing
//! else, so any number of NanoCtrl processes can serve one Redis.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

use crate::error::{log_redis_error, REDIS_ERRORS};
use crate::net::redact;
use crate::throttle::{suppressed_note, Throttle};

/// How long one `ROLE` probe of a node may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Least time between two resolutions (errors come in bursts).
const RESOLVE_EVERY: Duration = Duration::from_millis(250);

static NO_PRIMARY: Throttle = Throttle::new(Duration::from_secs(10));

/// The Redis URLs of a `--redis-url` value: comma-separated (a comma inside a password
/// must be percent-encoded, as any reserved character of a URL).
pub fn split_urls(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect()
}

/// A handle on the current Redis node. Cheap to clone.
#[derive(Clone)]
pub struct RedisNodes {
    shared: Arc<Shared>,
}

struct Shared {
    urls: Vec<String>,
    current: RwLock<Current>,
    resolving: AtomicBool,
    last_resolve: Mutex<Option<Instant>>,
    /// Set by an error that lost the node, cleared (and logged) by the next success.
    failing: AtomicBool,
}

#[derive(Clone)]
struct Current {
    index: usize,
    mgr: ConnectionManager,
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        // Fail requests fast while Redis is down instead of queueing them for long:
        // one quick reconnect attempt per request, bounded by these timeouts.
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
}

fn client(url: &str) -> RedisResult<redis::Client> {
    // TCP_NODELAY: many requests share one pipelined socket; Nagle would hold back a
    // command while an earlier one is unacknowledged.
    let info = redis::IntoConnectionInfo::into_connection_info(url)?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    redis::Client::open(info)
}

async fn manager(url: &str) -> RedisResult<ConnectionManager> {
    ConnectionManager::new_with_config(client(url)?, manager_config()).await
}

/// `Ok(true)` when the node at `url` answers `ROLE` with `master`.
async fn is_primary(url: &str) -> RedisResult<bool> {
    let probe = async {
        let mut c = client(url)?.get_multiplexed_async_connection().await?;
        let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut c).await?;
        Ok(
            matches!(role.first(), Some(Value::BulkString(b)) if b == b"master")
                || matches!(role.first(), Some(Value::SimpleString(s)) if s == "master"),
        )
    };
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(r) => r,
        Err(_) => Err(RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "ROLE probe timed out",
        ))),
    }
}

/// Whether an error means "this node is gone or is not the primary any more".
fn node_lost(code: Option<&str>, e: Option<&RedisError>) -> bool {
    if matches!(code, Some("READONLY" | "MASTERDOWN" | "LOADING")) {
        return true;
    }
    e.is_some_and(|e| {
        e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() || e.is_timeout()
    })
}

impl RedisNodes {
    /// Connects to the first URL (one URL), or to the first URL whose node is a primary
    /// (several; retried until one is, the caller bounds the wait), and PINGs it.
    pub async fn connect(urls: Vec<String>) -> RedisResult<RedisNodes> {
        if urls.is_empty() {
            return Err(RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "no Redis URL given",
            )));
        }
        let index = if urls.len() == 1 {
            0
        } else {
            loop {
                let mut last_err = None;
                let mut found = None;
                for (i, u) in urls.iter().enumerate() {
                    match is_primary(u).await {
                        Ok(true) => {
                            found = Some(i);
                            break;
                        }
                        Ok(false) => {}
                        Err(e) => last_err = Some(e),
                    }
                }
                if let Some(i) = found {
                    break i;
                }
                tracing::warn!(
                    "no primary among the Redis URLs yet{}; retrying",
                    last_err
                        .map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        };
        let mut mgr = manager(&urls[index]).await?;
        redis::cmd("PING").query_async::<String>(&mut mgr).await?;
        Ok(RedisNodes {
            shared: Arc::new(Shared {
                urls,
                current: RwLock::new(Current { index, mgr }),
                resolving: AtomicBool::new(false),
                last_resolve: Mutex::new(None),
                failing: AtomicBool::new(false),
            }),
        })
    }

    fn current(&self) -> Current {
        self.shared
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A connection to the current node, for one request.
    pub fn conn(&self) -> Conn {
        Conn {
            mgr: self.current().mgr,
            nodes: self.clone(),
        }
    }

    /// The URL of the current node (with its credentials: never log it as is).
    pub fn url(&self) -> String {
        self.shared.urls[self.current().index].clone()
    }

    fn on_error(&self, code: Option<&str>, e: Option<&RedisError>) {
        if !node_lost(code, e) {
            return;
        }
        self.shared.failing.store(true, Ordering::Relaxed);
        if self.shared.urls.len() < 2 {
            return;
        }
        {
            let mut last = self
                .shared
                .last_resolve
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < RESOLVE_EVERY) {
                return;
            }
            if self.shared.resolving.swap(true, Ordering::AcqRel) {
                return;
            }
            *last = Some(Instant::now());
        }
        let me = self.clone();
        tokio::spawn(async move {
            me.resolve().await;
            me.shared.resolving.store(false, Ordering::Release);
        });
    }

    /// Finds the primary and makes it the current node.
    async fn resolve(&self) {
        for (i, u) in self.shared.urls.iter().enumerate() {
            match is_primary(u).await {
                Ok(true) => {
                    if i == self.current().index {
                        return; // the manager reconnects to it on its own
                    }
                    match manager(u).await {
                        Ok(mgr) => {
                            *self
                                .shared
                                .current
                                .write()
                                .unwrap_or_else(|e| e.into_inner()) = Current { index: i, mgr };
                            tracing::warn!("Redis primary is now {}", redact(u));
                        }
                        Err(e) => log_redis_error(&format!("connect to {}: {e}", redact(u))),
                    }
                    return;
                }
                Ok(false) => {}
                Err(_) => {}
            }
        }
        if let Some(n) = NO_PRIMARY.admit() {
            tracing::warn!(
                "no Redis primary among {} URLs; requests fail until one is promoted{}",
                self.shared.urls.len(),
                suppressed_note(n)
            );
        }
    }
}

/// One request's connection: the current node's manager, reporting errors back so that
/// a lost primary is replaced.
pub struct Conn {
    mgr: ConnectionManager,
    nodes: RedisNodes,
}

impl Conn {
    fn check<T>(&self, r: &RedisResult<T>, value_code: Option<&str>) {
        match r {
            Err(e) => self.nodes.on_error(e.code(), Some(e)),
            Ok(_) if value_code.is_some() => self.nodes.on_error(value_code, None),
            Ok(_) => {
                let shared = &self.nodes.shared;
                // one relaxed load per request; the swap only after an outage
                if shared.failing.load(Ordering::Relaxed)
                    && shared.failing.swap(false, Ordering::Relaxed)
                {
                    // warn, like the errors it ends: whoever saw those sees this
                    tracing::warn!(
                        "Redis reachable again{}",
                        suppressed_note(REDIS_ERRORS.reset())
                    );
                }
            }
        }
    }
}

fn server_code(v: &Value) -> Option<&str> {
    match v {
        Value::ServerError(e) => Some(e.code()),
        _ => None,
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let r = self.mgr.req_packed_command(cmd).await;
            let code = r.as_ref().ok().and_then(server_code).map(str::to_string);
            self.check(&r, code.as_deref());
            r
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let r = self.mgr.req_packed_commands(pipeline, offset, count).await;
            let code = r
                .as_ref()
                .ok()
                .and_then(|vs| vs.iter().find_map(server_code))
                .map(str::to_string);
            self.check(&r, code.as_deref());
            r
        })
    }

    fn get_db(&self) -> i64 {
        self.mgr.get_db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_lists() {
        assert_eq!(split_urls("redis://a:1"), ["redis://a:1"]);
        assert_eq!(
            split_urls(" redis://a:1 , redis://:p%2Cw@b:2,"),
            ["redis://a:1", "redis://:p%2Cw@b:2"]
        );
        assert!(node_lost(Some("READONLY"), None));
        assert!(!node_lost(Some("WRONGTYPE"), None));
    }
}
