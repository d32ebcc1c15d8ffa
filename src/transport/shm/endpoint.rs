//! The shared-memory endpoint: connection set-up, submission, the progress loop (run by
//! a background thread, or inline by waiting threads) and peer-death handling.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use super::cma;
use super::handshake;
use super::mappings::PeerMappings;
use super::ring::{
    self, kind, Consumer, Doorbell, Entry, Producer, RegionTable, Segment, INLINE_CAP, NSLOTS,
    SLOT_SIZE,
};
use crate::engine::{self, Deadline, ProgressMode};
use crate::error::{Error, Result, Status};
use crate::future::{Driver, Future, InflightOps, OpState};
use crate::memory::shared::{self as alloc};
use crate::memory::{MemoryPool, RemotePool};
use crate::transport::info;
use crate::transport::matching::{ImmQueue, MsgMatcher, PostedRecv};
use crate::transport::{Assignment, Endpoint};

/// Knobs of a shared-memory endpoint.
#[derive(Clone, Debug)]
pub struct ShmConfig {
    pub engine: engine::Config,
    /// Use the staged (bounce-slot) path even where cross-memory attach works
    /// (`DLSLIME_SHM_FORCE_STAGED=1`); what the EPERM fallback uses.
    pub force_staged: bool,
    /// Test-only: pretend to run on another host (`DLSLIME_SHM_HOST_ID`).
    pub host_id_override: Option<String>,
}

impl Default for ShmConfig {
    fn default() -> Self {
        ShmConfig {
            engine: engine::Config::from_env(),
            force_staged: std::env::var("DLSLIME_SHM_FORCE_STAGED").is_ok_and(|v| v == "1"),
            host_id_override: std::env::var("DLSLIME_SHM_HOST_ID").ok(),
        }
    }
}

/// Counters, readable at any time.
#[derive(Default, Debug)]
pub struct ShmStats {
    /// One-sided parts done as a memcpy into/from a mapped peer allocation.
    pub fast_path: AtomicU64,
    /// Parts moved with process_vm_readv/writev.
    pub cma: AtomicU64,
    /// Chunks moved through bounce slots.
    pub staged_chunks: AtomicU64,
    /// Connections that fell back to the staged path because attach was refused.
    pub staged_fallbacks: AtomicU64,
    /// Attach refused (EPERM) at run time; those operations failed with `Io`.
    pub cma_eperm: AtomicU64,
    /// Ring entries rejected by validation (never acted on).
    pub rejected_entries: AtomicU64,
}

/// What a message that arrived before its receive leaves behind.
enum Early {
    Bytes(Vec<u8>),
    /// A large message to pull from the sender: reply id, sender address, length.
    Rts {
        id: u64,
        addr: u64,
        len: u64,
    },
    /// A staged message being (or already) reassembled, by message id.
    Staged(u64),
}

enum Sink {
    Direct(PostedRecv),
    Buffer(Vec<u8>, Option<PostedRecv>),
    Discard,
}

struct Assembly {
    total: u64,
    got: u64,
    sink: Sink,
}

/// One operation's parts in flight; the last part to report completes it (and, for
/// write_with_imm, sends the notification first, only if every part succeeded).
struct Agg {
    op: Arc<OpState>,
    remaining: AtomicU32,
    err: Mutex<Option<(Status, String)>>,
    imm: Option<i32>,
}

enum Pending {
    Part {
        agg: Arc<Agg>,
        slot: Option<u32>,
    },
    ReadGrant {
        agg: Arc<Agg>,
        remote: u64,
        local: usize,
        len: usize,
    },
    StRead {
        agg: Arc<Agg>,
        local: usize,
        len: usize,
        slot: u32,
    },
}

struct Conn {
    _seg_fd: OwnedFd,
    seg: *mut u8,
    sock: OwnedFd,
    peer_pid: i32,
    prod: Mutex<(Producer, VecDeque<Entry>)>,
    out_bell: Doorbell,
    cons: Mutex<Consumer>,
    in_bell: Doorbell,
    peer_maps: PeerMappings,
    peer_table: *const RegionTable,
    my_table: *mut RegionTable,
    my_slots: *mut u8,
    peer_slots: *mut u8,
    staged: bool,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
    slots: AtomicU32,
    table_fp: AtomicU64,
    /// Whether replies wait in the backlog (saves taking the producer lock per poll).
    backlogged: AtomicBool,
}

// SAFETY: the raw pointers point into mappings owned by the Conn for its whole life;
// shared state is accessed atomically, under the mutexes, or copied out and checked.
unsafe impl Send for Conn {}
unsafe impl Sync for Conn {}

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: we mapped the segment and nothing uses it once the Conn is gone.
        unsafe { libc::munmap(self.seg as *mut libc::c_void, ring::SEGMENT_SIZE) };
    }
}

enum PushMode {
    /// Submitters: wait (driving progress) while the ring is full, until the deadline.
    Wait(Deadline),
    /// Progress handlers: never block; queue behind what is already waiting.
    Backlog,
}

struct Inner {
    pool: Arc<MemoryPool>,
    remote: RemotePool,
    cfg: ShmConfig,
    host_id: String,
    sock_name: String,
    listener: Mutex<Option<OwnedFd>>,
    connecting: Mutex<()>,
    conn: OnceLock<Conn>,
    inflight: InflightOps,
    imm: ImmQueue,
    msgs: MsgMatcher<Early>,
    assemblies: Mutex<HashMap<u64, Assembly>>,
    stats: ShmStats,
    closed: AtomicBool,
    dead: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    epoch: Instant,
    last_inline_us: AtomicU64,
}

/// A shared-memory endpoint. Create with [`ShmEndpoint::new`], publish
/// [`Endpoint::endpoint_info`], and call [`Endpoint::connect`] on both sides.
pub struct ShmEndpoint {
    inner: Arc<Inner>,
}

fn err(status: Status, msg: impl Into<String>) -> Error {
    Error::new(status, msg)
}

fn status_message(s: Status) -> &'static str {
    match s {
        Status::RemoteAccess => {
            "the target refused the range: outside its registered regions or a wrong key"
        }
        Status::PeerDisconnected => "shared-memory peer disconnected",
        Status::Io => "the target could not copy the data (see its log)",
        _ => s.as_str(),
    }
}

