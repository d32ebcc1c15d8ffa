//! The receive side of send/recv: messages meet posted receives in FIFO order. A small
//! message comes inline in its ring entry; a large one is pulled from the sender (a
//! memcpy from our mapping of its allocation, else cross-memory attach) once its receive
//! is posted; a staged one arrives in chunks ([`super::reassembly`]).

use std::sync::atomic::Ordering;

use super::cma;
use super::conn::Conn;
use super::ring::{Entry, INLINE_CAP};
use super::state::Inner;
use super::window::{self, Arrival};
use crate::error::Status;
use crate::transport::matching::PostedRecv;

/// What a message that arrived before its receive leaves behind (no allocation per
/// message: an inline one is kept in the queue entry itself).
pub(super) enum Early {
    Inline {
        len: u8,
        data: [u8; INLINE_CAP],
    },
    /// A large message to pull from the sender: reply id, sender address, length.
    Rts {
        id: u64,
        addr: u64,
        len: u64,
    },
    /// A staged message of `len` bytes being (or already) reassembled, by message id.
    Staged {
        msg: u64,
        len: u64,
    },
}

const _: () = assert!(INLINE_CAP <= u8::MAX as usize);

impl Early {
    /// Its share of the early-message window ([`super::window`]).
    pub fn charge(&self) -> u64 {
        match self {
            Early::Inline { .. } | Early::Rts { .. } => window::charge(0),
            Early::Staged { len, .. } => window::charge(*len),
        }
    }
}

impl Inner {
    /// A message inline in its entry (`MSG`).
    pub fn inline_message(&self, c: &Conn, e: &Entry) {
        // Straight into a posted receive when one waits (no allocation).
        if let Some(r) = self.msgs.take_posted() {
            if copy_into_recv(&r, &e.data[..e.len as usize]) {
                self.release_matched(c, window::charge(0));
                return;
            }
            // the receive ended meanwhile: the message waits for the next one
        }
        let mut data = [0u8; INLINE_CAP];
        data[..e.len as usize].copy_from_slice(&e.data[..e.len as usize]);
        let m = Early::Inline {
            len: e.len as u8,
            data,
        };
        match self.arrive(c, m) {
            Arrival::Matched(r, m) => self.complete_recv(c, r, m),
            Arrival::Queued => {}
            Arrival::Refused => self.reject(e, "message beyond the early-message window"),
        }
    }

    /// A large message waiting at the sender (`RTS`), answered once pulled.
    pub fn message_to_pull(&self, c: &Conn, e: &Entry) {
        let m = Early::Rts {
            id: e.id,
            addr: e.a,
            len: e.n,
        };
        match self.arrive(c, m) {
            Arrival::Matched(r, m) => self.complete_recv(c, r, m),
            Arrival::Queued => {}
            Arrival::Refused => self.reply(c, e.id, Status::ResourceExhausted, 0),
        }
    }

    /// Delivers a matched message into a posted receive.
    pub fn complete_recv(&self, c: &Conn, r: PostedRecv, m: Early) {
        match m {
            Early::Inline { len, data } => {
                if !copy_into_recv(&r, &data[..len as usize]) {
                    self.requeue(c, Early::Inline { len, data });
                }
            }
            Early::Rts { id, addr, len } => self.pull(c, r, id, addr, len),
            Early::Staged { msg, .. } => self.match_staged(r, msg),
        }
    }

    /// Pulls message `id` (`len` bytes at the sender's `addr`) into `r`, then answers the
    /// sender.
    fn pull(&self, c: &Conn, r: PostedRecv, id: u64, addr: u64, len: u64) {
        if len > r.cap as u64 {
            self.reply(c, id, Status::Truncated, 0);
            truncate(&r, len);
            return;
        } else if r.op.begin_io() {
            self.sync_peer_maps(c);
            let maps = c.peer_maps.read();
            let res = if let Some(src) = maps.translate(addr, len) {
                // SAFETY: src..src+len lies inside our mapping of the sender's allocation
                // (translate, kept mapped by the read lock); the receive buffer holds cap >= len bytes and stays the
                // receiver's while begin_io holds.
                unsafe {
                    std::ptr::copy_nonoverlapping(src as *const u8, r.ptr as *mut u8, len as usize)
                };
                Ok(())
            } else {
                self.stats.cma.fetch_add(1, Ordering::Relaxed);
                // SAFETY: the receive buffer is writable for cap >= len bytes (the
                // receiver's promise) and stays so while begin_io holds.
                unsafe { cma::read_from(c.peer_pid, r.ptr as *mut u8, addr, len as usize) }
            };
            drop(maps);
            r.op.end_io();
            match res {
                Ok(()) => {
                    // reply first: the receiver may exit as soon as it sees its data
                    self.reply(c, id, Status::Ok, 0);
                    r.op.set_nbytes(len);
                    r.op.part_done(Status::Ok, None);
                    return;
                }
                Err(en) => {
                    let (s, msg) = cma::errno_status(en, &self.stats.cma_eperm);
                    self.reply(c, id, s, 0);
                    r.op.finish(s, Some(msg));
                    return;
                }
            }
        }
        // the receive was cancelled after it was matched: the message waits for
        // the next one instead of being lost
        self.requeue(c, Early::Rts { id, addr, len });
    }
}

/// Copies a whole message into a receive (or fails it as truncated). False when the
/// receive ended (cancelled, timed out) before the copy: the message is still unreceived.
pub(super) fn copy_into_recv(r: &PostedRecv, v: &[u8]) -> bool {
    if v.len() > r.cap {
        truncate(r, v.len() as u64);
        return true;
    }
    if r.op.begin_io() {
        // SAFETY: the receive buffer holds cap >= v.len() bytes (the receiver's promise)
        // and stays the receiver's while begin_io holds.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), r.ptr as *mut u8, v.len()) };
        r.op.end_io();
        r.op.set_nbytes(v.len() as u64);
        r.op.part_done(Status::Ok, None);
        return true;
    }
    false
}

/// Fails a receive whose buffer is smaller than its `len`-byte message.
pub(super) fn truncate(r: &PostedRecv, len: u64) {
    r.op.set_nbytes(len);
    r.op.finish(
        Status::Truncated,
        Some(format!(
            "message of {len} bytes does not fit the {}-byte receive buffer",
            r.cap
        )),
    );
}
