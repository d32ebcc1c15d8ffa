//! The bookkeeping of one QP's send queue: a ring of entries indexed by a per-QP
//! sequence number that every work request carries as its `wr_id`.
//!
//! * **Bounded.** A poster reserves ring slots before posting; the ring has as many
//!   slots as the QP's send queue, so the send queue can never overflow. Reserving is
//!   lock-free; a poster that finds no room polls the CQ and waits (spin, then park)
//!   or, inside a completion handler, backs off. The lock that assigns sequence
//!   numbers is never held while waiting.
//! * **Selective signalling.** RC completes work requests in order, so one signalled
//!   completion with sequence `s` retires every entry up to `s`, and an error completion
//!   (always generated, signalled or not) retires up to itself with its status.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rdma_sys::*;

use super::verbs;
use crate::engine::wait::{self, EventCount};
use crate::engine::Deadline;
use crate::error::{Error, Result, Status};

pub struct SendQueue<E> {
    depth: u32,
    /// Slots reserved by posters and not yet retired.
    reserved: AtomicU32,
    /// Notified whenever slots are freed: posters waiting for room park on it.
    room: EventCount,
    /// The next sequence number; held while entries are written and the chain posted.
    tail: Mutex<u64>,
    /// `tail` as published to the poller (Release after the entries).
    published: AtomicU64,
    /// The next sequence number to retire; written by the poller only (one thread at a
    /// time, under the poll lock: see `super::progress`).
    head: AtomicU64,
    entries: Box<[UnsafeCell<E>]>,
}

// SAFETY: entry `s % depth` is written by the poster that owns sequence `s` (under
// `tail`) before it publishes `s` and posts, and read by the poller only after
// the completion for `s` (or a later one) arrived and `published` was acquired; a slot is
// reused only after it was retired (reservation). So no entry is accessed concurrently.
unsafe impl<E: Send> Sync for SendQueue<E> {}
// SAFETY: as above.
unsafe impl<E: Send> Send for SendQueue<E> {}

/// A post that the device refused from the `index`-th work request on (`rc` is the
/// errno); the entries of the refused requests are handed back.
pub struct PostError<E> {
    pub index: usize,
    pub rc: i32,
    pub refused: Vec<E>,
}

impl<E: Default> SendQueue<E> {
    pub fn new(depth: u32) -> SendQueue<E> {
        SendQueue {
            depth,
            reserved: AtomicU32::new(0),
            room: EventCount::default(),
            tail: Mutex::new(0),
            published: AtomicU64::new(0),
            head: AtomicU64::new(0),
            entries: (0..depth).map(|_| UnsafeCell::new(E::default())).collect(),
        }
    }

    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// Work requests posted (or reserved) and not yet retired.
    pub fn outstanding(&self) -> u32 {
        self.reserved.load(Ordering::Acquire)
    }

    /// Reserves `n` slots if there is room now.
    pub fn try_reserve(&self, n: u32) -> bool {
        let mut cur = self.reserved.load(Ordering::Acquire);
        loop {
            if cur + n > self.depth {
                return false;
            }
            match self.reserved.compare_exchange_weak(
                cur,
                cur + n,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(c) => cur = c,
            }
        }
    }

    /// Reserves `n` slots (`n` ≤ depth), waiting for earlier work to retire until
    /// `deadline`. `progress` polls the CQ (true if it retired anything), so that the
    /// waiting poster retires work itself when no other thread polls.
    pub fn reserve(
        &self,
        n: u32,
        deadline: Deadline,
        spin: Duration,
        mut progress: impl FnMut() -> bool,
    ) -> Result<()> {
        debug_assert!(n <= self.depth);
        // `ready` reserves: the wait ends the first time it succeeds. Parks are sliced
        // so that `progress` runs again.
        if wait::spin_then_park(
            self.room.parking(),
            spin,
            deadline,
            Some(Duration::from_millis(1)),
            || {
                progress();
                false
            },
            || self.try_reserve(n),
        ) {
            return Ok(());
        }
        Err(Error::new(
            Status::Timeout,
            "deadline passed while waiting for room in the send queue",
        ))
    }

    pub fn unreserve(&self, n: u32) {
        self.reserved.fetch_sub(n, Ordering::AcqRel);
        self.room.notify();
    }

    /// Posts `wrs` as one chain (slots reserved by the caller): numbers them, links
    /// them, and stores `entry(i, seq, wr)` for each before the device can complete it
    /// (`entry` may still adjust the request, e.g. point it at a per-sequence buffer).
    ///
    /// # Safety
    /// `qp` is this queue's live QP; each WR's SGEs name registered memory that stays
    /// valid until the WR retires.
    pub unsafe fn post(
        &self,
        qp: *mut ibv_qp,
        wrs: &mut [ibv_send_wr],
        mut entry: impl FnMut(usize, u64, &mut ibv_send_wr) -> E,
    ) -> std::result::Result<(), PostError<E>> {
        let n = wrs.len();
        if n == 0 {
            return Ok(());
        }
        let mut tail = self.tail.lock();
        let seq0 = *tail;
        let base = wrs.as_mut_ptr();
        for (i, wr) in wrs.iter_mut().enumerate() {
            let seq = seq0 + i as u64;
            wr.wr_id = seq;
            wr.next = if i + 1 < n {
                // SAFETY: i+1 < n: inside the slice.
                unsafe { base.add(i + 1) }
            } else {
                std::ptr::null_mut()
            };
            // SAFETY: the slot of `seq` is reserved for us and retired (see the Sync impl).
            unsafe { *self.entries[(seq % self.depth as u64) as usize].get() = entry(i, seq, wr) };
        }
        *tail = seq0 + n as u64;
        self.published.store(*tail, Ordering::Release);
        let mut bad: *mut ibv_send_wr = std::ptr::null_mut();
        // SAFETY: a valid chain on a live QP (caller).
        let rc = unsafe { verbs::post_send(qp, base, &mut bad) };
        if rc == 0 {
            return Ok(());
        }
        // Requests from `bad` on were not posted: take their entries back.
        let index = if bad.is_null() {
            0
        } else {
            // SAFETY: `bad` points into the chain.
            (unsafe { bad.offset_from(base) }).clamp(0, n as isize) as usize
        };
        let refused = (index..n)
            .map(|i| {
                let seq = seq0 + i as u64;
                // SAFETY: not posted, so no poller ever sees this slot.
                unsafe {
                    std::mem::take(&mut *self.entries[(seq % self.depth as u64) as usize].get())
                }
            })
            .collect();
        *tail = seq0 + index as u64;
        self.published.store(*tail, Ordering::Release);
        drop(tail);
        self.unreserve((n - index) as u32);
        Err(PostError { index, rc, refused })
    }

    /// The poller (under the poll lock): retires every entry up to and including `upto`, calling
    /// `f(entry, is_upto)` in order. Stale or unknown sequence numbers are ignored.
    pub fn retire(&self, upto: u64, mut f: impl FnMut(E, bool)) {
        let head = self.head.load(Ordering::Relaxed);
        let published = self.published.load(Ordering::Acquire);
        if upto < head || upto >= published {
            return;
        }
        for seq in head..=upto {
            // SAFETY: posted and completed (see the Sync impl).
            let e = unsafe {
                std::mem::take(&mut *self.entries[(seq % self.depth as u64) as usize].get())
            };
            f(e, seq == upto);
        }
        self.head.store(upto + 1, Ordering::Release);
        self.reserved
            .fetch_sub((upto + 1 - head) as u32, Ordering::AcqRel);
        self.room.notify();
    }
}