fn errno_status(e: i32, counter: &AtomicU64) -> (Status, String) {
    if e == libc::EPERM {
        counter.fetch_add(1, Ordering::Relaxed);
        eprintln!("dlslime shm: cross-memory attach refused (EPERM) at run time; operation failed");
        (
            Status::Io,
            "cross-memory attach refused by the kernel (EPERM)".into(),
        )
    } else if e == libc::ESRCH {
        (Status::PeerDisconnected, "peer process is gone".into())
    } else {
        (
            Status::Io,
            format!(
                "cross-memory attach failed: {}",
                std::io::Error::from_raw_os_error(e)
            ),
        )
    }
}

impl ShmEndpoint {
    pub fn new(pool: Arc<MemoryPool>, cfg: ShmConfig) -> Result<ShmEndpoint> {
        let (listener, sock_name) = handshake::listen()?;
        let host_id = cfg
            .host_id_override
            .clone()
            .unwrap_or_else(handshake::host_identity);
        Ok(ShmEndpoint {
            inner: Arc::new(Inner {
                pool,
                remote: RemotePool::default(),
                cfg,
                host_id,
                sock_name,
                listener: Mutex::new(Some(listener)),
                connecting: Mutex::new(()),
                conn: OnceLock::new(),
                inflight: InflightOps::default(),
                imm: ImmQueue::default(),
                msgs: MsgMatcher::default(),
                assemblies: Mutex::new(HashMap::new()),
                stats: ShmStats::default(),
                closed: AtomicBool::new(false),
                dead: AtomicBool::new(false),
                thread: Mutex::new(None),
                epoch: Instant::now(),
                last_inline_us: AtomicU64::new(0),
            }),
        })
    }

    pub fn stats(&self) -> &ShmStats {
        &self.inner.stats
    }

    /// Whether this connection moves non-shared memory through bounce slots.
    pub fn is_staged(&self) -> bool {
        self.inner.conn.get().is_some_and(|c| c.staged)
    }

    /// Test hook: writes `e` as the next ring entry without sealing it, so the peer's
    /// validation can be exercised with garbage.
    pub fn push_raw_entry_for_test(&self, e: &Entry) -> Result<()> {
        let c = self.inner.conn()?;
        let ok = c.prod.lock().0.push_raw_for_test(e);
        c.out_bell.ring();
        if ok {
            Ok(())
        } else {
            Err(err(Status::ResourceExhausted, "ring full"))
        }
    }

    /// Test hook: a correctly sealed entry (for entries that are well formed but lie).
    pub fn push_entry_for_test(&self, e: &Entry) -> Result<()> {
        let c = self.inner.conn()?;
        self.inner.push(
            c,
            e,
            PushMode::Wait(Deadline::after(Duration::from_secs(5))),
        )
    }

    fn new_op(&self, parts: u32, timeout: Option<Duration>) -> Arc<OpState> {
        let i = &self.inner;
        let deadline = Deadline::after(timeout.unwrap_or(i.cfg.engine.default_timeout));
        let driver: Option<Arc<dyn Driver>> = match i.cfg.engine.progress {
            ProgressMode::Inline => Some(i.clone() as Arc<dyn Driver>),
            ProgressMode::Background => None,
        };
        let op = OpState::new(parts, deadline, i.cfg.engine.spin, driver);
        i.inflight.track(&op);
        op
    }

