//! Submission, the initiator's side of an operation: one-sided `read`/`write` (a memcpy
//! into the peer's mapped allocation where the target's table permits it; otherwise a
//! request the target checks, moved by cross-memory attach or in bounce-slot chunks),
//! and `send` (inline in the ring, pulled by the receiver, or in chunks).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::conn::Conn;
use super::device::Part;
use super::mappings::PeerMappings;
use super::pending::{Agg, Pending};
use super::progress::PushMode;
use super::ring::{kind, Entry, INLINE_CAP, SLOT_SIZE};
use super::state::Inner;
use super::window;
use crate::engine::Deadline;
use crate::error::{Error, Result, Status};
use crate::future::Future;
use crate::transport::{Assignment, PeerView};

/// Registers one more part of `agg`, awaiting the peer's reply; returns its request id.
fn add_part(c: &Conn, agg: &Arc<Agg>, part: impl FnOnce(Arc<Agg>) -> Pending) -> u64 {
    let id = c.next_id.fetch_add(1, Ordering::Relaxed);
    agg.remaining.fetch_add(1, Ordering::AcqRel);
    c.pending.lock().insert(id, part(agg.clone()));
    id
}

impl Inner {
    /// Pushes request `e` (part `e.id` of `agg`, already pending). If the push fails and
    /// the part is still ours, its bounce slot (if any) is freed and the part fails.
    fn push_part(&self, c: &Conn, e: &Entry, agg: &Agg, deadline: Deadline) -> Result<()> {
        let r = self.push(c, e, PushMode::Wait(deadline));
        if let Err(er) = &r {
            let p = c.pending.lock().remove(&e.id);
            if let Some(p) = p {
                if let Some(s) = p.slot() {
                    self.free_slot(c, s);
                }
                agg.part(self, er.status(), er.message());
            }
        }
        r
    }

    /// The submitter's own part of `agg`: done issuing, with the error that stopped it.
    fn submitted(&self, agg: &Agg, failure: Option<Error>) {
        match failure {
            Some(e) => agg.part(self, e.status(), e.message()),
            None => agg.part(self, Status::Ok, ""),
        }
    }

    /// One assignment, checked: the local pointer (a device address for a staged
    /// region, with its copier), the remote address, key and length.
    fn checked(&self, a: &Assignment) -> Result<Part> {
        let (r, lptr) = self
            .pool
            .local_range_or_staged(a.local, a.local_offset, a.length)?;
        let (raddr, key) = self
            .remote
            .remote_range(a.remote, a.remote_offset, a.length)?;
        Ok(Part {
            lptr,
            raddr,
            key,
            len: a.length,
            local: r.staged.as_ref().map(|s| s.copier().clone()),
        })
    }

    /// `read`, `write` and `write_with_imm` (`imm`).
    pub fn rw(
        self: &Arc<Self>,
        assignments: &[Assignment],
        write: bool,
        imm: Option<i32>,
        timeout: Option<Duration>,
    ) -> Result<Future> {
        let c = self.conn()?;
        // Regions registered since the last publication (ours may be the target of the
        // peer's next operation).
        self.publish_regions(c);
        // Check everything before touching any memory. One assignment (the common case)
        // needs no list.
        if let [a] = assignments {
            let part = self.checked(a)?;
            return self.issue(c, std::iter::once(part), a.length, write, imm, timeout);
        }
        let plan = assignments
            .iter()
            .map(|a| self.checked(a))
            .collect::<Result<Vec<_>>>()?;
        let total = plan.iter().map(|p| p.len).sum();
        self.issue(c, plan.into_iter(), total, write, imm, timeout)
    }

    /// `f` on our mappings of the peer's allocations, when the peer's table permits
    /// `[raddr, raddr+len)` with `key` (the announcements the table counts applied
    /// first); `None` when it does not or `f` finds no mapping.
    fn with_permitted<R>(
        &self,
        c: &Conn,
        raddr: u64,
        len: u64,
        key: u64,
        f: impl FnOnce(&PeerMappings) -> Option<R>,
    ) -> Option<R> {
        // SAFETY: the peer table lies in the segment the Conn keeps mapped; `permits`
        // reads it under the peer's seqlock and treats every value as untrusted.
        if !unsafe { (*c.peer_table).permits(raddr, len, key) } {
            return None;
        }
        self.sync_peer_maps(c);
        f(&c.peer_maps.read())
    }

    /// [`crate::Endpoint::peer_view`]: the peer's range, mapped here, if its table
    /// permits it.
    pub fn peer_view(&self, addr: u64, len: u64, key: u64) -> Option<PeerView> {
        let c = self.conn().ok()?;
        let (p, keep) = self.with_permitted(c, addr, len, key, |maps| maps.view(addr, len))?;
        // SAFETY: `p` is `len` bytes inside our read-write mapping of the peer's
        // allocation (view), which `keep` keeps mapped.
        Some(unsafe { PeerView::new(p, len as usize, keep) })
    }

