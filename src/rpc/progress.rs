//! Progress: who receives notifications and how threads wait for what they need.
//!
//! With a pump, one thread per session receives; every other thread waits on the
//! session's [`EventCount`](crate::engine::wait::EventCount) with the engine's
//! spin-then-park. Inline, whichever waiting thread takes the receive lock receives for
//! everyone (its inline step); the others spin, then park in short slices, so one of
//! them takes over when the receiver's own wait is over.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::MutexGuard;

use super::session::Inner;
use crate::engine::{wait, Deadline};
use crate::error::{Error, Result, Status};
use crate::future::Future;

/// Longest receive of an inline receiver before it checks its own condition again.
const INLINE_RECEIVE_SLICE: Duration = Duration::from_millis(5);
/// Longest park of an inline waiter that is not the receiver (the receiver does not
/// notify when it stops receiving).
const INLINE_PARK_SLICE: Duration = Duration::from_millis(1);
/// Longest park with a pump (every change notifies; this only bounds a lost wake-up).
const PUMP_PARK_SLICE: Duration = Duration::from_millis(50);

impl Inner {
    /// Waits until `ready`, receiving for everyone meanwhile in inline mode. Fails with
    /// the session's error once it ended, `Timeout` at `deadline`.
    pub(super) fn wait_until(&self, ready: impl Fn() -> bool, deadline: Deadline) -> Result<()> {
        let slice = if self.pump {
            PUMP_PARK_SLICE
        } else {
            INLINE_PARK_SLICE
        };
        wait::spin_then_park(
            self.events.parking(),
            self.cfg.spin,
            deadline,
            Some(slice),
            || self.receive_inline(deadline),
            || ready() || self.ended(),
        );
        if ready() {
            return Ok(());
        }
        self.check_alive()?;
        Err(Error::new(Status::Timeout, "RPC wait timed out"))
    }

    /// The inline step of a waiter: receives once if no pump runs and no other thread is
    /// receiving. Returns whether it received (so the waiter need not park).
    fn receive_inline(&self, deadline: Deadline) -> bool {
        if self.pump || deadline.expired() {
            return false;
        }
        let Some(g) = self.rx.try_lock() else {
            return false;
        };
        let slice = deadline
            .remaining()
            .unwrap_or(Duration::MAX)
            .min(INLINE_RECEIVE_SLICE);
        self.receive_once(g, slice);
        true
    }

    pub(super) fn pump_loop(self: Arc<Inner>) {
        while !self.ended() {
            let g = self.rx.lock();
            self.receive_once(g, Duration::from_millis(50));
        }
    }

    /// Waits up to `max` for one notification and dispatches it.
    fn receive_once(&self, mut g: MutexGuard<'_, Option<Future>>, max: Duration) {
        if self.ended() {
            return;
        }
        let f = match g.take() {
            Some(f) => f,
            None => match self.ep.imm_recv(Some(Duration::from_secs(3600))) {
                Ok(f) => f,
                Err(e) => {
                    drop(g);
                    self.mark_dead(e);
                    return;
                }
            },
        };
        // With inline progress, wait in short steps: each step drives the transport,
        // which sleeps on the peer's doorbell when idle, instead of reaching the
        // future's blind timed park.
        let r = if f.state().has_driver() {
            let until = Instant::now() + max;
            loop {
                let left = until.saturating_duration_since(Instant::now());
                match f.wait_for(left.min(Duration::from_micros(20))) {
                    Err(e) if e.status() == Status::Timeout && f.status() == Status::Pending => {
                        if left.is_zero() || self.ended() {
                            break Err(e);
                        }
                    }
                    r => break r,
                }
            }
        } else {
            f.wait_for(max)
        };
        match r {
            Ok(()) => {
                drop(g);
                self.dispatch(f.imm_data());
            }
            Err(_) => match f.status() {
                Status::Pending if self.closed.load(Ordering::Acquire) => {
                    // Closed meanwhile: withdraw the receive, so a later session on this
                    // endpoint gets every notification.
                    f.state().abort(Status::Cancelled, "RPC session closed");
                }
                Status::Pending => *g = Some(f),
                // Completed between the wait giving up and this check.
                Status::Ok => {
                    drop(g);
                    self.dispatch(f.imm_data());
                }
                Status::Timeout => {} // the receive's own deadline: post a new one
                s => {
                    drop(g);
                    let e = f.error().unwrap_or_else(|| Error::new(s, s.as_str()));
                    let msg = match s {
                        Status::PeerDisconnected => "RPC peer disconnected".to_string(),
                        _ => format!("RPC receive failed: {}", e.message()),
                    };
                    self.mark_dead(Error::new(s, msg));
                }
            },
        }
    }
}
