//! The session: [`RpcSession`], its shared state (`Inner`), its lifecycle (creation,
//! close, the peer's end) and its counters ([`RpcStats`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use super::bulk::BulkCaches;
use super::call::{CallFuture, Cell, Outcome};
use super::client_obs::ClientObs;
use super::config::RpcConfig;
use super::handshake::handshake;
use super::inbound::Inbound;
use super::mailbox::{arena_segment, RpcMemory};
use super::request::Request;
use super::wire;
use crate::engine::wait::EventCount;
use crate::engine::Deadline;
use crate::error::{Error, Result, Status};
use crate::future::{Future, OpState};
use crate::memory::RemoteHandle;
use crate::transport::{Endpoint, PeerView};

/// Counters, readable at any time.
#[derive(Default, Debug)]
pub struct RpcStats {
    pub requests_sent: AtomicU64,
    pub replies_received: AtomicU64,
    pub requests_received: AtomicU64,
    pub replies_sent: AtomicU64,
    pub bulk_sent: AtomicU64,
    pub bulk_received: AtomicU64,
    pub protocol_errors: AtomicU64,
    /// Replies written straight into the caller's reply buffer: sent (server side) and
    /// received (client side).
    pub placed_sent: AtomicU64,
    pub placed_received: AtomicU64,
    /// Messages dropped as stale: notifications meant for an earlier session over the
    /// endpoint, replies naming another request than the call in their slot.
    pub stale_dropped: AtomicU64,
}

/// The state of a session shared by its handle, its futures, its requests and its pump.
pub(super) struct Inner {
    pub ep: Arc<dyn Endpoint>,
    pub cfg: RpcConfig,
    /// Whether a pump thread receives (else waiters receive inline).
    pub pump: bool,
    pub mem: Arc<RpcMemory>,
    /// The peer's mailbox.
    pub remote_mbox: RemoteHandle,
    /// The peer's mailbox mapped here (shared memory), once found: messages are built in
    /// it directly.
    pub peer_mbox: OnceLock<PeerView>,
    /// The peer's bulk buffers this session registered to read from (with the mailbox,
    /// unregistered when the session is gone).
    pub peer_regions: Mutex<Vec<RemoteHandle>>,
    /// This session's id and the peer session's (from the handshake): a close notice
    /// names the session it ends, so one left over from an earlier session is ignored.
    pub id: u64,
    pub peer_id: u64,
    /// Client slots with no call in flight.
    pub free_slots: Mutex<Vec<u16>>,
    /// Client-side state of each slot.
    pub cells: Box<[Cell]>,
    /// Outcomes of dropped calls, with their reply buffers, for the next calls.
    pub spare_outcomes: Mutex<Vec<Arc<Outcome>>>,
    pub next_id: AtomicU64,
    /// Requests received and not yet taken by `poll_request`.
    pub inbox: Mutex<VecDeque<Inbound>>,
    /// The posted immediate-data receive; its lock makes one thread the receiver.
    pub rx: Mutex<Option<Future>>,
    /// The receive the receiver is waiting on right now, for `notify_all` to poke.
    pub rx_op: Mutex<Option<Arc<OpState>>>,
    /// Bumped on every change a waiter may wait for (a reply, a request, a free slot,
    /// the session's end).
    pub events: EventCount,
    pub closed: AtomicBool,
    pub dead: Mutex<Option<Error>>,
    pub is_dead: AtomicBool,
    pub bulk: BulkCaches,
    pub stats: RpcStats,
    /// Per-method client counters ([`crate::obs`]).
    pub client_obs: ClientObs,
}

/// One side of an RPC connection over an endpoint. Thread-safe: calls, `poll_request`
/// and replies may come from any number of threads. The session owns the endpoint's
/// immediate-data stream (and uses one send/recv pair at creation): do not use
/// `imm_recv` on the endpoint yourself while a session lives.
pub struct RpcSession {
    inner: Arc<Inner>,
    pump: Mutex<Option<JoinHandle<()>>>,
}

pub(super) fn closed_error() -> Error {
    Error::new(Status::ShutDown, "RPC session closed")
}

impl RpcSession {
    /// Creates the session over a connected endpoint, allocating its memory now (on
    /// shared memory, prefer [`RpcSession::with_memory`] with memory made before
    /// `connect`). Blocks until the peer creates its session too (handshake over one
    /// send/recv pair), at most `handshake_timeout`.
    pub fn new(ep: Arc<dyn Endpoint>, cfg: RpcConfig) -> Result<RpcSession> {
        let mem = RpcMemory::new(ep.memory_pool(), &cfg)?;
        RpcSession::with_memory(ep, mem, cfg)
    }

