//! Recycled operation states for an endpoint's small operations.
//!
//! An operation costs an `Arc<OpState>` allocation and a place in the endpoint's
//! in-flight table; for a 64-byte message both weigh as much as moving it. The pool keeps
//! a fixed array of `Arc<OpState>`s and hands one out again once it is *unique*: only
//! the pool holds it (`Arc::get_mut`). A future, a transport request or a posted receive
//! that still refers to an old operation keeps its `Arc`, so that state is never reused
//! under it: nobody can see another operation's outcome (the slot-reuse bug of the
//! original, where a future read a reused slot, cannot happen by construction).
//!
//! The array is also the in-flight table: [`OpPool::fail_all`] walks it. Operations that
//! find no free slot nearby are allocated as before and tracked in [`InflightOps`].
//!
//! A slot is claimed with one compare-exchange while it is checked and reset (never
//! across anything that waits); submitters skip a claimed slot, `fail_all` waits for it.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::inflight::InflightOps;
use super::op::{DriverRef, OpState};
use super::Driver;
use crate::engine::Deadline;
use crate::error::Status;

/// Slots per endpoint: more than the operations a caller usually keeps in flight.
const SLOTS: usize = 256;
/// Slots an acquisition looks at before it allocates instead.
const SCAN: usize = 8;

struct Slot {
    claimed: AtomicBool,
    op: UnsafeCell<Option<Arc<OpState>>>,
}

pub struct OpPool {
    slots: Box<[Slot]>,
    /// Where the next acquisition starts looking: the last slot handed out, so that a
    /// caller with one or two operations in flight cycles through a few warm slots.
    cursor: AtomicUsize,
    overflow: InflightOps,
    spin: Duration,
    /// The endpoint that drives progress for waiters (inline mode), if any.
    driver: Option<Weak<dyn Driver>>,
}

// SAFETY: a slot's `op` is only touched by the thread that claimed the slot (the
// `claimed` flag, acquired and released around every access); everything else is Sync.
unsafe impl Sync for OpPool {}

impl OpPool {
    /// `spin`: how long waiters spin before they park; `driver`: the endpoint whose
    /// progress waiters drive (inline mode), held weakly.
    pub fn new(spin: Duration, driver: Option<Weak<dyn Driver>>) -> OpPool {
        OpPool {
            slots: (0..SLOTS)
                .map(|_| Slot {
                    claimed: AtomicBool::new(false),
                    op: UnsafeCell::new(None),
                })
                .collect(),
            cursor: AtomicUsize::new(0),
            overflow: InflightOps::default(),
            spin,
            driver,
        }
    }

    fn driver_ref(&self) -> DriverRef {
        match &self.driver {
            Some(d) => DriverRef::Endpoint(d.clone()),
            None => DriverRef::None,
        }
    }

    /// A new operation of `parts` parts, tracked until it completes.
    pub fn acquire(&self, parts: u32, deadline: Deadline) -> Arc<OpState> {
        let start = self.cursor.load(Ordering::Relaxed);
        for i in 0..SCAN {
            let at = (start + i) % SLOTS;
            let slot = &self.slots[at];
            if slot
                .claimed
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            // SAFETY: we hold the slot's claim, so nobody else reads or writes `op`.
            let cell = unsafe { &mut *slot.op.get() };
            let got = match cell {
                None => {
                    let op = Arc::new(OpState::with(parts, deadline, self.spin, self.driver_ref()));
                    *cell = Some(op.clone());
                    Some(op)
                }
                // Unique: every future and transport reference to its last operation is
                // gone (get_mut's acquire pairs with their drops' release).
                Some(op) => Arc::get_mut(op)
                    .map(|o| o.reset(parts, deadline))
                    .map(|()| op.clone()),
            };
            slot.claimed.store(false, Ordering::Release);
            if let Some(op) = got {
                self.cursor.store(at, Ordering::Relaxed);
                op.obs_start();
                if parts == 0 {
                    op.finish(Status::Ok, None);
                }
                return op;
            }
        }
        self.cursor.store((start + SCAN) % SLOTS, Ordering::Relaxed);
        let op = Arc::new(OpState::with(parts, deadline, self.spin, self.driver_ref()));
        op.obs_start();
        if parts == 0 {
            op.finish(Status::Ok, None);
        }
        self.overflow.track(&op);
        op
    }

