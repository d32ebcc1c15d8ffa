//! [`RingServer`]: serves rings to remote readers over endpoints, one thread and one
//! SlimeRPC session per serving endpoint.
//!
//! Per request (`wire` has the bytes):
//!
//! * FETCH: `Ring::grant` with a lease (the client's time left plus a margin, at most
//!   `max_lease`); the reply names the payload in the ring's data region, which the
//!   server registered in the endpoint's memory pool. The attempt joins the session's
//!   table of attempts this handler owns.
//! * COMMIT: READING → FREE if the attempt still owns the slot (or already committed:
//!   idempotent); else `SLOT_BUSY` ("lost the slot", the client fetches again).
//! * ABORT: READING → READY.
//!
//! The handler that granted an attempt finishes it as failed (READING → READY) when its
//! lease passes without a commit or when the session ends; each finish is a CAS on the
//! attempt's token, so a finish that lost the race (the commit came through another
//! session, the slot was reclaimed) is a logged no-op.
//!
//! A session idle for `idle_timeout` with no attempt open is closed (the client retires
//! its sessions earlier, `max_idle`); the thread then waits for the next session on the
//! same endpoint. The thread ends when the endpoint dies (a PeerAgent route waits for
//! the peer to come back) or at [`RingServer::stop`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use super::buffer::Ring;
use super::client::ring_rpc_config;
use super::connector::{Connector, FixedEndpoint, PeerRoute};
use super::reference::SlotRef;
use super::wire::{self, Reply, Request};
use crate::error::{Error, Result, Status};
use crate::memory::{MemoryPool, MrHandle};
use crate::peer::PeerAgent;
use crate::rpc::{RpcConfig, RpcProgress, RpcSession};
use crate::transport::Endpoint;

/// Knobs of a [`RingServer`].
#[derive(Clone, Debug)]
pub struct RingServerConfig {
    /// The longest lease granted (clients ask for their time left plus a margin).
    pub max_lease: Duration,
    /// The lease of a request that names none.
    pub default_lease: Duration,
    /// A session with no request and no open attempt for this long is closed.
    pub idle_timeout: Duration,
    /// Must match the clients' `slot_size` and `slot_count`.
    pub rpc: RpcConfig,
    /// Fault injection for tests: a pause between a grant and its reply (makes the
    /// handler an orphan when the client's attempt times out meanwhile).
    pub grant_delay: Duration,
}

impl Default for RingServerConfig {
    fn default() -> Self {
        RingServerConfig {
            max_lease: Duration::from_secs(60),
            default_lease: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            rpc: RpcConfig {
                progress: RpcProgress::Inline,
                // The server waits for each next session as long as the endpoint lives
                // (`stop` cancels the wait): giving a handshake up would pair the next
                // sessions wrongly (see `sessions`).
                handshake_timeout: Duration::from_secs(365 * 24 * 3600),
                ..ring_rpc_config()
            },
            grant_delay: Duration::ZERO,
        }
    }
}

/// Counters of a server.
#[derive(Default)]
pub struct ServerStats {
    pub sessions: AtomicU64,
    /// Sessions closed by the server after `idle_timeout`.
    pub evictions: AtomicU64,
    pub grants: AtomicU64,
    pub commits: AtomicU64,
    pub aborts: AtomicU64,
    /// Attempts finished as failed because their lease passed without a commit.
    pub lease_expiries: AtomicU64,
    /// Requests answered with an error.
    pub errors: AtomicU64,
}

/// A snapshot of a server's counters (its `ServerStats`).
// `repr(C)`: this is the C ABI's `dlslime_ring_server_counters_t` (renamed in
// cbindgen.toml).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerCounters {
    pub sessions: u64,
    pub evictions: u64,
    pub grants: u64,
    pub commits: u64,
    pub aborts: u64,
    pub lease_expiries: u64,
    pub errors: u64,
}

