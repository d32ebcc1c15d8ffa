//! Staged messages (the bounce-slot path of send/recv): chunks arrive in the peer's slots
//! and are copied straight into the matched receive, or into a buffer while no receive
//! is posted. A message is matched (FIFO) by its first chunk.

use std::sync::atomic::Ordering;

use super::conn::Conn;
use super::recv::{copy_into_recv, truncate, Early};
use super::ring::Entry;
use super::state::Inner;
use super::window::Arrival;
use crate::error::Status;
use crate::transport::matching::PostedRecv;

/// Where a staged message's chunks go.
pub(super) enum Sink {
    /// Into the receive it was matched with.
    Direct(PostedRecv),
    /// Into a buffer: no receive yet, or one matched before the last chunk arrived.
    Buffer(Vec<u8>, Option<PostedRecv>),
    /// Nowhere (truncated, or too large to buffer).
    Discard,
}

/// A staged message being reassembled.
pub(super) struct Assembly {
    total: u64,
    got: u64,
    sink: Sink,
}

impl Inner {
    /// One chunk (`ST_MSG`): `e.len` bytes at offset `e.c` of message `e.b` (`e.n` bytes
    /// in all), in the peer's slot `e.slot`.
    pub fn staged_chunk(&self, c: &Conn, e: &Entry) {
        self.stats.staged_chunks.fetch_add(1, Ordering::Relaxed);
        let msg = e.b;
        let mut asm = self.assemblies.lock();
        if e.c == 0 && !asm.contains_key(&msg) {
            // First chunk: match it now (FIFO by first chunk), holding the assembly
            // lock so a receive that matches it concurrently finds the assembly.
            let sink = match self.arrive(c, Early::Staged { msg, len: e.n }) {
                Arrival::Matched(r, _) => {
                    if e.n > r.cap as u64 {
                        truncate(&r, e.n);
                        Sink::Discard
                    } else {
                        Sink::Direct(r)
                    }
                }
                Arrival::Refused => {
                    eprintln!(
                        "dlslime shm: a {}-byte message beyond the early-message window; dropped",
                        e.n
                    );
                    Sink::Discard
                }
                Arrival::Queued => {
                    let mut v = Vec::new();
                    if v.try_reserve_exact(e.n as usize).is_err() {
                        crate::warn_log!(
                            "shm: cannot buffer a {}-byte early message; dropped",
                            e.n
                        );
                        Sink::Discard
                    } else {
                        v.resize(e.n as usize, 0);
                        Sink::Buffer(v, None)
                    }
                }
            };
            asm.insert(
                msg,
                Assembly {
                    total: e.n,
                    got: 0,
                    sink,
                },
            );
        }
        let Some(a) = asm.get_mut(&msg) else {
            drop(asm);
            self.reject(e, "chunk of an unknown message");
            return;
        };
        if e.n != a.total {
            return;
        }
        // validate() checked slot < NSLOTS, len <= SLOT_SIZE and c + len <= n (== total).
        let src = c.peer_slot(e.slot.into()) as *const u8;
        let len = e.len as usize;
        match &mut a.sink {
            Sink::Direct(r) => {
                if r.op.begin_io() {
                    // SAFETY: the peer's slot holds len bytes; the destination is
                    // c..c+len of a receive buffer of cap >= total bytes, the receiver's
                    // while begin_io holds. Raw copies: no reference is formed to slot
                    // memory the peer may still write.
                    unsafe {
                        std::ptr::copy_nonoverlapping(src, (r.ptr + e.c as usize) as *mut u8, len)
                    };
                    r.op.end_io();
                }
            }
            Sink::Buffer(v, _) => {
                let dst = &mut v[e.c as usize..e.c as usize + len];
                // SAFETY: the peer's slot holds len bytes; dst is exactly len bytes.
                unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), len) };
            }
            Sink::Discard => {}
        }
        a.got += e.len as u64;
        if a.got >= a.total {
            let total = a.total;
            let matched = !matches!(a.sink, Sink::Buffer(_, None));
            if matched {
                let a = asm.remove(&msg).unwrap();
                match a.sink {
                    Sink::Direct(r) => {
                        r.op.set_nbytes(total);
                        r.op.part_done(Status::Ok, None);
                    }
                    Sink::Buffer(v, Some(r)) => {
                        copy_into_recv(&r, &v);
                    }
                    _ => {}
                }
            }
        }
    }

    /// A receive matched with staged message `msg` that arrived before it: delivered now
    /// when complete, else when its last chunk arrives.
    pub fn match_staged(&self, r: PostedRecv, msg: u64) {
        let mut asm = self.assemblies.lock();
        let Some(a) = asm.get_mut(&msg) else {
            r.op.finish(Status::Internal, Some("staged message lost".into()));
            return;
        };
        let done = a.got == a.total;
        match std::mem::replace(&mut a.sink, Sink::Discard) {
            Sink::Buffer(v, None) => {
                if a.total > r.cap as u64 {
                    truncate(&r, a.total);
                } else if done {
                    copy_into_recv(&r, &v);
                } else {
                    a.sink = Sink::Buffer(v, Some(r));
                }
            }
            other => {
                a.sink = other;
                r.op.finish(
                    Status::Internal,
                    Some("staged message matched twice".into()),
                );
            }
        }
        if done {
            asm.remove(&msg);
        }
    }

    /// Fails the receives waiting on staged messages and forgets the messages.
    pub fn abort_assemblies(&self, status: Status, msg: &str) {
        for (_, a) in self.assemblies.lock().drain() {
            match a.sink {
                Sink::Direct(r) | Sink::Buffer(_, Some(r)) => {
                    r.op.abort(status, msg);
                }
                _ => {}
            }
        }
    }
}
