//! Progress: pushing entries into our ring (waiting, or backlogged for handlers that must
//! not block), draining the peer's ring, the background progress thread, and inline
//! progress driven by the threads that wait on futures.

use std::cell::Cell;
use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::conn::Conn;
use super::handshake;
use super::ring::{Entry, Producer};
use super::state::{Inner, PEER_GONE};
use crate::engine::{Deadline, ProgressMode};
use crate::error::{Error, Result, Status};
use crate::future::Driver;

pub(super) enum PushMode {
    /// Submitters: wait (driving progress) while the ring is full, until the deadline.
    Wait(Deadline),
    /// Progress handlers: never block; queue behind what is already waiting.
    Backlog,
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
            sleep_on_doorbell(c, Duration::from_millis(1));
            if self.poll(c) {
                IDLE.with(|s| s.set((me, None, Some(Instant::now()))));
            }
        }
    }
}

/// Sleeps until the peer rings our doorbell (or `timeout`), unless there is work already
/// or another thread is polling.
fn sleep_on_doorbell(c: &Conn, timeout: Duration) {
    c.in_bell
        .sleep(timeout, || c.cons.try_lock().is_none_or(|g| g.has_work()));
}

/// Pushes what waits in the backlog, in order, while the ring has room.
fn flush_backlog(p: &mut Producer, backlog: &mut VecDeque<Entry>) {
    while let Some(b) = backlog.front() {
        if !p.try_push(b) {
            break;
        }
        backlog.pop_front();
    }
}

impl Inner {
    pub fn push(&self, c: &Conn, e: &Entry, mode: PushMode) -> Result<()> {
        loop {
            {
                let mut g = c.prod.lock();
                let (p, backlog) = &mut *g;
                flush_backlog(p, backlog);
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
                return Err(Error::new(Status::PeerDisconnected, PEER_GONE));
            }
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::new(Status::ShutDown, "endpoint is shut down"));
            }
            if let PushMode::Wait(d) = mode {
                if d.expired() {
                    return Err(Error::new(
                        Status::Timeout,
                        "control ring stayed full until the deadline",
                    ));
                }
            }
            self.poll(c);
            std::thread::yield_now();
        }
    }

    /// Drains the inbound ring (one thread at a time). Returns whether it did anything.
    pub fn poll(&self, c: &Conn) -> bool {
        let Some(mut cons) = c.cons.try_lock() else {
            return false;
        };
        let mut did = false;
        if c.backlogged.load(Ordering::Acquire) {
            // Flush replies that found the ring full.
            let mut g = c.prod.lock();
            let (p, backlog) = &mut *g;
            let had = !backlog.is_empty();
            flush_backlog(p, backlog);
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

    /// Counts and logs an entry that is not acted on.
    pub fn reject(&self, e: &Entry, why: &str) {
        self.stats.rejected_entries.fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "dlslime shm: rejected ring entry (kind {}, id {}): {why}",
            e.kind, e.id
        );
    }

    /// Publishes our live regions for the peer's fast-path checks, if they changed.
    pub fn publish_regions(&self, c: &Conn) {
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
            // SAFETY: our own table, in the segment the Conn keeps mapped; only this side
            // writes it, and only one writer at a time: connect publishes before the
            // progress thread starts, then only that thread publishes.
            unsafe { (*c.my_table).publish(&list) };
        }
    }

    /// The background progress thread: polls while there is work, spins `engine.spin`,
    /// then sleeps on the doorbell; checks liveness and republishes regions every 1 ms.
    pub fn run(self: Arc<Inner>) {
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
                sleep_on_doorbell(c, Duration::from_millis(20));
            }
        }
    }
}
