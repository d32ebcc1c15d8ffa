//! [`RingClient`]: fetches payloads by reference `(producer, slot, generation)` from a
//! producer's serving endpoints.
//!
//! One attempt, on one route, under one deadline (`timeout`):
//!
//! 1. the route's session (made in the background if there is none; see `sessions`);
//! 2. FETCH: the server grants the slot (READY → READING, token, lease) and replies with
//!    status, length, generation and where the payload lies; `SLOT_BUSY` is retried with
//!    a backoff (1 ms doubling to 50 ms) until the deadline;
//! 3. a one-sided read of the payload straight from the slot into the caller's buffer
//!    (or a pooled one);
//! 4. COMMIT: the server moves READING → FREE if the attempt still owns the slot. Only a
//!    confirmed commit makes the bytes the caller's: it proves nobody touched the slot
//!    during the read. If the commit's reply is lost, the commit is asked again on the
//!    producer's other live sessions (it is idempotent; the token is the capability).
//!    A failed read sends ABORT (READING → READY) without waiting.
//!
//! Around it (`retry` has the classes): a retryable failure quarantines the route for
//! `quarantine` and the next attempt goes to the next healthy route (round robin; all
//! quarantined: all are used), up to `max_attempts`; [`RingClient::fetch_batch`] runs many
//! fetches `concurrency` at a time, in up to `max_rounds` rounds for the retryable
//! failures. Worst case: [`RingClient::fetch_worst_case`], [`RingClient::batch_worst_case`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use super::buffers::{Buf, BufferPool, Payload};
use super::connector::{Connector, FixedEndpoint, PeerRoute};
use super::health::pick;
use super::reference::SlotRef;
use super::retry::{self, classify, Retry};
use super::sessions::{Conn, InUse, Route, SessionStats};
use super::wire::{self, Reply, Request};
use crate::engine::Deadline;
use crate::error::{Error, Result, Status};
use crate::memory::{MemoryPool, MrHandle, RemoteRegion};
use crate::peer::PeerAgent;
use crate::rpc::{RpcConfig, RpcProgress};
use crate::transport::{Assignment, Endpoint};

/// The SlimeRPC configuration of ring sessions; client and server must agree on
/// `slot_size` and `slot_count`.
pub fn ring_rpc_config() -> RpcConfig {
    RpcConfig {
        slot_size: 2048,
        slot_count: 16,
        // The default (inline) progress: a close notice that came while no fetch waited
        // is seen at the next checkout, and a late reply of an abandoned call or of an
        // earlier session is fenced off by the RPC layer.
        progress: RpcProgress::Auto,
        // A session handshake is never abandoned while its endpoint lives (see
        // `sessions`): this bounds only a peer that is alive and never answers.
        handshake_timeout: Duration::from_secs(3600),
        ..Default::default()
    }
}

/// Knobs of a [`RingClient`].
#[derive(Clone, Debug)]
pub struct RingClientConfig {
    /// The deadline of one attempt, end to end (session, grant, read, commit).
    pub timeout: Duration,
    /// Attempts per fetch, each on the next healthy route.
    pub max_attempts: u32,
    /// How long a route that failed retryably is skipped.
    pub quarantine: Duration,
    /// A session unused this long is closed and replaced; keep it below the servers'
    /// `idle_timeout`, so the server never evicts a session the client is about to use.
    pub max_idle: Duration,
    /// Rounds of [`RingClient::fetch_batch`] (retryable failures go to the next round).
    pub max_rounds: u32,
    /// Pause between batch rounds.
    pub round_backoff: Duration,
    /// Fetches a batch runs at once.
    pub concurrency: usize,
    /// Added to the time left in the attempt when asking the server for a lease.
    pub lease_margin: Duration,
    /// How long past the attempt's deadline a commit may still be confirmed: once the
    /// bytes are read, learning whether the commit held is worth a little longer than
    /// giving the payload up (it may be consumed, and then nobody would have it).
    pub commit_grace: Duration,
    pub rpc: RpcConfig,
    /// Fault injection for tests: runs after each grant, before the read.
    pub after_grant: Option<FaultHook>,
    /// Fault injection for tests: runs after each read, before the commit.
    pub before_commit: Option<FaultHook>,
}

/// A test hook (see [`RingClientConfig::after_grant`]).
#[derive(Clone)]
pub struct FaultHook(pub Arc<dyn Fn(SlotRef) + Send + Sync>);