    pub fn with_memory(
        ep: Arc<dyn Endpoint>,
        mem: Arc<RpcMemory>,
        cfg: RpcConfig,
    ) -> Result<RpcSession> {
        cfg.validate()?;
        if !Arc::ptr_eq(&mem.pool, ep.memory_pool()) {
            return Err(Error::invalid(
                "RPC memory was registered in another memory pool than the endpoint's",
            ));
        }
        let want = if cfg.bulk_arena == 0 {
            0
        } else {
            arena_segment(cfg.bulk_arena)
        };
        if mem.slot_size != cfg.slot_size
            || mem.slot_count != cfg.slot_count
            || mem.arena_segment_len() != want
        {
            return Err(Error::invalid(
                "RPC memory was made for another slot_size/slot_count",
            ));
        }
        let agreed = handshake(&*ep, &mem, &cfg)?;
        let n = cfg.slot_count;
        let inner = Arc::new(Inner {
            pump: cfg.pump(),
            ep,
            mem,
            remote_mbox: agreed.remote_mbox,
            peer_mbox: OnceLock::new(),
            peer_regions: Mutex::new(Vec::new()),
            id: agreed.id,
            peer_id: agreed.peer_id,
            free_slots: Mutex::new((0..n as u32).rev().map(|s| s as u16).collect()),
            cells: (0..n).map(|_| Cell::new()).collect(),
            spare_outcomes: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            inbox: Mutex::new(VecDeque::with_capacity(n)),
            rx: Mutex::new(None),
            rx_op: Mutex::new(None),
            events: EventCount::default(),
            closed: AtomicBool::new(false),
            dead: Mutex::new(None),
            is_dead: AtomicBool::new(false),
            bulk: BulkCaches::new(n),
            stats: RpcStats::default(),
            client_obs: ClientObs::default(),
            cfg,
        });
        let mut thread = None;
        if inner.pump {
            let me = inner.clone();
            thread = Some(
                std::thread::Builder::new()
                    .name("dlslime-rpc-pump".into())
                    .spawn(move || me.pump_loop())
                    .map_err(|e| Error::io("spawn RPC pump thread", e))?,
            );
        }
        Ok(RpcSession {
            inner,
            pump: Mutex::new(thread),
        })
    }

    pub fn config(&self) -> &RpcConfig {
        &self.inner.cfg
    }

    pub fn endpoint(&self) -> &Arc<dyn Endpoint> {
        &self.inner.ep
    }

    pub fn stats(&self) -> &RpcStats {
        &self.inner.stats
    }

    /// Names this session's calls in the per-method counters ([`crate::obs`]): the
    /// service's method names in sorted order (the name at index `tag` is method `tag`'s,
    /// as [`super::Service::names`] lists them). Unnamed tags count as `tag:N`.
    pub fn set_method_names(&self, names: &[&str]) {
        self.inner.client_obs.set_names(names);
    }

    /// Payload bytes that travel inside a slot; larger payloads take the bulk path.
    pub fn slot_capacity(&self) -> usize {
        self.inner.cfg.slot_capacity()
    }

    /// Closed here, or by the peer (a close notice that has arrived counts, even if no
    /// thread waited on the session since).
    pub fn is_closed(&self) -> bool {
        self.inner.take_arrived();
        self.inner.ended()
    }

    /// Sends a request with `payload` and returns its future. Blocks only while every
    /// slot is in flight (at most `default_timeout`): futures may be held in any number,
    /// as a reply frees its slot when it arrives.
    pub fn call(&self, tag: u32, payload: &[u8]) -> Result<CallFuture> {
        self.call_with_timeout(tag, payload, None)
    }

    /// [`RpcSession::call`], waiting for a free slot at most `timeout` (`None`:
    /// `default_timeout`): `Err(Timeout)` when every slot stays in flight until then. A
    /// slot is freed as soon as its reply arrives (a bulk reply: once read or dropped).
    pub fn call_with_timeout(
        &self,
        tag: u32,
        payload: &[u8],
        timeout: Option<Duration>,
    ) -> Result<CallFuture> {
        self.call_inplace_with_timeout(tag, payload.len(), timeout, |buf| {
            buf[..payload.len()].copy_from_slice(payload);
            Ok(payload.len())
        })
    }

    /// Sends a request whose payload `writer` builds in place, in a buffer of `max_len`
    /// bytes (inside the slot when it fits, else a bulk buffer). `writer` returns the
    /// payload length (at most `max_len`).
    pub fn call_inplace(
        &self,
        tag: u32,
        max_len: usize,
        writer: impl FnOnce(&mut [u8]) -> Result<usize>,
    ) -> Result<CallFuture> {
        self.call_inplace_with_timeout(tag, max_len, None, writer)
    }

