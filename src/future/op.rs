//! One [`OpState`] per operation, shared by the future and the transport. An operation
//! may have several *parts* (chunks striped over connections, one per assignment…); it
//! completes when the last part reports, with the first failure if any. Timeouts, cancel
//! and peer death end it early through [`OpState::abort`], which also waits until no
//! transport thread is still writing into the caller's memory: once a failed `wait`
//! returns, the library will not touch the buffer again.

use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use crate::engine::{futex, wait, Deadline};
use crate::error::{Error, Result, Status};
use crate::obs::{EndpointStats, OpKind, OpTag};

/// Inline progress: a waiter with a driver drives the transport while it waits (see
/// [`wait::Drive`]), so completions need no hand-off between threads.
pub trait Driver: wait::Drive + Send + Sync {}

impl<T: wait::Drive + Send + Sync> Driver for T {}

/// Told when an operation it watches fails (see [`OpState::watch_failure`]).
pub trait Notify: Send + Sync {
    fn notify(&self);
}

const PENDING: u32 = 0;
const FINISHING: u32 = 1;
const DONE: u32 = 2;
const IO_CLOSED: u32 = 1 << 31;

pub struct OpState {
    /// PENDING → FINISHING → DONE; the futex word waiters park on.
    state: AtomicU32,
    status: AtomicI32,
    first_error: AtomicI32,
    parts: AtomicU32,
    /// Transport threads currently writing into the caller's memory, plus IO_CLOSED.
    io: AtomicU32,
    /// Waiters asleep in the futex (see `wait::spin_then_park`).
    parked: AtomicU32,
    imm: AtomicI32,
    nbytes: AtomicU64,
    message: OnceLock<String>,
    deadline: Deadline,
    spin: Duration,
    driver: DriverRef,
    /// Told if the operation fails.
    watcher: OnceLock<Weak<dyn Notify>>,
    /// The counters this operation is recorded in (see [`crate::obs`]).
    obs: OpTag,
}

/// Who drives progress for an operation's waiters.
pub(super) enum DriverRef {
    None,
    Owned(Arc<dyn Driver>),
    /// An endpoint whose pool holds the operation: a strong reference would keep the
    /// endpoint alive through its own pool.
    Endpoint(Weak<dyn Driver>),
}

impl DriverRef {
    fn get(&self) -> Option<Arc<dyn Driver>> {
        match self {
            DriverRef::None => None,
            DriverRef::Owned(d) => Some(d.clone()),
            DriverRef::Endpoint(d) => d.upgrade(),
        }
    }
}

impl OpState {
    pub fn new(
        parts: u32,
        deadline: Deadline,
        spin: Duration,
        driver: Option<Arc<dyn Driver>>,
    ) -> Arc<OpState> {
        let driver = driver.map_or(DriverRef::None, DriverRef::Owned);
        let op = Arc::new(OpState::with(parts, deadline, spin, driver));
        op.obs.start();
        if parts == 0 {
            op.finish(Status::Ok, None);
        }
        op
    }

    pub(super) const fn with(
        parts: u32,
        deadline: Deadline,
        spin: Duration,
        driver: DriverRef,
    ) -> OpState {
        OpState {
            state: AtomicU32::new(PENDING),
            status: AtomicI32::new(Status::Pending as i32),
            first_error: AtomicI32::new(0),
            parts: AtomicU32::new(parts),
            io: AtomicU32::new(0),
            parked: AtomicU32::new(0),
            imm: AtomicI32::new(0),
            nbytes: AtomicU64::new(0),
            message: OnceLock::new(),
            deadline,
            spin,
            driver,
            watcher: OnceLock::new(),
            obs: OpTag::new(),
        }
    }

    /// A state that completed with `Ok` and can never change: what a future whose
    /// outcome was known at submission shows through [`crate::Future::state`].
    pub(super) const fn ok() -> OpState {
        let mut op = OpState::with(0, Deadline::never(), Duration::ZERO, DriverRef::None);
        op.state = AtomicU32::new(DONE);
        op.status = AtomicI32::new(Status::Ok as i32);
        op.io = AtomicU32::new(IO_CLOSED);
        op
    }

    /// Makes a finished operation new again, for reuse by a pool (which holds the only
    /// reference: `&mut`). Keeps spin and driver.
    pub(super) fn reset(&mut self, parts: u32, deadline: Deadline) {
        *self.state.get_mut() = PENDING;
        *self.status.get_mut() = Status::Pending.code();
        *self.first_error.get_mut() = 0;
        *self.parts.get_mut() = parts;
        *self.io.get_mut() = 0;
        *self.parked.get_mut() = 0;
        *self.imm.get_mut() = 0;
        *self.nbytes.get_mut() = 0;
        self.message.take();
        self.watcher.take();
        self.obs.reset();
        self.deadline = deadline;
    }

    /// An operation that is already complete (for example an empty assignment list).
    pub fn completed(status: Status) -> Arc<OpState> {
        let op = OpState::new(1, Deadline::never(), Duration::ZERO, None);
        op.finish(status, None);
        op
    }

