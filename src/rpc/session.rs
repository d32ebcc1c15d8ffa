//! The RPC session: mailboxes, slots, the receive path (inline leader or pump thread),
//! client calls and server requests, and the bulk path.
//!
//! Memory of one side (one shared allocation, see [`RpcMemory`]):
//!
//! ```text
//! [ req_send | rep_send ]  local only: where this side stages what it writes
//! [ req_mbox | rep_mbox ]  published to the peer: where the peer writes
//! each part: slot_count slots of slot_size bytes
//! ```
//!
//! A call takes a client slot `s`, writes `header + payload` from `req_send[s]` to the
//! peer's `req_mbox[s]` with one write-with-immediate (imm = s); the peer answers from its
//! `rep_send[s]` into our `rep_mbox[s]` (imm = s | reply). Requests and replies have
//! separate mailboxes, so calls in both directions over one endpoint pair never share a
//! slot (the original's bidirectional defect).
//!
//! A payload larger than `slot_size - 16` stays in a registered bulk buffer of the
//! sender; the message carries a [`BulkDesc`] and the receiver reads the bytes one-sided.
//! Bulk buffers are cached per slot: a request's buffer is reused after its reply
//! arrived, a reply's buffer after the next request in that slot arrived (by then the
//! peer has finished reading it), so no extra acknowledgement is needed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Value};

use super::wire::{self, BulkDesc, Header, HEADER_LEN};
use crate::engine::{futex, Deadline};
use crate::error::{Error, Result, Status};
use crate::future::Future;
use crate::memory::{MemoryPool, MrHandle, RemoteHandle, RemoteRegion};
use crate::transport::shm::{alloc_shared, free_shared};
use crate::transport::{Assignment, Endpoint};

/// Who receives messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpcProgress {
    /// `Pump` when `slot_count > 1`, else `Inline` (the original's rule).
    Auto,
    /// No thread: whichever thread waits (a call's `wait`, `poll_request`) receives for
    /// everyone, one at a time.
    Inline,
    /// A receive thread per session.
    Pump,
}

/// Knobs of a session. Both sides must use the same `slot_size` and `slot_count`
/// (checked at the handshake).
#[derive(Clone, Debug)]
pub struct RpcConfig {
    /// Bytes per slot, header included (>= 64, <= 4 GiB - 1).
    pub slot_size: usize,
    /// Slots per direction: the most calls in flight (1..=65536).
    pub slot_count: usize,
    pub progress: RpcProgress,
    /// Deadline of a wait that names none, of slot acquisition and of bulk reads.
    pub default_timeout: Duration,
    /// How long session creation waits for the peer's session.
    pub handshake_timeout: Duration,
    /// Largest payload accepted either way (requests refused at the call, replies turned
    /// into an error reply).
    pub max_payload: u64,
    /// How long a waiting thread spins before it parks.
    pub spin: Duration,
    /// Cached bulk buffers larger than this are freed when a smaller payload reuses the
    /// slot.
    pub bulk_cache_max: usize,
    /// Bytes of pre-allocated bulk buffer per slot and use (request out, reply out,
    /// request in, reply in), part of [`RpcMemory`]: bulk payloads up to this size use
    /// it. Made before connect on shared memory, the peer maps it, so a bulk transfer is
    /// one memcpy instead of a cross-memory read. Pages are only touched when used.
    /// 0: none (bulk buffers are allocated on demand).
    pub bulk_arena: usize,
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            slot_size: 64 << 10,
            slot_count: 16,
            progress: RpcProgress::Auto,
            default_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(30),
            max_payload: 1 << 40,
            spin: crate::engine::Config::from_env().spin,
            bulk_cache_max: 64 << 20,
            bulk_arena: 0,
        }
    }
}

impl RpcConfig {
    pub fn validate(&self) -> Result<()> {
        if self.slot_count == 0 || self.slot_count > wire::MAX_SLOT_COUNT {
            return Err(Error::invalid(format!(
                "slot_count must be in 1..={}, got {}",
                wire::MAX_SLOT_COUNT,
                self.slot_count
            )));
        }
        if self.slot_size < 64 || self.slot_size > u32::MAX as usize {
            return Err(Error::invalid(format!(
                "slot_size must be in 64..=4294967295, got {}",
                self.slot_size
            )));
        }
        if self
            .slot_size
            .checked_mul(self.slot_count)
            .and_then(|v| v.checked_mul(4))
            .is_none()
            || self
                .bulk_arena
                .checked_add(4095)
                .and_then(|v| v.checked_mul(self.slot_count))
                .and_then(|v| v.checked_mul(4))
                .is_none()
        {
            return Err(Error::invalid("slot_size * slot_count overflows"));
        }
        Ok(())
    }

    fn pump(&self) -> bool {
        match self.progress {
            RpcProgress::Auto => self.slot_count > 1,
            RpcProgress::Inline => false,
            RpcProgress::Pump => true,
        }
    }

    /// Payload bytes that fit in a slot.
    pub fn slot_capacity(&self) -> usize {
        self.slot_size - HEADER_LEN
    }
}

/// The registered memory of one session side. Create it *before* the endpoint connects
/// when the transport is shared memory: allocations that exist at connect time are
/// mapped by the peer, so every message is a single memcpy.
pub struct RpcMemory {
    pool: Arc<MemoryPool>,
    base: *mut u8,
    slot_size: usize,
    slot_count: usize,
    send_h: MrHandle,
    mbox_h: MrHandle,
    /// (base, handle, bytes per segment) of the bulk arena.
    arena: Option<(*mut u8, MrHandle, usize)>,
}

