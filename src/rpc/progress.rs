//! Progress: who receives notifications and how threads wait for what they need.
//!
//! With a pump, one thread per session receives; every other thread spins, then parks on
//! the session's event word. Inline, whichever waiting thread takes the receive lock
//! receives for everyone; the others spin, then park in short slices, so one of them
//! takes over when the receiver's own wait is over.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::MutexGuard;

use super::session::Inner;
use crate::engine::{futex, Deadline};
use crate::error::{Error, Result, Status};
use crate::future::Future;

impl Inner {
    pub(super) fn notify(&self) {
        self.events.fetch_add(1, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) > 0 {
            futex::wake_private(&self.events, i32::MAX as u32);
        }
    }

    /// Waits until `ready`, receiving for everyone meanwhile in inline mode.
    pub(super) fn wait_until(&self, ready: impl Fn() -> bool, deadline: Deadline) -> Result<()> {
        let spin_until = Instant::now() + self.cfg.spin;
        loop {
            let seen = self.events.load(Ordering::SeqCst);
            if ready() {
                return Ok(());
            }
            self.check_alive()?;
            if deadline.expired() {
                return Err(Error::new(Status::Timeout, "RPC wait timed out"));
            }
            if !self.pump {
                if let Some(g) = self.rx.try_lock() {
                    let slice = deadline
                        .remaining()
                        .unwrap_or(Duration::MAX)
                        .min(Duration::from_millis(5));
                    self.receive_once(g, slice);
                    continue;
                }
            }
            if Instant::now() < spin_until {
                std::hint::spin_loop();
                continue;
            }
            self.parked.fetch_add(1, Ordering::SeqCst);
            if self.events.load(Ordering::SeqCst) == seen {
                let slice = deadline
                    .remaining()
                    .unwrap_or(Duration::MAX)
                    .min(Duration::from_millis(if self.pump { 50 } else { 1 }));
                futex::wait_private(&self.events, seen, Some(slice));
            }
            self.parked.fetch_sub(1, Ordering::SeqCst);
        }
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