    /// [`RpcSession::call_inplace`] with a deadline for taking a slot, as in
    /// [`RpcSession::call_with_timeout`].
    pub fn call_inplace_with_timeout(
        &self,
        tag: u32,
        max_len: usize,
        timeout: Option<Duration>,
        writer: impl FnOnce(&mut [u8]) -> Result<usize>,
    ) -> Result<CallFuture> {
        let i = &self.inner;
        if tag > wire::MAX_TAG {
            return Err(Error::invalid(format!(
                "RPC tag {tag} is larger than the largest tag {}",
                wire::MAX_TAG
            )));
        }
        if max_len as u64 > i.cfg.max_payload {
            return Err(Error::invalid(format!(
                "RPC payload of {max_len} bytes exceeds max_payload ({} bytes)",
                i.cfg.max_payload
            )));
        }
        // A close notice that arrived while nobody waited fails the call here, before
        // anything is sent into a session the peer ended.
        i.take_arrived();
        i.check_alive()?;
        let deadline = Deadline::after(timeout.unwrap_or(i.cfg.default_timeout));
        CallFuture::start(i, tag, max_len, deadline, writer)
    }

    /// The next request, waiting at most `timeout` (`None`: `default_timeout`).
    /// `Ok(None)` when the wait timed out; `Err(ShutDown)` once this session is closed,
    /// `Err(PeerDisconnected)` once the peer closed its session or died.
    pub fn poll_request(&self, timeout: Option<Duration>) -> Result<Option<Request>> {
        let i = &self.inner;
        let deadline = Deadline::after(timeout.unwrap_or(i.cfg.default_timeout));
        loop {
            let got = i.wait_until(|| !i.inbox.lock().is_empty(), deadline);
            match got {
                Ok(()) => {}
                Err(e) if e.status() == Status::Timeout => return Ok(None),
                Err(e) => return Err(e),
            }
            let Some(m) = i.inbox.lock().pop_front() else {
                continue;
            };
            if let Some(r) = Request::from_inbound(i, m)? {
                return Ok(Some(r));
            }
        }
    }

    /// Closes the session: tells the peer (best effort), fails pending calls with
    /// `ShutDown` ("RPC session closed"), wakes `poll_request`, stops the pump.
    /// Idempotent. The endpoint stays open.
    pub fn close(&self) {
        self.inner.close();
        if let Some(h) = self.pump.lock().take() {
            let _ = h.join();
        }
        // A receive the pump (or an inline receiver) still had posted.
        if let Some(f) = self.inner.rx.lock().take() {
            f.state().abort(Status::Cancelled, "RPC session closed");
        }
    }
}

impl Drop for RpcSession {
    fn drop(&mut self) {
        self.close();
    }
}

impl Inner {
    /// Closed here or ended by the peer.
    pub(super) fn ended(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.is_dead.load(Ordering::Acquire)
    }

    /// The error of an ended session (`ShutDown` here, the peer's end otherwise).
    pub(super) fn check_alive(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(closed_error());
        }
        if self.is_dead.load(Ordering::Acquire) {
            return Err(self
                .dead
                .lock()
                .clone()
                .unwrap_or_else(|| Error::new(Status::PeerDisconnected, "RPC peer is gone")));
        }
        Ok(())
    }

    /// Ends the session because of the peer (or a transport failure).
    pub(super) fn mark_dead(&self, e: Error) {
        {
            let mut d = self.dead.lock();
            if d.is_some() {
                return;
            }
            *d = Some(e.clone());
        }
        self.is_dead.store(true, Ordering::Release);
        self.fail_pending(&e);
    }

    fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if !self.is_dead.load(Ordering::Acquire) {
            // Tell the peer, so its serve() ends instead of waiting.
            if let Ok(f) = self.ep.write_with_imm(
                &[],
                wire::encode_imm(0, wire::IMM_CLOSE, wire::fence(self.peer_id)),
                Some(Duration::from_secs(2)),
            ) {
                let _ = f.wait();
            }
        }
        self.fail_pending(&closed_error());
        if let Some(f) = self.rx.lock().take() {
            f.state().abort(Status::Cancelled, "RPC session closed");
        }
        self.notify_all();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let remote = self.ep.remote_pool();
        remote.unregister(self.remote_mbox).ok();
        for h in self.peer_regions.get_mut().drain(..) {
            remote.unregister(h).ok();
        }
    }
}
