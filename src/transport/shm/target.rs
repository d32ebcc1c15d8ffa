//! The target side: what this endpoint does with each entry the peer sends. One-sided
//! requests are checked against our own registered regions and keys before any memory
//! is touched, then applied and answered with a `DONE`; messages go to the receive side
//! ([`super::recv`], [`super::reassembly`]); `DONE`s complete our own requests
//! ([`super::pending`]).

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use super::cma;
use super::conn::Conn;
use super::progress::PushMode;
use super::ring::{kind, Entry};
use super::state::Inner;
use crate::error::Status;

impl Inner {
    /// Acts on one validated entry from the peer's ring.
    pub fn handle(&self, c: &Conn, e: &Entry) {
        match e.kind {
            kind::MSG => self.inline_message(c, e),
            kind::RTS => self.message_to_pull(c, e),
            kind::IMM => self.imm.deliver(e.imm),
            kind::WRITE => {
                let st = self.apply_write(c, e);
                self.reply(c, e.id, st, 0);
            }
            kind::READ => {
                let st = if self.pool.validate_access(e.a, e.n, e.key).is_ok() {
                    Status::Ok
                } else {
                    Status::RemoteAccess
                };
                self.reply(c, e.id, st, 0);
            }
            kind::ST_WRITE | kind::ST_READ => {
                let st = self.apply_staged(c, e, e.kind == kind::ST_WRITE);
                self.reply(c, e.id, st, e.slot);
            }
            kind::ST_MSG => {
                self.staged_chunk(c, e);
                self.reply(c, e.id, Status::Ok, e.slot);
            }
            kind::DONE => self.complete(c, e),
            _ => self.reject(e, "unhandled kind"),
        }
    }

    /// A write of the initiator's `[e.a, e.a+e.n)` into our `[e.b, e.b+e.n)`: a memcpy
    /// from our mapping of its allocation, else cross-memory attach.
    fn apply_write(&self, c: &Conn, e: &Entry) -> Status {
        if self.pool.validate_access(e.b, e.n, e.key).is_err() {
            return Status::RemoteAccess;
        }
        let dst = e.b as usize as *mut u8;
        self.sync_peer_maps(c);
        let maps = c.peer_maps.read();
        if let Some(src) = maps.translate(e.a, e.n) {
            // SAFETY: dst..dst+n was validated against our registered regions; src..src+n
            // lies inside our mapping of the initiator's allocation (translate).
            unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst, e.n as usize) };
            return Status::Ok;
        }
        self.stats.cma.fetch_add(1, Ordering::Relaxed);
        // SAFETY: dst..dst+n was validated against our registered regions, so it is
        // writable memory of this process.
        match unsafe { cma::read_from(c.peer_pid, dst, e.a, e.n as usize) } {
            Ok(()) => Status::Ok,
            Err(en) => {
                let (s, m) = cma::errno_status(en, &self.stats.cma_eperm);
                crate::warn_log!("shm: write from peer failed: {m}");
                s
            }
        }
    }

    /// A staged chunk of a one-sided op: `e.len` bytes from the peer's slot `e.slot` to
    /// our `e.b` (write), or from our `e.a` into that slot (read).
    fn apply_staged(&self, c: &Conn, e: &Entry, write: bool) -> Status {
        let addr = if write { e.b } else { e.a };
        if self
            .pool
            .validate_access(addr, e.len as u64, e.key)
            .is_err()
        {
            return Status::RemoteAccess;
        }
        let (slot, ours) = (c.peer_slot(e.slot.into()), addr as usize as *mut u8);
        // SAFETY: the slot index and chunk length were checked by validate() (slot <
        // NSLOTS, len <= SLOT_SIZE); our range lies inside one of our registered regions
        // with this key. Slot and region never overlap.
        unsafe {
            if write {
                std::ptr::copy_nonoverlapping(slot as *const u8, ours, e.len as usize);
            } else {
                std::ptr::copy_nonoverlapping(ours as *const u8, slot, e.len as usize);
            }
        }
        Status::Ok
    }

    /// Answers request `id` with `st`, echoing its bounce slot (0 when it used none).
    /// Never blocks: the reply waits in the backlog when our ring is full. A refused
    /// access is a strike; too many hang up on the peer (it is probing keys or ranges).
    pub fn reply(&self, c: &Conn, id: u64, st: Status, slot: u16) {
        if st == Status::RemoteAccess && c.strikes.hit() {
            crate::warn_log!(
                "shm: hanging up on pid {}: {} refused accesses (wrong keys or ranges)",
                c.peer_pid,
                c.strikes.count()
            );
            // SAFETY: shutdown(2) on the socket the Conn owns; the progress loop sees the
            // hang-up and fails everything pending, as for a dead peer.
            unsafe { libc::shutdown(c.sock.as_raw_fd(), libc::SHUT_RDWR) };
        }
        let mut d = Entry::new(kind::DONE);
        d.id = id;
        d.set_status(st);
        d.slot = slot;
        let _ = self.push(c, &d, PushMode::Backlog);
    }
}