struct Shared {
    cfg: RingServerConfig,
    rings: RwLock<HashMap<String, Arc<Ring>>>,
    /// Where each ring's data region is registered: (pool, ring name) → handle.
    regs: Mutex<Vec<(Arc<MemoryPool>, String, MrHandle)>>,
    /// Endpoints being served (cancelled at stop to end a waiting handshake).
    endpoints: Mutex<Vec<Arc<dyn Endpoint>>>,
    stop: AtomicBool,
    stats: ServerStats,
}

/// Serves rings over endpoints. Thread-safe.
pub struct RingServer {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// An attempt this handler granted and must finish.
struct Attempt {
    ring: Arc<Ring>,
    r: SlotRef,
    len: u64,
    lease_until: Instant,
}

impl RingServer {
    pub fn new(cfg: RingServerConfig) -> Result<RingServer> {
        cfg.rpc.validate()?;
        Ok(RingServer {
            shared: Arc::new(Shared {
                cfg,
                rings: RwLock::new(HashMap::new()),
                regs: Mutex::new(Vec::new()),
                endpoints: Mutex::new(Vec::new()),
                stop: AtomicBool::new(false),
                stats: ServerStats::default(),
            }),
            threads: Mutex::new(Vec::new()),
        })
    }

    /// Serves `ring` under its name (on every endpoint, including those served already).
    pub fn add_ring(&self, ring: Arc<Ring>) -> Result<()> {
        let name = ring.name().to_string();
        {
            let mut rings = self.shared.rings.write();
            if rings.contains_key(&name) {
                return Err(Error::new(
                    Status::NameConflict,
                    format!("this server already serves a ring named {name:?}"),
                ));
            }
            rings.insert(name, ring.clone());
        }
        let pools: Vec<Arc<MemoryPool>> = self
            .shared
            .endpoints
            .lock()
            .iter()
            .map(|e| e.memory_pool().clone())
            .collect();
        for p in pools {
            self.shared.register(&p, &ring)?;
        }
        Ok(())
    }

    /// Serves the rings over a connected endpoint (a direct pair), on a new thread, until
    /// the endpoint dies or [`RingServer::stop`].
    pub fn serve_endpoint(&self, ep: Arc<dyn Endpoint>) -> Result<()> {
        self.spawn(Arc::new(FixedEndpoint(ep)))
    }

    /// Serves the rings to the PeerAgent peer `alias` (dialled now with `transport`), on
    /// a new thread, across the peer's reconnects, until [`RingServer::stop`].
    pub fn serve_peer(&self, agent: &PeerAgent, alias: &str, transport: &str) -> Result<()> {
        self.spawn(Arc::new(PeerRoute::new(agent, alias, transport)?))
    }

    /// Serves the endpoints `connector` produces, on a new thread.
    pub fn serve(&self, connector: Arc<dyn Connector>) -> Result<()> {
        self.spawn(connector)
    }

    fn spawn(&self, connector: Arc<dyn Connector>) -> Result<()> {
        if self.shared.stop.load(Ordering::Acquire) {
            return Err(Error::new(Status::ShutDown, "ring server is stopped"));
        }
        let sh = self.shared.clone();
        let h = std::thread::Builder::new()
            .name("dlslime-ring-serve".into())
            .spawn(move || sh.serve_loop(&*connector))
            .map_err(|e| Error::io("spawn ring serving thread", e))?;
        self.threads.lock().push(h);
        Ok(())
    }

    pub fn counters(&self) -> ServerCounters {
        snapshot!(&self.shared.stats => ServerCounters {
            sessions, evictions, grants, commits, aborts, lease_expiries, errors
        })
    }

