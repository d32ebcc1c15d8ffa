//! The client side of a call: slot acquisition, the slot's state machine (`Slot`: idle,
//! a call in flight, a call whose future was dropped, a bulk reply held for its future),
//! the reply's arrival, and [`CallFuture`].
//!
//! A slot is freed when its reply is read, not when the future is dropped: a reply that
//! fits the slot is copied into the call's own `Outcome` as it arrives (its buffer is
//! recycled, so no allocation once warm) and the slot goes back to the free list at
//! once; a bulk reply (read from the peer's buffer for the slot) holds the slot until the
//! future reads it in `wait` or is dropped. So futures may be held in any number: a call
//! beyond the window waits for a slot (with its own deadline) while earlier replies
//! arrive.
//!
//! **Reply buffers.** Where the peer maps our memory (shared memory), a call whose
//! request is large ([`PLACE_MIN`] bytes or more) announces a buffer of its own for the
//! reply (`PLACE_BIT`, see [`wire`]): the server writes the reply there and the future
//! reads it where it lies, so an echo is two copies of the payload (ours into the
//! request, the handler's into the reply buffer). The buffer belongs to the call's
//! `Outcome`, not to the slot, so the slot is freed when the reply arrives and the
//! future holds its reply as long as it lives; the outcome (and its buffer) is recycled
//! only once no reply can still be written into it (a dropped call's slot keeps it until
//! the late reply arrives or the session ends).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use super::bulk::{BulkBuf, BulkUse};
use super::client_obs::CallObs;
use super::remote_error::RemoteError;
use super::session::Inner;
use super::wire::{self, BulkDesc, Header, HEADER_LEN, PLACED_LEN};
use crate::engine::Deadline;
use crate::error::{Error, Result, Status};
use crate::future::{Future, Notify};

/// What a reply left for the call's future.
#[derive(Default)]
struct CellOut {
    error: Option<Error>,
    tag: u32,
    /// A bulk reply to read from the peer (the slot is held for it meanwhile).
    bulk: Option<BulkDesc>,
    /// A reply of this many bytes written by the peer into the call's reply buffer.
    placed: Option<usize>,
}

impl CellOut {
    fn failed(e: Error) -> CellOut {
        CellOut {
            error: Some(e),
            ..Default::default()
        }
    }
}

/// One call's result, shared by its future and, until the reply, its slot. Recycled
/// through the session's spares with its buffer.
#[derive(Default)]
pub(super) struct Outcome {
    done: AtomicBool,
    out: Mutex<CellOut>,
    /// The reply payload (copied out of the slot on arrival).
    data: Mutex<Vec<u8>>,
    /// The request's write, to notice a request that could not be delivered.
    write: Mutex<Option<Future>>,
    /// The reply buffer this call announced (kept across recycling, for the next calls).
    rbuf: Mutex<Option<BulkBuf>>,
}

/// Requests of at least this many payload bytes announce a reply buffer (where the peer
/// maps our memory): below it, copying the reply out of the mailbox costs less than the
/// server's check of the announced range.
pub const PLACE_MIN: usize = 16 << 10;

impl Outcome {
    fn reset(&self) {
        self.done.store(false, Ordering::Relaxed);
        *self.out.lock() = CellOut::default();
        self.data.lock().clear();
        self.write.lock().take();
    }

    fn set(&self, out: CellOut) {
        *self.out.lock() = out;
        self.done.store(true, Ordering::Release);
    }
}

/// Who a slot belongs to.
enum Slot {
    /// In the free list (or being taken from it).
    Idle,
    /// A call waits for its reply.
    Pending(Arc<Outcome>),
    /// The call's future was dropped before the reply: the reply (or the session's end)
    /// frees the slot. The slot keeps the outcome, whose reply buffer the late reply may
    /// still be written into.
    Detached(Arc<Outcome>),
    /// A bulk reply arrived: the slot (and the peer's bulk buffer for it) stays the
    /// call's until its future reads the reply or is dropped.
    Held(Arc<Outcome>),
}