    fn rw(
        &self,
        assignments: &[Assignment],
        write: bool,
        imm: Option<i32>,
        timeout: Option<Duration>,
    ) -> Result<Future> {
        let i = &self.inner;
        let c = i.conn()?;
        // Check everything before touching any memory.
        let mut plan = Vec::with_capacity(assignments.len());
        for a in assignments {
            let (_, lptr) = i.pool.local_range(a.local, a.local_offset, a.length)?;
            let (raddr, key) = i.remote.remote_range(a.remote, a.remote_offset, a.length)?;
            plan.push((lptr, raddr, key, a.length));
        }
        let op = self.new_op(1, timeout);
        let deadline = op.deadline();
        let agg = Arc::new(Agg {
            op: op.clone(),
            remaining: AtomicU32::new(1),
            err: Mutex::new(None),
            imm,
        });
        let mut failure: Option<Error> = None;
        'outer: for (lptr, raddr, key, len) in plan {
            if len == 0 {
                continue;
            }
            // SAFETY: the peer table is in our mapping; reads are checked under its seqlock.
            let permitted = unsafe { (*c.peer_table).permits(raddr, len, key) };
            if permitted {
                if let Some(p) = c.peer_maps.translate(raddr, len) {
                    // SAFETY: local range checked against our pool; remote range inside a
                    // mapping of the peer's allocation and inside a region it published.
                    unsafe {
                        if write {
                            std::ptr::copy_nonoverlapping(lptr as *const u8, p, len as usize);
                        } else {
                            std::ptr::copy_nonoverlapping(p as *const u8, lptr, len as usize);
                        }
                    }
                    i.stats.fast_path.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            if !c.staged {
                let id = c.next_id.fetch_add(1, Ordering::Relaxed);
                agg.remaining.fetch_add(1, Ordering::AcqRel);
                let mut e;
                if write {
                    c.pending.lock().insert(
                        id,
                        Pending::Part {
                            agg: agg.clone(),
                            slot: None,
                        },
                    );
                    e = Entry::new(kind::WRITE);
                    e.a = lptr as u64;
                    e.b = raddr;
                } else {
                    c.pending.lock().insert(
                        id,
                        Pending::ReadGrant {
                            agg: agg.clone(),
                            remote: raddr,
                            local: lptr as usize,
                            len: len as usize,
                        },
                    );
                    e = Entry::new(kind::READ);
                    e.a = raddr;
                }
                e.id = id;
                e.n = len;
                e.key = key;
                if let Err(er) = i.push(c, &e, PushMode::Wait(deadline)) {
                    if c.pending.lock().remove(&id).is_some() {
                        agg.part(i, er.status(), er.message());
                    }
                    failure = Some(er);
                    break;
                }
                continue;
            }
            let mut off = 0u64;
            while off < len {
                let clen = (len - off).min(SLOT_SIZE as u64);
                let slot = match i.acquire_slot(c, deadline) {
                    Ok(s) => s,
                    Err(er) => {
                        failure = Some(er);
                        break 'outer;
                    }
                };
                let id = c.next_id.fetch_add(1, Ordering::Relaxed);
                agg.remaining.fetch_add(1, Ordering::AcqRel);
                let sp = unsafe { c.my_slots.add(slot as usize * SLOT_SIZE) };
                let mut e;
                if write {
                    // SAFETY: the slot is ours until the target's reply frees it.
                    unsafe {
                        std::ptr::copy_nonoverlapping(lptr.add(off as usize), sp, clen as usize)
                    };
                    c.pending.lock().insert(
                        id,
                        Pending::Part {
                            agg: agg.clone(),
                            slot: Some(slot),
                        },
                    );
                    e = Entry::new(kind::ST_WRITE);
                    e.b = raddr + off;
                } else {
                    c.pending.lock().insert(
                        id,
                        Pending::StRead {
                            agg: agg.clone(),
                            local: lptr as usize + off as usize,
                            len: clen as usize,
                            slot,
                        },
                    );
                    e = Entry::new(kind::ST_READ);
                    e.a = raddr + off;
                }
                e.id = id;
                e.len = clen as u32;
                e.key = key;
                e.slot = slot;
                if let Err(er) = i.push_staged(c, &e, &agg, deadline) {
                    failure = Some(er);
                    break 'outer;
                }
                off += clen;
            }
        }
        match failure {
            Some(e) => agg.part(i, e.status(), e.message()),
            None => agg.part(i, Status::Ok, ""),
        }
        Ok(Future::new(op))
    }
}

impl Agg {
    fn part(&self, inner: &Inner, st: Status, msg: &str) {
        if !st.is_ok() {
            let mut g = self.err.lock();
            if g.is_none() {
                *g = Some((st, msg.to_string()));
            }
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let e = self.err.lock().take();
            match e {
                None => {
                    if let Some(imm) = self.imm {
                        let mut n = Entry::new(kind::IMM);
                        n.imm = imm;
                        match inner.conn() {
                            Ok(c) => {
                                if let Err(er) = inner.push(c, &n, PushMode::Backlog) {
                                    self.op.part_done(er.status(), Some(er.message()));
                                    return;
                                }
                            }
                            Err(er) => {
                                self.op.part_done(er.status(), Some(er.message()));
                                return;
                            }
                        }
                    }
                    self.op.add_nbytes(0);
                    self.op.part_done(Status::Ok, None);
                }
                Some((s, m)) => self.op.part_done(s, Some(&m)),
            }
        }
    }
}

thread_local! {
    /// (endpoint, first empty poll of the current wait, last drive call) for inline waiters.
    static IDLE: Cell<(usize, Option<Instant>, Option<Instant>)> = const { Cell::new((0, None, None)) };
}

impl Driver for Inner {
    fn drive(&self) {
        let Some(c) = self.conn.get() else { return };
        let now = Instant::now();
        self.last_inline_us.store(
            now.duration_since(self.epoch).as_micros() as u64,
            Ordering::Relaxed,
        );
        if self.poll(c) {
            IDLE.with(|s| s.set((self as *const _ as usize, None, Some(now))));
            return;
        }
        if self.dead.load(Ordering::Acquire) || self.closed.load(Ordering::Acquire) {
            return;
        }
        // Spin (poll) for the configured time, then sleep on the doorbell: the peer wakes
        // this thread directly, one wake-up per message.
        let me = self as *const _ as usize;
        let sleep = IDLE.with(|s| {
            let (ep, first, last) = s.get();
            let fresh =
                ep != me || last.is_none_or(|l| now.duration_since(l) > Duration::from_millis(1));
            let first = if fresh { now } else { first.unwrap_or(now) };
            s.set((me, Some(first), Some(now)));
            now.duration_since(first) >= self.cfg.engine.spin
        });
        if sleep {
            c.in_bell.sleep(Duration::from_millis(1), || {
                c.cons.try_lock().is_none_or(|g| g.has_work())
            });
            if self.poll(c) {
                IDLE.with(|s| s.set((me, None, Some(Instant::now()))));
            }
        }
    }
}

impl Inner {
    fn conn(&self) -> Result<&Conn> {
        if self.closed.load(Ordering::Acquire) {
            return Err(err(Status::ShutDown, "endpoint is shut down"));
        }
        if self.dead.load(Ordering::Acquire) {
            return Err(err(
                Status::PeerDisconnected,
                "shared-memory peer disconnected",
            ));
        }
        self.conn
            .get()
            .ok_or_else(|| err(Status::NotConnected, "endpoint is not connected"))
    }

    fn push(&self, c: &Conn, e: &Entry, mode: PushMode) -> Result<()> {
        loop {
            {
                let mut g = self.prod_lock(c);
                let (p, backlog) = &mut *g;
                while let Some(b) = backlog.front() {
                    if !p.try_push(b) {
                        break;
                    }
                    backlog.pop_front();
                }
                if backlog.is_empty() && p.try_push(e) {
                    drop(g);
                    c.out_bell.ring();
                    return Ok(());
                }
                if let PushMode::Backlog = mode {
                    backlog.push_back(*e);
                    c.backlogged.store(true, Ordering::Release);
                    return Ok(());
                }
            }
            c.out_bell.ring();
            if self.dead.load(Ordering::Acquire) {
                return Err(err(
                    Status::PeerDisconnected,
                    "shared-memory peer disconnected",
                ));
            }
            if self.closed.load(Ordering::Acquire) {
                return Err(err(Status::ShutDown, "endpoint is shut down"));
            }
            if let PushMode::Wait(d) = mode {
                if d.expired() {
                    return Err(err(
                        Status::Timeout,
                        "control ring stayed full until the deadline",
                    ));
                }
            }
            self.poll(c);
            std::thread::yield_now();
        }
    }

    /// Pushes a staged chunk (`e.id` pending, bounce slot `e.slot` taken). If the push
    /// fails and the chunk is still ours, the slot is freed and the part fails.
    fn push_staged(&self, c: &Conn, e: &Entry, agg: &Agg, deadline: Deadline) -> Result<()> {
        self.stats.staged_chunks.fetch_add(1, Ordering::Relaxed);
        let r = self.push(c, e, PushMode::Wait(deadline));
        if let Err(er) = &r {
            if c.pending.lock().remove(&e.id).is_some() {
                self.free_slot(c, e.slot);
                agg.part(self, er.status(), er.message());
            }
        }
        r
    }