    /// Stops serving: ends every session (open attempts are finished as failed), cancels
    /// the pending operations of the served endpoints (a session handshake still
    /// waiting), joins the threads and unregisters the rings from the endpoints' pools.
    /// Idempotent.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        let threads = std::mem::take(&mut *self.threads.lock());
        // A serving thread that read `stop` just before it was set may post its next
        // session handshake after a cancel (and that wait has no deadline of its own):
        // cancel again until every thread has seen the flag and left.
        loop {
            for ep in self.shared.endpoints.lock().iter() {
                ep.cancel_all();
            }
            if threads.iter().all(|t| t.is_finished()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for t in threads {
            let _ = t.join();
        }
        for (pool, _, h) in self.shared.regs.lock().drain(..) {
            let _ = pool.unregister(h);
        }
    }
}

impl Drop for RingServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Registers `ring`'s data region in `pool` (once per pool).
    fn register(&self, pool: &Arc<MemoryPool>, ring: &Arc<Ring>) -> Result<MrHandle> {
        let mut regs = self.regs.lock();
        if let Some((_, _, h)) = regs
            .iter()
            .find(|(p, n, _)| Arc::ptr_eq(p, pool) && n == ring.name())
        {
            return Ok(*h);
        }
        let (ptr, len) = ring.data_region();
        // SAFETY: the ring outlives the registration: `stop` unregisters before the
        // server drops its rings.
        let h = unsafe { pool.register(Some(&format!("ring:{}", ring.name())), ptr, len)? };
        regs.push((pool.clone(), ring.name().to_string(), h));
        Ok(h)
    }

