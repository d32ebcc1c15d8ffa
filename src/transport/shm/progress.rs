//! Progress: pushing entries into our ring (waiting, or backlogged for handlers that must
//! not block), draining the peer's ring, inline progress driven by the threads that wait
//! on futures (the default: a waiting thread polls, then sleeps on the doorbell the peer
//! rings), and the background progress thread that serves when no thread waits.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::MutexGuard;

use super::conn::Conn;
use super::ring::{Consumer, Entry, Producer};
use super::state::{Inner, PEER_GONE};
use crate::engine::wait::Drive;
use crate::engine::{Deadline, ProgressMode};
use crate::error::{Error, Result, Status};

pub(super) enum PushMode {
    /// Submitters: wait (driving progress) while the ring is full, until the deadline.
    Wait(Deadline),
    /// The same, with the deadline `timeout` from the first time the ring is found full
    /// (no clock read for a push that finds room).
    WaitUpTo(Duration),
    /// Progress handlers: never block; queue behind what is already waiting.
    Backlog,
}

impl Drive for Inner {
    fn poll(&self) -> bool {
        self.conn.get().is_some_and(|c| self.poll(c))
    }

    /// Sleeps on our doorbell: the peer's next entry wakes this thread directly.
    fn sleep(&self, deadline: Deadline, ready: &dyn Fn() -> bool) {
        let Some(c) = self.conn.get() else { return };
        if self.dead.load(Ordering::Acquire) || self.closed.load(Ordering::Acquire) {
            return;
        }
        c.in_bell.sleep(deadline.remaining(), || {
            ready() || c.cons.try_lock().is_none_or(|g| g.has_work())
        });
    }

    fn wake(&self) {
        if let Some(c) = self.conn.get() {
            c.in_bell.wake_inline();
        }
    }

    fn enter(&self) {
        if let Some(c) = self.conn.get() {
            c.in_bell.enter_inline();
        }
    }

    fn leave(&self) {
        if let Some(c) = self.conn.get() {
            c.in_bell.leave_inline();
            // An entry the peer published before it saw us leave woke nobody: take it.
            let cons = c.cons.lock();
            self.poll_locked(c, cons);
        }
    }
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
    pub fn push(&self, c: &Conn, e: &Entry, mut mode: PushMode) -> Result<()> {
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
            if let PushMode::WaitUpTo(t) = mode {
                mode = PushMode::Wait(Deadline::after(t));
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
        // Nothing published and no replies waiting: answer without taking the lock (a
        // spinning waiter polls millions of times).
        if !c.backlogged.load(Ordering::Acquire)
            && !c.in_bell.published(self.in_tail.load(Ordering::Acquire))
        {
            return false;
        }
        match c.cons.try_lock() {
            Some(cons) => self.poll_locked(c, cons),
            None => false,
        }
    }

    fn poll_locked(&self, c: &Conn, mut cons: MutexGuard<'_, Consumer>) -> bool {
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
        let mut e = Entry::new(0);
        for _ in 0..64 {
            if !cons.pop_into(&mut e) {
                break;
            }
            self.in_tail.store(cons.position(), Ordering::Release);
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
        crate::warn_log!(
            "shm: rejected ring entry (kind {}, id {}): {why}",
            e.kind,
            e.id
        );
    }

    /// The background progress thread. It polls while there is work (in background
    /// mode it then spins `engine.spin`) and sleeps on the doorbell's background word,
    /// which the peer rings only while no thread of ours drives inline, so it never takes
    /// a message from a waiting thread. Every 1 ms while busy (20 ms while idle) it reads
    /// the peer's frames (allocation announcements; the hang-up that means the peer is
    /// gone) and republishes our regions if they changed.
    pub fn run(self: Arc<Inner>) {
        let c = self.conn.get().expect("connected");
        let background = self.cfg.engine.progress == ProgressMode::Background;
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
                if !self.read_frames(c) {
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
            if background && now.duration_since(last_work) < self.cfg.engine.spin {
                std::hint::spin_loop();
                continue;
            }
            c.in_bell.sleep_background(Duration::from_millis(20), || {
                !c.in_bell.inline_active() && c.cons.try_lock().is_none_or(|g| g.has_work())
            });
        }
    }
}