    fn prod_lock<'a>(
        &self,
        c: &'a Conn,
    ) -> parking_lot::MutexGuard<'a, (Producer, VecDeque<Entry>)> {
        c.prod.lock()
    }

    fn acquire_slot(&self, c: &Conn, deadline: Deadline) -> Result<u32> {
        loop {
            let cur = c.slots.load(Ordering::Acquire);
            let free = !cur & ((1u32 << NSLOTS) - 1);
            if free != 0 {
                let s = free.trailing_zeros();
                if c.slots
                    .compare_exchange(cur, cur | (1 << s), Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Ok(s);
                }
                continue;
            }
            self.conn()?;
            if deadline.expired() {
                return Err(err(
                    Status::Timeout,
                    "no bounce slot freed before the deadline",
                ));
            }
            if !self.poll(c) {
                std::thread::sleep(Duration::from_micros(20));
            }
        }
    }

    fn free_slot(&self, c: &Conn, s: u32) {
        c.slots.fetch_and(!(1 << s), Ordering::AcqRel);
    }

    /// Drains the inbound ring (one thread at a time). Returns whether it did anything.
    fn poll(&self, c: &Conn) -> bool {
        let Some(mut cons) = c.cons.try_lock() else {
            return false;
        };
        let mut did = false;
        if c.backlogged.load(Ordering::Acquire) {
            // Flush replies that found the ring full.
            let mut g = c.prod.lock();
            let (p, backlog) = &mut *g;
            let had = !backlog.is_empty();
            while let Some(b) = backlog.front() {
                if !p.try_push(b) {
                    break;
                }
                backlog.pop_front();
            }
            c.backlogged.store(!backlog.is_empty(), Ordering::Release);
            drop(g);
            if had {
                c.out_bell.ring();
            }
        }
        for _ in 0..64 {
            let Some(e) = cons.pop() else { break };
            did = true;
            if let Err(why) = e.validate() {
                self.reject(&e, why);
                continue;
            }
            self.handle(c, &e);
        }
        did
    }

    fn reject(&self, e: &Entry, why: &str) {
        self.stats.rejected_entries.fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "dlslime shm: rejected ring entry (kind {}, id {}): {why}",
            e.kind, e.id
        );
    }

    fn reply(&self, c: &Conn, id: u64, st: Status, slot: u32) {
        let mut d = Entry::new(kind::DONE);
        d.id = id;
        d.status = st.code();
        d.slot = slot;
        let _ = self.push(c, &d, PushMode::Backlog);
    }

    fn handle(&self, c: &Conn, e: &Entry) {
        match e.kind {
            kind::MSG => {
                // Straight into a posted receive when one waits (no allocation).
                if let Some(r) = self.msgs.take_posted() {
                    copy_into_recv(&r, &e.data[..e.len as usize]);
                    return;
                }
                let data = e.data[..e.len as usize].to_vec();
                if let Some((r, m)) = self.msgs.arrive(Early::Bytes(data)) {
                    self.complete_recv(c, r, m);
                }
            }
            kind::RTS => {
                if let Some((r, m)) = self.msgs.arrive(Early::Rts {
                    id: e.id,
                    addr: e.a,
                    len: e.n,
                }) {
                    self.complete_recv(c, r, m);
                }
            }
            kind::IMM => self.imm.deliver(e.imm),
            kind::WRITE => {
                let st = match self.pool.validate_access(e.b, e.n, e.key) {
                    Err(_) => Status::RemoteAccess,
                    Ok(_) => {
                        let dst = e.b as usize as *mut u8;
                        if let Some(src) = c.peer_maps.translate(e.a, e.n) {
                            // SAFETY: dst validated against our registered regions; src is
                            // inside our mapping of the initiator's allocation.
                            unsafe {
                                std::ptr::copy_nonoverlapping(src as *const u8, dst, e.n as usize)
                            };
                            Status::Ok
                        } else {
                            self.stats.cma.fetch_add(1, Ordering::Relaxed);
                            // SAFETY: dst validated as above.
                            match unsafe { cma::read_from(c.peer_pid, dst, e.a, e.n as usize) } {
                                Ok(()) => Status::Ok,
                                Err(en) => {
                                    let (s, m) = errno_status(en, &self.stats.cma_eperm);
                                    eprintln!("dlslime shm: write from peer failed: {m}");
                                    s
                                }
                            }
                        }
                    }
                };
                self.reply(c, e.id, st, 0);
            }
            kind::READ => {
                let st = if self.pool.validate_access(e.a, e.n, e.key).is_ok() {
                    Status::Ok
                } else {
                    Status::RemoteAccess
                };
                self.reply(c, e.id, st, 0);
            }
            kind::ST_WRITE => {
                let st = match self.pool.validate_access(e.b, e.len as u64, e.key) {
                    Err(_) => Status::RemoteAccess,
                    Ok(_) => {
                        // SAFETY: slot index and length checked by validate(); dst validated.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                c.peer_slots.add(e.slot as usize * SLOT_SIZE),
                                e.b as usize as *mut u8,
                                e.len as usize,
                            )
                        };
                        Status::Ok
                    }
                };
                self.reply(c, e.id, st, e.slot);
            }
            kind::ST_READ => {
                let st = match self.pool.validate_access(e.a, e.len as u64, e.key) {
                    Err(_) => Status::RemoteAccess,
                    Ok(_) => {
                        // SAFETY: as for ST_WRITE, the other way round.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                e.a as usize as *const u8,
                                c.peer_slots.add(e.slot as usize * SLOT_SIZE),
                                e.len as usize,
                            )
                        };
                        Status::Ok
                    }
                };
                self.reply(c, e.id, st, e.slot);
            }
            kind::ST_MSG => {
                self.staged_chunk(c, e);
                self.reply(c, e.id, Status::Ok, e.slot);
            }
            kind::DONE => self.complete(c, e),
            _ => self.reject(e, "unhandled kind"),
        }
    }

    /// A reply to one of our requests.
    fn complete(&self, c: &Conn, e: &Entry) {
        let Some(p) = c.pending.lock().remove(&e.id) else {
            self.reject(e, "completion for an unknown request");
            return;
        };
        let st = Status::from_code(e.status);
        let msg = status_message(st);
        match p {
            Pending::Part { agg, slot } => {
                if let Some(s) = slot {
                    self.free_slot(c, s);
                }
                agg.part(self, st, msg);
            }
            Pending::ReadGrant {
                agg,
                remote,
                local,
                len,
            } => {
                if !st.is_ok() {
                    agg.part(self, st, msg);
                } else if !agg.op.begin_io() {
                    agg.part(
                        self,
                        Status::Cancelled,
                        "operation ended before the data arrived",
                    );
                } else {
                    self.stats.cma.fetch_add(1, Ordering::Relaxed);
                    // SAFETY: local range checked at submission; begin_io keeps it ours.
                    let r = unsafe { cma::read_from(c.peer_pid, local as *mut u8, remote, len) };
                    agg.op.end_io();
                    match r {
                        Ok(()) => agg.part(self, Status::Ok, ""),
                        Err(en) => {
                            let (s, m) = errno_status(en, &self.stats.cma_eperm);
                            agg.part(self, s, &m);
                        }
                    }
                }
            }
            Pending::StRead {
                agg,
                local,
                len,
                slot,
            } => {
                if st.is_ok() && agg.op.begin_io() {
                    // SAFETY: our slot, filled by the target; local range checked.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            c.my_slots.add(slot as usize * SLOT_SIZE),
                            local as *mut u8,
                            len,
                        )
                    };
                    agg.op.end_io();
                }
                self.free_slot(c, slot);
                agg.part(self, st, msg);
            }
        }
    }

    /// Delivers a matched message into a posted receive.
    fn complete_recv(&self, c: &Conn, r: PostedRecv, m: Early) {
        match m {
            Early::Bytes(v) => copy_into_recv(&r, &v),
            Early::Rts { id, addr, len } => {
                if len > r.cap as u64 {
                    self.reply(c, id, Status::Truncated, 0);
                    truncate(&r, len);
                    return;
                } else if r.op.begin_io() {
                    let res = if let Some(src) = c.peer_maps.translate(addr, len) {
                        // SAFETY: inside our mapping of the sender's allocation; the
                        // receive buffer is ours while begin_io holds.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                src as *const u8,
                                r.ptr as *mut u8,
                                len as usize,
                            )
                        };
                        Ok(())
                    } else {
                        self.stats.cma.fetch_add(1, Ordering::Relaxed);
                        unsafe { cma::read_from(c.peer_pid, r.ptr as *mut u8, addr, len as usize) }
                    };
                    r.op.end_io();
                    match res {
                        Ok(()) => {
                            // reply first: the receiver may exit as soon as it sees its data
                            self.reply(c, id, Status::Ok, 0);
                            r.op.set_nbytes(len);
                            r.op.part_done(Status::Ok, None);
                            return;
                        }
                        Err(en) => {
                            let (s, msg) = errno_status(en, &self.stats.cma_eperm);
                            self.reply(c, id, s, 0);
                            r.op.finish(s, Some(msg));
                            return;
                        }
                    }
                }
                // the receive was cancelled after it was matched: the message waits for
                // the next one instead of being lost
                if let Some((r, m)) = self.msgs.requeue(Early::Rts { id, addr, len }) {
                    self.complete_recv(c, r, m);
                }
            }
            Early::Staged(msg) => {
                let mut asm = self.assemblies.lock();
                let Some(a) = asm.get_mut(&msg) else {
                    r.op.finish(Status::Internal, Some("staged message lost".into()));
                    return;
                };
                let done = a.got == a.total;
                match std::mem::replace(&mut a.sink, Sink::Discard) {
                    Sink::Buffer(v, None) => {
                        if a.total > r.cap as u64 {
                            truncate(&r, a.total);
                        } else if done {
                            copy_into_recv(&r, &v);
                        } else {
                            a.sink = Sink::Buffer(v, Some(r));
                        }
                    }
                    other => {
                        a.sink = other;
                        r.op.finish(
                            Status::Internal,
                            Some("staged message matched twice".into()),
                        );
                    }
                }
                if done {
                    asm.remove(&msg);
                }
            }
        }
    }

    fn staged_chunk(&self, c: &Conn, e: &Entry) {
        self.stats.staged_chunks.fetch_add(1, Ordering::Relaxed);
        let msg = e.b;
        // SAFETY: slot and bounds checked by validate().
        let chunk = unsafe {
            std::slice::from_raw_parts(
                c.peer_slots.add(e.slot as usize * SLOT_SIZE),
                e.len as usize,
            )
        };
        let mut asm = self.assemblies.lock();
        if e.c == 0 && !asm.contains_key(&msg) {
            // First chunk: match it now (FIFO by first chunk), holding the assembly
            // lock so a receive that matches it concurrently finds the assembly.
            let sink = match self.msgs.arrive(Early::Staged(msg)) {
                Some((r, _)) => {
                    if e.n > r.cap as u64 {
                        truncate(&r, e.n);
                        Sink::Discard
                    } else {
                        Sink::Direct(r)
                    }
                }
                None => {
                    let mut v = Vec::new();
                    if v.try_reserve_exact(e.n as usize).is_err() {
                        eprintln!(
                            "dlslime shm: cannot buffer a {}-byte early message; dropped",
                            e.n
                        );
                        Sink::Discard
                    } else {
                        v.resize(e.n as usize, 0);
                        Sink::Buffer(v, None)
                    }
                }
            };
            asm.insert(
                msg,
                Assembly {
                    total: e.n,
                    got: 0,
                    sink,
                },
            );
        }
        let Some(a) = asm.get_mut(&msg) else {
            drop(asm);
            self.reject(e, "chunk of an unknown message");
            return;
        };
        if e.n != a.total {
            return;
        }
        match &mut a.sink {
            Sink::Direct(r) => {
                if r.op.begin_io() {
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            chunk.as_ptr(),
                            (r.ptr + e.c as usize) as *mut u8,
                            chunk.len(),
                        )
                    };
                    r.op.end_io();
                }
            }
            Sink::Buffer(v, _) => {
                v[e.c as usize..e.c as usize + chunk.len()].copy_from_slice(chunk)
            }
            Sink::Discard => {}
        }
        a.got += e.len as u64;
        if a.got >= a.total {
            let total = a.total;
            let matched = !matches!(a.sink, Sink::Buffer(_, None));
            if matched {
                let a = asm.remove(&msg).unwrap();
                match a.sink {
                    Sink::Direct(r) => {
                        r.op.set_nbytes(total);
                        r.op.part_done(Status::Ok, None);
                    }
                    Sink::Buffer(v, Some(r)) => copy_into_recv(&r, &v),
                    _ => {}
                }
            }
        }
    }

    fn on_disconnect(&self) {
        if self.dead.swap(true, Ordering::AcqRel) {
            return;
        }
        let msg = "shared-memory peer disconnected";
        if let Some(c) = self.conn.get() {
            let pend: Vec<Pending> = c.pending.lock().drain().map(|(_, p)| p).collect();
            for p in pend {
                let agg = match p {
                    Pending::Part { agg, .. }
                    | Pending::ReadGrant { agg, .. }
                    | Pending::StRead { agg, .. } => agg,
                };
                agg.op.abort(Status::PeerDisconnected, msg);
            }
            c.in_bell.wake_all();
        }
        self.inflight.fail_all(Status::PeerDisconnected, msg);
        self.imm.fail_waiters(Status::PeerDisconnected, msg);
        self.msgs.fail_posted(Status::PeerDisconnected, msg);
        for (_, a) in self.assemblies.lock().drain() {
            match a.sink {
                Sink::Direct(r) | Sink::Buffer(_, Some(r)) => {
                    r.op.abort(Status::PeerDisconnected, msg);
                }
                _ => {}
            }
        }
    }

    /// Publishes our live regions for the peer's fast-path checks, if they changed.
    fn publish_regions(&self, c: &Conn) {
        let regions = self.pool.regions();
        let mut fp: u64 = 0xcbf2_9ce4_8422_2325 ^ regions.len() as u64;
        for r in &regions {
            for v in [r.addr as u64, r.len as u64, r.key as u64] {
                fp = (fp ^ v).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        if c.table_fp.swap(fp, Ordering::AcqRel) != fp {
            let list: Vec<(u64, u64, u32)> = regions
                .iter()
                .map(|r| (r.addr as u64, r.len as u64, r.key))
                .collect();
            // SAFETY: our own table; only this side writes it (publish is serialised by
            // the fingerprint swap being done by the progress thread or connect only).
            unsafe { (*c.my_table).publish(&list) };
        }
    }

    fn run(self: Arc<Inner>) {
        let c = self.conn.get().expect("connected");
        let mut last_work = Instant::now();
        let mut last_check = Instant::now();
        loop {
            if self.closed.load(Ordering::Acquire) {
                break;
            }
            let worked = self.poll(c);
            let now = Instant::now();
            if now.duration_since(last_check) >= Duration::from_millis(1) {
                last_check = now;
                if handshake::peer_gone(c.sock.as_raw_fd()) {
                    if !self.closed.load(Ordering::Acquire) {
                        self.on_disconnect();
                    }
                    break;
                }
                self.publish_regions(c);
            }
            if worked {
                last_work = now;
                continue;
            }
            let inline = self.cfg.engine.progress == ProgressMode::Inline;
            if !inline && now.duration_since(last_work) < self.cfg.engine.spin {
                std::hint::spin_loop();
                continue;
            }
            let now_us = now.duration_since(self.epoch).as_micros() as u64;
            let inline_recent = inline
                && now_us.saturating_sub(self.last_inline_us.load(Ordering::Relaxed)) < 20_000;
            if inline_recent {
                // An inline waiter is driving; stay off the doorbell so the peer wakes it,
                // not us, and come back now and then for liveness and orphaned entries.
                // 10 ms: rarely enough not to preempt spinning waiters on 2 cores.
                std::thread::sleep(Duration::from_millis(10));
            } else {
                c.in_bell.sleep(Duration::from_millis(20), || {
                    c.cons.try_lock().is_none_or(|g| g.has_work())
                });
            }
        }
    }

    fn do_connect(self: &Arc<Inner>, peer: &Value) -> Result<()> {
        let obj = info::check_envelope(peer, "shm")?;
        let host = info::str_field(obj, "host")?;
        if host != self.host_id {
            return Err(err(
                Status::Unsupported,
                format!("shared-memory peer is on another host (peer host {host:?}, this host {:?}); use the TCP transport", self.host_id),
            ));
        }
        let peer_sock = info::str_field(obj, "socket")?.to_string();
        if peer_sock == self.sock_name {
            return Err(err(
                Status::InvalidArgument,
                "connect: endpoint info names this endpoint itself",
            ));
        }
        let _g = self.connecting.lock();
        if self.conn.get().is_some() {
            return Err(err(
                Status::AlreadyConnected,
                "endpoint is already connected",
            ));
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(err(Status::ShutDown, "endpoint is shut down"));
        }
        info::register_peer_regions(&self.remote, obj)?;
        let deadline = Deadline::after(self.cfg.engine.default_timeout);
        let client = self.sock_name < peer_sock;
        let allocs = alloc::live_allocations();
        let allocs = &allocs[..allocs.len().min(handshake::MAX_FDS - 1)];
        let alloc_list: Vec<Value> = allocs
            .iter()
            .map(|a| json!({"base": a.base as u64, "len": a.len as u64}))
            .collect();
        let hello = json!({
            "socket": self.sock_name, "peer_socket": peer_sock, "pid": std::process::id(), "host": self.host_id,
            "probe": &cma::PROBE_WORD as *const u64 as u64, "allocs": alloc_list,
        });
        let mut fds: Vec<i32> = Vec::new();
        let (sock, seg_fd, seg, peer_hello, peer_fds);
        if client {
            sock = handshake::connect(&peer_sock)?;
            let (fd, base, _) = alloc::memfd_map("dlslime-shm-ctl", ring::SEGMENT_SIZE)?;
            // SAFETY: fresh mapping of SEGMENT_SIZE bytes.
            unsafe { Segment::init(base) };
            fds.push(fd.as_raw_fd());
            fds.extend(allocs.iter().map(|a| a.fd.as_raw_fd()));
            handshake::send_frame(sock.as_raw_fd(), &hello, &fds)?;
            let (h, f) = handshake::recv_frame(sock.as_raw_fd(), deadline)?;
            seg_fd = fd;
            seg = base;
            peer_hello = h;
            peer_fds = f;
        } else {
            let lfd = self
                .listener
                .lock()
                .as_ref()
                .map(|l| l.as_raw_fd())
                .ok_or_else(|| err(Status::ShutDown, "listener closed"))?;
            loop {
                let s = handshake::accept(lfd, deadline)?;
                let Ok((h, mut f)) = handshake::recv_frame(s.as_raw_fd(), deadline) else {
                    continue;
                };
                // Only the peer named in the info we were given may connect.
                if h.get("socket").and_then(Value::as_str) != Some(peer_sock.as_str())
                    || h.get("peer_socket").and_then(Value::as_str) != Some(self.sock_name.as_str())
                    || f.is_empty()
                {
                    eprintln!("dlslime shm: refused a handshake from an unexpected peer");
                    continue;
                }
                let fd = f.remove(0);
                if alloc::fd_size(fd.as_raw_fd())? < ring::SEGMENT_SIZE {
                    return Err(err(Status::Protocol, "peer's control segment is too small"));
                }
                let base = alloc::map_fd(fd.as_raw_fd(), ring::SEGMENT_SIZE)?;
                // SAFETY: mapped SEGMENT_SIZE bytes.
                if !unsafe { Segment::check(base) } {
                    unsafe { libc::munmap(base as *mut libc::c_void, ring::SEGMENT_SIZE) };
                    return Err(err(
                        Status::VersionMismatch,
                        "peer's control segment has another layout",
                    ));
                }
                fds.extend(allocs.iter().map(|a| a.fd.as_raw_fd()));
                handshake::send_frame(s.as_raw_fd(), &hello, &fds)?;
                sock = s;
                seg_fd = fd;
                seg = base;
                peer_hello = h;
                peer_fds = f;
                break;
            }
        }
        if peer_hello.get("host").and_then(Value::as_str) != Some(self.host_id.as_str()) {
            unsafe { libc::munmap(seg as *mut libc::c_void, ring::SEGMENT_SIZE) };
            return Err(err(
                Status::Unsupported,
                "shared-memory peer reports another host identity",
            ));
        }
        let peer_pid = peer_hello.get("pid").and_then(Value::as_u64).unwrap_or(0) as i32;
        let probe_addr = peer_hello.get("probe").and_then(Value::as_u64).unwrap_or(0);
        // Map the peer's shared allocations (fd order matches the list order).
        let mut maps = PeerMappings::default();
        let list = peer_hello
            .get("allocs")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (a, fd) in list.iter().zip(peer_fds) {
            let base = a.get("base").and_then(Value::as_u64).unwrap_or(0);
            let len = a.get("len").and_then(Value::as_u64).unwrap_or(0);
            if let Err(e) = maps.add(base, len, fd) {
                eprintln!("dlslime shm: could not map a peer allocation: {e}");
            }
        }
        // Can we attach to the peer? Tell it; learn whether it can attach to us.
        let my_cma = match cma::probe(peer_pid, probe_addr) {
            Ok(()) => true,
            Err(e) => {
                eprintln!(
                    "dlslime shm: cross-memory attach to pid {peer_pid} refused ({}); non-shared memory will use the staged path",
                    std::io::Error::from_raw_os_error(e)
                );
                false
            }
        };
        let r = handshake::send_frame(sock.as_raw_fd(), &json!({"cma": my_cma}), &[])
            .and_then(|_| handshake::recv_frame(sock.as_raw_fd(), deadline));
        let peer_cma = match r {
            Ok((v, _)) => v.get("cma").and_then(Value::as_bool).unwrap_or(false),
            Err(e) => {
                unsafe { libc::munmap(seg as *mut libc::c_void, ring::SEGMENT_SIZE) };
                return Err(e);
            }
        };
        let staged = self.cfg.force_staged || !my_cma || !peer_cma;
        if staged && !self.cfg.force_staged {
            self.stats.staged_fallbacks.fetch_add(1, Ordering::Relaxed);
            eprintln!("dlslime shm: cross-memory attach unavailable between pid {} and {peer_pid}; using the staged (bounce buffer) path", std::process::id());
        }
        let side = if client { 0 } else { 1 };
        let segp = seg as *mut Segment;
        // SAFETY: the segment is mapped for the Conn's life.
        let (prod, cons) = unsafe { (Producer::new(segp, side), Consumer::new(segp, 1 - side)) };
        let conn = Conn {
            _seg_fd: seg_fd,
            seg,
            sock,
            peer_pid,
            out_bell: prod.doorbell(),
            in_bell: cons.doorbell(),
            my_table: prod.table(),
            peer_table: cons.table(),
            my_slots: prod.slot_ptr(0),
            peer_slots: cons.slot_ptr(0),
            prod: Mutex::new((prod, VecDeque::new())),
            cons: Mutex::new(cons),
            peer_maps: maps,
            staged,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            slots: AtomicU32::new(0),
            table_fp: AtomicU64::new(0),
            backlogged: AtomicBool::new(false),
        };
        let _ = self.conn.set(conn);
        let c = self.conn.get().unwrap();
        self.publish_regions(c);
        // One peer per endpoint: the name is no longer needed.
        self.listener.lock().take();
        let me = self.clone();
        let h = std::thread::Builder::new()
            .name("dlslime-shm".into())
            .spawn(move || me.run())
            .map_err(|e| Error::io("spawn shm progress thread", e))?;
        *self.thread.lock() = Some(h);
        Ok(())
    }

    fn shutdown(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inflight
            .fail_all(Status::Cancelled, "endpoint shut down");
        self.imm
            .fail_waiters(Status::Cancelled, "endpoint shut down");
        self.msgs
            .fail_posted(Status::Cancelled, "endpoint shut down");
        if let Some(c) = self.conn.get() {
            let pend: Vec<Pending> = c.pending.lock().drain().map(|(_, p)| p).collect();
            for p in pend {
                let (Pending::Part { agg, .. }
                | Pending::ReadGrant { agg, .. }
                | Pending::StRead { agg, .. }) = p;
                agg.op.abort(Status::Cancelled, "endpoint shut down");
            }
            // SAFETY: shutting down our own socket; the peer sees the hang-up.
            unsafe { libc::shutdown(c.sock.as_raw_fd(), libc::SHUT_RDWR) };
            c.in_bell.wake_all();
        }
        self.listener.lock().take();
        let h = self.thread.lock().take();
        if let Some(h) = h {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

fn copy_into_recv(r: &PostedRecv, v: &[u8]) {
    if v.len() > r.cap {
        truncate(r, v.len() as u64);
        return;
    }
    if r.op.begin_io() {
        // SAFETY: the receive buffer is the caller's promise; begin_io keeps it ours.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), r.ptr as *mut u8, v.len()) };
        r.op.end_io();
        r.op.set_nbytes(v.len() as u64);
        r.op.part_done(Status::Ok, None);
    }
}

fn truncate(r: &PostedRecv, len: u64) {
    r.op.set_nbytes(len);
    r.op.finish(
        Status::Truncated,
        Some(format!(
            "message of {len} bytes does not fit the {}-byte receive buffer",
            r.cap
        )),
    );
}

impl Endpoint for ShmEndpoint {
    fn transport(&self) -> &'static str {
        "shm"
    }

    fn endpoint_info(&self) -> Value {
        let i = &self.inner;
        let mut m = Map::new();
        m.insert("socket".into(), i.sock_name.clone().into());
        m.insert("host".into(), i.host_id.clone().into());
        m.insert("pid".into(), std::process::id().into());
        info::envelope("shm", i.pool.mr_info(), m)
    }

    fn connect(&self, peer_info: &Value) -> Result<()> {
        self.inner.do_connect(peer_info)
    }

    fn memory_pool(&self) -> &Arc<MemoryPool> {
        &self.inner.pool
    }

    fn remote_pool(&self) -> &RemotePool {
        &self.inner.remote
    }

    fn read(&self, assignments: &[Assignment], timeout: Option<Duration>) -> Result<Future> {
        self.rw(assignments, false, None, timeout)
    }

    fn write(&self, assignments: &[Assignment], timeout: Option<Duration>) -> Result<Future> {
        self.rw(assignments, true, None, timeout)
    }

    fn write_with_imm(
        &self,
        assignments: &[Assignment],
        imm: i32,
        timeout: Option<Duration>,
    ) -> Result<Future> {
        self.rw(assignments, true, Some(imm), timeout)
    }

    fn imm_recv(&self, timeout: Option<Duration>) -> Result<Future> {
        self.inner.conn()?;
        let op = self.new_op(1, timeout);
        self.inner.imm.post(op.clone());
        Ok(Future::new(op))
    }

    unsafe fn send(&self, ptr: *const u8, len: usize, timeout: Option<Duration>) -> Result<Future> {
        let i = &self.inner;
        let c = i.conn()?;
        if ptr.is_null() && len > 0 {
            return Err(err(Status::NullParameter, "send: null buffer"));
        }
        if len <= INLINE_CAP {
            // Complete once it is in the ring: nothing to track, cancel or time out.
            let deadline = Deadline::after(timeout.unwrap_or(i.cfg.engine.default_timeout));
            let mut e = Entry::new(kind::MSG);
            e.len = len as u32;
            if len > 0 {
                e.data[..len].copy_from_slice(std::slice::from_raw_parts(ptr, len));
            }
            i.push(c, &e, PushMode::Wait(deadline))?;
            let op = OpState::completed(Status::Ok);
            op.set_nbytes(len as u64);
            return Ok(Future::new(op));
        }
        let op = self.new_op(1, timeout);
        let deadline = op.deadline();
        let agg = Arc::new(Agg {
            op: op.clone(),
            remaining: AtomicU32::new(1),
            err: Mutex::new(None),
            imm: None,
        });
        let mut failure: Option<Error> = None;
        if !c.staged {
            let id = c.next_id.fetch_add(1, Ordering::Relaxed);
            agg.remaining.fetch_add(1, Ordering::AcqRel);
            c.pending.lock().insert(
                id,
                Pending::Part {
                    agg: agg.clone(),
                    slot: None,
                },
            );
            let mut e = Entry::new(kind::RTS);
            e.id = id;
            e.a = ptr as u64;
            e.n = len as u64;
            if let Err(er) = i.push(c, &e, PushMode::Wait(deadline)) {
                if c.pending.lock().remove(&id).is_some() {
                    agg.part(i, er.status(), er.message());
                }
                failure = Some(er);
            }
        } else {
            let msg = c.next_id.fetch_add(1, Ordering::Relaxed);
            let mut off = 0usize;
            while off < len {
                let clen = (len - off).min(SLOT_SIZE);
                let slot = match i.acquire_slot(c, deadline) {
                    Ok(s) => s,
                    Err(er) => {
                        failure = Some(er);
                        break;
                    }
                };
                std::ptr::copy_nonoverlapping(
                    ptr.add(off),
                    c.my_slots.add(slot as usize * SLOT_SIZE),
                    clen,
                );
                let id = c.next_id.fetch_add(1, Ordering::Relaxed);
                agg.remaining.fetch_add(1, Ordering::AcqRel);
                c.pending.lock().insert(
                    id,
                    Pending::Part {
                        agg: agg.clone(),
                        slot: Some(slot),
                    },
                );
                let mut e = Entry::new(kind::ST_MSG);
                e.id = id;
                e.b = msg;
                e.n = len as u64;
                e.c = off as u64;
                e.len = clen as u32;
                e.slot = slot;
                if let Err(er) = i.push_staged(c, &e, &agg, deadline) {
                    failure = Some(er);
                    break;
                }
                off += clen;
            }
        }
        op.set_nbytes(len as u64);
        match failure {
            Some(e) => agg.part(i, e.status(), e.message()),
            None => agg.part(i, Status::Ok, ""),
        }
        Ok(Future::new(op))
    }

    unsafe fn recv(&self, ptr: *mut u8, len: usize, timeout: Option<Duration>) -> Result<Future> {
        let i = &self.inner;
        let c = i.conn()?;
        if ptr.is_null() && len > 0 {
            return Err(err(Status::NullParameter, "recv: null buffer"));
        }
        let op = self.new_op(1, timeout);
        let r = PostedRecv {
            ptr: ptr as usize,
            cap: len,
            op: op.clone(),
        };
        if let Some((r, m)) = i.msgs.post(r) {
            i.complete_recv(c, r, m);
        }
        Ok(Future::new(op))
    }

    fn cancel_all(&self) -> usize {
        self.inner
            .inflight
            .fail_all(Status::Cancelled, "cancelled by cancel_all")
    }

    fn shutdown(&self) {
        self.inner.shutdown();
    }
}

impl Drop for ShmEndpoint {
    fn drop(&mut self) {
        self.inner.shutdown();
    }
}
