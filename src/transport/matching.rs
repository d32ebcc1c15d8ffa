//! Receive-side matching shared by transports: immediate-data notifications against
//! `imm_recv` futures, and incoming messages against posted `recv` buffers. Both are
//! strict FIFO; whatever arrives first waits for the other.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::Status;
use crate::future::OpState;

/// Bytes of early (not yet received) messages an endpoint holds for its peer before the
/// peer's further sends wait (TCP: for a pull; shared memory: for window room).
pub const EARLY_BUDGET: usize = 64 << 20;

/// Notifications that arrived before an `imm_recv`, and `imm_recv`s waiting for one.
#[derive(Default)]
pub struct ImmQueue {
    inner: Mutex<ImmInner>,
}

#[derive(Default)]
struct ImmInner {
    events: VecDeque<i32>,
    waiters: VecDeque<Arc<OpState>>,
}

impl ImmQueue {
    /// A notification arrived: complete the oldest live waiter, or queue it.
    pub fn deliver(&self, imm: i32) {
        let mut g = self.inner.lock();
        while let Some(op) = g.waiters.pop_front() {
            if op.is_done() {
                continue; // timed out or cancelled while waiting
            }
            drop(g);
            op.set_imm(imm);
            if op.finish(Status::Ok, None) {
                return;
            }
            g = self.inner.lock();
        }
        g.events.push_back(imm);
    }

    /// An `imm_recv` was posted: take the oldest queued notification, or wait.
    pub fn post(&self, op: Arc<OpState>) {
        let mut g = self.inner.lock();
        if let Some(imm) = g.events.pop_front() {
            drop(g);
            op.set_imm(imm);
            op.finish(Status::Ok, None);
        } else {
            g.waiters.push_back(op);
        }
    }

    /// Fails every waiting `imm_recv` (queued notifications stay for later ones).
    pub fn fail_waiters(&self, status: Status, message: &str) {
        let waiters = std::mem::take(&mut self.inner.lock().waiters);
        for op in waiters {
            op.abort(status, message);
        }
    }

    pub fn queued(&self) -> usize {
        self.inner.lock().events.len()
    }
}

/// A posted receive buffer.
pub struct PostedRecv {
    pub ptr: usize,
    pub cap: usize,
    pub op: Arc<OpState>,
}

/// Posted receives and messages that arrived before one; `U` is the transport's own
/// representation of an early message (buffered bytes, or a note to fetch them).
pub struct MsgMatcher<U> {
    inner: Mutex<MsgInner<U>>,
}

struct MsgInner<U> {
    posted: VecDeque<PostedRecv>,
    early: VecDeque<U>,
}

impl<U> Default for MsgMatcher<U> {
    fn default() -> Self {
        MsgMatcher {
            inner: Mutex::new(MsgInner {
                posted: VecDeque::new(),
                early: VecDeque::new(),
            }),
        }
    }
}

impl<U> MsgMatcher<U> {
    /// A message is arriving: the oldest live posted receive, if any and no earlier
    /// message is still waiting (FIFO), so the bytes can go straight into it.
    pub fn take_posted(&self) -> Option<PostedRecv> {
        let mut g = self.inner.lock();
        if !g.early.is_empty() {
            return None;
        }
        pop_live(&mut g.posted)
    }

    /// A message arrived with no receive posted: queue it, unless a receive was posted in
    /// the meantime, in which case the pair is returned for the caller to deliver.
    pub fn arrive(&self, msg: U) -> Option<(PostedRecv, U)> {
        self.match_or_queue(msg, false)
    }

    /// A receive is posted: pair it with the oldest early message, or queue it.
    pub fn post(&self, recv: PostedRecv) -> Option<(PostedRecv, U)> {
        let mut g = self.inner.lock();
        match g.early.pop_front() {
            Some(m) => Some((recv, m)),
            None => {
                g.posted.push_back(recv);
                None
            }
        }
    }

    /// A matched message whose receive was cancelled before it was filled goes back to
    /// the head of the queue, or straight to the next live receive.
    pub fn requeue(&self, msg: U) -> Option<(PostedRecv, U)> {
        self.match_or_queue(msg, true)
    }

    fn match_or_queue(&self, msg: U, at_head: bool) -> Option<(PostedRecv, U)> {
        let mut g = self.inner.lock();
        if g.early.is_empty() {
            if let Some(r) = pop_live(&mut g.posted) {
                return Some((r, msg));
            }
        }
        if at_head {
            g.early.push_front(msg);
        } else {
            g.early.push_back(msg);
        }
        None
    }

    /// Fails every posted receive; early messages stay queued.
    pub fn fail_posted(&self, status: Status, message: &str) {
        let posted = std::mem::take(&mut self.inner.lock().posted);
        for r in posted {
            r.op.abort(status, message);
        }
    }

    pub fn early_len(&self) -> usize {
        self.inner.lock().early.len()
    }

    /// Drops every early message (on shutdown), returning them.
    pub fn drain_early(&self) -> Vec<U> {
        self.inner.lock().early.drain(..).collect()
    }
}

fn pop_live(q: &mut VecDeque<PostedRecv>) -> Option<PostedRecv> {
    while let Some(r) = q.pop_front() {
        if !r.op.is_done() {
            return Some(r);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Deadline;
    use crate::future::Future;
    use std::time::Duration;

    fn op() -> Arc<OpState> {
        OpState::new(
            1,
            Deadline::after(Duration::from_secs(5)),
            Duration::ZERO,
            None,
        )
    }

    #[test]
    fn imm_fifo_both_orders() {
        let q = ImmQueue::default();
        q.deliver(1);
        q.deliver(2);
        let a = op();
        q.post(a.clone());
        assert_eq!(Future::new(a).imm_data(), 1);
        let b = op();
        let c = op();
        q.post(b.clone());
        q.post(c.clone());
        assert_eq!(Future::new(b.clone()).imm_data(), 2);
        assert!(!c.is_done());
        c.abort(Status::Cancelled, "x");
        let d = op();
        q.post(d.clone());
        q.deliver(3); // skips the cancelled waiter
        assert_eq!(Future::new(d).imm_data(), 3);
    }

    #[test]
    fn messages_keep_fifo() {
        let m: MsgMatcher<u32> = MsgMatcher::default();
        assert!(m.take_posted().is_none());
        assert!(m.arrive(7).is_none());
        let r = PostedRecv {
            ptr: 0,
            cap: 8,
            op: op(),
        };
        let (_, msg) = m.post(r).unwrap();
        assert_eq!(msg, 7);
        assert!(m
            .post(PostedRecv {
                ptr: 1,
                cap: 8,
                op: op()
            })
            .is_none());
        assert_eq!(m.take_posted().unwrap().ptr, 1);
    }
}