impl std::fmt::Debug for FaultHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FaultHook")
    }
}

impl Default for RingClientConfig {
    fn default() -> Self {
        RingClientConfig {
            timeout: Duration::from_secs(5),
            max_attempts: 2,
            quarantine: Duration::from_secs(30),
            max_idle: Duration::from_secs(100),
            max_rounds: 3,
            round_backoff: Duration::from_millis(50),
            concurrency: 4,
            lease_margin: Duration::from_secs(1),
            commit_grace: Duration::from_secs(1),
            rpc: ring_rpc_config(),
            after_grant: None,
            before_commit: None,
        }
    }
}

/// Counters of a client.
#[derive(Default)]
pub struct ClientStats {
    pub fetches: AtomicU64,
    pub fetched: AtomicU64,
    pub bytes: AtomicU64,
    pub attempts: AtomicU64,
    pub stale: AtomicU64,
    /// SLOT_BUSY answers retried inside an attempt.
    pub busy_retries: AtomicU64,
    /// Routes quarantined after a retryable failure.
    pub quarantines: AtomicU64,
    /// Commits whose reply was lost and that were confirmed on another session.
    pub commit_failovers: AtomicU64,
    /// Attempts whose commit found the slot lost (lease expired meanwhile).
    pub lease_lost: AtomicU64,
    pub batch_rounds: AtomicU64,
    pub sessions: Arc<SessionStats>,
}

/// A snapshot of a client's counters (its `ClientStats`).
// `repr(C)`: this is the C ABI's `dlslime_ring_client_counters_t` (renamed in
// cbindgen.toml).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientCounters {
    pub fetches: u64,
    pub fetched: u64,
    pub bytes: u64,
    pub attempts: u64,
    pub stale: u64,
    pub busy_retries: u64,
    pub quarantines: u64,
    pub commit_failovers: u64,
    pub lease_lost: u64,
    pub batch_rounds: u64,
    pub sessions_created: u64,
    pub sessions_retired: u64,
    pub sessions_lost: u64,
    pub sessions_dropped: u64,
}

/// What one route looks like now.
#[derive(Clone, Debug)]
pub struct RouteStatus {
    pub route: String,
    pub healthy: bool,
    /// Time left in quarantine.
    pub quarantined_for: Option<Duration>,
    /// Idle time of its session, if it has one.
    pub session_idle: Option<Duration>,
}

struct Producer {
    routes: RwLock<Vec<Arc<Route>>>,
    rr: AtomicUsize,
}

/// Where a fetch puts the payload.
enum Dst {
    /// A pooled buffer, handed out as a [`Payload`].
    Pooled,
    /// The caller's memory.
    User { ptr: *mut u8, len: usize },
}

/// A fetched payload: in a pooled buffer, or its length in the caller's buffer.
enum Got {
    Pooled(Buf, usize),
    User(usize),
}

/// Fetches payloads from remote rings. Thread-safe: any number of threads may fetch at
/// once (over one session per route).
pub struct RingClient {
    cfg: RingClientConfig,
    producers: RwLock<HashMap<String, Arc<Producer>>>,
    next_route: AtomicUsize,
    bufs: Arc<BufferPool>,
    stats: ClientStats,
}

// SAFETY: the raw pointer in `Dst::User` is only used by the thread that called
// `fetch_into`, for the duration of that call.
unsafe impl Send for Dst {}

impl RingClient {
    pub fn new(cfg: RingClientConfig) -> Result<RingClient> {
        if cfg.max_attempts == 0 || cfg.max_rounds == 0 || cfg.concurrency == 0 {
            return Err(Error::invalid(
                "max_attempts, max_rounds and concurrency must be at least 1",
            ));
        }
        if cfg.timeout.is_zero() {
            return Err(Error::invalid("timeout must be positive"));
        }
        cfg.rpc.validate()?;
        Ok(RingClient {
            cfg,
            producers: RwLock::new(HashMap::new()),
            next_route: AtomicUsize::new(0),
            bufs: Arc::new(BufferPool::default()),
            stats: ClientStats::default(),
        })
    }

    pub fn config(&self) -> &RingClientConfig {
        &self.cfg
    }

