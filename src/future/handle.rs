//! The user's handle on an operation.

use std::sync::Arc;
use std::time::Duration;

use super::op::OpState;
use crate::engine::Deadline;
use crate::error::{Error, Result, Status};

/// A handle on one operation. Cheap to clone; every clone sees the same outcome. Safe to
/// wait on from any number of threads, any number of times.
#[derive(Clone)]
pub struct Future {
    h: Handle,
    /// Made by `imm_recv`: the only operation whose `imm_data` means something.
    imm_recv: bool,
}

#[derive(Clone)]
enum Handle {
    Op(Arc<OpState>),
    /// Completed with `Ok` at submission, having moved this many bytes (a small send
    /// that is in the ring): there is no state to share.
    Ready(u64),
}

/// What [`Future::state`] shows for a future whose outcome was known at submission.
static READY: OpState = OpState::ok();

impl Future {
    pub fn new(op: Arc<OpState>) -> Future {
        Future {
            h: Handle::Op(op),
            imm_recv: false,
        }
    }

    /// The future of an `imm_recv` (see [`Future::is_imm_recv`]).
    pub fn for_imm_recv(op: Arc<OpState>) -> Future {
        Future {
            h: Handle::Op(op),
            imm_recv: true,
        }
    }

    /// An operation that completed successfully at submission, moving `nbytes`.
    pub fn ready(nbytes: u64) -> Future {
        Future {
            h: Handle::Ready(nbytes),
            imm_recv: false,
        }
    }

    /// Whether `imm_recv` made this future, i.e. whether [`Future::imm_data`] is
    /// defined for it (the C ABI and the bindings refuse it for other operations).
    pub fn is_imm_recv(&self) -> bool {
        self.imm_recv
    }

    /// Waits until the operation completes or its deadline passes (then it fails with
    /// `Timeout`).
    pub fn wait(&self) -> Result<()> {
        match &self.h {
            Handle::Op(op) => op.wait_until(Deadline::never()),
            Handle::Ready(_) => Ok(()),
        }
    }

    /// Waits at most `timeout`. `Err(Timeout)` with the operation still pending means only
    /// this wait gave up; [`Future::status`] tells the difference.
    pub fn wait_for(&self, timeout: Duration) -> Result<()> {
        match &self.h {
            Handle::Op(op) => op.wait_until(Deadline::after(timeout)),
            Handle::Ready(_) => Ok(()),
        }
    }

    pub fn done(&self) -> bool {
        self.status() != Status::Pending
    }

    /// `Pending` until done, then the final status.
    pub fn status(&self) -> Status {
        match &self.h {
            Handle::Op(op) => op.status(),
            Handle::Ready(_) => Status::Ok,
        }
    }

    /// The error with its message, if the operation failed.
    pub fn error(&self) -> Option<Error> {
        match self.status() {
            Status::Ok | Status::Pending => None,
            _ => self.state().result().err(),
        }
    }

    /// Immediate data of a completed `imm_recv`; 0 for other operations.
    pub fn imm_data(&self) -> i32 {
        self.state().imm()
    }

    /// Bytes moved (for `recv`: the length of the received message; for one-sided
    /// operations: the bytes of every assignment). Defined once the operation succeeded.
    pub fn nbytes(&self) -> u64 {
        match &self.h {
            Handle::Op(op) => op.nbytes(),
            Handle::Ready(n) => *n,
        }
    }

    /// The operation's state (a completed, unchangeable one for [`Future::ready`]).
    pub fn state(&self) -> &OpState {
        match &self.h {
            Handle::Op(op) => op,
            Handle::Ready(_) => &READY,
        }
    }

    /// The state shared with the transport, to keep beyond the future; `None` for a
    /// future whose outcome was known at submission.
    pub fn shared_state(&self) -> Option<&Arc<OpState>> {
        match &self.h {
            Handle::Op(op) => Some(op),
            Handle::Ready(_) => None,
        }
    }
}

impl std::fmt::Debug for Future {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Future")
            .field("status", &self.status())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_future_is_complete_everywhere() {
        let f = Future::ready(64);
        assert!(f.done());
        assert_eq!(f.status(), Status::Ok);
        f.wait().unwrap();
        f.wait_for(Duration::ZERO).unwrap();
        assert_eq!(f.nbytes(), 64);
        assert!(f.error().is_none());
        let s = f.state();
        assert!(s.is_done() && !s.has_driver());
        // Aborting it (what a closing RPC session does to every future) changes nothing.
        assert!(!s.abort(Status::Cancelled, "closed"));
        assert!(!s.begin_io());
        assert_eq!(f.clone().status(), Status::Ok);
        assert_eq!(
            Future::ready(3).state().result().map_err(|e| e.status()),
            Ok(())
        );
    }
}
