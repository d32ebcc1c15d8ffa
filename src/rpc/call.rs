//! The client side of a call: slot acquisition, the per-slot state machine (`Cell`:
//! IDLE → PENDING → DONE, or DETACHED when the future is dropped first), the reply's
//! arrival, and [`CallFuture`].

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use super::bulk::BulkUse;
use super::remote_error::RemoteError;
use super::session::Inner;
use super::wire::{self, BulkDesc, Header, HEADER_LEN};
use crate::engine::Deadline;
use crate::error::{Error, Result, Status};
use crate::future::{Future, Notify};

/// No call in the slot: it is in the free list (or being taken from it).
const IDLE: u32 = 0;
/// A call waits for its reply.
const PENDING: u32 = 1;
/// The reply (or the call's failure) is in `Cell::out`.
const DONE: u32 = 2;
/// The future was dropped before the reply: the reply (or the session's end) frees the
/// slot.
const DETACHED: u32 = 3;

/// What a reply left for the call's future.
#[derive(Default)]
struct CellOut {
    error: Option<Error>,
    tag: u32,
    len: usize,
    bulk: Option<BulkDesc>,
}

impl CellOut {
    fn failed(e: Error) -> CellOut {
        CellOut {
            error: Some(e),
            ..Default::default()
        }
    }
}

/// Client-side state of one slot.
pub(super) struct Cell {
    state: AtomicU32,
    req_id: AtomicU64,
    out: Mutex<CellOut>,
    /// The request's write, to notice a request that could not be delivered.
    write: Mutex<Option<Future>>,
}

impl Cell {
    pub fn new() -> Cell {
        Cell {
            state: AtomicU32::new(IDLE),
            req_id: AtomicU64::new(0),
            out: Mutex::new(CellOut::default()),
            write: Mutex::new(None),
        }
    }
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
    /// Why the call failed (`Failed`); kept here, as the slot may still get a reply.
    error: Option<Error>,
}

// SAFETY: `data` points into the session's memory (the slot's mailbox or bulk buffer),
// which this future owns until it is dropped, whatever thread it moves to.
unsafe impl Send for CallFuture {}

impl CallFuture {
    /// Takes a free slot (waiting at most `default_timeout`) and sends the request.
    pub(super) fn start(
        i: &Arc<Inner>,
        tag: u32,
        max_len: usize,
        writer: impl FnOnce(&mut [u8]) -> Result<usize>,
    ) -> Result<CallFuture> {
        let slot = i.acquire_slot(Deadline::after(i.cfg.default_timeout))?;
        let cell = &i.cells[slot];
        let id = i.next_id.fetch_add(1, Ordering::Relaxed);
        cell.req_id.store(id, Ordering::Release);
        *cell.out.lock() = CellOut::default();
        cell.state.store(PENDING, Ordering::Release);
        match i.post(wire::IMM_REQUEST, slot, tag, id, max_len, writer) {
            Ok(w) => {
                // A failed delivery must wake the caller waiting for the reply.
                let watcher: Weak<Inner> = Arc::downgrade(i);
                w.state().watch_failure(watcher as Weak<dyn Notify>);
                *cell.write.lock() = Some(w);
                i.stats.requests_sent.fetch_add(1, Ordering::Relaxed);
                Ok(CallFuture {
                    sess: i.clone(),
                    slot,
                    state: FutState::Waiting,
                    data: std::ptr::null(),
                    len: 0,
                    tag: 0,
                    error: None,
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
                self.fail(Error::new(
                    e.status(),
                    format!("RPC request could not be delivered: {}", e.message()),
                ));
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
            self.fail(e);
            return Err(self.final_error());
        }
        self.tag = out.tag;
        match out.bulk {
            None => {
                // SAFETY: slot < slot_count; the reply is `out.len` bytes after the
                // header in our reply mailbox slot (checked against slot_size on arrival).
                self.data = unsafe { i.mem.mbox_ptr(wire::IMM_REPLY, self.slot).add(HEADER_LEN) };
                self.len = out.len;
            }
            Some(d) => match i.bulk_read(BulkUse::ReplyIn, self.slot, d) {
                Ok(p) => {
                    self.data = p;
                    self.len = d.len as usize;
                }
                Err(e) => {
                    self.fail(e);
                    return Err(self.final_error());
                }
            },
        }
        i.stats.replies_received.fetch_add(1, Ordering::Relaxed);
        self.state = FutState::Ready;
        Ok(())
    }

    /// Fails the call for good with `e` (kept for later `wait`s).
    fn fail(&mut self, e: Error) {
        self.error = Some(e);
        self.state = FutState::Failed;
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
        let cell = &self.sess.cells[self.slot];
        if self.state != FutState::Waiting || cell.state.load(Ordering::Acquire) == DONE {
            return true;
        }
        self.sess.take_arrived();
        cell.state.load(Ordering::Acquire) == DONE
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

    /// A reply arrived in our reply mailbox slot `slot` (header `h`, already read):
    /// checks it, hands it to the call's future, or frees the slot of a detached call. A
    /// reply naming another request than the call in the slot is dropped (stale: never
    /// delivered to the wrong call); the call waits on for its own.
    pub(super) fn on_reply(&self, slot: usize, h: Header) {
        let cell = &self.cells[slot];
        let state = cell.state.load(Ordering::Acquire);
        if state != PENDING && state != DETACHED {
            self.protocol_error(format!(
                "reply for slot {slot} with no call in flight (state {state}); dropped"
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
            out.len = h.total_len as usize - HEADER_LEN;
            if h.tag & wire::BULK_BIT != 0 {
                // SAFETY: slot < slot_count and total_len <= slot_size (checked above):
                // the descriptor lies in our reply mailbox slot.
                let b = unsafe {
                    std::slice::from_raw_parts(
                        self.mem.mbox_ptr(wire::IMM_REPLY, slot).add(HEADER_LEN),
                        out.len,
                    )
                };
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
        self.complete(slot, out);
    }

    /// Hands `out` to the call in flight in `slot` (PENDING → DONE), or frees the slot
    /// of a detached call. `out` is written under its lock together with the state
    /// change, so of a reply and the session's end only the first is seen by the call.
    fn complete(&self, slot: usize, out: CellOut) {
        let cell = &self.cells[slot];
        let mut o = cell.out.lock();
        match cell
            .state
            .compare_exchange(PENDING, DONE, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                *o = out;
                drop(o);
                self.events.notify();
            }
            Err(DETACHED) => {
                drop(o);
                self.free_detached(slot);
            }
            Err(s) => {
                drop(o);
                self.protocol_error(format!(
                    "reply for slot {slot} with no call in flight (state {s}); dropped"
                ))
            }
        }
    }

    /// Frees the slot of a detached call (once: its reply and the session's end may race).
    fn free_detached(&self, slot: usize) {
        let cell = &self.cells[slot];
        if cell
            .state
            .compare_exchange(DETACHED, IDLE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            cell.write.lock().take();
            self.release_slot(slot);
        }
    }

    /// Fails every call in flight with `e` (the session ended); frees detached slots.
    pub(super) fn fail_pending(&self, e: &Error) {
        for (s, cell) in self.cells.iter().enumerate() {
            let mut o = cell.out.lock();
            match cell
                .state
                .compare_exchange(PENDING, DONE, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => *o = CellOut::failed(e.clone()),
                Err(DETACHED) => {
                    drop(o);
                    self.free_detached(s);
                }
                Err(_) => {}
            }
        }
        self.notify_all();
    }
}