    /// Adds a serving endpoint of `producer` (any [`Connector`]).
    pub fn add_route(&self, producer: &str, connector: Arc<dyn Connector>) {
        let id = self.next_route.fetch_add(1, Ordering::Relaxed);
        let p = self
            .producers
            .write()
            .entry(producer.to_string())
            .or_insert_with(|| {
                Arc::new(Producer {
                    routes: RwLock::new(Vec::new()),
                    rr: AtomicUsize::new(0),
                })
            })
            .clone();
        p.routes.write().push(Arc::new(Route::new(id, connector)));
    }

    /// Adds a connected endpoint (a direct pair) serving `producer`.
    pub fn add_endpoint(&self, producer: &str, ep: Arc<dyn Endpoint>) {
        self.add_route(producer, Arc::new(FixedEndpoint(ep)));
    }

    /// Adds the PeerAgent connection to `alias` (dialled now with `transport`) as a
    /// serving endpoint of `producer`.
    pub fn add_peer(
        &self,
        producer: &str,
        agent: &PeerAgent,
        alias: &str,
        transport: &str,
    ) -> Result<()> {
        let r = PeerRoute::new(agent, alias, transport)?;
        self.add_route(producer, Arc::new(r));
        Ok(())
    }

    fn producer(&self, name: &str) -> Result<Arc<Producer>> {
        self.producers.read().get(name).cloned().ok_or_else(|| {
            Error::new(
                Status::UnknownHandle,
                format!("no serving endpoint was added for producer {name:?}"),
            )
        })
    }

    /// Fetches payload `r` of `producer` into a pooled buffer.
    pub fn fetch(&self, producer: &str, r: SlotRef) -> Result<Payload> {
        match self.fetch_to(producer, r, &Dst::Pooled)? {
            Got::Pooled(b, n) => Ok(Payload::new(b, n, self.bufs.clone())),
            Got::User(_) => unreachable!("a pooled fetch returns a pooled buffer"),
        }
    }

    /// Fetches payload `r` of `producer` into `dst`; returns its length. A payload larger
    /// than `dst` fails with `OutOfRange` (not retried) and stays in the ring.
    pub fn fetch_into(&self, producer: &str, r: SlotRef, dst: &mut [u8]) -> Result<usize> {
        let d = Dst::User {
            ptr: dst.as_mut_ptr(),
            len: dst.len(),
        };
        match self.fetch_to(producer, r, &d)? {
            Got::User(n) => Ok(n),
            Got::Pooled(..) => unreachable!("a fetch into a buffer fills that buffer"),
        }
    }

    /// Fetches many payloads of `producer`, `concurrency` at a time, in up to
    /// `max_rounds` rounds; one result per reference, in order.
    pub fn fetch_batch(&self, producer: &str, refs: &[SlotRef]) -> Vec<Result<Payload>> {
        let mut out: Vec<Option<Result<Payload>>> = refs.iter().map(|_| None).collect();
        let mut pending: Vec<usize> = (0..refs.len()).collect();
        for round in 0..self.cfg.max_rounds {
            if pending.is_empty() {
                break;
            }
            if round > 0 {
                std::thread::sleep(self.cfg.round_backoff);
            }
            self.stats.batch_rounds.fetch_add(1, Ordering::Relaxed);
            let queue = Mutex::new(pending.clone().into_iter());
            let results = Mutex::new(Vec::with_capacity(pending.len()));
            let workers = self.cfg.concurrency.min(pending.len());
            std::thread::scope(|s| {
                for _ in 0..workers {
                    s.spawn(|| loop {
                        let Some(i) = queue.lock().next() else { break };
                        let r = self.fetch(producer, refs[i]);
                        results.lock().push((i, r));
                    });
                }
            });
            pending.clear();
            let last = round + 1 == self.cfg.max_rounds;
            for (i, r) in results.into_inner() {
                let again = matches!(&r, Err(e) if classify(e.status()) != Retry::Fatal);
                if again && !last {
                    pending.push(i);
                }
                out[i] = Some(r);
            }
            pending.sort_unstable();
        }
        out.into_iter()
            .map(|r| r.expect("every reference ran in round 1"))
            .collect()
    }

    /// The true worst-case wall time of one fetch with this configuration.
    pub fn fetch_worst_case(&self) -> Duration {
        retry::fetch_worst_case(
            self.cfg.timeout + self.cfg.commit_grace,
            self.cfg.max_attempts,
        )
    }

