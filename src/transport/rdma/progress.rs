//! Who polls a context's completion queue: the threads that wait on its operations
//! (inline progress, the default), and the completion thread while none does.
//!
//! * **One poller at a time.** Polling the CQ and dispatching what it returned happen
//!   under one lock, taken with `try_lock`: a thread that finds it held does not wait (the
//!   holder handles every completion, in CQ order, whoever it is for). So the handlers
//!   still see the completions of a QP in order, one at a time, as with a single thread.
//! * **A waiter polls.** A thread waiting on an operation polls the CQ itself while it
//!   spins (`RdmaConfig::poll_spin` at most; below it, four times the waits that polling
//!   answered, at least `engine.spin`), so a completion needs no hand-off between
//!   threads: the ping-pong of `ib_write_lat`. Past its budget it stops polling and
//!   sleeps; the completion thread takes over the CQ and wakes it.
//! * **The completion thread stays out of the way.** While a waiter polls, and for
//!   `RdmaConfig::idle_grace` (100 ms) after the last one left, it does not poll, spin
//!   or arm the CQ: it parks, so it never competes with a waiter for a core (2-core
//!   machines) and is not woken by completion events that a waiter handles. The grace
//!   spans the gaps of a ping-pong: between two waits its thread does other work (polls
//!   its memory for the peer's write, as `ib_write_lat` does), and a completion thread
//!   that took the CQ over in such a gap armed it, woke on the next completion and spun,
//!   taking a core from the ping-pong every round (1 ms of grace: 0.2–5 ms one-way on
//!   soft-RoCE; 100 ms: 17–32 µs). Then it takes over: polls while there is
//!   work, spins `engine.spin`, arms the CQ and sleeps on the completion channel. It runs
//!   the timers (keepalives) at least every 100 ms in every mode. A waiter that stops
//!   polling to sleep hands the CQ over at once (no grace).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdma_sys::*;

use super::context::{ack_events, async_events, dispatch, tick, Shared};
use super::verbs;
use crate::engine::wait::{self, Drive, EventCount};
use crate::engine::{futex, Deadline};
use crate::warn_log;

/// Completions polled per call.
pub(super) const POLL_BATCH: usize = 32;
/// How often the completion thread runs timers, and its longest sleep.
pub(super) const TICK: Duration = Duration::from_millis(100);

pub(super) struct Progress {
    /// Held while polling and dispatching (the poll buffer is its content).
    poll: Mutex<[ibv_wc; POLL_BATCH]>,
    /// Threads polling while they wait (between `enter` and `leave`, outside `sleep`).
    drivers: AtomicU32,
    /// When the last of them left, in ns since `epoch` (0: no grace).
    left_at: AtomicU64,
    /// `RdmaConfig::idle_grace`, in ns.
    grace_ns: u64,
    epoch: Instant,
    /// Bumped when the last polling waiter stops to sleep; the completion thread parks
    /// on it while waiters poll.
    handover: AtomicU32,
    handover_sleepers: AtomicU32,
    /// Waiters that stopped polling sleep here; bumped when an operation with sleeping
    /// waiters completes.
    done: EventCount,
    poll_error_logged: AtomicBool,
}

impl Progress {
    pub(super) fn new(grace: Duration) -> Progress {
        Progress {
            // SAFETY: ibv_wc is plain data; zero is a valid (unused) value.
            poll: Mutex::new(unsafe { std::mem::zeroed() }),
            drivers: AtomicU32::new(0),
            left_at: AtomicU64::new(0),
            grace_ns: grace.as_nanos().min(u64::MAX as u128) as u64,
            epoch: Instant::now(),
            handover: AtomicU32::new(0),
            handover_sleepers: AtomicU32::new(0),
            done: EventCount::default(),
            poll_error_logged: AtomicBool::new(false),
        }
    }

    fn now_ns(&self) -> u64 {
        // ≥ 1: 0 means "no grace"
        (self.epoch.elapsed().as_nanos() as u64).max(1)
    }

    /// Whether waiters poll the CQ (or did within the grace): the completion thread
    /// keeps out.
    fn waiters_poll(&self) -> bool {
        if self.drivers.load(Ordering::SeqCst) > 0 {
            return true;
        }
        let left = self.left_at.load(Ordering::Acquire);
        left != 0 && self.now_ns().saturating_sub(left) < self.grace_ns
    }