// SAFETY: the allocation is owned by RpcMemory; concurrent use follows the slot protocol.
unsafe impl Send for RpcMemory {}
unsafe impl Sync for RpcMemory {}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl RpcMemory {
    pub fn new(pool: &Arc<MemoryPool>, cfg: &RpcConfig) -> Result<Arc<RpcMemory>> {
        cfg.validate()?;
        let part = cfg.slot_size * cfg.slot_count;
        let base = alloc_shared(4 * part)?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        // SAFETY: fresh allocation of 4 * part bytes, owned until Drop.
        let send_h = match unsafe { pool.register(Some(&format!("rpc:send:{id}")), base, 2 * part) }
        {
            Ok(h) => h,
            Err(e) => {
                unsafe { free_shared(base).ok() };
                return Err(e);
            }
        };
        let mbox_h = match unsafe {
            pool.register(
                Some(&format!("rpc:mailbox:{id}")),
                base.add(2 * part),
                2 * part,
            )
        } {
            Ok(h) => h,
            Err(e) => {
                pool.unregister(send_h).ok();
                unsafe { free_shared(base).ok() };
                return Err(e);
            }
        };
        let mut mem = RpcMemory {
            pool: pool.clone(),
            base,
            slot_size: cfg.slot_size,
            slot_count: cfg.slot_count,
            send_h,
            mbox_h,
            arena: None,
        };
        if cfg.bulk_arena > 0 {
            let seg = arena_segment(cfg.bulk_arena);
            let total = 4 * cfg.slot_count * seg;
            let a = alloc_shared(total)?;
            // SAFETY: fresh allocation; freed in Drop after unregistering.
            match unsafe { pool.register(Some(&format!("rpc:arena:{id}")), a, total) } {
                Ok(h) => mem.arena = Some((a, h, seg)),
                Err(e) => {
                    unsafe { free_shared(a).ok() };
                    return Err(e);
                }
            }
        }
        Ok(Arc::new(mem))
    }

    fn part(&self) -> usize {
        self.slot_size * self.slot_count
    }

    fn send_ptr(&self, kind: u32, slot: usize) -> *mut u8 {
        let off = if kind == wire::IMM_REPLY {
            self.part()
        } else {
            0
        } + slot * self.slot_size;
        unsafe { self.base.add(off) }
    }

    fn send_off(&self, kind: u32, slot: usize) -> u64 {
        (if kind == wire::IMM_REPLY {
            self.part()
        } else {
            0
        } + slot * self.slot_size) as u64
    }

    fn mbox_ptr(&self, kind: u32, slot: usize) -> *mut u8 {
        let off = 2 * self.part()
            + if kind == wire::IMM_REPLY {
                self.part()
            } else {
                0
            }
            + slot * self.slot_size;
        unsafe { self.base.add(off) }
    }
}

impl Drop for RpcMemory {
    fn drop(&mut self) {
        self.pool.unregister(self.send_h).ok();
        self.pool.unregister(self.mbox_h).ok();
        // SAFETY: allocated by alloc_shared in new(); nothing uses it any more.
        unsafe { free_shared(self.base).ok() };
        if let Some((a, h, _)) = self.arena {
            self.pool.unregister(h).ok();
            unsafe { free_shared(a).ok() };
        }
    }
}

/// A registered buffer for bulk payloads.
struct BulkBuf {
    pool: Arc<MemoryPool>,
    ptr: *mut u8,
    cap: usize,
    handle: MrHandle,
    /// Offset of `ptr` in the region `handle`.
    off: u64,
    /// False for a segment of the session's arena (nothing to free).
    owned: bool,
}

fn arena_segment(n: usize) -> usize {
    (n + 4095) & !4095
}

unsafe impl Send for BulkBuf {}

impl BulkBuf {
    fn new(pool: &Arc<MemoryPool>, len: usize) -> Result<BulkBuf> {
        let cap = len.max(4096);
        let ptr = alloc_shared(cap)?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        match unsafe { pool.register(Some(&format!("rpc:bulk:{id}")), ptr, cap) } {
            Ok(handle) => Ok(BulkBuf {
                pool: pool.clone(),
                ptr,
                cap,
                handle,
                off: 0,
                owned: true,
            }),
            Err(e) => {
                unsafe { free_shared(ptr).ok() };
                Err(e)
            }
        }
    }

    fn key(&self) -> u32 {
        self.pool.region(self.handle).map(|r| r.key).unwrap_or(0)
    }
}

impl Drop for BulkBuf {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        self.pool.unregister(self.handle).ok();
        unsafe { free_shared(self.ptr).ok() };
    }
}

/// A per-slot bulk buffer cache.
type BulkCache = Mutex<Option<BulkBuf>>;

const IDLE: u32 = 0;
const PENDING: u32 = 1;
const DONE: u32 = 2;
const DETACHED: u32 = 3;

#[derive(Default)]
struct CellOut {
    error: Option<Error>,
    tag: u32,
    len: usize,
    bulk: Option<BulkDesc>,
}

/// Client-side state of one slot.
struct Cell {
    state: AtomicU32,
    req_id: AtomicU64,
    out: Mutex<CellOut>,
    write: Mutex<Option<Future>>,
}

#[derive(Clone, Copy)]
struct Inbound {
    slot: usize,
    header: Header,
}

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
}

struct Inner {
    ep: Arc<dyn Endpoint>,
    cfg: RpcConfig,
    pump: bool,
    mem: Arc<RpcMemory>,
    remote_mbox: RemoteHandle,
    free_slots: Mutex<Vec<u16>>,
    cells: Box<[Cell]>,
    next_id: AtomicU64,
    inbox: Mutex<VecDeque<Inbound>>,
    rx: Mutex<Option<Future>>,
    events: AtomicU32,
    parked: AtomicU32,
    closed: AtomicBool,
    dead: Mutex<Option<Error>>,
    is_dead: AtomicBool,
    req_out: Box<[BulkCache]>,
    rep_out: Box<[BulkCache]>,
    req_in: Box<[BulkCache]>,
    rep_in: Box<[BulkCache]>,
    stats: RpcStats,
}

/// One side of an RPC connection over an endpoint. Thread-safe: calls, `poll_request`
/// and replies may come from any number of threads. The session owns the endpoint's
/// immediate-data stream (and uses one send/recv pair at creation): do not use
/// `imm_recv` on the endpoint yourself while a session lives.
pub struct RpcSession {
    inner: Arc<Inner>,
    pump: Mutex<Option<JoinHandle<()>>>,
}