    /// The true worst-case wall time of a batch of `n` references.
    pub fn batch_worst_case(&self, n: usize) -> Duration {
        let c = &self.cfg;
        retry::batch_worst_case(
            n,
            c.concurrency,
            c.timeout + c.commit_grace,
            c.max_attempts,
            c.max_rounds,
            c.round_backoff,
        )
    }

    fn fetch_to(&self, producer: &str, r: SlotRef, dst: &Dst) -> Result<Got> {
        self.stats.fetches.fetch_add(1, Ordering::Relaxed);
        let p = self.producer(producer)?;
        let routes = p.routes.read().clone();
        if routes.is_empty() {
            return Err(Error::new(
                Status::UnknownHandle,
                format!("producer {producer:?} has no serving endpoint"),
            ));
        }
        let rr = p.rr.fetch_add(1, Ordering::Relaxed);
        let mut tried: Vec<usize> = Vec::new();
        let mut last: Option<Error> = None;
        for k in 0..self.cfg.max_attempts as usize {
            let now = Instant::now();
            let healthy: Vec<bool> = routes.iter().map(|x| x.health.is_healthy(now)).collect();
            let i = pick(&healthy, &tried, rr, k);
            tried.push(i);
            let route = &routes[i];
            self.stats.attempts.fetch_add(1, Ordering::Relaxed);
            match self.attempt(producer, &p, route, r, dst) {
                Ok(g) => {
                    let n = match &g {
                        Got::Pooled(_, n) | Got::User(n) => *n,
                    };
                    self.stats.fetched.fetch_add(1, Ordering::Relaxed);
                    self.stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    return Ok(g);
                }
                Err(e) => match classify(e.status()) {
                    Retry::Fatal => {
                        if e.status() == Status::StaleSlot {
                            self.stats.stale.fetch_add(1, Ordering::Relaxed);
                        }
                        return Err(e);
                    }
                    Retry::Rotate => {
                        route
                            .health
                            .quarantine(Instant::now() + self.cfg.quarantine);
                        self.stats.quarantines.fetch_add(1, Ordering::Relaxed);
                        crate::obs::retried(crate::obs::Retry::RingFailover);
                        crate::info_log!(
                            "ring client: {} quarantined for {:?} after: {e}",
                            route.connector.describe(),
                            self.cfg.quarantine
                        );
                        last = Some(e);
                    }
                    Retry::Again => last = Some(e),
                },
            }
        }
        Err(last.expect("at least one attempt ran"))
    }

    /// One attempt on one route (module docs, steps 1–4).
    fn attempt(
        &self,
        producer: &str,
        p: &Producer,
        route: &Arc<Route>,
        r: SlotRef,
        dst: &Dst,
    ) -> Result<Got> {
        let deadline = Deadline::after(self.cfg.timeout);
        let conn = route.checkout(
            &self.cfg.rpc,
            self.cfg.max_idle,
            &self.stats.sessions,
            deadline,
        )?;
        let res = self.attempt_on(producer, p, route, &conn, r, dst, deadline);
        if let Err(e) = &res {
            if classify(e.status()) == Retry::Rotate {
                route.drop_conn(&conn.0, &self.stats.sessions);
            }
        }
        res
    }

