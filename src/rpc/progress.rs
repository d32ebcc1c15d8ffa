//! Progress: who receives notifications and how threads wait for what they need.
//!
//! Inline (the default): no thread of its own. Whichever waiting thread takes the
//! receive lock is the receiver: it waits on the endpoint's immediate-data future itself
//! (on shared memory it drives the transport and sleeps on the doorbell the peer rings),
//! dispatches what arrives and notifies the session's event count. The other waiters
//! spin (adaptively), then park on the event count; the receiver wakes them directly
//! when it dispatches something for them and when it stops receiving (one of them takes
//! over). Nothing waits on a timer: every wake-up is the peer's doorbell or a futex wake
//! from the thread that made the change.
//!
//! With a pump (`RpcProgress::Pump`) one thread per session receives and every other
//! thread waits on the event count.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::MutexGuard;

use super::session::Inner;
use crate::engine::{wait, Deadline};
use crate::error::{Error, Result, Status};
use crate::future::{Future, Notify};

/// How long the pump waits in one go before it checks whether the session ended (its
/// receive is also aborted at close, so this only bounds an unexpected stall).
const PUMP_SLICE: Duration = Duration::from_millis(500);

impl Inner {
    /// Waits until `ready`, receiving for everyone meanwhile in inline mode. Fails with
    /// the session's error once it ended, `Timeout` at `deadline`.
    pub(super) fn wait_until(&self, ready: impl Fn() -> bool, deadline: Deadline) -> Result<()> {
        let done = || ready() || self.ended();
        loop {
            if done() {
                break;
            }
            if deadline.expired() {
                // A wait that never blocked (a zero timeout) still sees what has arrived.
                self.take_arrived();
                break;
            }
            if !self.pump {
                if let Some(g) = self.rx.try_lock() {
                    self.receive_once(g, deadline, &done);
                    // The receive lock is free again: a parked waiter takes over.
                    self.events.notify();
                    continue;
                }
            }
            // Someone else receives: wait for its next dispatch, or for it to leave.
            let receiver_left = || !self.pump && !self.rx.is_locked();
            wait::spin_then_park(
                self.events.parking(),
                self.cfg.spin,
                deadline,
                None,
                || false,
                || done() || receiver_left(),
            );
        }
        if ready() {
            return Ok(());
        }
        self.check_alive()?;
        Err(Error::new(Status::Timeout, "RPC wait timed out"))
    }

    pub(super) fn pump_loop(self: Arc<Inner>) {
        while !self.ended() {
            let g = self.rx.lock();
            self.receive_once(g, Deadline::after(PUMP_SLICE), &|| self.ended());
        }
    }

    /// Inline progress: dispatches every notification that has already arrived, without
    /// waiting (nothing when another thread is receiving: it dispatches them). Called
    /// where a thread uses the session without waiting (`call`, `is_closed`, a call's
    /// `done`), so a close notice that came while nobody waited is seen there, as the
    /// pump would have seen it.
    pub(super) fn take_arrived(&self) {
        if self.pump {
            return;
        }
        let Some(mut g) = self.rx.try_lock() else {
            return;
        };
        while let Some(f) = self.posted(&mut g) {
            if !self.settle(&mut g, f) {
                break;
            }
        }
    }

    /// Publishes a change some waiter may wait for, made outside the receiver's
    /// dispatch: wakes the parked waiters and pokes the receiver, which is asleep on the
    /// endpoint, not on the event count.
    pub(super) fn notify_all(&self) {
        self.events.notify();
        if let Some(op) = self.rx_op.lock().as_ref() {
            op.wake_waiters();
        }
    }

    /// Waits for one notification (until `deadline`, or until `stop()` holds) and
    /// dispatches it.
    fn receive_once(
        &self,
        mut g: MutexGuard<'_, Option<Future>>,
        deadline: Deadline,
        stop: &dyn Fn() -> bool,
    ) {
        let Some(f) = self.posted(&mut g) else {
            return;
        };
        *self.rx_op.lock() = f.shared_state().cloned();
        f.state().wait_while(deadline, stop);
        *self.rx_op.lock() = None;
        self.settle(&mut g, f);
    }

    /// The posted immediate-data receive (posting one if none is): `None` once the
    /// session ended (a failure to post ends it).
    fn posted(&self, g: &mut MutexGuard<'_, Option<Future>>) -> Option<Future> {
        if self.ended() {
            return None;
        }
        match g.take() {
            Some(f) => Some(f),
            None => match self.ep.imm_recv(Some(Duration::from_secs(3600))) {
                Ok(f) => Some(f),
                Err(e) => {
                    self.mark_dead(e);
                    None
                }
            },
        }
    }

    /// Acts on the receive `f` taken from the receive slot `g`: dispatches its
    /// notification (under the receive lock, so notifications are acted on in the order
    /// they arrived), keeps it posted while pending, ends the session if it failed.
    /// Returns whether a notification was dispatched.
    fn settle(&self, g: &mut MutexGuard<'_, Option<Future>>, f: Future) -> bool {
        match f.status() {
            Status::Ok => {
                self.dispatch(f.imm_data());
                true
            }
            Status::Pending if self.closed.load(Ordering::Acquire) => {
                // Closed meanwhile: withdraw the receive, so a later session on this
                // endpoint gets every notification.
                f.state().abort(Status::Cancelled, "RPC session closed");
                false
            }
            // Still waiting: keep it posted for the next receiver.
            Status::Pending => {
                **g = Some(f);
                false
            }
            Status::Timeout => false, // the receive's own deadline: post a new one
            s => {
                let e = f.error().unwrap_or_else(|| Error::new(s, s.as_str()));
                let msg = match s {
                    Status::PeerDisconnected => "RPC peer disconnected".to_string(),
                    _ => format!("RPC receive failed: {}", e.message()),
                };
                self.mark_dead(Error::new(s, msg));
                false
            }
        }
    }
}

/// A request's delivery failed (its write future failed): the caller waiting for the
/// reply must look again.
impl Notify for Inner {
    fn notify(&self) {
        self.notify_all();
    }
}