    fn serve_loop(&self, connector: &dyn Connector) {
        let mut last_dead: Option<Arc<dyn Endpoint>> = None;
        while !self.stopping() {
            let ep = match connector.endpoint(Duration::from_millis(500)) {
                Ok(ep) => ep,
                Err(e) if e.status() == Status::ShutDown => return,
                Err(_) => continue,
            };
            if last_dead.as_ref().is_some_and(|d| Arc::ptr_eq(d, &ep)) {
                if !connector.redials() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            if let Err(e) = self.serve_endpoint(&ep) {
                if self.stopping() {
                    return;
                }
                crate::info_log!(
                    "ring server: endpoint to {} ended: {e}",
                    connector.describe()
                );
                last_dead = Some(ep);
                if !connector.redials() {
                    return;
                }
            }
        }
    }

    /// Serves sessions over one endpoint until it fails (`Err`) or the server stops.
    fn serve_endpoint(&self, ep: &Arc<dyn Endpoint>) -> Result<()> {
        let pool = ep.memory_pool().clone();
        let rings: Vec<Arc<Ring>> = self.rings.read().values().cloned().collect();
        for r in &rings {
            self.register(&pool, r)?;
        }
        {
            let mut eps = self.endpoints.lock();
            if !eps.iter().any(|e| Arc::ptr_eq(e, ep)) {
                eps.push(ep.clone());
            }
        }
        let res = loop {
            if self.stopping() {
                break Ok(());
            }
            let sess = match RpcSession::new(ep.clone(), self.cfg.rpc.clone()) {
                Ok(s) => s,
                Err(e) => break Err(e),
            };
            self.stats.sessions.fetch_add(1, Ordering::Relaxed);
            self.serve_session(&sess, &pool);
            sess.close();
        };
        self.endpoints.lock().retain(|e| !Arc::ptr_eq(e, ep));
        res
    }

    fn serve_session(&self, sess: &RpcSession, pool: &Arc<MemoryPool>) {
        let mut open: HashMap<u32, Attempt> = HashMap::new();
        let mut last = Instant::now();
        loop {
            if self.stopping() {
                break;
            }
            let now = Instant::now();
            let mut wake = (last + self.cfg.idle_timeout).min(now + Duration::from_millis(200));
            if let Some(t) = open.values().map(|a| a.lease_until).min() {
                wake = wake.min(t);
            }
            match sess.poll_request(Some(wake.saturating_duration_since(now))) {
                Ok(Some(req)) => {
                    last = Instant::now();
                    self.handle(req, &mut open, pool);
                }
                Ok(None) => {}
                Err(_) => break,
            }
            let now = Instant::now();
            open.retain(|tok, a| {
                if a.lease_until > now {
                    return true;
                }
                self.stats.lease_expiries.fetch_add(1, Ordering::Relaxed);
                a.ring.finish(a.r, *tok, false, a.len);
                false
            });
            if open.is_empty() && now.duration_since(last) >= self.cfg.idle_timeout {
                self.stats.evictions.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        // The session is over: nobody can commit through it any more.
        for (tok, a) in open {
            a.ring.finish(a.r, tok, false, a.len);
        }
    }

    fn handle(
        &self,
        req: crate::rpc::Request,
        open: &mut HashMap<u32, Attempt>,
        pool: &Arc<MemoryPool>,
    ) {
        let tag = req.tag();
        let reply = match Request::decode(req.payload()) {
            Err(e) => Reply::error(&e, 0),
            Ok(body) => match self.rings.read().get(&body.producer).cloned() {
                None => Reply::error(
                    &Error::new(
                        Status::UnknownHandle,
                        format!("this server does not serve producer {:?}", body.producer),
                    ),
                    body.generation,
                ),
                Some(ring) => match tag {
                    wire::TAG_FETCH => self.fetch(&ring, &body, open, pool),
                    wire::TAG_COMMIT => self.commit(&ring, &body, open),
                    wire::TAG_ABORT => {
                        let r = SlotRef::new(body.slot, body.generation);
                        if let Some(a) = open.remove(&body.token) {
                            ring.finish(a.r, body.token, false, a.len);
                        } else {
                            ring.finish(r, body.token, false, 0);
                        }
                        self.stats.aborts.fetch_add(1, Ordering::Relaxed);
                        Reply {
                            generation: body.generation,
                            ..Default::default()
                        }
                    }
                    t => Reply::error(
                        &Error::new(Status::Protocol, format!("unknown ring request tag {t}")),
                        body.generation,
                    ),
                },
            },
        };
        if reply.status != 0 {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = req.reply(&reply.encode()) {
            crate::info_log!("ring server: could not reply: {e}");
        }
    }

    fn fetch(
        &self,
        ring: &Arc<Ring>,
        body: &Request,
        open: &mut HashMap<u32, Attempt>,
        pool: &Arc<MemoryPool>,
    ) -> Reply {
        let r = SlotRef::new(body.slot, body.generation);
        let lease = if body.aux == 0 {
            self.cfg.default_lease
        } else {
            Duration::from_millis(body.aux).min(self.cfg.max_lease)
        };
        let region = match self.register(pool, ring).and_then(|h| pool.region(h)) {
            Ok(x) => x,
            Err(e) => return Reply::error(&e, body.generation),
        };
        match ring.grant(r, Some(lease)) {
            Err(e) => Reply::error(&e, body.generation),
            Ok((tok, len)) => {
                self.stats.grants.fetch_add(1, Ordering::Relaxed);
                open.insert(
                    tok,
                    Attempt {
                        ring: ring.clone(),
                        r,
                        len,
                        lease_until: Instant::now() + lease,
                    },
                );
                if !self.cfg.grant_delay.is_zero() {
                    std::thread::sleep(self.cfg.grant_delay);
                }
                Reply {
                    status: 0,
                    token: tok,
                    generation: body.generation,
                    length: len,
                    region_addr: region.addr as u64,
                    region_len: region.len as u64,
                    region_key: region.key,
                    lease_ms: lease.as_millis().min(u32::MAX as u128) as u32,
                    payload_offset: ring.payload_offset(body.slot),
                    message: String::new(),
                }
            }
        }
    }

    fn commit(&self, ring: &Arc<Ring>, body: &Request, open: &mut HashMap<u32, Attempt>) -> Reply {
        let r = SlotRef::new(body.slot, body.generation);
        open.remove(&body.token);
        let ok = ring.finish(r, body.token, true, body.aux)
            || matches!(
                ring.commit_state(r, body.token),
                Ok(super::slot::CommitState::Committed)
            );
        if ok {
            self.stats.commits.fetch_add(1, Ordering::Relaxed);
            Reply {
                generation: body.generation,
                ..Default::default()
            }
        } else {
            Reply::error(
                &Error::new(
                    Status::SlotBusy,
                    format!(
                        "the read of slot {} (generation {}) lost the slot before its commit (its lease passed or it was released); fetch it again",
                        body.slot, body.generation
                    ),
                ),
                body.generation,
            )
        }
    }
}
