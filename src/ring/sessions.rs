//! The client's connection per route: one SlimeRPC session over the route's endpoint,
//! shared by concurrent fetches, created in the background and retired before the
//! server's idle eviction.
//!
//! Session establishment is a handshake of one message each way over the endpoint's
//! send/recv, so the k-th session of each side pairs with the k-th of the other. A side
//! that gave up a handshake half way would leave its message behind and pair the next
//! sessions wrongly; so a handshake is never abandoned while the endpoint lives: it runs
//! on its own thread until it completes or the endpoint dies, and a fetch that cannot
//! wait that long gives up waiting, not the handshake.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::connector::Connector;
use super::health::Health;
use crate::engine::Deadline;
use crate::error::{Error, Result, Status};
use crate::memory::{RemoteHandle, RemoteRegion};
use crate::rpc::{RpcConfig, RpcSession};
use crate::transport::Endpoint;

/// A live session on a route.
pub(crate) struct Conn {
    pub ep: Arc<dyn Endpoint>,
    pub sess: RpcSession,
    /// When the last fetch on it finished (for retirement).
    last_use: Mutex<Instant>,
    in_flight: AtomicUsize,
    /// The serving side's ring regions as this endpoint's remote pool knows them.
    remote: Mutex<Vec<(RemoteRegion, RemoteHandle)>>,
}

impl Conn {
    /// The remote handle of a region the serving side named in a reply.
    pub fn remote_handle(&self, producer: &str, r: RemoteRegion) -> Result<RemoteHandle> {
        let mut m = self.remote.lock();
        if let Some((_, h)) = m.iter().find(|(x, _)| *x == r) {
            return Ok(*h);
        }
        let h = self
            .ep
            .remote_pool()
            .register(&format!("ring:{producer}:{:x}", r.addr), r)?;
        m.push((r, h));
        Ok(h)
    }

    fn idle(&self) -> Duration {
        self.last_use.lock().elapsed()
    }
}

/// Marks a connection in use for as long as it lives.
pub(crate) struct InUse(pub Arc<Conn>);