    pub fn deadline(&self) -> Deadline {
        self.deadline
    }

    /// Whether waiters drive the transport inline (see [`Driver`]).
    pub fn has_driver(&self) -> bool {
        !matches!(self.driver, DriverRef::None)
    }

    /// Adds parts to an operation that is still being submitted.
    pub fn add_parts(&self, n: u32) {
        self.parts.fetch_add(n, Ordering::AcqRel);
    }

    /// One part finished. The operation completes when the last one does.
    pub fn part_done(&self, status: Status, message: Option<&str>) {
        if !status.is_ok()
            && self
                .first_error
                .compare_exchange(0, status.code(), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            if let Some(m) = message {
                let _ = self.message.set(m.to_string());
            }
        }
        if self.parts.fetch_sub(1, Ordering::AcqRel) == 1 {
            let err = self.first_error.load(Ordering::Acquire);
            let final_status = if err == 0 {
                Status::Ok
            } else {
                Status::from_code(err)
            };
            self.finish(final_status, None);
        }
    }

    /// Completes the operation now with `status`, whatever parts remain. Returns false if
    /// it had already completed (the first outcome wins).
    pub fn finish(&self, status: Status, message: Option<String>) -> bool {
        if self
            .state
            .compare_exchange(PENDING, FINISHING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        if let Some(m) = message {
            let _ = self.message.set(m);
        }
        self.status.store(status.code(), Ordering::Release);
        // counted before any waiter can see the operation done
        self.obs.done(status, || self.nbytes());
        self.state.store(DONE, Ordering::SeqCst);
        self.wake_waiters();
        if !status.is_ok() {
            self.tell_watcher();
        }
        true
    }

    /// The operation start time for the counters: now (when they are on).
    pub(super) fn obs_start(&self) {
        self.obs.start();
    }

    /// Counts this operation in `stats` as one `kind` moving `bytes`, started at
    /// `start_ns` (0: when it was made).
    pub fn observe(&self, stats: &Arc<EndpointStats>, kind: OpKind, bytes: u64, start_ns: u64) {
        if self.obs.tag(stats, kind, bytes, start_ns) {
            let status = Status::from_code(self.status.load(Ordering::Acquire));
            self.obs.record(status, self.nbytes());
        }
    }

    /// Tells `w` if this operation fails (at once if it already has). One watcher per
    /// operation; a second is ignored, and so is one on an operation that already
    /// succeeded (it cannot fail any more; the shared state of ready futures keeps none).
    pub fn watch_failure(&self, w: Weak<dyn Notify>) {
        if self.is_done() && self.status().is_ok() {
            return;
        }
        if self.watcher.set(w).is_ok() && self.is_done() && !self.status().is_ok() {
            self.tell_watcher();
        }
    }

    fn tell_watcher(&self) {
        if let Some(w) = self.watcher.get().and_then(Weak::upgrade) {
            w.notify();
        }
    }

    /// Wakes the threads waiting on this operation, so they look at their conditions
    /// again (the operation completed, or a waiter's extra condition of
    /// [`OpState::wait_while`] may hold now). Only a waiter that is (about to be) asleep
    /// costs a wake syscall: the load pairs (SeqCst) with the waiter's increment of
    /// `parked` before its last check.
    pub fn wake_waiters(&self) {
        if self.parked.load(Ordering::SeqCst) > 0 {
            match self.driver.get() {
                // asleep where the transport's peer wakes it, not on `state`
                Some(d) => d.wake(),
                None => futex::wake_private(&self.state, i32::MAX as u32),
            }
        }
    }

    /// Ends the operation early (timeout, cancel, peer death) and waits until no
    /// transport thread is writing into the caller's memory for it any more.
    pub fn abort(&self, status: Status, message: impl Into<String>) -> bool {
        let won = self.finish(status, Some(message.into()));
        self.io.fetch_or(IO_CLOSED, Ordering::SeqCst);
        while self.io.load(Ordering::SeqCst) & !IO_CLOSED != 0 {
            std::thread::yield_now();
        }
        won
    }

    /// Called by a transport thread before it writes into the caller's memory for this
    /// operation; false means the operation is over and the bytes must be discarded.
    pub fn begin_io(&self) -> bool {
        let prev = self.io.fetch_add(1, Ordering::SeqCst);
        if prev & IO_CLOSED != 0 || self.state.load(Ordering::SeqCst) != PENDING {
            self.io.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    pub fn end_io(&self) {
        self.io.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn set_imm(&self, imm: i32) {
        self.imm.store(imm, Ordering::Release);
    }

    pub fn add_nbytes(&self, n: u64) {
        self.nbytes.fetch_add(n, Ordering::AcqRel);
    }

    pub fn set_nbytes(&self, n: u64) {
        self.nbytes.store(n, Ordering::Release);
    }

    pub fn imm(&self) -> i32 {
        self.imm.load(Ordering::Acquire)
    }

    pub fn nbytes(&self) -> u64 {
        self.nbytes.load(Ordering::Acquire)
    }

    pub fn is_done(&self) -> bool {
        self.state.load(Ordering::Acquire) == DONE
    }

    /// Current status; expires the operation if its deadline has passed.
    pub fn status(&self) -> Status {
        if !self.is_done() {
            if let Some(d) = self.driver.get() {
                d.poll();
            }
            self.expire_if_due();
        }
        if self.is_done() {
            Status::from_code(self.status.load(Ordering::Acquire))
        } else {
            Status::Pending
        }
    }

    fn expire_if_due(&self) {
        if !self.is_done() && self.deadline.expired() {
            self.abort(
                Status::Timeout,
                "operation deadline passed before completion",
            );
        }
    }

    /// The outcome as a `Result`, once done.
    pub fn result(&self) -> Result<()> {
        match self.status() {
            Status::Ok => Ok(()),
            Status::Pending => Err(Error::new(Status::Timeout, "operation still pending")),
            s => Err(Error::new(
                s,
                self.message
                    .get()
                    .cloned()
                    .unwrap_or_else(|| s.as_str().to_string()),
            )),
        }
    }

    /// Waits until done or `until`, whichever is first; past the operation's own
    /// deadline the operation fails with `Timeout`.
    pub fn wait_until(&self, until: Deadline) -> Result<()> {
        self.wait_while(until, &|| false);
        if self.is_done() {
            self.result()
        } else {
            Err(Error::new(
                Status::Timeout,
                "wait timed out; the operation is still pending",
            ))
        }
    }

    /// Waits until done, `until`, or `stop()` holds (checked whenever the waiter wakes;
    /// whoever makes it true calls [`OpState::wake_waiters`]). Past the operation's own
    /// deadline the operation fails with `Timeout`. Returns whether it is done.
    pub fn wait_while(&self, until: Deadline, stop: &dyn Fn() -> bool) -> bool {
        if self.is_done() {
            return true;
        }
        let limit = until.min(self.deadline);
        let ready = || self.is_done() || stop();
        match self.driver.get() {
            Some(d) => {
                wait::drive_until(&*d, &self.parked, self.spin, limit, &ready);
            }
            None => {
                wait::spin_then_park(
                    wait::Parking {
                        word: &self.state,
                        sleepers: &self.parked,
                        park: wait::Park::WhileEquals(PENDING),
                    },
                    self.spin,
                    limit,
                    None,
                    || false,
                    ready,
                );
            }
        }
        self.expire_if_due();
        self.is_done()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::future::Future;
    use std::time::Instant;

    /// A plain operation (no driver) for the future's unit tests.
    pub(in crate::future) fn op(parts: u32, timeout: Duration) -> Arc<OpState> {
        OpState::new(
            parts,
            Deadline::after(timeout),
            Duration::from_micros(20),
            None,
        )
    }

    #[test]
    fn completes_after_last_part_with_first_error() {
        let o = op(3, Duration::from_secs(5));
        o.part_done(Status::Ok, None);
        o.part_done(Status::RemoteAccess, Some("bad key"));
        assert!(!o.is_done());
        o.part_done(Status::PeerDisconnected, None);
        let f = Future::new(o);
        assert_eq!(f.status(), Status::RemoteAccess);
        let e = f.wait().unwrap_err();
        assert_eq!(e.status(), Status::RemoteAccess);
        assert_eq!(e.message(), "bad key");
    }

    #[test]
    fn zero_parts_is_complete() {
        let f = Future::new(op(0, Duration::from_secs(1)));
        assert!(f.done());
        f.wait().unwrap();
    }

    #[test]
    fn wait_for_times_out_without_failing_the_op() {
        let o = op(1, Duration::from_secs(5));
        let f = Future::new(o.clone());
        let t = Instant::now();
        assert_eq!(
            f.wait_for(Duration::from_millis(30)).unwrap_err().status(),
            Status::Timeout
        );
        assert!(t.elapsed() >= Duration::from_millis(30));
        assert_eq!(f.status(), Status::Pending);
        o.part_done(Status::Ok, None);
        f.wait().unwrap();
    }

    #[test]
    fn op_deadline_fails_the_op() {
        let f = Future::new(op(1, Duration::from_millis(20)));
        assert_eq!(f.wait().unwrap_err().status(), Status::Timeout);
        assert_eq!(f.status(), Status::Timeout);
    }

    #[test]
    fn many_waiters_wake() {
        let o = op(1, Duration::from_secs(10));
        let f = Future::new(o.clone());
        let hs: Vec<_> = (0..8)
            .map(|_| {
                let f = f.clone();
                std::thread::spawn(move || f.wait())
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        o.part_done(Status::Ok, None);
        for h in hs {
            h.join().unwrap().unwrap();
        }
    }

    #[test]
    fn abort_blocks_io_and_keeps_first_outcome() {
        let o = op(1, Duration::from_secs(10));
        assert!(o.begin_io());
        o.end_io();
        assert!(o.abort(Status::Cancelled, "cancelled"));
        assert!(!o.begin_io());
        o.part_done(Status::Ok, None);
        assert_eq!(Future::new(o).status(), Status::Cancelled);
    }
}
