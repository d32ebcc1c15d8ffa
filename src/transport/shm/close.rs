//! The end of an endpoint: the peer's death (its socket hung up) fails everything
//! pending with `PEER_DISCONNECTED`; `shutdown` (idempotent) fails it with `CANCELLED`,
//! hangs up on the peer and joins the progress thread.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use super::state::{Inner, PEER_GONE};
use crate::error::Status;

impl Inner {
    pub fn on_disconnect(&self) {
        if self.dead.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(c) = self.conn.get() {
            c.abort_pending(Status::PeerDisconnected, PEER_GONE);
            c.in_bell.wake_all();
        }
        self.ops.fail_all(Status::PeerDisconnected, PEER_GONE);
        self.imm.fail_waiters(Status::PeerDisconnected, PEER_GONE);
        self.msgs.fail_posted(Status::PeerDisconnected, PEER_GONE);
        self.abort_assemblies(Status::PeerDisconnected, PEER_GONE);
    }

    pub fn shutdown(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let msg = "endpoint shut down";
        self.ops.fail_all(Status::Cancelled, msg);
        self.imm.fail_waiters(Status::Cancelled, msg);
        self.msgs.fail_posted(Status::Cancelled, msg);
        if let Some(c) = self.conn.get() {
            c.abort_pending(Status::Cancelled, msg);
            // SAFETY: shutdown(2) on a socket the Conn owns (the fd stays open until the
            // Conn drops); the peer sees the hang-up.
            unsafe { libc::shutdown(c.sock.as_raw_fd(), libc::SHUT_RDWR) };
            c.in_bell.wake_all();
        }
        self.listener.lock().take();
        let h = self.thread.lock().take();
        if let Some(h) = h {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}