    /// A polling waiter stops polling (to sleep): the completion thread takes over now.
    fn hand_over(&self) {
        if self.drivers.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.left_at.store(0, Ordering::Release);
            self.handover.fetch_add(1, Ordering::SeqCst);
            if self.handover_sleepers.load(Ordering::SeqCst) > 0 {
                futex::wake_private(&self.handover, 1);
            }
        }
    }

    /// Completion thread: parks while waiters poll, at most `timeout`.
    fn park_while_waiters_poll(&self, timeout: Duration) {
        let seen = self.handover.load(Ordering::SeqCst);
        self.handover_sleepers.fetch_add(1, Ordering::SeqCst);
        // After the announcement: a hand-over from here on either is seen here or bumps
        // the word (and the futex refuses to sleep).
        if self.waiters_poll() {
            futex::wait_private(&self.handover, seen, Some(timeout));
        }
        self.handover_sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Polls the CQ once and dispatches what it returned, unless another thread is doing
/// so. Returns the completions handled.
pub(super) fn poll(sh: &Shared) -> usize {
    let Some(mut wcs) = sh.progress.poll.try_lock() else {
        return 0;
    };
    // SAFETY: live CQ, room for POLL_BATCH entries; the lock makes this the only poller.
    let n = unsafe { verbs::poll_cq(sh.cq.cq, POLL_BATCH as i32, wcs.as_mut_ptr()) };
    if n > 0 {
        dispatch(sh, &wcs[..n as usize]);
        return n as usize;
    }
    if n < 0 && !sh.progress.poll_error_logged.swap(true, Ordering::Relaxed) {
        // Never give up on a poll error (every later operation would hang): keep going.
        warn_log!("ibv_poll_cq failed ({n}); retrying");
    }
    0
}

/// Inline progress: what a thread waiting on one of this context's operations drives.
impl Drive for Shared {
    fn poll(&self) -> bool {
        poll(self) > 0
    }

    /// Stops polling and sleeps until `ready` (the operation's completion wakes it
    /// through [`Drive::wake`]), `deadline`, or a tick: the completion thread polls
    /// meanwhile. Polls again on return (by `drive_until`).
    fn sleep(&self, deadline: Deadline, ready: &dyn Fn() -> bool) {
        let p = &self.progress;
        p.hand_over();
        p.done
            .sleep_until(deadline.min(Deadline::after(TICK)), ready);
        p.drivers.fetch_add(1, Ordering::SeqCst);
    }

    fn wake(&self) {
        self.progress.done.notify();
    }

    fn enter(&self) {
        self.progress.drivers.fetch_add(1, Ordering::SeqCst);
    }

    fn leave(&self) {
        let p = &self.progress;
        // The grace starts before the count drops: the completion thread sees one or the
        // other.
        p.left_at.store(p.now_ns(), Ordering::Release);
        p.drivers.fetch_sub(1, Ordering::SeqCst);
    }

    /// Four times the typical wait that polling alone answered, between `engine.spin` and
    /// `max` (`poll_spin`); the whole of `max` for a thread's first wait and one wait in
    /// 16 (to notice slower answers that polling would still catch).
    ///
    /// Unlike the engine's governor, waits that had to sleep do not shrink the budget:
    /// in a ping-pong a wait is long exactly when the peer slept, so a side that stops
    /// polling after slow waits keeps the other side slow, and both stay on the slow path
    /// (every answer a wake-up through the completion thread).
    fn spin_budget(&self, max: Duration) -> Duration {
        POLL_GOVERNOR.with(|g| {
            let (ewma_ns, n) = g.get();
            g.set((ewma_ns, n.wrapping_add(1)));
            if ewma_ns == 0 || n % 16 == 0 {
                return max;
            }
            let floor = self.config.engine.spin.min(max);
            Duration::from_nanos(ewma_ns.saturating_mul(4)).clamp(floor, max)
        })
    }

    fn waited(&self, took: Duration, polled_only: bool) {
        if polled_only {
            wait::record_in(&POLL_GOVERNOR, took);
        }
    }
}

thread_local! {
    /// (moving average in ns of this thread's RDMA waits that polling answered, waits
    /// started): see `Drive::spin_budget` above.
    static POLL_GOVERNOR: wait::WaitRecord = const { std::cell::Cell::new((0, 0)) };
}

/// The completion thread (see the module comment).
pub(super) fn completion_loop(sh: &Shared) {
    let p = &sh.progress;
    let spin = sh.config.engine.spin;
    let mut next_tick = Instant::now() + TICK;
    let mut idle_since: Option<Instant> = None;
    let run_timers = |next_tick: &mut Instant| {
        let now = Instant::now();
        if now >= *next_tick {
            // under the poll lock: handlers and timers never run at the same time
            let _g = p.poll.lock();
            tick(sh, now);
            *next_tick = now + TICK;
        }
    };
    while !sh.stop.load(Ordering::Acquire) {
        run_timers(&mut next_tick);
        if p.waiters_poll() {
            let left = next_tick.saturating_duration_since(Instant::now());
            let grace = Duration::from_nanos(p.grace_ns);
            p.park_while_waiters_poll(left.min(grace).max(Duration::from_micros(100)));
            idle_since = None;
            continue;
        }
        if poll(sh) > 0 {
            idle_since = None;
            continue;
        }
        let now = Instant::now();
        let since = *idle_since.get_or_insert(now);
        if now.duration_since(since) < spin {
            std::hint::spin_loop();
            continue;
        }
        idle_since = None;
        // Park: arm, look once more (a completion between the last poll and the arming
        // raises no event), then sleep on the channel until an event or the next tick.
        // SAFETY: live CQ with a channel.
        unsafe { verbs::req_notify_cq(sh.cq.cq) };
        if poll(sh) > 0 || p.waiters_poll() {
            continue;
        }
        let wait = next_tick.saturating_duration_since(Instant::now());
        // SAFETY: the channel's and the device's fds are valid while `sh` lives.
        let mut pfds = unsafe {
            [
                libc::pollfd {
                    fd: (*sh.cq.channel).fd,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: (*sh.cq.domain.ctx()).async_fd,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ]
        };
        // SAFETY: two valid pollfds.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), 2, wait.as_millis().clamp(1, 100) as i32) };
        if r > 0 {
            if pfds[0].revents != 0 {
                ack_events(sh.cq.channel);
            }
            if pfds[1].revents != 0 {
                let _g = p.poll.lock();
                async_events(sh);
            }
        }
    }
}
