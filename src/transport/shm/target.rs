//! The target side: what this endpoint does with each entry the peer sends. One-sided
//! requests are checked against our own registered regions and keys before any memory
//! is touched, then applied and answered with a `DONE`; messages go to the receive side
//! ([`super::recv`], [`super::reassembly`]); `DONE`s complete our own requests
//! ([`super::pending`]).

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use super::cma;
use super::conn::Conn;
use super::device::copy_failed;
use super::progress::PushMode;
use super::ring::{kind, Entry};
use super::state::Inner;
use crate::error::Status;
use crate::memory::device::Copier;

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
                // The initiator pulls the bytes itself (cross-memory attach): a staged
                // (device) region cannot be read that way; it learns so from our
                // announcements and uses bounce slots, so this is a stale view.
                let st = match self.pool.validate_access_or_staged(e.a, e.n, e.key) {
                    Ok(r) if r.staged.is_some() => Status::Unsupported,
                    Ok(_) => Status::Ok,
                    Err(_) => Status::RemoteAccess,
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
        let region = match self.pool.validate_access_or_staged(e.b, e.n, e.key) {
            Ok(r) => r,
            Err(_) => return Status::RemoteAccess,
        };
        if let Some(s) = &region.staged {
            return self.write_staged(c, e, s.copier().as_ref());
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

    /// A write into a staged (device) region of ours by an initiator that did not know it
    /// was staged (a region registered after its last look at our announcements):
    /// attached in chunks into a host buffer, each handed to the region's copier.
    fn write_staged(&self, c: &Conn, e: &Entry, copier: &dyn Copier) -> Status {
        const CHUNK: usize = 1 << 20;
        let mut buf = vec![0u8; CHUNK.min(e.n as usize)];
        let mut off = 0usize;
        while off < e.n as usize {
            let n = (e.n as usize - off).min(CHUNK);
            self.stats.cma.fetch_add(1, Ordering::Relaxed);
            let src = e.a + off as u64;
            // SAFETY: `buf` is ours and holds n <= CHUNK bytes.
            let r = unsafe { cma::read_from(c.peer_pid, buf.as_mut_ptr(), src, n) };
            if let Err(en) = r {
                return cma::errno_status(en, &self.stats.cma_eperm).0;
            }
            // SAFETY: the destination lies inside our staged region (validated with its
            // key by the caller), reached through its copier; `buf` holds n bytes.
            if let Err(er) = unsafe { copier.copy_from_host(buf.as_ptr(), e.b as usize + off, n) } {
                return copy_failed(&er);
            }
            off += n;
        }
        Status::Ok
    }

    /// A staged chunk of a one-sided op: `e.len` bytes from the peer's slot `e.slot` to
    /// our `e.b` (write), or from our `e.a` into that slot (read).
    fn apply_staged(&self, c: &Conn, e: &Entry, write: bool) -> Status {
        let addr = if write { e.b } else { e.a };
        let Ok(region) = self
            .pool
            .validate_access_or_staged(addr, e.len as u64, e.key)
        else {
            return Status::RemoteAccess;
        };
        let (slot, ours) = (c.peer_slot(e.slot.into()), addr as usize as *mut u8);
        if let Some(s) = &region.staged {
            // SAFETY: as below; our range is reached through the region's copier.
            let r = unsafe {
                if write {
                    s.copier()
                        .copy_from_host(slot, addr as usize, e.len as usize)
                } else {
                    s.copier().copy_to_host(addr as usize, slot, e.len as usize)
                }
            };
            return r.map_or_else(|er| copy_failed(&er), |()| Status::Ok);
        }
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