    /// Fails every operation still pending (cancel, shutdown, peer death); completed ones
    /// keep their outcome. Returns how many it failed.
    pub fn fail_all(&self, status: Status, message: &str) -> usize {
        let mut pending = Vec::new();
        for slot in self.slots.iter() {
            while slot
                .claimed
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                std::hint::spin_loop();
            }
            // SAFETY: we hold the slot's claim.
            if let Some(op) = unsafe { &*slot.op.get() } {
                if !op.is_done() {
                    pending.push(op.clone());
                }
            }
            slot.claimed.store(false, Ordering::Release);
        }
        let mut n = 0;
        for op in pending {
            if op.abort(status, message) {
                n += 1;
            }
        }
        n + self.overflow.fail_all(status, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::future::Future;

    fn pool() -> OpPool {
        OpPool::new(Duration::from_micros(20), None)
    }

    fn soon() -> Deadline {
        Deadline::after(Duration::from_secs(10))
    }

    #[test]
    fn reuses_a_state_only_once_nothing_refers_to_it() {
        let p = pool();
        let a = p.acquire(1, soon());
        let a_ptr = Arc::as_ptr(&a);
        let fa = Future::new(a.clone());
        a.set_nbytes(7);
        a.part_done(Status::Ok, None);
        drop(a);
        // The future still holds operation A: the next ones get other states.
        let held: Vec<_> = (0..SLOTS * 2).map(|_| p.acquire(1, soon())).collect();
        assert!(held.iter().all(|o| Arc::as_ptr(o) != a_ptr));
        assert_eq!(fa.status(), Status::Ok);
        assert_eq!(fa.nbytes(), 7);
        for o in &held {
            o.part_done(Status::Cancelled, Some("x"));
        }
        // A's outcome is still A's, however many operations came and went.
        assert_eq!(fa.status(), Status::Ok);
        assert_eq!(fa.nbytes(), 7);
        fa.wait().unwrap();
        drop(held);
        drop(fa);
        // Now unique again: reused, reset to pending with nothing left of A.
        let again: Vec<_> = (0..SLOTS).map(|_| p.acquire(1, soon())).collect();
        let b = again
            .iter()
            .find(|o| Arc::as_ptr(o) == a_ptr)
            .expect("A's state reused");
        assert!(!b.is_done());
        assert_eq!(b.nbytes(), 0);
        assert_eq!(Future::new(b.clone()).status(), Status::Pending);
    }

    #[test]
    fn a_reset_state_loses_the_old_error() {
        let p = pool();
        let a = p.acquire(1, soon());
        let ptr = Arc::as_ptr(&a);
        a.part_done(Status::RemoteAccess, Some("bad key"));
        drop(a);
        let b = p.acquire(1, soon());
        assert_eq!(Arc::as_ptr(&b), ptr);
        b.part_done(Status::Ok, None);
        Future::new(b).wait().unwrap();
    }

    #[test]
    fn fail_all_fails_pooled_and_overflow_ops_and_leaves_completed_ones() {
        let p = pool();
        let ops: Vec<_> = (0..SLOTS + 10).map(|_| p.acquire(1, soon())).collect();
        ops[0].part_done(Status::Ok, None);
        assert_eq!(p.fail_all(Status::Cancelled, "cancelled"), ops.len() - 1);
        assert_eq!(Future::new(ops[0].clone()).status(), Status::Ok);
        for o in &ops[1..] {
            assert_eq!(Future::new(o.clone()).status(), Status::Cancelled);
        }
        assert_eq!(p.fail_all(Status::Cancelled, "again"), 0);
    }

    #[test]
    fn zero_parts_is_complete() {
        let p = pool();
        Future::new(p.acquire(0, soon())).wait().unwrap();
    }

    #[test]
    fn concurrent_acquire_and_fail_all() {
        let p = Arc::new(pool());
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        let o = p.acquire(1, soon());
                        let f = Future::new(o.clone());
                        o.set_nbytes(i);
                        o.part_done(Status::Ok, None);
                        drop(o);
                        // Either our own outcome, or a cancel that came first; never
                        // another operation's.
                        match f.status() {
                            Status::Ok => assert_eq!(f.nbytes(), i),
                            s => assert_eq!(s, Status::Cancelled),
                        }
                    }
                })
            })
            .collect();
        for _ in 0..200 {
            p.fail_all(Status::Cancelled, "x");
        }
        for h in hs {
            h.join().unwrap();
        }
    }
}