    #[allow(clippy::too_many_arguments)]
    fn attempt_on(
        &self,
        producer: &str,
        p: &Producer,
        route: &Arc<Route>,
        conn: &InUse,
        r: SlotRef,
        dst: &Dst,
        deadline: Deadline,
    ) -> Result<Got> {
        let c = &conn.0;
        // 2. the grant
        let mut backoff = Duration::from_millis(1);
        let grant = loop {
            let left = deadline.remaining().unwrap_or_default();
            let lease = left + self.cfg.lease_margin;
            let req = Request {
                token: 0,
                generation: r.generation,
                aux: lease.as_millis().clamp(1, u64::MAX as u128) as u64,
                slot: r.slot,
                producer: producer.to_string(),
            };
            let rep = call(c, wire::TAG_FETCH, &req, deadline)?;
            match rep.result() {
                Ok(()) => break rep,
                Err(e) if e.status() == Status::SlotBusy => {
                    let left = deadline.remaining().unwrap_or_default();
                    if left <= backoff {
                        return Err(e);
                    }
                    self.stats.busy_retries.fetch_add(1, Ordering::Relaxed);
                    crate::obs::retried(crate::obs::Retry::RingBusy);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        };
        if grant.generation != r.generation {
            return Err(Error::new(
                Status::Protocol,
                format!(
                    "server granted generation {} for a request of {}",
                    grant.generation, r.generation
                ),
            ));
        }
        let len = grant.length as usize;
        if let Some(h) = &self.cfg.after_grant {
            (h.0)(r);
        }
        // 3. the one-sided read
        let read = self.read_payload(producer, c, &grant, dst, deadline);
        let got = match read {
            Ok(g) => g,
            Err(e) => {
                self.abort(c, producer, r, grant.token);
                return Err(e);
            }
        };
        if let Some(h) = &self.cfg.before_commit {
            (h.0)(r);
        }
        // 4. the commit
        let req = Request {
            token: grant.token,
            generation: r.generation,
            aux: len as u64,
            slot: r.slot,
            producer: producer.to_string(),
        };
        // the later of the attempt's deadline and now + commit_grace
        let commit_by = if deadline.remaining().unwrap_or_default() < self.cfg.commit_grace {
            Deadline::after(self.cfg.commit_grace)
        } else {
            deadline
        };
        let confirmed = match call(c, wire::TAG_COMMIT, &req, commit_by) {
            Ok(rep) => rep.result(),
            Err(e) => self
                .commit_elsewhere(p, route, &req, commit_by)
                .map_err(|e2| {
                    Error::new(
                        e.status(),
                        format!(
                            "commit outcome unknown: {} (asking the other sessions: {})",
                            e.message(),
                            e2.message()
                        ),
                    )
                }),
        };
        match confirmed {
            Ok(()) => Ok(got),
            Err(e) => {
                if e.status() == Status::SlotBusy {
                    self.stats.lease_lost.fetch_add(1, Ordering::Relaxed);
                }
                Err(e)
            }
        }
    }

    /// Reads the granted payload into the destination.
    fn read_payload(
        &self,
        producer: &str,
        c: &Arc<Conn>,
        g: &Reply,
        dst: &Dst,
        deadline: Deadline,
    ) -> Result<Got> {
        let len = g.length as usize;
        if len == 0 {
            return Ok(match dst {
                Dst::Pooled => Got::Pooled(self.bufs.take(0), 0),
                Dst::User { .. } => Got::User(0),
            });
        }
        if g.payload_offset
            .checked_add(g.length)
            .is_none_or(|e| e > g.region_len)
        {
            return Err(Error::new(
                Status::Protocol,
                "grant names a payload outside its region",
            ));
        }
        let remote = c.remote_handle(
            producer,
            RemoteRegion {
                addr: g.region_addr,
                len: g.region_len,
                key: g.region_key,
            },
        )?;
        let pool = c.ep.memory_pool().clone();
        let (mut got, local, local_off, temp) = match dst {
            Dst::Pooled => {
                let mut b = self.bufs.take(len);
                let h = b.handle_in(&pool)?;
                (Got::Pooled(b, len), h, 0u64, None)
            }
            Dst::User { ptr, len: cap } => {
                if len > *cap {
                    return Err(Error::new(
                        Status::OutOfRange,
                        format!("payload of {len} bytes does not fit the {cap}-byte buffer"),
                    ));
                }
                let (h, off, temp) = local_handle(&pool, *ptr, *cap)?;
                (Got::User(len), h, off, temp)
            }
        };
        let a = Assignment::new(local, remote, g.payload_offset, local_off, g.length);
        let left = deadline
            .remaining()
            .unwrap_or_default()
            .max(Duration::from_millis(1));
        let res = c.ep.read(&[a], Some(left)).and_then(|f| f.wait());
        if let Some(h) = temp {
            let _ = pool.unregister(h);
        }
        if let Err(e) = res {
            if let Got::Pooled(b, _) = std::mem::replace(&mut got, Got::User(0)) {
                self.bufs.give(b);
            }
            return Err(e);
        }
        Ok(got)
    }

    /// Tells the server the read failed (not waited for: the lease ends it anyway).
    fn abort(&self, c: &Arc<Conn>, producer: &str, r: SlotRef, token: u32) {
        let req = Request {
            token,
            generation: r.generation,
            aux: 0,
            slot: r.slot,
            producer: producer.to_string(),
        };
        let _ = c.sess.call(wire::TAG_ABORT, &req.encode());
    }

    /// Asks again whether the commit holds (and makes it): on the failed route's session
    /// if it is still up, then on the producer's other routes.
    fn commit_elsewhere(
        &self,
        p: &Producer,
        failed: &Arc<Route>,
        req: &Request,
        deadline: Deadline,
    ) -> Result<()> {
        let routes = p.routes.read().clone();
        let mut last = Error::new(Status::Timeout, "no other live session to ask");
        // the failed route's session may still answer (it only timed out), then the others
        let order = routes
            .iter()
            .filter(|x| x.id == failed.id)
            .chain(routes.iter().filter(|x| x.id != failed.id));
        for route in order {
            if deadline.expired() {
                break;
            }
            let c = match route.current() {
                Some(c) => c,
                None => match route.checkout(
                    &self.cfg.rpc,
                    self.cfg.max_idle,
                    &self.stats.sessions,
                    deadline,
                ) {
                    Ok(c) => c.0.clone(),
                    Err(e) => {
                        last = e;
                        continue;
                    }
                },
            };
            match call(&c, wire::TAG_COMMIT, req, deadline).and_then(|rep| rep.result()) {
                Ok(()) => {
                    self.stats.commit_failovers.fetch_add(1, Ordering::Relaxed);
                    crate::obs::retried(crate::obs::Retry::RingCommitFailover);
                    return Ok(());
                }
                Err(e) if e.status() == Status::SlotBusy => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    pub fn counters(&self) -> ClientCounters {
        snapshot!(&self.stats => ClientCounters {
            fetches, fetched, bytes, attempts, stale, busy_retries, quarantines,
            commit_failovers, lease_lost, batch_rounds;
            sessions_created: sessions.created,
            sessions_retired: sessions.retired,
            sessions_lost: sessions.lost,
            sessions_dropped: sessions.dropped
        })
    }

    /// Health and session of every route of `producer`, in the order they were added.
    pub fn routes(&self, producer: &str) -> Result<Vec<RouteStatus>> {
        let p = self.producer(producer)?;
        let now = Instant::now();
        let v = p
            .routes
            .read()
            .iter()
            .map(|r| RouteStatus {
                route: r.connector.describe(),
                healthy: r.health.is_healthy(now),
                quarantined_for: r
                    .health
                    .quarantined_until()
                    .map(|t| t.saturating_duration_since(now)),
                session_idle: r.session_idle(),
            })
            .collect();
        Ok(v)
    }

    /// Closes every session (the serving sides see their sessions end). Idempotent; the
    /// client stays usable (new sessions are made on demand).
    pub fn close(&self) {
        for p in self.producers.read().values() {
            for r in p.routes.read().iter() {
                r.close();
            }
        }
    }
}

impl Drop for RingClient {
    fn drop(&mut self) {
        self.close();
    }
}

/// One request/reply on a session, waiting until `deadline`.
fn call(c: &Conn, tag: u32, req: &Request, deadline: Deadline) -> Result<Reply> {
    let mut f = c.sess.call(tag, &req.encode())?;
    let left = deadline.remaining().unwrap_or_default();
    if left.is_zero() {
        return Err(Error::new(Status::Timeout, "attempt deadline passed"));
    }
    f.wait(Some(left))?;
    if f.is_exception() {
        return Err(Error::new(
            Status::Failed,
            format!(
                "ring server answered with an exception: {}",
                crate::rpc::RemoteError::parse(f.reply()).message
            ),
        ));
    }
    Reply::decode(f.reply())
}

/// A handle for `[ptr, ptr+len)` in `pool`: a registered region containing it (offset in
/// it), or a temporary registration (returned third, to unregister after the read).
fn local_handle(
    pool: &Arc<MemoryPool>,
    ptr: *mut u8,
    len: usize,
) -> Result<(MrHandle, u64, Option<MrHandle>)> {
    let a = ptr as usize;
    if let Some(r) = pool
        .regions()
        .into_iter()
        .find(|r| r.addr <= a && a + len <= r.addr + r.len)
    {
        return Ok((r.handle, (a - r.addr) as u64, None));
    }
    // SAFETY: the caller's buffer is borrowed for the whole fetch, and the registration
    // is removed before the fetch returns.
    let h = unsafe { pool.register(None, ptr, len)? };
    Ok((h, 0, Some(h)))
}