impl Drop for InUse {
    fn drop(&mut self) {
        *self.0.last_use.lock() = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

enum SlotState {
    Idle,
    Connecting,
    Ready(Arc<Conn>),
    /// The last attempt to connect failed (when): reported to the fetches waiting then.
    Failed(Error, Instant),
}

/// How long a connect failure is reported to new fetches before a new attempt is made.
const FAILURE_MEMORY: Duration = Duration::from_millis(500);

/// Counters of the client's sessions.
#[derive(Default)]
pub struct SessionStats {
    pub created: AtomicU64,
    /// Closed by the client after `max_idle` without use.
    pub retired: AtomicU64,
    /// Found closed by the peer (evicted, or the serving side went away).
    pub lost: AtomicU64,
    /// Closed by the client after a retryable failure on them.
    pub dropped: AtomicU64,
}

/// One route to a producer's serving endpoint.
pub(crate) struct Route {
    pub id: usize,
    pub connector: Arc<dyn Connector>,
    pub health: Health,
    slot: Mutex<SlotState>,
    cv: Condvar,
}

impl Route {
    pub fn new(id: usize, connector: Arc<dyn Connector>) -> Route {
        Route {
            id,
            connector,
            health: Health::default(),
            slot: Mutex::new(SlotState::Idle),
            cv: Condvar::new(),
        }
    }

    /// The route's session, waiting at most until `deadline` for one to be established.
    pub fn checkout(
        self: &Arc<Self>,
        rpc: &RpcConfig,
        max_idle: Duration,
        stats: &Arc<SessionStats>,
        deadline: Deadline,
    ) -> Result<InUse> {
        let mut g = self.slot.lock();
        loop {
            match &*g {
                SlotState::Ready(c) => {
                    let c = c.clone();
                    if c.sess.is_closed() {
                        stats.lost.fetch_add(1, Ordering::Relaxed);
                        *g = SlotState::Idle;
                        continue;
                    }
                    if c.in_flight.load(Ordering::Acquire) == 0 && c.idle() >= max_idle {
                        // Retire it before the server's idle eviction can race a request.
                        *g = SlotState::Idle;
                        drop(g);
                        c.sess.close();
                        stats.retired.fetch_add(1, Ordering::Relaxed);
                        g = self.slot.lock();
                        continue;
                    }
                    c.in_flight.fetch_add(1, Ordering::AcqRel);
                    return Ok(InUse(c));
                }
                SlotState::Connecting => {
                    if deadline.expired() {
                        return Err(Error::new(
                            Status::Timeout,
                            format!(
                                "no session to {} was established within the attempt's deadline",
                                self.connector.describe()
                            ),
                        ));
                    }
                    let left = deadline.remaining().unwrap_or(Duration::from_secs(3600));
                    self.cv.wait_for(&mut g, left);
                }
                SlotState::Failed(e, at) if at.elapsed() < FAILURE_MEMORY => {
                    return Err(e.clone());
                }
                SlotState::Idle | SlotState::Failed(..) => {
                    *g = SlotState::Connecting;
                    let me = self.clone();
                    let (rpc, stats) = (rpc.clone(), stats.clone());
                    let spawned = std::thread::Builder::new()
                        .name("dlslime-ring-connect".into())
                        .spawn(move || me.connect(rpc, stats));
                    if let Err(e) = spawned {
                        *g = SlotState::Idle;
                        return Err(Error::io("spawn ring connect thread", e));
                    }
                }
            }
        }
    }

    /// Establishes a session (its own thread: never abandoned half way).
    fn connect(self: Arc<Self>, rpc: RpcConfig, stats: Arc<SessionStats>) {
        let r = (|| {
            let ep = self.connector.endpoint(rpc.handshake_timeout)?;
            let sess = RpcSession::new(ep.clone(), rpc.clone())?;
            Ok::<_, Error>(Conn {
                ep,
                sess,
                last_use: Mutex::new(Instant::now()),
                in_flight: AtomicUsize::new(0),
                remote: Mutex::new(Vec::new()),
            })
        })();
        let mut g = self.slot.lock();
        *g = match r {
            Ok(c) => {
                stats.created.fetch_add(1, Ordering::Relaxed);
                SlotState::Ready(Arc::new(c))
            }
            Err(e) => SlotState::Failed(
                Error::new(
                    e.status(),
                    format!("session to {}: {}", self.connector.describe(), e.message()),
                ),
                Instant::now(),
            ),
        };
        self.cv.notify_all();
    }

    /// Closes the route's session after a retryable failure on it (the next fetch makes
    /// a new one). Only the session `c` is closed, not one made since.
    pub fn drop_conn(&self, c: &Arc<Conn>, stats: &SessionStats) {
        let mut g = self.slot.lock();
        if let SlotState::Ready(cur) = &*g {
            if Arc::ptr_eq(cur, c) {
                *g = SlotState::Idle;
                drop(g);
                c.sess.close();
                stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Closes the session if there is one (client shutdown).
    pub fn close(&self) {
        let old = std::mem::replace(&mut *self.slot.lock(), SlotState::Idle);
        if let SlotState::Ready(c) = old {
            c.sess.close();
        }
    }

    /// The live session, if any (for a commit failover: no new session is made).
    pub fn current(&self) -> Option<Arc<Conn>> {
        match &*self.slot.lock() {
            SlotState::Ready(c) if !c.sess.is_closed() => Some(c.clone()),
            _ => None,
        }
    }

    /// Whether a session exists and when it was last used.
    pub fn session_idle(&self) -> Option<Duration> {
        match &*self.slot.lock() {
            SlotState::Ready(c) => Some(c.idle()),
            _ => None,
        }
    }
}