    /// Moves the checked parts of one operation. Parts the peer's table permits are
    /// copied here and now; the operation's state exists only once a part needs the
    /// peer (an operation done entirely here is a ready future: no allocation). Its
    /// `nbytes` is `total`, the bytes of every part.
    fn issue(
        &self,
        c: &Conn,
        plan: impl Iterator<Item = Part>,
        total: u64,
        write: bool,
        imm: Option<i32>,
        timeout: Option<Duration>,
    ) -> Result<Future> {
        let mut pending: Option<(Arc<Agg>, Deadline)> = None;
        let mut failure: Option<Error> = None;
        'outer: for part in plan {
            let (lptr, raddr, key, len) = (part.lptr, part.raddr, part.key, part.len);
            if len == 0 {
                continue;
            }
            // SAFETY: the peer table lies in the segment the Conn keeps mapped; `permits`
            // reads it under the peer's seqlock and treats every value as untrusted.
            let permitted = unsafe { (*c.peer_table).permits(raddr, len, key) };
            if permitted {
                self.sync_peer_maps(c);
            }
            let staged = self.staged_part(c, &part);
            if permitted && staged {
                match self.staged_direct(c, &part, write) {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(er) => {
                        failure = Some(er);
                        break;
                    }
                }
            } else if permitted {
                let maps = c.peer_maps.read();
                if let Some(p) = maps.translate(raddr, len) {
                    // SAFETY: the local range was checked against our pool above; the remote
                    // range lies inside our mapping of the peer's allocation (translate,
                    // kept mapped by the read lock; every announcement the table counts
                    // was applied) and inside a region the peer published with this key
                    // (permits). The two mappings are distinct, so the ranges do not
                    // overlap.
                    unsafe {
                        if write {
                            std::ptr::copy_nonoverlapping(lptr as *const u8, p, len as usize);
                        } else {
                            std::ptr::copy_nonoverlapping(p as *const u8, lptr, len as usize);
                        }
                    }
                    self.stats.fast_path.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            let (agg, deadline) = &*pending.get_or_insert_with(|| {
                let op = self.new_op(1, timeout);
                op.set_nbytes(total);
                let deadline = op.deadline();
                (Agg::new(op, imm), deadline)
            });
            let deadline = *deadline;
            if !c.staged && !staged {
                let mut e;
                if write {
                    e = Entry::new(kind::WRITE);
                    e.a = lptr as u64;
                    e.b = raddr;
                    e.id = add_part(c, agg, |agg| Pending::Part { agg, slot: None });
                } else {
                    e = Entry::new(kind::READ);
                    e.a = raddr;
                    e.id = add_part(c, agg, |agg| Pending::ReadGrant {
                        agg,
                        remote: raddr,
                        local: lptr as usize,
                        len: len as usize,
                    });
                }
                e.n = len;
                e.key = key;
                if let Err(er) = self.push_part(c, &e, agg, deadline) {
                    failure = Some(er);
                    break;
                }
                continue;
            }
            let mut off = 0u64;
            while off < len {
                let clen = (len - off).min(SLOT_SIZE as u64);
                let slot = match self.acquire_slot(c, deadline) {
                    Ok(s) => s,
                    Err(er) => {
                        failure = Some(er);
                        break 'outer;
                    }
                };
                let mut e;
                if write {
                    // SAFETY: the slot is ours until the target's reply frees it and holds
                    // SLOT_SIZE >= clen bytes; the source lies inside the local range
                    // checked above (off + clen <= len), reached through its copier when
                    // it is staged.
                    let copied = unsafe {
                        match &part.local {
                            Some(cp) => cp.copy_to_host(
                                lptr as usize + off as usize,
                                c.my_slot(slot),
                                clen as usize,
                            ),
                            None => {
                                std::ptr::copy_nonoverlapping(
                                    lptr.add(off as usize),
                                    c.my_slot(slot),
                                    clen as usize,
                                );
                                Ok(())
                            }
                        }
                    };
                    if let Err(er) = copied {
                        self.free_slot(c, slot);
                        failure = Some(er);
                        break 'outer;
                    }
                    e = Entry::new(kind::ST_WRITE);
                    e.b = raddr + off;
                    e.id = add_part(c, agg, |agg| Pending::Part {
                        agg,
                        slot: Some(slot),
                    });
                } else {
                    e = Entry::new(kind::ST_READ);
                    e.a = raddr + off;
                    e.id = add_part(c, agg, |agg| Pending::StRead {
                        agg,
                        local: lptr as usize + off as usize,
                        len: clen as usize,
                        slot,
                        copier: part.local.clone(),
                    });
                }
                e.len = clen as u32;
                e.key = key;
                e.slot = slot as u16;
                self.stats.staged_chunks.fetch_add(1, Ordering::Relaxed);
                if let Err(er) = self.push_part(c, &e, agg, deadline) {
                    failure = Some(er);
                    break 'outer;
                }
                off += clen;
            }
        }
        if let Some((agg, _)) = pending {
            self.submitted(&agg, failure);
            return Ok(Future::new(agg.op.clone()));
        }
        if let Some(er) = failure {
            // A direct (device) copy failed before any part needed the peer.
            let op = self.new_op(1, timeout);
            op.part_done(er.status(), Some(er.message()));
            return Ok(Future::new(op));
        }
        // Every byte is at the target: done, but for the notification (sent as the last
        // part of an Agg would send it).
        if let Some(imm) = imm {
            if let Err(er) = self.notify_imm(imm) {
                let op = self.new_op(1, timeout);
                op.part_done(er.status(), Some(er.message()));
                return Ok(Future::new(op));
            }
        }
        Ok(Future::ready(total))
    }

    /// `send`.
    ///
    /// # Safety
    /// As for [`crate::Endpoint::send`]: `[ptr, ptr+len)` stays valid and unmodified until
    /// the future completes.
    pub unsafe fn send(
        self: &Arc<Self>,
        ptr: *const u8,
        len: usize,
        timeout: Option<Duration>,
    ) -> Result<Future> {
        let c = self.conn()?;
        if ptr.is_null() && len > 0 {
            return Err(Error::new(Status::NullParameter, "send: null buffer"));
        }
        // What the message may announce (an RPC session's mailbox, say) is published
        // before the peer can read it.
        self.publish_regions(c);
        if len <= INLINE_CAP {
            // Complete once it is in the ring: nothing to track, cancel or time out.
            let mut e = Entry::new(kind::MSG);
            e.len = len as u32;
            if len > 0 {
                // SAFETY: the caller's buffer, non-null here and `len` bytes long.
                e.data[..len].copy_from_slice(unsafe { std::slice::from_raw_parts(ptr, len) });
            }
            let timeout = timeout.unwrap_or(self.cfg.engine.default_timeout);
            let charge = window::charge(0);
            let mode = match self.reserve_early(c, charge, None, timeout)? {
                Some(d) => PushMode::Wait(d),
                None => PushMode::WaitUpTo(timeout),
            };
            if let Err(er) = self.push(c, &e, mode) {
                self.unreserve_early(c, charge);
                return Err(er);
            }
            return Ok(Future::ready(len as u64));
        }
        // Larger messages are read later (pulled by the receiver through the kernel, or
        // copied into slots here): a source that is not mapped is refused now, rather
        // than failing the receiver's pull (or faulting in the copy). One msync, next
        // to a copy of more than INLINE_CAP bytes.
        if !crate::memory::mapped::is_mapped(ptr as usize, len) {
            return Err(Error::invalid(format!(
                "send data [{:#x}, +{len}) is not readable memory of this process (not mapped)",
                ptr as usize
            )));
        }
        let op = self.new_op(1, timeout);
        let deadline = op.deadline();
        let agg = Agg::new(op.clone(), None);
        let mut failure: Option<Error> = None;
        if !c.staged {
            // The receiver pulls from our buffer: if it is shared memory, make sure the
            // peer maps this allocation (and not a freed one at the same address).
            self.announce_allocation_of(c, ptr as usize, len);
            let charge = window::charge(0);
            match self.reserve_early(c, charge, Some(deadline), Duration::ZERO) {
                Err(er) => failure = Some(er),
                Ok(_) => {
                    let mut e = Entry::new(kind::RTS);
                    e.id = add_part(c, &agg, |agg| Pending::Part { agg, slot: None });
                    e.a = ptr as u64;
                    e.n = len as u64;
                    if let Err(er) = self.push_part(c, &e, &agg, deadline) {
                        self.unreserve_early(c, charge);
                        failure = Some(er);
                    }
                }
            }
        } else if let Err(er) = self.reserve_early(
            c,
            window::charge(len as u64),
            Some(deadline),
            Duration::ZERO,
        ) {
            failure = Some(er);
        } else {
            let msg = c.next_id.fetch_add(1, Ordering::Relaxed);
            let mut off = 0usize;
            while off < len {
                let clen = (len - off).min(SLOT_SIZE);
                let slot = match self.acquire_slot(c, deadline) {
                    Ok(s) => s,
                    Err(er) => {
                        if off == 0 {
                            self.unreserve_early(c, window::charge(len as u64));
                        }
                        failure = Some(er);
                        break;
                    }
                };
                // SAFETY: the slot is ours until the receiver's reply frees it and holds
                // SLOT_SIZE >= clen bytes; off + clen <= len bytes of the caller's buffer.
                unsafe { std::ptr::copy_nonoverlapping(ptr.add(off), c.my_slot(slot), clen) };
                let mut e = Entry::new(kind::ST_MSG);
                e.id = add_part(c, &agg, |agg| Pending::Part {
                    agg,
                    slot: Some(slot),
                });
                e.b = msg;
                e.n = len as u64;
                e.c = off as u64;
                e.len = clen as u32;
                e.slot = slot as u16;
                self.stats.staged_chunks.fetch_add(1, Ordering::Relaxed);
                if let Err(er) = self.push_part(c, &e, &agg, deadline) {
                    // the message's charge is the receiver's once its first chunk is
                    if off == 0 {
                        self.unreserve_early(c, window::charge(len as u64));
                    }
                    failure = Some(er);
                    break;
                }
                off += clen;
            }
        }
        op.set_nbytes(len as u64);
        self.submitted(&agg, failure);
        Ok(Future::new(op))
    }
}
