//! Our requests in flight: what each part waits for (`Pending`), the operation the parts
//! add up to (`Agg`), and completing them when the peer's `DONE` arrives.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::cma;
use super::conn::Conn;
use super::progress::PushMode;
use super::ring::{kind, Entry};
use super::state::{Inner, PEER_GONE};
use crate::error::{Result, Status};
use crate::future::OpState;
use crate::memory::device::Copier;

/// One operation's parts in flight; the last part to report completes it (and, for
/// write_with_imm, sends the notification first, only if every part succeeded).
pub(super) struct Agg {
    pub op: Arc<OpState>,
    /// Parts not yet reported, plus one held by the submitter until it has issued them all.
    pub remaining: AtomicU32,
    err: Mutex<Option<(Status, String)>>,
    imm: Option<i32>,
}

/// A request of ours awaiting the peer's `DONE`.
pub(super) enum Pending {
    /// A write, a pulled message, or a staged write/message chunk (holding `slot`).
    Part { agg: Arc<Agg>, slot: Option<u32> },
    /// A read the target has checked; we pull the bytes by cross-memory attach.
    ReadGrant {
        agg: Arc<Agg>,
        remote: u64,
        local: usize,
        len: usize,
    },
    /// A staged read: the target fills our `slot`, we copy it to `local`.
    StRead {
        agg: Arc<Agg>,
        local: usize,
        len: usize,
        slot: u32,
        /// The local region's copier when it is staged (device memory).
        copier: Option<Arc<dyn Copier>>,
    },
}

impl Pending {
    pub fn agg(&self) -> &Arc<Agg> {
        match self {
            Pending::Part { agg, .. }
            | Pending::ReadGrant { agg, .. }
            | Pending::StRead { agg, .. } => agg,
        }
    }

    /// The bounce slot the request holds, if any.
    pub fn slot(&self) -> Option<u32> {
        match self {
            Pending::Part { slot, .. } => *slot,
            Pending::StRead { slot, .. } => Some(*slot),
            Pending::ReadGrant { .. } => None,
        }
    }
}

/// The message a failure status from the peer's `DONE` carries.
fn status_message(s: Status) -> &'static str {
    match s {
        Status::RemoteAccess => {
            "the target refused the range: outside its registered regions or a wrong key"
        }
        Status::PeerDisconnected => PEER_GONE,
        Status::Io => "the target could not copy the data (see its log)",
        _ => s.as_str(),
    }
}

impl Agg {
    /// An operation with the submitter's part only; each request adds one.
    pub fn new(op: Arc<OpState>, imm: Option<i32>) -> Arc<Agg> {
        Arc::new(Agg {
            op,
            remaining: AtomicU32::new(1),
            err: Mutex::new(None),
            imm,
        })
    }

    /// Reports one part; the first failure is the operation's.
    pub fn part(&self, inner: &Inner, st: Status, msg: &str) {
        if !st.is_ok() {
            let mut g = self.err.lock();
            if g.is_none() {
                *g = Some((st, msg.to_string()));
            }
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let e = self.err.lock().take();
            match e {
                None => {
                    if let Some(imm) = self.imm {
                        if let Err(er) = inner.notify_imm(imm) {
                            self.op.part_done(er.status(), Some(er.message()));
                            return;
                        }
                    }
                    self.op.part_done(Status::Ok, None);
                }
                Some((s, m)) => self.op.part_done(s, Some(&m)),
            }
        }
    }
}

impl Inner {
    /// The notification of a `write_with_imm` whose parts have all reached the target.
    /// Never blocks (progress handlers call it): queued behind what already waits.
    pub fn notify_imm(&self, imm: i32) -> Result<()> {
        let mut n = Entry::new(kind::IMM);
        n.imm = imm;
        self.push(self.conn()?, &n, PushMode::Backlog)
    }

    /// The peer's `DONE` for one of our requests.
    pub fn complete(&self, c: &Conn, e: &Entry) {
        let Some(p) = c.pending.lock().remove(&e.id) else {
            self.reject(e, "completion for an unknown request");
            return;
        };
        let st = e.done_status();
        let msg = status_message(st);
        match p {
            Pending::Part { agg, slot } => {
                if let Some(s) = slot {
                    self.free_slot(c, s);
                }
                agg.part(self, st, msg);
            }
            Pending::ReadGrant {
                agg,
                remote,
                local,
                len,
            } => {
                if !st.is_ok() {
                    agg.part(self, st, msg);
                } else if !agg.op.begin_io() {
                    agg.part(
                        self,
                        Status::Cancelled,
                        "operation ended before the data arrived",
                    );
                } else {
                    self.stats.cma.fetch_add(1, Ordering::Relaxed);
                    // SAFETY: `local..local+len` was checked against our pool at submission
                    // and begin_io keeps the operation (and so its buffer) alive meanwhile.
                    let r = unsafe { cma::read_from(c.peer_pid, local as *mut u8, remote, len) };
                    agg.op.end_io();
                    match r {
                        Ok(()) => agg.part(self, Status::Ok, ""),
                        Err(en) => {
                            let (s, m) = cma::errno_status(en, &self.stats.cma_eperm);
                            agg.part(self, s, &m);
                        }
                    }
                }
            }
            Pending::StRead {
                agg,
                local,
                len,
                slot,
                copier,
            } => {
                let mut st = st;
                let mut msg = msg;
                if st.is_ok() && agg.op.begin_io() {
                    // SAFETY: our slot (len <= SLOT_SIZE, chunked at submission), filled by
                    // the target and ours until freed below; `local..local+len` was checked
                    // against our pool (reached through its copier when staged) and
                    // begin_io keeps it alive.
                    let r = unsafe {
                        match &copier {
                            Some(cp) => cp.copy_from_host(c.my_slot(slot), local, len),
                            None => {
                                std::ptr::copy_nonoverlapping(
                                    c.my_slot(slot),
                                    local as *mut u8,
                                    len,
                                );
                                Ok(())
                            }
                        }
                    };
                    agg.op.end_io();
                    if r.is_err() {
                        st = Status::Io;
                        msg = "copying the read chunk into the local (device) region failed";
                    }
                }
                self.free_slot(c, slot);
                agg.part(self, st, msg);
            }
        }
    }
}