fn closed_error() -> Error {
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
        let arena = mem.arena.map_or(0, |a| a.2);
        let want = if cfg.bulk_arena == 0 {
            0
        } else {
            arena_segment(cfg.bulk_arena)
        };
        if mem.slot_size != cfg.slot_size || mem.slot_count != cfg.slot_count || arena != want {
            return Err(Error::invalid(
                "RPC memory was made for another slot_size/slot_count",
            ));
        }
        let remote_mbox = handshake(&*ep, &mem, &cfg)?;
        let n = cfg.slot_count;
        let caches = || {
            (0..n)
                .map(|_| Mutex::new(None))
                .collect::<Vec<_>>()
                .into_boxed_slice()
        };
        let inner = Arc::new(Inner {
            pump: cfg.pump(),
            ep,
            mem,
            remote_mbox,
            free_slots: Mutex::new((0..n as u32).rev().map(|s| s as u16).collect()),
            cells: (0..n)
                .map(|_| Cell {
                    state: AtomicU32::new(IDLE),
                    req_id: AtomicU64::new(0),
                    out: Mutex::new(CellOut::default()),
                    write: Mutex::new(None),
                })
                .collect(),
            next_id: AtomicU64::new(1),
            inbox: Mutex::new(VecDeque::with_capacity(n)),
            rx: Mutex::new(None),
            events: AtomicU32::new(0),
            parked: AtomicU32::new(0),
            closed: AtomicBool::new(false),
            dead: Mutex::new(None),
            is_dead: AtomicBool::new(false),
            req_out: caches(),
            rep_out: caches(),
            req_in: caches(),
            rep_in: caches(),
            stats: RpcStats::default(),
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

    /// Payload bytes that travel inside a slot; larger payloads take the bulk path.
    pub fn slot_capacity(&self) -> usize {
        self.inner.cfg.slot_capacity()
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire) || self.inner.is_dead.load(Ordering::Acquire)
    }

    /// Sends a request with `payload` and returns its future. Blocks only while every
    /// slot is in flight (at most `default_timeout`).
    pub fn call(&self, tag: u32, payload: &[u8]) -> Result<CallFuture> {
        self.call_inplace(tag, payload.len(), |buf| {
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
        i.check_alive()?;
        let slot = i.acquire_slot(Deadline::after(i.cfg.default_timeout))?;
        let cell = &i.cells[slot];
        let id = i.next_id.fetch_add(1, Ordering::Relaxed);
        cell.req_id.store(id, Ordering::Release);
        *cell.out.lock() = CellOut::default();
        cell.state.store(PENDING, Ordering::Release);
        match i.post(wire::IMM_REQUEST, slot, tag, id, max_len, writer) {
            Ok(w) => {
                *cell.write.lock() = Some(w);
                i.stats.requests_sent.fetch_add(1, Ordering::Relaxed);
                Ok(CallFuture {
                    sess: i.clone(),
                    slot,
                    state: FutState::Waiting,
                    data: std::ptr::null(),
                    len: 0,
                    tag: 0,
                })
            }
            Err(e) => {
                // Nothing was sent: the slot is ours again.
                cell.state.store(IDLE, Ordering::Release);
                i.release_slot(slot);
                Err(e)
            }
        }
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
            if let Some(r) = i.make_request(m)? {
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

/// Exchanges mailbox descriptions with the peer over one send/recv pair.
fn handshake(ep: &dyn Endpoint, mem: &RpcMemory, cfg: &RpcConfig) -> Result<RemoteHandle> {
    let region = mem.pool.region(mem.mbox_h)?;
    let mine = json!({
        "slime_rpc": wire::WIRE_VERSION,
        "slot_size": cfg.slot_size,
        "slot_count": cfg.slot_count,
        "mailbox": {"addr": region.addr as u64, "length": region.len as u64, "rkey": region.key},
    })
    .to_string();
    let mut buf = vec![0u8; 4096];
    let t = Some(cfg.handshake_timeout);
    // SAFETY: both buffers outlive the futures: each is waited on (or fails at its own
    // deadline, after which the transport no longer touches it).
    let rf = unsafe { ep.recv(buf.as_mut_ptr(), buf.len(), t)? };
    let sf = unsafe { ep.send(mine.as_ptr(), mine.len(), t)? };
    let hs = |e: Error| {
        Error::new(
            e.status(),
            format!(
                "RPC handshake: the peer's session did not answer: {}",
                e.message()
            ),
        )
    };
    sf.wait().map_err(hs)?;
    rf.wait().map_err(hs)?;
    let n = rf.nbytes() as usize;
    let peer: Value = serde_json::from_slice(&buf[..n.min(buf.len())]).map_err(|e| {
        Error::new(
            Status::Protocol,
            format!("RPC handshake: bad session info from peer: {e}"),
        )
    })?;
    let field = |k: &str| peer.get(k).and_then(Value::as_u64);
    if field("slime_rpc") != Some(wire::WIRE_VERSION as u64) {
        return Err(Error::new(
            Status::VersionMismatch,
            format!(
                "RPC handshake: peer speaks RPC wire version {:?}, this side {}",
                peer.get("slime_rpc"),
                wire::WIRE_VERSION
            ),
        ));
    }
    let (ps, pc) = (field("slot_size"), field("slot_count"));
    if ps != Some(cfg.slot_size as u64) || pc != Some(cfg.slot_count as u64) {
        return Err(Error::invalid(format!(
            "RPC handshake: slot configuration differs: this side {} x {} B, peer {:?} x {:?} B; both sides must use the same slot_size and slot_count",
            cfg.slot_count, cfg.slot_size, pc, ps
        )));
    }
    let mbox = peer
        .get("mailbox")
        .ok_or_else(|| Error::new(Status::Protocol, "RPC handshake: peer info lacks mailbox"))?;
    let r = RemoteRegion::from_json(mbox)?;
    if r.len < 2 * (cfg.slot_size * cfg.slot_count) as u64 {
        return Err(Error::new(
            Status::Protocol,
            "RPC handshake: peer mailbox too small",
        ));
    }
    ep.remote_pool().register("rpc:peer-mailbox", r)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FutState {
    Waiting,
    Ready,
    Failed,
}

/// The future of one call. `wait` may be repeated after a timeout. Dropping it before
/// the reply detaches the call (a late reply frees the slot); dropping it after releases
/// the slot, so the reply bytes live as long as the future.
pub struct CallFuture {
    sess: Arc<Inner>,
    slot: usize,
    state: FutState,
    data: *const u8,
    len: usize,
    tag: u32,
}

unsafe impl Send for CallFuture {}

impl CallFuture {
    /// Waits for the reply, at most `timeout` (`None`: the session's default). `Ok` when a
    /// reply arrived (check [`CallFuture::is_exception`]); `Err(Timeout)` leaves the call
    /// pending (wait again or drop it); other errors are final.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<()> {
        let i = self.sess.clone();
        match self.state {
            FutState::Ready => return Ok(()),
            FutState::Failed => return Err(self.final_error()),
            FutState::Waiting => {}
        }
        let cell = &i.cells[self.slot];
        let deadline = Deadline::after(timeout.unwrap_or(i.cfg.default_timeout));
        let write_failed = || {
            cell.write
                .lock()
                .as_ref()
                .and_then(|w| if w.done() { w.error() } else { None })
        };
        let r = i.wait_until(
            || {
                cell.state.load(Ordering::Acquire) == DONE
                    || cell.write.try_lock().is_some_and(|w| {
                        w.as_ref()
                            .is_some_and(|w| w.state().is_done() && w.error().is_some())
                    })
            },
            deadline,
        );
        if cell.state.load(Ordering::Acquire) != DONE {
            if let Some(e) = write_failed() {
                // The request never arrived: fail the call (the slot stays reserved until
                // the session ends, in case the peer saw part of it).
                self.fail(
                    cell,
                    Error::new(
                        e.status(),
                        format!("RPC request could not be delivered: {}", e.message()),
                    ),
                );
                return Err(self.final_error());
            }
            return match r {
                Err(e) if e.status() == Status::Timeout => Err(Error::new(
                    Status::Timeout,
                    "RPC call timed out waiting for the reply",
                )),
                Err(e) => Err(e),
                Ok(()) => Err(Error::new(
                    Status::Internal,
                    "RPC wait ended without a reply",
                )),
            };
        }
        let out = std::mem::take(&mut *cell.out.lock());
        if let Some(e) = out.error {
            *cell.out.lock() = CellOut {
                error: Some(e),
                ..Default::default()
            };
            self.state = FutState::Failed;
            return Err(self.final_error());
        }
        self.tag = out.tag;
        match out.bulk {
            None => {
                self.data = unsafe { i.mem.mbox_ptr(wire::IMM_REPLY, self.slot).add(HEADER_LEN) };
                self.len = out.len;
            }
            Some(d) => match i.bulk_read(&i.rep_in[self.slot], "rep", self.slot, d) {
                Ok(p) => {
                    self.data = p;
                    self.len = d.len as usize;
                }
                Err(e) => {
                    *cell.out.lock() = CellOut {
                        error: Some(e),
                        ..Default::default()
                    };
                    self.state = FutState::Failed;
                    return Err(self.final_error());
                }
            },
        }
        i.stats.replies_received.fetch_add(1, Ordering::Relaxed);
        self.state = FutState::Ready;
        Ok(())
    }

    fn fail(&mut self, cell: &Cell, e: Error) {
        *cell.out.lock() = CellOut {
            error: Some(e),
            ..Default::default()
        };
        self.state = FutState::Failed;
    }

    fn final_error(&self) -> Error {
        self.sess.cells[self.slot]
            .out
            .lock()
            .error
            .clone()
            .unwrap_or_else(|| Error::new(Status::Failed, "RPC call failed"))
    }

    /// True once `wait` returned a reply.
    pub fn is_ready(&self) -> bool {
        self.state == FutState::Ready
    }

    /// Whether the reply arrived (without waiting or receiving).
    pub fn done(&self) -> bool {
        self.state != FutState::Waiting
            || self.sess.cells[self.slot].state.load(Ordering::Acquire) == DONE
    }

    /// The reply payload (empty before a successful `wait`).
    pub fn reply(&self) -> &[u8] {
        if self.state != FutState::Ready || self.len == 0 {
            return &[];
        }
        // SAFETY: the slot (or its bulk cache) stays ours until this future is dropped.
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }

    /// True when the peer answered with an exception (payload: JSON
    /// `{"type","message","traceback"}`, see [`RemoteError`]).
    pub fn is_exception(&self) -> bool {
        self.state == FutState::Ready && self.tag & wire::EXC_BIT != 0
    }

    /// The reply's raw tag (base tag plus flags).
    pub fn reply_tag(&self) -> u32 {
        self.tag
    }

    /// Waits and returns the reply bytes, mapping an exception reply to an error.
    pub fn wait_ok(&mut self, timeout: Option<Duration>) -> Result<&[u8]> {
        self.wait(timeout)?;
        if self.is_exception() {
            let e = RemoteError::parse(self.reply());
            return Err(Error::new(
                Status::Failed,
                format!("remote {}: {}", e.type_name, e.message),
            ));
        }
        Ok(self.reply())
    }
}

impl Drop for CallFuture {
    fn drop(&mut self) {
        let i = &self.sess;
        let cell = &i.cells[self.slot];
        if self.state == FutState::Waiting
            && cell
                .state
                .compare_exchange(PENDING, DETACHED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return; // the late reply (or the session's end) frees the slot
        }
        if self.state == FutState::Failed && !i.ended() {
            // A failed delivery: the peer may still answer; keep the slot reserved.
            if cell
                .state
                .compare_exchange(PENDING, DETACHED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return;
            }
        }
        cell.write.lock().take();
        cell.state.store(IDLE, Ordering::Release);
        i.release_slot(self.slot);
    }
}

/// A request received by the server side. Its payload stays valid until it is answered.
/// Dropping it unanswered sends an exception reply, so the caller never hangs.
pub struct Request {
    sess: Arc<Inner>,
    slot: usize,
    header: Header,
    data: *const u8,
    len: usize,
    answered: bool,
}

unsafe impl Send for Request {}

impl Request {
    /// The method tag (flags removed).
    pub fn tag(&self) -> u32 {
        wire::base_tag(self.header.tag)
    }

    pub fn raw_tag(&self) -> u32 {
        self.header.tag
    }

    pub fn request_id(&self) -> u64 {
        self.header.request_id
    }

    pub fn slot(&self) -> usize {
        self.slot
    }

    pub fn payload(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the slot (or bulk cache) is not rewritten before we answer.
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }

    pub fn payload_ptr(&self) -> *const u8 {
        self.data
    }

    /// Answers with `data` (any size: large replies take the bulk path). A reply larger
    /// than `max_payload` is turned into an exception reply and reported as an error.
    pub fn reply(self, data: &[u8]) -> Result<()> {
        self.reply_inplace(data.len(), false, |b| {
            b[..data.len()].copy_from_slice(data);
            Ok(data.len())
        })
    }

    /// The payload, writable: a handler may build its reply in place of the request and
    /// answer with [`Request::reply_from_payload`].
    #[allow(clippy::mut_from_ref)]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: the payload buffer is ours until we answer; `&mut self` keeps this the
        // only live view.
        unsafe { std::slice::from_raw_parts_mut(self.data as *mut u8, self.len) }
    }

    /// Answers with the first `n` bytes of the request's own payload buffer (possibly
    /// modified through [`Request::payload_mut`]). A bulk request's buffer is sent back
    /// as it is (no copy: the caller reads it from there); a small one is copied into the
    /// reply slot.
    pub fn reply_from_payload(mut self, n: usize) -> Result<()> {
        if n > self.len {
            return Err(Error::invalid(format!(
                "reply_from_payload: {n} bytes requested from a {}-byte payload",
                self.len
            )));
        }
        self.answered = true;
        let i = self.sess.clone();
        let tag = wire::base_tag(self.header.tag) | wire::REPLY_BIT;
        if self.header.tag & wire::BULK_BIT != 0 && n > i.cfg.slot_capacity() {
            let d = {
                let g = i.req_in[self.slot].lock();
                let b = g
                    .as_ref()
                    .ok_or_else(|| Error::new(Status::Internal, "bulk request buffer gone"))?;
                BulkDesc {
                    addr: b.ptr as u64,
                    len: n as u64,
                    key: b.key(),
                }
            };
            i.post_desc(wire::IMM_REPLY, self.slot, tag, self.header.request_id, d)?;
        } else {
            let src = self.data;
            i.post(
                wire::IMM_REPLY,
                self.slot,
                tag,
                self.header.request_id,
                n,
                |b| {
                    // SAFETY: the payload is ours until answered; the send slot is distinct.
                    unsafe { std::ptr::copy_nonoverlapping(src, b.as_mut_ptr(), n) };
                    Ok(n)
                },
            )?;
        }
        i.stats.replies_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Answers with an exception (`type_name`, `message`, `traceback`).
    pub fn reply_error(self, type_name: &str, message: &str, traceback: &str) -> Result<()> {
        let e = RemoteError {
            type_name: type_name.into(),
            message: message.into(),
            traceback: traceback.into(),
        }
        .to_json(self.sess.cfg.slot_capacity());
        self.reply_inplace(e.len(), true, |b| {
            b[..e.len()].copy_from_slice(&e);
            Ok(e.len())
        })
    }

    /// Answers with a payload `writer` builds in place in a buffer of `max_len` bytes.
    /// If `writer` fails, an exception reply carries its message.
    pub fn reply_inplace(
        mut self,
        max_len: usize,
        exception: bool,
        writer: impl FnOnce(&mut [u8]) -> Result<usize>,
    ) -> Result<()> {
        self.answered = true;
        let i = self.sess.clone();
        let base = wire::base_tag(self.header.tag);
        if max_len as u64 > i.cfg.max_payload {
            let msg = format!(
                "RPC reply exceeds max_payload. Reply is {max_len} B, limit is {} B.",
                i.cfg.max_payload
            );
            i.reply_exception(self.slot, self.header, "RuntimeError", &msg)?;
            return Err(Error::invalid(msg));
        }
        let flags = wire::REPLY_BIT | if exception { wire::EXC_BIT } else { 0 };
        let mut werr = None;
        let r = i.post(
            wire::IMM_REPLY,
            self.slot,
            base | flags,
            self.header.request_id,
            max_len,
            |b| writer(b).inspect_err(|e| werr = Some(e.clone())),
        );
        match (r, werr) {
            (Ok(_), _) => {
                i.stats.replies_sent.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            (Err(_), Some(e)) => {
                i.reply_exception(self.slot, self.header, "RuntimeError", e.message())?;
                Err(e)
            }
            (Err(e), None) => Err(e),
        }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if !self.answered {
            let _ = self.sess.reply_exception(
                self.slot,
                self.header,
                "RuntimeError",
                "the server dropped the request without a reply",
            );
        }
    }
}

/// An exception reply's content: JSON `{"type","message","traceback"}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteError {
    pub type_name: String,
    pub message: String,
    pub traceback: String,
}

impl RemoteError {
    /// Parses an exception payload; undecodable bytes become the message.
    pub fn parse(b: &[u8]) -> RemoteError {
        match serde_json::from_slice::<Value>(b) {
            Ok(v) => {
                let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                RemoteError {
                    type_name: s("type"),
                    message: s("message"),
                    traceback: s("traceback"),
                }
            }
            Err(e) => RemoteError {
                type_name: "RpcError".into(),
                message: format!("<failed to decode remote exception: {e}>"),
                traceback: String::new(),
            },
        }
    }

    /// JSON bytes; the traceback is replaced by a note when everything would not fit in
    /// `limit` bytes (exception replies never need the bulk path).
    pub fn to_json(&self, limit: usize) -> Vec<u8> {
        let v =
            json!({"type": self.type_name, "message": self.message, "traceback": self.traceback});
        let b = v.to_string().into_bytes();
        if b.len() <= limit {
            return b;
        }
        let mut msg = self.message.clone();
        loop {
            let v = json!({"type": self.type_name, "message": msg, "traceback": "<truncated: traceback exceeds slot size>"});
            let b = v.to_string().into_bytes();
            if b.len() <= limit || msg.is_empty() {
                return b;
            }
            let mut k = msg.len() / 2;
            while !msg.is_char_boundary(k) {
                k -= 1;
            }
            msg.truncate(k);
        }
    }
}

impl Inner {
    fn ended(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.is_dead.load(Ordering::Acquire)
    }

    fn check_alive(&self) -> Result<()> {
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

    fn notify(&self) {
        self.events.fetch_add(1, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) > 0 {
            futex::wake_private(&self.events, i32::MAX as u32);
        }
    }

    /// Waits until `ready`, receiving for everyone meanwhile in inline mode.
    fn wait_until(&self, ready: impl Fn() -> bool, deadline: Deadline) -> Result<()> {
        let spin_until = Instant::now() + self.cfg.spin;
        loop {
            let seen = self.events.load(Ordering::SeqCst);
            if ready() {
                return Ok(());
            }
            self.check_alive()?;
            if deadline.expired() {
                return Err(Error::new(Status::Timeout, "RPC wait timed out"));
            }
            if !self.pump {
                if let Some(g) = self.rx.try_lock() {
                    let slice = deadline
                        .remaining()
                        .unwrap_or(Duration::MAX)
                        .min(Duration::from_millis(5));
                    self.receive_once(g, slice);
                    continue;
                }
            }
            if Instant::now() < spin_until {
                std::hint::spin_loop();
                continue;
            }
            self.parked.fetch_add(1, Ordering::SeqCst);
            if self.events.load(Ordering::SeqCst) == seen {
                let slice = deadline
                    .remaining()
                    .unwrap_or(Duration::MAX)
                    .min(Duration::from_millis(if self.pump { 50 } else { 1 }));
                futex::wait_private(&self.events, seen, Some(slice));
            }
            self.parked.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Waits up to `max` for one notification and dispatches it.
    fn receive_once(&self, mut g: parking_lot::MutexGuard<'_, Option<Future>>, max: Duration) {
        if self.ended() {
            return;
        }
        let f = match g.take() {
            Some(f) => f,
            None => match self.ep.imm_recv(Some(Duration::from_secs(3600))) {
                Ok(f) => f,
                Err(e) => {
                    drop(g);
                    self.mark_dead(e);
                    return;
                }
            },
        };
        // With inline progress, wait in short steps: each step drives the transport,
        // which sleeps on the peer's doorbell when idle, instead of reaching the
        // future's blind timed park.
        let r = if f.state().has_driver() {
            let until = Instant::now() + max;
            loop {
                let left = until.saturating_duration_since(Instant::now());
                match f.wait_for(left.min(Duration::from_micros(20))) {
                    Err(e) if e.status() == Status::Timeout && f.status() == Status::Pending => {
                        if left.is_zero() || self.ended() {
                            break Err(e);
                        }
                    }
                    r => break r,
                }
            }
        } else {
            f.wait_for(max)
        };
        match r {
            Ok(()) => {
                drop(g);
                self.dispatch(f.imm_data());
            }
            Err(_) => match f.status() {
                Status::Pending if self.closed.load(Ordering::Acquire) => {
                    // Closed meanwhile: withdraw the receive, so a later session on this
                    // endpoint gets every notification.
                    f.state().abort(Status::Cancelled, "RPC session closed");
                }
                Status::Pending => *g = Some(f),
                // Completed between the wait giving up and this check.
                Status::Ok => {
                    drop(g);
                    self.dispatch(f.imm_data());
                }
                Status::Timeout => {} // the receive's own deadline: post a new one
                s => {
                    drop(g);
                    let e = f.error().unwrap_or_else(|| Error::new(s, s.as_str()));
                    let msg = match s {
                        Status::PeerDisconnected => "RPC peer disconnected".to_string(),
                        _ => format!("RPC receive failed: {}", e.message()),
                    };
                    self.mark_dead(Error::new(s, msg));
                }
            },
        }
    }

    fn pump_loop(self: Arc<Inner>) {
        while !self.ended() {
            let g = self.rx.lock();
            self.receive_once(g, Duration::from_millis(50));
        }
    }

    fn protocol_error(&self, what: String) {
        self.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
        crate::warn_log!("RPC: {what}");
    }

    fn dispatch(&self, imm: i32) {
        let (slot, kind) = wire::decode_imm(imm);
        if kind == wire::IMM_CLOSE {
            self.mark_dead(Error::new(
                Status::PeerDisconnected,
                "the RPC peer closed its session",
            ));
            return;
        }
        if slot >= self.cfg.slot_count || kind > wire::IMM_CLOSE {
            self.protocol_error(format!(
                "incoming slot_id {slot} (kind {kind}) out of range; dropped"
            ));
            return;
        }
        // SAFETY: slot < slot_count; the peer wrote the header before the notification.
        let h = unsafe { Header::read(self.mem.mbox_ptr(kind, slot)) };
        let len_ok = (HEADER_LEN..=self.cfg.slot_size).contains(&(h.total_len as usize));
        if kind == wire::IMM_REQUEST {
            if !len_ok || h.tag & wire::REPLY_BIT != 0 {
                self.protocol_error(format!(
                    "malformed request in slot {slot} (tag {:#x}, total_len {}); dropped",
                    h.tag, h.total_len
                ));
                return;
            }
            self.stats.requests_received.fetch_add(1, Ordering::Relaxed);
            self.inbox.lock().push_back(Inbound { slot, header: h });
            self.notify();
            return;
        }
        let cell = &self.cells[slot];
        let mut out = CellOut::default();
        if !len_ok || h.tag & wire::REPLY_BIT == 0 {
            out.error = Some(Error::new(
                Status::Protocol,
                format!(
                    "malformed RPC reply (tag {:#x}, total_len {})",
                    h.tag, h.total_len
                ),
            ));
        } else if h.request_id != cell.req_id.load(Ordering::Acquire) {
            out.error = Some(Error::new(
                Status::Protocol,
                format!(
                    "RPC reply request_id mismatch (got {}, expected {})",
                    h.request_id,
                    cell.req_id.load(Ordering::Acquire)
                ),
            ));
        } else {
            out.tag = h.tag;
            out.len = h.total_len as usize - HEADER_LEN;
            if h.tag & wire::BULK_BIT != 0 {
                let p = unsafe { self.mem.mbox_ptr(kind, slot).add(HEADER_LEN) };
                let b = unsafe { std::slice::from_raw_parts(p, out.len) };
                match BulkDesc::decode(b) {
                    Some(d) if d.len <= self.cfg.max_payload => out.bulk = Some(d),
                    Some(d) => {
                        out.error = Some(Error::invalid(format!(
                            "RPC reply of {} bytes exceeds max_payload ({} bytes)",
                            d.len, self.cfg.max_payload
                        )))
                    }
                    None => {
                        out.error = Some(Error::new(
                            Status::Protocol,
                            "malformed RPC bulk descriptor",
                        ))
                    }
                }
            }
        }
        if out.error.is_some() {
            self.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
        }
        *cell.out.lock() = out;
        match cell
            .state
            .compare_exchange(PENDING, DONE, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => self.notify(),
            Err(DETACHED) => {
                cell.write.lock().take();
                cell.state.store(IDLE, Ordering::Release);
                self.release_slot(slot);
            }
            Err(s) => self.protocol_error(format!(
                "reply for slot {slot} with no call in flight (state {s}); dropped"
            )),
        }
    }

    /// Ends the session because of the peer (or a transport failure).
    fn mark_dead(&self, e: Error) {
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

    fn fail_pending(&self, e: &Error) {
        for (s, cell) in self.cells.iter().enumerate() {
            if cell.state.load(Ordering::Acquire) == PENDING {
                *cell.out.lock() = CellOut {
                    error: Some(e.clone()),
                    ..Default::default()
                };
            }
            match cell
                .state
                .compare_exchange(PENDING, DONE, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {}
                Err(DETACHED) => {
                    cell.state.store(IDLE, Ordering::Release);
                    self.release_slot(s);
                }
                Err(_) => {}
            }
        }
        self.notify();
    }

    fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if !self.is_dead.load(Ordering::Acquire) {
            // Tell the peer, so its serve() ends instead of waiting.
            if let Ok(f) = self.ep.write_with_imm(
                &[],
                wire::encode_imm(0, wire::IMM_CLOSE),
                Some(Duration::from_secs(2)),
            ) {
                let _ = f.wait();
            }
        }
        self.fail_pending(&closed_error());
        if let Some(f) = self.rx.lock().take() {
            f.state().abort(Status::Cancelled, "RPC session closed");
        }
        self.notify();
    }

    fn acquire_slot(&self, deadline: Deadline) -> Result<usize> {
        loop {
            if let Some(s) = self.free_slots.lock().pop() {
                return Ok(s as usize);
            }
            match self.wait_until(|| !self.free_slots.lock().is_empty(), deadline) {
                Ok(()) => {}
                Err(e) if e.status() == Status::Timeout => {
                    return Err(Error::new(
                        Status::Timeout,
                        "every RPC slot stayed in flight until the deadline",
                    ))
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn release_slot(&self, s: usize) {
        self.free_slots.lock().push(s as u16);
        self.notify();
    }

    /// A bulk buffer of at least `len` bytes from a slot's cache.
    fn cached<'a>(
        &self,
        cache: &'a BulkCache,
        seg: usize,
        len: usize,
    ) -> Result<parking_lot::MutexGuard<'a, Option<BulkBuf>>> {
        let mut g = cache.lock();
        if let Some((base, handle, size)) = self.mem.arena {
            if len <= size {
                if g.as_ref().is_none_or(|b| b.owned) {
                    let off = seg * size;
                    *g = Some(BulkBuf {
                        pool: self.mem.pool.clone(),
                        // SAFETY: seg < 4 * slot_count segments of `size` bytes.
                        ptr: unsafe { base.add(off) },
                        cap: size,
                        handle,
                        off: off as u64,
                        owned: false,
                    });
                }
                return Ok(g);
            }
        }
        let keep = g.as_ref().is_some_and(|b| {
            b.cap >= len && (b.cap <= self.cfg.bulk_cache_max || b.cap <= 2 * len)
        });
        if !keep {
            *g = None;
            *g = Some(BulkBuf::new(&self.mem.pool, len)?);
        }
        Ok(g)
    }

    /// Writes one message (`kind` request or reply) to the peer's mailbox slot.
    fn post(
        &self,
        kind: u32,
        slot: usize,
        tag: u32,
        request_id: u64,
        max_len: usize,
        writer: impl FnOnce(&mut [u8]) -> Result<usize>,
    ) -> Result<Future> {
        self.check_alive()?;
        let cap = self.cfg.slot_capacity();
        let sp = self.mem.send_ptr(kind, slot);
        let (tag, payload_len) = if max_len <= cap {
            // SAFETY: our send slot, not in use by anyone else until this message's answer.
            let buf = unsafe { std::slice::from_raw_parts_mut(sp.add(HEADER_LEN), max_len) };
            let n = writer(buf)?;
            if n > max_len {
                return Err(Error::invalid(format!(
                    "RPC writer returned {n} bytes, more than its {max_len}-byte buffer"
                )));
            }
            (tag, n)
        } else {
            let (cache, seg) = if kind == wire::IMM_REPLY {
                (&self.rep_out[slot], self.cfg.slot_count + slot)
            } else {
                (&self.req_out[slot], slot)
            };
            let g = self.cached(cache, seg, max_len)?;
            let b = g.as_ref().unwrap();
            // SAFETY: the cached buffer is this slot's; the peer finished reading the
            // previous payload from it (see the module docs).
            let buf = unsafe { std::slice::from_raw_parts_mut(b.ptr, max_len) };
            let n = writer(buf)?;
            if n > max_len {
                return Err(Error::invalid(format!(
                    "RPC writer returned {n} bytes, more than its {max_len}-byte buffer"
                )));
            }
            if n <= cap {
                unsafe { std::ptr::copy_nonoverlapping(b.ptr, sp.add(HEADER_LEN), n) };
                (tag, n)
            } else {
                let d = BulkDesc {
                    addr: b.ptr as u64,
                    len: n as u64,
                    key: b.key(),
                };
                let e = d.encode();
                unsafe { std::ptr::copy_nonoverlapping(e.as_ptr(), sp.add(HEADER_LEN), e.len()) };
                self.stats.bulk_sent.fetch_add(1, Ordering::Relaxed);
                (tag | wire::BULK_BIT, e.len())
            }
        };
        self.send_slot(kind, slot, tag, request_id, payload_len)
    }

    /// Writes the header of the message staged in our send slot and sends slot and
    /// notification with one write-with-immediate.
    fn send_slot(
        &self,
        kind: u32,
        slot: usize,
        tag: u32,
        request_id: u64,
        payload_len: usize,
    ) -> Result<Future> {
        let sp = self.mem.send_ptr(kind, slot);
        let remote_off = (if kind == wire::IMM_REPLY {
            self.cfg.slot_size * self.cfg.slot_count
        } else {
            0
        } + slot * self.cfg.slot_size) as u64;
        let h = Header {
            tag,
            total_len: (HEADER_LEN + payload_len) as u32,
            request_id,
        };
        // SAFETY: our send slot (see `post`).
        unsafe { h.write(sp) };
        let a = Assignment::new(
            self.mem.send_h,
            self.remote_mbox,
            remote_off,
            self.mem.send_off(kind, slot),
            (HEADER_LEN + payload_len) as u64,
        );
        self.ep.write_with_imm(
            &[a],
            wire::encode_imm(slot, kind),
            Some(self.cfg.default_timeout),
        )
    }

    /// Sends a bulk message whose payload already lies in a registered buffer of ours.
    fn post_desc(
        &self,
        kind: u32,
        slot: usize,
        tag: u32,
        request_id: u64,
        d: BulkDesc,
    ) -> Result<Future> {
        self.check_alive()?;
        let e = d.encode();
        // SAFETY: our send slot (see `post`); slot_size >= 64 holds header + descriptor.
        unsafe {
            std::ptr::copy_nonoverlapping(
                e.as_ptr(),
                self.mem.send_ptr(kind, slot).add(HEADER_LEN),
                e.len(),
            )
        };
        self.stats.bulk_sent.fetch_add(1, Ordering::Relaxed);
        self.send_slot(kind, slot, tag | wire::BULK_BIT, request_id, e.len())
    }

    fn reply_exception(
        &self,
        slot: usize,
        h: Header,
        type_name: &str,
        message: &str,
    ) -> Result<()> {
        let e = RemoteError {
            type_name: type_name.into(),
            message: message.into(),
            traceback: String::new(),
        }
        .to_json(self.cfg.slot_capacity());
        let tag = wire::base_tag(h.tag) | wire::REPLY_BIT | wire::EXC_BIT;
        self.post(wire::IMM_REPLY, slot, tag, h.request_id, e.len(), |b| {
            b[..e.len()].copy_from_slice(&e);
            Ok(e.len())
        })
        .map(|_| ())
    }

    /// Reads a peer's bulk payload into this slot's cache; returns where it lies.
    fn bulk_read(
        &self,
        cache: &BulkCache,
        dir: &str,
        slot: usize,
        d: BulkDesc,
    ) -> Result<*const u8> {
        let len = d.len as usize;
        let seg = if dir == "req" { 2 } else { 3 } * self.cfg.slot_count + slot;
        let g = self.cached(cache, seg, len)?;
        let b = g.as_ref().unwrap();
        let rh = self.ep.remote_pool().register(
            &format!("rpc:peer-bulk:{dir}:{slot}"),
            RemoteRegion {
                addr: d.addr,
                len: d.len,
                key: d.key,
            },
        )?;
        let f = self.ep.read(
            &[Assignment::new(b.handle, rh, 0, b.off, d.len)],
            Some(self.cfg.default_timeout.max(Duration::from_secs(60))),
        )?;
        f.wait().map_err(|e| {
            Error::new(
                e.status(),
                format!("RPC bulk read of {} bytes failed: {}", d.len, e.message()),
            )
        })?;
        self.stats.bulk_received.fetch_add(1, Ordering::Relaxed);
        Ok(b.ptr)
    }

    /// Turns an inbound message into a Request, or answers it here (bad requests).
    fn make_request(self: &Arc<Inner>, m: Inbound) -> Result<Option<Request>> {
        let h = m.header;
        let p = unsafe { self.mem.mbox_ptr(wire::IMM_REQUEST, m.slot).add(HEADER_LEN) };
        let n = h.total_len as usize - HEADER_LEN;
        if h.tag & wire::CHUNK_BIT != 0 {
            self.reply_exception(m.slot, h, "RuntimeError", "Chunked transfers are disabled")?;
            return Ok(None);
        }
        let (data, len) = if h.tag & wire::BULK_BIT != 0 {
            let d = BulkDesc::decode(unsafe { std::slice::from_raw_parts(p, n) });
            let Some(d) = d else {
                self.reply_exception(m.slot, h, "RuntimeError", "malformed bulk descriptor")?;
                return Ok(None);
            };
            if d.len > self.cfg.max_payload {
                let msg = format!(
                    "RPC request of {} bytes exceeds the server's max_payload ({} bytes)",
                    d.len, self.cfg.max_payload
                );
                self.reply_exception(m.slot, h, "RuntimeError", &msg)?;
                return Ok(None);
            }
            match self.bulk_read(&self.req_in[m.slot], "req", m.slot, d) {
                Ok(p) => (p, d.len as usize),
                Err(e) => {
                    self.check_alive()?;
                    let _ = self.reply_exception(m.slot, h, "RuntimeError", e.message());
                    return Ok(None);
                }
            }
        } else {
            (p as *const u8, n)
        };
        Ok(Some(Request {
            sess: self.clone(),
            slot: m.slot,
            header: h,
            data,
            len,
            answered: false,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_error_json_round_trip_and_truncation() {
        let e = RemoteError {
            type_name: "ValueError".into(),
            message: "bad".into(),
            traceback: "tb".into(),
        };
        assert_eq!(RemoteError::parse(&e.to_json(4096)), e);
        let long = RemoteError {
            type_name: "E".into(),
            message: "é".repeat(3000),
            traceback: "x".repeat(10_000),
        };
        let b = long.to_json(500);
        assert!(b.len() <= 500, "{}", b.len());
        let p = RemoteError::parse(&b);
        assert_eq!(p.type_name, "E");
        assert_eq!(p.traceback, "<truncated: traceback exceeds slot size>");
        assert!(p.message.starts_with("éé") && p.message.len() < 500);
        let bad = RemoteError::parse(b"\xff not json");
        assert!(bad
            .message
            .starts_with("<failed to decode remote exception"));
    }

    #[test]
    fn config_defaults_are_valid() {
        let c = RpcConfig::default();
        c.validate().unwrap();
        assert_eq!(c.slot_capacity(), (64 << 10) - 16);
        assert!(c.pump(), "16 slots: a receive pump");
        assert!(!RpcConfig { slot_count: 1, ..c }.pump());
    }
}