/// Client-side state of one slot.
pub(super) struct Cell {
    slot: Mutex<Slot>,
    req_id: AtomicU64,
    /// Bytes of the reply buffer the call in the slot announced (0: none).
    announced: AtomicU64,
}

impl Cell {
    pub fn new() -> Cell {
        Cell {
            slot: Mutex::new(Slot::Idle),
            req_id: AtomicU64::new(0),
            announced: AtomicU64::new(0),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FutState {
    Waiting,
    Ready,
    Failed,
}

/// The future of one call. `wait` may be repeated after a timeout. Its reply is its
/// own (the slot is already free for other calls); dropping it before the reply
/// detaches the call (the late reply frees the slot).
pub struct CallFuture {
    sess: Arc<Inner>,
    slot: usize,
    outcome: Arc<Outcome>,
    state: FutState,
    data: Vec<u8>,
    tag: u32,
    /// Why the call failed (`Failed`); kept here, as the slot may still get a reply.
    error: Option<Error>,
    /// A reply placed in the outcome's reply buffer: its address and length (the buffer
    /// is the outcome's, which this future holds).
    placed: Option<(usize, usize)>,
    /// Its per-method counters, until the call ends (`None` when recording is off).
    obs: Option<CallObs>,
}

impl CallFuture {
    /// Takes a free slot (waiting until `deadline`) and sends the request.
    pub(super) fn start(
        i: &Arc<Inner>,
        tag: u32,
        max_len: usize,
        deadline: Deadline,
        writer: impl FnOnce(&mut [u8]) -> Result<usize>,
    ) -> Result<CallFuture> {
        let obs = i.client_obs.start(tag);
        let slot = match i.acquire_slot(deadline) {
            Ok(s) => s,
            Err(e) => {
                if let Some(o) = obs {
                    if e.status() == Status::Timeout {
                        o.timed_out();
                    }
                    o.end(false);
                }
                return Err(e);
            }
        };
        let cell = &i.cells[slot];
        let id = i.next_id.fetch_add(1, Ordering::Relaxed);
        let outcome = i.spare_outcome();
        let reply_to = i.announce(&outcome, max_len);
        cell.req_id.store(id, Ordering::Release);
        cell.announced
            .store(reply_to.map_or(0, |d| d.len), Ordering::Release);
        *cell.slot.lock() = Slot::Pending(outcome.clone());
        match i.post(wire::IMM_REQUEST, slot, tag, id, max_len, reply_to, writer) {
            Ok(w) => {
                // A failed delivery must wake the caller waiting for the reply.
                let watcher: Weak<Inner> = Arc::downgrade(i);
                w.state().watch_failure(watcher as Weak<dyn Notify>);
                *outcome.write.lock() = Some(w);
                i.stats.requests_sent.fetch_add(1, Ordering::Relaxed);
                Ok(CallFuture {
                    sess: i.clone(),
                    slot,
                    outcome,
                    state: FutState::Waiting,
                    data: Vec::new(),
                    tag: 0,
                    error: None,
                    placed: None,
                    obs,
                })
            }
            Err(e) => {
                // Nothing was sent: the slot is ours again.
                *cell.slot.lock() = Slot::Idle;
                i.release_slot(slot);
                if let Some(o) = obs {
                    o.end(false);
                }
                Err(e)
            }
        }
    }

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
        let o = &self.outcome;
        let deadline = Deadline::after(timeout.unwrap_or(i.cfg.default_timeout));
        let write_failed = || {
            o.write
                .lock()
                .as_ref()
                .and_then(|w| if w.done() { w.error() } else { None })
        };
        let r = i.wait_until(
            || {
                o.done.load(Ordering::Acquire)
                    || o.write.try_lock().is_some_and(|w| {
                        w.as_ref()
                            .is_some_and(|w| w.state().is_done() && w.error().is_some())
                    })
            },
            deadline,
        );
        if !o.done.load(Ordering::Acquire) {
            if let Some(e) = write_failed() {
                // The request never arrived: fail the call (the slot stays reserved until
                // the session ends, in case the peer saw part of it).
                self.fail(Error::new(
                    e.status(),
                    format!("RPC request could not be delivered: {}", e.message()),
                ));
                return Err(self.final_error());
            }
            return match r {
                Err(e) if e.status() == Status::Timeout => {
                    if let Some(o) = &self.obs {
                        o.timed_out();
                    }
                    Err(Error::new(
                        Status::Timeout,
                        "RPC call timed out waiting for the reply",
                    ))
                }
                Err(e) => Err(e),
                Ok(()) => Err(Error::new(
                    Status::Internal,
                    "RPC wait ended without a reply",
                )),
            };
        }
        let out = std::mem::take(&mut *o.out.lock());
        if let Some(e) = out.error {
            self.fail(e);
            return Err(self.final_error());
        }
        self.tag = out.tag;
        std::mem::swap(&mut self.data, &mut *o.data.lock());
        if let Some(n) = out.placed {
            // The reply lies in our reply buffer (on_reply checked n against it).
            let p = o.rbuf.lock().as_ref().map_or(0, |b| b.ptr as usize);
            self.placed = Some((p, n));
        }
        if let Some(d) = out.bulk {
            // Copied once, into the call's own buffer: from where the reply lies in the
            // peer's memory when mapped, else read into our bulk buffer for the slot first.
            let r = match i.bulk_view(d) {
                Some(v) => {
                    // SAFETY: the view is d.len bytes of the peer's reply buffer, mapped
                    // while `v` lives; the peer does not reuse it before our next request
                    // in this slot, which waits for the slot freed just below.
                    self.data.extend_from_slice(unsafe {
                        std::slice::from_raw_parts(v.as_ptr(), v.len())
                    });
                    Ok(())
                }
                None => i.bulk_read(BulkUse::ReplyIn, self.slot, d).map(|p| {
                    // SAFETY: bulk_read filled d.len bytes at p, in our bulk cache for the
                    // slot, which stays ours until the slot is freed just below.
                    self.data
                        .extend_from_slice(unsafe { std::slice::from_raw_parts(p, d.len as usize) })
                }),
            };
            i.release_held(self.slot, &self.outcome);
            if let Err(e) = r {
                self.fail(e);
                return Err(self.final_error());
            }
        }
        i.stats.replies_received.fetch_add(1, Ordering::Relaxed);
        self.state = FutState::Ready;
        if let Some(o) = self.obs.take() {
            o.end(!self.is_exception());
        }
        Ok(())
    }

    /// Fails the call for good with `e` (kept for later `wait`s).
    fn fail(&mut self, e: Error) {
        self.error = Some(e);
        self.state = FutState::Failed;
        if let Some(o) = self.obs.take() {
            o.end(false);
        }
    }

    fn final_error(&self) -> Error {
        self.error
            .clone()
            .unwrap_or_else(|| Error::new(Status::Failed, "RPC call failed"))
    }

    /// True once `wait` returned a reply.
    pub fn is_ready(&self) -> bool {
        self.state == FutState::Ready
    }

    /// Whether the reply arrived (or the call failed), without waiting. With inline
    /// progress it takes in what has arrived (no thread does it otherwise).
    pub fn done(&self) -> bool {
        if self.state != FutState::Waiting || self.outcome.done.load(Ordering::Acquire) {
            return true;
        }
        self.sess.take_arrived();
        self.outcome.done.load(Ordering::Acquire)
    }

    /// The reply payload (empty before a successful `wait`).
    pub fn reply(&self) -> &[u8] {
        if self.state != FutState::Ready {
            return &[];
        }
        if let Some((p, n)) = self.placed {
            // SAFETY: the peer wrote n bytes (checked against the capacity announced,
            // by on_reply) into the outcome's reply buffer at p, which this future's
            // outcome keeps: nothing reuses it before the outcome is recycled, after this
            // future is dropped.
            return unsafe { std::slice::from_raw_parts(p as *const u8, n) };
        }
        &self.data
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
        // dropped before its reply: the call ends without one
        if let Some(o) = self.obs.take() {
            o.end(false);
        }
        let i = &self.sess;
        {
            let mut g = i.cells[self.slot].slot.lock();
            match &*g {
                // Still waiting (or a failed delivery the peer may yet answer): the
                // reply, or the session's end, frees the slot.
                Slot::Pending(o) if Arc::ptr_eq(o, &self.outcome) => {
                    *g = Slot::Detached(self.outcome.clone())
                }
                Slot::Held(o) if Arc::ptr_eq(o, &self.outcome) => {
                    *g = Slot::Idle;
                    drop(g);
                    i.release_slot(self.slot);
                }
                _ => {}
            }
        }
        // The buffer goes back with the outcome, for the next call.
        std::mem::swap(&mut self.data, &mut *self.outcome.data.lock());
        i.recycle_outcome(&mut self.outcome);
    }
}

impl Inner {
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
        self.notify_all();
    }

    /// A recycled outcome (or a new one while the session warms up).
    fn spare_outcome(&self) -> Arc<Outcome> {
        self.spare_outcomes.lock().pop().unwrap_or_default()
    }

    /// Keeps a dropped future's outcome for a later call once nothing else refers to it
    /// (a detached call's slot drops its reference when the reply comes).
    fn recycle_outcome(&self, o: &mut Arc<Outcome>) {
        if Arc::get_mut(o).is_some() {
            let mut spares = self.spare_outcomes.lock();
            if spares.len() < 2 * self.cells.len() {
                o.reset();
                spares.push(o.clone());
            }
        }
    }

    /// The reply buffer a request of `max_len` payload bytes announces (see
    /// [`PLACE_MIN`]), from the call's outcome: `None` when the request is small, the
    /// peer does not map our memory, or no buffer could be made (the reply then takes
    /// the ordinary path). Large enough for a reply of the request's size or a slot's.
    fn announce(&self, o: &Outcome, max_len: usize) -> Option<BulkDesc> {
        if max_len < PLACE_MIN || self.peer_mbox().is_none() {
            return None;
        }
        let want = max_len.max(self.cfg.slot_capacity());
        let mut g = o.rbuf.lock();
        if !g
            .as_ref()
            .is_some_and(|b| b.fits(want, self.cfg.bulk_cache_max))
        {
            *g = None;
            *g = Some(BulkBuf::new(&self.mem.pool, want).ok()?);
        }
        let b = g.as_ref()?;
        Some(b.desc(b.cap()))
    }

    /// The length of a placed reply (slot payload `payload`) for the call in `cell`:
    /// `Protocol` when the call announced no reply buffer or the payload is malformed,
    /// `Truncated` when the reply claims more than the capacity announced.
    fn placed_len(&self, cell: &Cell, payload: &[u8]) -> Result<usize> {
        let cap = cell.announced.load(Ordering::Acquire);
        let Ok(b) = <[u8; PLACED_LEN]>::try_from(payload) else {
            return Err(Error::new(Status::Protocol, "malformed placed RPC reply"));
        };
        let n = u64::from_le_bytes(b);
        if cap == 0 {
            return Err(Error::new(
                Status::Protocol,
                "RPC reply placed in a reply buffer the call did not announce",
            ));
        }
        if n > cap {
            return Err(Error::new(
                Status::Truncated,
                format!(
                    "RPC reply of {n} bytes is larger than the call's reply buffer of {cap} bytes"
                ),
            ));
        }
        self.stats.placed_received.fetch_add(1, Ordering::Relaxed);
        Ok(n as usize)
    }

    /// Frees slot `s` held for `o`'s bulk reply (read, or no longer wanted).
    fn release_held(&self, s: usize, o: &Arc<Outcome>) {
        let mut g = self.cells[s].slot.lock();
        if matches!(&*g, Slot::Held(h) if Arc::ptr_eq(h, o)) {
            *g = Slot::Idle;
            drop(g);
            self.release_slot(s);
        }
    }

    /// A reply arrived in our reply mailbox slot `slot` (header `h`, already read):
    /// checks it, hands it to the call's future, or frees the slot of a detached call. A
    /// reply naming another request than the call in the slot is dropped (stale: never
    /// delivered to the wrong call); the call waits on for its own.
    pub(super) fn on_reply(&self, slot: usize, h: Header) {
        let cell = &self.cells[slot];
        if !matches!(&*cell.slot.lock(), Slot::Pending(_) | Slot::Detached(_)) {
            self.protocol_error(format!(
                "reply for slot {slot} with no call in flight; dropped"
            ));
            return;
        }
        let want = cell.req_id.load(Ordering::Acquire);
        if h.request_id != want {
            self.stats.stale_dropped.fetch_add(1, Ordering::Relaxed);
            crate::warn_log!(
                "RPC: a reply for request {} arrived in slot {slot}, whose call is request {want}; dropped",
                h.request_id
            );
            return;
        }
        let mut out = CellOut::default();
        let mut inline: &[u8] = &[];
        if !self.fits_slot(&h) || h.tag & wire::REPLY_BIT == 0 {
            out.error = Some(Error::new(
                Status::Protocol,
                format!(
                    "malformed RPC reply (tag {:#x}, total_len {})",
                    h.tag, h.total_len
                ),
            ));
        } else {
            out.tag = h.tag;
            // SAFETY: slot < slot_count and total_len <= slot_size (fits_slot, above):
            // the payload lies in our reply mailbox slot, which stays the call's until
            // `complete` has copied it.
            let payload = unsafe {
                std::slice::from_raw_parts(
                    self.mem.mbox_ptr(wire::IMM_REPLY, slot).add(HEADER_LEN),
                    h.total_len as usize - HEADER_LEN,
                )
            };
            if h.tag & wire::PLACE_BIT != 0 {
                match self.placed_len(cell, payload) {
                    Ok(n) => out.placed = Some(n),
                    Err(e) => out.error = Some(e),
                }
            } else if h.tag & wire::BULK_BIT == 0 {
                inline = payload;
            } else {
                match BulkDesc::decode(payload) {
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
        self.complete(slot, out, inline);
    }

    /// Hands `out` (and the reply payload `inline`, copied) to the call in flight in
    /// `slot` and frees the slot, unless a bulk reply waits to be read: then the slot is
    /// held for the future. A detached call's slot is just freed.
    fn complete(&self, slot: usize, out: CellOut, inline: &[u8]) {
        let mut g = self.cells[slot].slot.lock();
        match std::mem::replace(&mut *g, Slot::Idle) {
            Slot::Pending(o) => {
                let hold = out.bulk.is_some() && Arc::strong_count(&o) > 1;
                if hold {
                    *g = Slot::Held(o.clone());
                } else {
                    o.data.lock().extend_from_slice(inline);
                }
                drop(g);
                if !hold {
                    self.release_slot(slot);
                }
                o.set(out);
                self.events.notify();
            }
            Slot::Detached(mut o) => {
                drop(g);
                self.release_slot(slot);
                // The reply has been written: its buffer may serve another call.
                self.recycle_outcome(&mut o);
            }
            other => {
                *g = other;
                drop(g);
                self.protocol_error(format!(
                    "reply for slot {slot} with no call in flight; dropped"
                ))
            }
        }
    }

    /// Fails every call in flight with `e` (the session ended); frees detached slots.
    pub(super) fn fail_pending(&self, e: &Error) {
        for (s, cell) in self.cells.iter().enumerate() {
            let mut g = cell.slot.lock();
            match std::mem::replace(&mut *g, Slot::Idle) {
                Slot::Pending(o) => {
                    drop(g);
                    self.release_slot(s);
                    o.set(CellOut::failed(e.clone()));
                }
                Slot::Detached(_) => {
                    drop(g);
                    self.release_slot(s);
                }
                other => *g = other,
            }
        }
        self.notify_all();
    }
}
