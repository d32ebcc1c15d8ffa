//! [`Ring`]: the producer's writes and the local readers over one shared region.
//!
//! * Producer: [`Ring::write_raw`] / [`Ring::write`] / [`Ring::write_with`] always write
//!   slot `write_idx % N` (never skipping ahead). A READY slot there is overwritten and
//!   counted in `drops` (the original's policy), or refused with `SlotBusy` when
//!   overwriting is off; a slot being read or written is refused with `SlotBusy` (unless
//!   its owner is dead or its lease expired: then it is reclaimed first). The copy runs
//!   outside any lock: only the claim and the publish are CAS operations.
//! * Local readers: [`Ring::read`], [`Ring::read_into`], [`Ring::try_read`] and
//!   [`Ring::read_view`] take a [`SlotRef`]; a reference whose generation is gone fails
//!   with `StaleSlot`.
//! * Remote readers go through a [`RingServer`](super::RingServer), which uses the same
//!   grant/finish calls with a lease.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::layout::{self, counter, Geometry, RingHeader, FLAG_OVERWRITE, SLOTS_OFFSET};
use super::metrics::RingMetrics;
use super::owner::{lease_until, owner_gone};
use super::reference::SlotRef;
use super::region::{RingHandle, RingRegion, HANDLE_TYPE};
use super::slot::{Claim, CommitState, Finish, Grant, SlotHeader, SlotState};
use crate::error::{Error, Result, Status};

/// How long a slot may sit in READING/WRITING with an owner that never recorded itself
/// (its process died between the CAS and the next store) before it is reclaimed.
const UNRECORDED_GRACE: Duration = Duration::from_secs(2);

/// How a ring is made.
#[derive(Clone, Debug)]
pub struct RingConfig {
    /// The producer's name (`buffer_name`): how servers and clients address the ring.
    /// 1..=64 bytes. Empty: `ring-<pid>-<n>`.
    pub name: String,
    /// Slots (the original's `max_entries`).
    pub slot_count: usize,
    /// Payload bytes per slot (the original's `entry_size`).
    pub slot_capacity: usize,
    /// Overwrite READY slots nobody consumed when the producer comes round (counted in
    /// `drops`); false: such a write fails with `SlotBusy`.
    pub overwrite: bool,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            name: String::new(),
            slot_count: 64,
            slot_capacity: 64 << 10,
            overwrite: true,
        }
    }
}

/// A ring of fixed-size slots in shared memory. Thread-safe; any number of processes of
/// the host may map the same ring ([`Ring::attach`]) and all obey its state machine.
pub struct Ring {
    region: RingRegion,
    geo: Geometry,
    overwrite: bool,
    name: String,
    pid: u32,
    /// Slots seen held by an attempt that never recorded its owner: (word, first seen).
    unrecorded: Mutex<HashMap<u32, (u64, Instant)>>,
}

fn next_name() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "ring-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Ring {
    /// Creates a ring in a new shared allocation (all slots FREE).
    pub fn create(cfg: &RingConfig) -> Result<Arc<Ring>> {
        let geo = Geometry::new(cfg.slot_count as u64, cfg.slot_capacity as u64)?;
        let name = if cfg.name.is_empty() {
            next_name()
        } else {
            cfg.name.clone()
        };
        let region = RingRegion::create(geo.total_len as usize)?;
        let flags = if cfg.overwrite { FLAG_OVERWRITE } else { 0 };
        // SAFETY: a fresh zeroed mapping (page-aligned) of at least total_len bytes, not
        // shared yet.
        unsafe { layout::init(region.base(), &geo, &name, flags)? };
        Ok(Arc::new(Ring {
            region,
            geo,
            overwrite: cfg.overwrite,
            name,
            pid: std::process::id(),
            unrecorded: Mutex::new(HashMap::new()),
        }))
    }

    /// Maps a ring another process of this host created (or attached), from its handle.
    pub fn attach(handle: &RingHandle) -> Result<Arc<Ring>> {
        let region = RingRegion::open(handle)?;
        // SAFETY: the start of a mapping (page-aligned) of region.len() bytes.
        let (geo, flags, name) = unsafe { layout::check(region.base(), region.len() as u64)? };
        Ok(Arc::new(Ring {
            region,
            geo,
            overwrite: flags & FLAG_OVERWRITE != 0,
            name,
            pid: std::process::id(),
            unrecorded: Mutex::new(HashMap::new()),
        }))
    }

    /// What another process of this host needs to [`Ring::attach`] (valid while this
    /// process keeps the ring).
    pub fn handle(&self) -> RingHandle {
        RingHandle {
            kind: HANDLE_TYPE.into(),
            buffer_name: self.name.clone(),
            max_entries: self.geo.slot_count,
            entry_size: self.geo.capacity,
            node_id: crate::host::name(),
            host_id: crate::host::identity(),
            pid: self.pid,
            fd: self.region.fd(),
            len: self.region.len() as u64,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn slot_count(&self) -> usize {
        self.geo.slot_count as usize
    }

    pub fn slot_capacity(&self) -> usize {
        self.geo.capacity as usize
    }

    pub fn overwrite(&self) -> bool {
        self.overwrite
    }

    /// The payload area (what servers register with endpoints): `(address, length)`.
    pub fn data_region(&self) -> (*mut u8, usize) {
        // SAFETY: data_offset < total_len <= the mapping's length.
        let p = unsafe { self.region.base().add(self.geo.data_offset as usize) };
        (p, (self.geo.stride * self.geo.slot_count) as usize)
    }

    /// Offset of slot `i`'s payload in [`Ring::data_region`].
    pub fn payload_offset(&self, slot: u32) -> u64 {
        u64::from(slot) * self.geo.stride
    }

    fn header(&self) -> &RingHeader {
        // SAFETY: the mapping starts with a checked RingHeader and outlives self.
        unsafe { &*(self.region.base() as *const RingHeader) }
    }

    fn slot(&self, i: u32) -> &SlotHeader {
        debug_assert!(u64::from(i) < self.geo.slot_count);
        let off = SLOTS_OFFSET + i as usize * layout::SLOT_HEADER_LEN;
        // SAFETY: slot headers lie inside the checked geometry, 64-byte aligned.
        unsafe { &*(self.region.base().add(off) as *const SlotHeader) }
    }

    fn payload(&self, i: u32) -> *mut u8 {
        // SAFETY: inside the data area of the checked geometry.
        unsafe { self.data_region().0.add(self.payload_offset(i) as usize) }
    }

    pub(crate) fn count(&self, c: usize, n: u64) {
        self.header().counters[c].fetch_add(n, Ordering::Relaxed);
    }

    fn ready_add(&self, up: bool) {
        let r = &self.header().ready_count;
        if up {
            r.fetch_add(1, Ordering::AcqRel);
        } else {
            r.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn token(&self) -> u32 {
        loop {
            let t = self.header().next_token.fetch_add(1, Ordering::Relaxed);
            if t != 0 {
                return t;
            }
        }
    }

    /// Slots in READY (a counter every transition keeps, not a scan).
    pub fn ready_count(&self) -> u64 {
        self.header().ready_count.load(Ordering::Acquire)
    }

    /// True when every slot holds an unconsumed payload.
    pub fn is_full(&self) -> bool {
        self.ready_count() >= self.geo.slot_count
    }

    /// The generation the next write will get.
    pub fn write_index(&self) -> u64 {
        self.header().write_idx.load(Ordering::Acquire)
    }

    pub fn metrics(&self) -> RingMetrics {
        RingMetrics::load(&self.header().counters, self.ready_count())
    }

    pub fn slot_state(&self, slot: u32) -> Result<SlotState> {
        self.check_index(slot)?;
        Ok(self.slot(slot).word().state())
    }

    pub fn slot_states(&self) -> Vec<SlotState> {
        (0..self.geo.slot_count as u32)
            .map(|i| self.slot(i).word().state())
            .collect()
    }

    /// The reference of the READY payload in slot `i`, if there is one now.
    pub fn slot_ref(&self, slot: u32) -> Result<Option<SlotRef>> {
        self.check_index(slot)?;
        let s = self.slot(slot);
        let w = s.word();
        if w.state() != SlotState::Ready {
            return Ok(None);
        }
        let g = s.generation();
        Ok((s.word() == w).then_some(SlotRef::new(slot, g)))
    }

    /// References of every READY payload (the original's `get_ready_indices`), oldest
    /// first.
    pub fn ready_slots(&self) -> Vec<SlotRef> {
        let mut v: Vec<SlotRef> = (0..self.geo.slot_count as u32)
            .filter_map(|i| self.slot_ref(i).ok().flatten())
            .collect();
        v.sort_by_key(|r| r.generation);
        v
    }

    fn check_index(&self, slot: u32) -> Result<()> {
        if u64::from(slot) >= self.geo.slot_count {
            return Err(Error::new(
                Status::OutOfRange,
                format!("slot {slot} of a ring of {} slots", self.geo.slot_count),
            ));
        }
        Ok(())
    }

    /// Writes `data` (at most the slot capacity) into the next slot.
    pub fn write_raw(&self, data: &[u8]) -> Result<SlotRef> {
        self.write_with(data.len(), |buf| {
            buf.copy_from_slice(data);
            Ok(())
        })
    }

    /// Writes `parts` back to back into the next slot (one payload: a schema's tensors).
    pub fn write(&self, parts: &[&[u8]]) -> Result<SlotRef> {
        let len = parts
            .iter()
            .try_fold(0usize, |a, p| a.checked_add(p.len()))
            .ok_or_else(|| Error::invalid("payload length overflows"))?;
        self.write_with(len, |buf| {
            let mut at = 0;
            for p in parts {
                buf[at..at + p.len()].copy_from_slice(p);
                at += p.len();
            }
            Ok(())
        })
    }

    /// Claims the next slot, lets `fill` write `len` payload bytes in place, publishes
    /// them. If `fill` fails, the slot is left FREE and its error returned.
    pub fn write_with(
        &self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<SlotRef> {
        self.write_with_policy(len, self.overwrite, fill)
    }

    /// [`Ring::write_with`] with this write's own overwrite policy (the original's
    /// `overwrite_if_full` argument).
    pub fn write_with_policy(
        &self,
        len: usize,
        overwrite: bool,
        fill: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<SlotRef> {
        if len as u64 > self.geo.capacity {
            return Err(Error::invalid(format!(
                "payload of {len} bytes exceeds the slot capacity of {} bytes",
                self.geo.capacity
            )));
        }
        let (g, tok) = self.claim(overwrite)?;
        let n = self.geo.slot_count;
        let slot = (g % n) as u32;
        // SAFETY: the slot is ours (WRITING) and `len` fits its stride.
        let buf = unsafe { std::slice::from_raw_parts_mut(self.payload(slot), len) };
        if let Err(e) = fill(buf) {
            if let Finish::NotHeld(w) = self.slot(slot).abort_write(g, n, tok) {
                crate::warn_log!(
                    "ring {}: slot {slot} left WRITING by someone else ({w:?})",
                    self.name
                );
            }
            return Err(e);
        }
        match self.slot(slot).publish(g, n, tok, len as u64) {
            Finish::Done => {}
            Finish::NotHeld(w) => {
                // Only a reclaim can take a live writer's slot: this process was taken for
                // dead (a pid reused across namespaces). The bytes are not published.
                return Err(Error::new(
                    Status::SlotBusy,
                    format!(
                        "ring {}: slot {slot} was reclaimed during the write ({w:?})",
                        self.name
                    ),
                ));
            }
        }
        self.ready_add(true);
        self.count(counter::WRITES, 1);
        self.count(counter::BYTES_WRITTEN, len as u64);
        Ok(SlotRef::new(slot, g))
    }

    /// Takes the slot of the current write ticket: `(ticket, token)`.
    fn claim(&self, overwrite: bool) -> Result<(u64, u32)> {
        let h = self.header();
        let n = self.geo.slot_count;
        let tok = self.token();
        loop {
            let g = h.write_idx.load(Ordering::Acquire);
            let slot = (g % n) as u32;
            let s = self.slot(slot);
            match s.claim(g, n, tok, self.pid, overwrite) {
                Claim::Claimed { dropped } => {
                    let _ =
                        h.write_idx
                            .compare_exchange(g, g + 1, Ordering::AcqRel, Ordering::Relaxed);
                    if dropped {
                        self.ready_add(false);
                        self.count(counter::DROPS, 1);
                        crate::info_log!(
                            "ring {}: overwriting unconsumed slot {slot} (write index {g})",
                            self.name
                        );
                    }
                    return Ok((g, tok));
                }
                Claim::TicketTaken => {
                    let _ =
                        h.write_idx
                            .compare_exchange(g, g + 1, Ordering::AcqRel, Ordering::Relaxed);
                }
                Claim::Moved(w) => {
                    if h.write_idx.load(Ordering::Acquire) == g {
                        return Err(Error::new(
                            Status::Internal,
                            format!(
                                "ring {}: slot {slot} header is corrupt ({w:?} at write index {g})",
                                self.name
                            ),
                        ));
                    }
                }
                Claim::Full => {
                    self.count(counter::WRITE_ERRORS, 1);
                    return Err(Error::new(
                        Status::SlotBusy,
                        format!(
                            "ring {} is full: slot {slot} not consumed (overwrite disabled)",
                            self.name
                        ),
                    ));
                }
                Claim::Busy(w) => {
                    if self.try_reclaim(slot, w) {
                        continue;
                    }
                    self.count(counter::WRITE_ERRORS, 1);
                    let what = if w.state() == SlotState::Reading {
                        "being read, cannot overwrite"
                    } else {
                        "being written by another producer"
                    };
                    return Err(Error::new(
                        Status::SlotBusy,
                        format!("ring {}: slot {slot} is {what}", self.name),
                    ));
                }
            }
        }
    }

    /// Takes slot `i` back from an attempt whose owner is gone (or whose lease expired,
    /// or that never recorded itself for [`UNRECORDED_GRACE`]). True if it did.
    fn try_reclaim(&self, i: u32, w: super::slot::Word) -> bool {
        let s = self.slot(i);
        let reclaimed = match s.reclaim(w, owner_gone) {
            Some(st) => Some(st),
            None if s.owner(w.token()).is_none() && s.word() == w => {
                let mut m = self.unrecorded.lock();
                match m.get(&i) {
                    Some(&(seen, since)) if seen == w.0 => {
                        if since.elapsed() < UNRECORDED_GRACE {
                            return false;
                        }
                        m.remove(&i);
                        s.reclaim_unrecorded(w)
                    }
                    _ => {
                        m.insert(i, (w.0, Instant::now()));
                        return false;
                    }
                }
            }
            None => None,
        };
        match reclaimed {
            Some(st) => {
                if st == SlotState::Ready {
                    self.ready_add(true);
                }
                self.count(counter::RECLAIMS, 1);
                crate::warn_log!(
                    "ring {}: slot {i} reclaimed from attempt {} ({}): its owner is gone or its lease expired",
                    self.name,
                    w.token(),
                    w.state().as_str()
                );
                true
            }
            None => false,
        }
    }

    /// Takes generation `r` for a read attempt (lease `None`: until finished or the
    /// process dies). `(token, payload length)`.
    pub(crate) fn grant(&self, r: SlotRef, lease: Option<Duration>) -> Result<(u32, u64)> {
        r.check(self.geo.slot_count)?;
        let n = self.geo.slot_count;
        let s = self.slot(r.slot);
        let tok = self.token();
        for _ in 0..2 {
            match s.grant(r.generation, n, tok, self.pid, lease_until(lease)) {
                Grant::Granted { len } => {
                    self.ready_add(false);
                    return Ok((tok, len));
                }
                Grant::Stale { current } => {
                    self.count(counter::STALE_READS, 1);
                    let now = match current {
                        Some(c) => format!("it holds generation {c}"),
                        None => "it holds no payload of that generation".into(),
                    };
                    return Err(Error::new(
                        Status::StaleSlot,
                        format!(
                            "ring {}: slot {} no longer holds generation {}: {now}",
                            self.name, r.slot, r.generation
                        ),
                    ));
                }
                Grant::Consumed => {
                    self.count(counter::STALE_READS, 1);
                    return Err(Error::new(
                        Status::StaleSlot,
                        format!(
                            "ring {}: generation {} (slot {}) was consumed already",
                            self.name, r.generation, r.slot
                        ),
                    ));
                }
                Grant::Busy(w) => {
                    if !self.try_reclaim(r.slot, w) {
                        self.count(counter::BUSY, 1);
                        return Err(Error::new(
                            Status::SlotBusy,
                            format!(
                                "ring {}: slot {} (generation {}) is {} by another attempt",
                                self.name,
                                r.slot,
                                r.generation,
                                if w.state() == SlotState::Reading {
                                    "being read"
                                } else {
                                    "being written"
                                }
                            ),
                        ));
                    }
                }
            }
        }
        self.count(counter::BUSY, 1);
        Err(Error::new(
            Status::SlotBusy,
            format!("ring {}: slot {} is contended", self.name, r.slot),
        ))
    }

    /// Ends the read attempt `tok` on `r`: commit (consumed) or failure (READY again).
    /// False, with a log line, when the attempt no longer holds the slot.
    pub(crate) fn finish(&self, r: SlotRef, tok: u32, commit: bool, len: u64) -> bool {
        match self
            .slot(r.slot)
            .finish(r.generation, self.geo.slot_count, tok, commit)
        {
            Finish::Done => {
                if commit {
                    self.count(counter::READS, 1);
                    self.count(counter::BYTES_READ, len);
                } else {
                    self.ready_add(true);
                    self.count(counter::FAILED_READS, 1);
                }
                true
            }
            Finish::NotHeld(w) => {
                self.count(counter::ORPHAN_NOOPS, 1);
                crate::info_log!(
                    "ring {}: attempt {tok} on slot {} (generation {}) no longer holds it ({} {}): {} is a no-op",
                    self.name,
                    r.slot,
                    r.generation,
                    w.state().as_str(),
                    w.token(),
                    if commit { "commit" } else { "release" }
                );
                false
            }
        }
    }

    /// Whether the attempt `tok` on `r` committed, still holds, or lost the slot.
    pub(crate) fn commit_state(&self, r: SlotRef, tok: u32) -> Result<CommitState> {
        r.check(self.geo.slot_count)?;
        Ok(self
            .slot(r.slot)
            .commit_state(r.generation, self.geo.slot_count, tok))
    }

    /// Reads and consumes payload `r` (a copy).
    pub fn read(self: &Arc<Self>, r: SlotRef) -> Result<Vec<u8>> {
        let v = self.read_view(r)?;
        let out = v.data().to_vec();
        v.consume()?;
        Ok(out)
    }

    /// Reads and consumes payload `r` into `dst`; returns its length. A payload larger
    /// than `dst` fails with `OutOfRange` (the buffer is too small) and stays READY.
    pub fn read_into(self: &Arc<Self>, r: SlotRef, dst: &mut [u8]) -> Result<usize> {
        let v = self.read_view(r)?;
        let n = v.len();
        if n > dst.len() {
            return Err(Error::new(
                Status::OutOfRange,
                format!(
                    "payload of {n} bytes does not fit a {}-byte buffer",
                    dst.len()
                ),
            ));
        }
        dst[..n].copy_from_slice(v.data());
        v.consume()?;
        Ok(n)
    }

    /// Like [`Ring::read`], but `Ok(None)` instead of `SlotBusy` when another attempt
    /// holds the slot (the original's `try_read`).
    pub fn try_read(self: &Arc<Self>, r: SlotRef) -> Result<Option<Vec<u8>>> {
        match self.read(r) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.status() == Status::SlotBusy => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Takes payload `r` and returns a view of it in place (zero copy). The slot stays
    /// READING until [`SlotView::consume`] (FREE) or [`SlotView::release`] / drop (READY
    /// again).
    pub fn read_view(self: &Arc<Self>, r: SlotRef) -> Result<SlotView> {
        let (tok, len) = self.grant(r, None)?;
        Ok(SlotView {
            ring: self.clone(),
            r,
            tok,
            len: len as usize,
            done: false,
        })
    }

    /// This process's id, the owner recorded for its attempts.
    pub fn owner_pid(&self) -> u32 {
        self.pid
    }
}

/// A payload held in place (READING) by a local reader. Valid until consumed, released
/// or dropped; the producer cannot overwrite it meanwhile.
pub struct SlotView {
    ring: Arc<Ring>,
    r: SlotRef,
    tok: u32,
    len: usize,
    done: bool,
}

impl SlotView {
    pub fn slot_ref(&self) -> SlotRef {
        self.r
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ring.payload(self.r.slot)
    }

    pub fn data(&self) -> &[u8] {
        // SAFETY: the slot is READING under our token for as long as self lives.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len) }
    }

    /// Marks the payload consumed (the original's `mark_consumed`): the slot becomes FREE.
    pub fn consume(mut self) -> Result<()> {
        self.done = true;
        if self.ring.finish(self.r, self.tok, true, self.len as u64) {
            Ok(())
        } else {
            Err(Error::new(
                Status::StaleSlot,
                format!(
                    "ring {}: the view of slot {} lost the slot before it was consumed",
                    self.ring.name, self.r.slot
                ),
            ))
        }
    }

    /// Gives the payload back unconsumed (the original's `release_reading`): READY again.
    pub fn release(mut self) {
        self.done = true;
        self.ring.finish(self.r, self.tok, false, 0);
    }
}

impl Drop for SlotView {
    fn drop(&mut self) {
        if !self.done {
            self.ring.finish(self.r, self.tok, false, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(n: usize, cap: usize, overwrite: bool) -> Arc<Ring> {
        Ring::create(&RingConfig {
            name: String::new(),
            slot_count: n,
            slot_capacity: cap,
            overwrite,
        })
        .unwrap()
    }

    fn bytes(seed: u8, n: usize) -> Vec<u8> {
        (0..n).map(|i| seed.wrapping_add(i as u8)).collect()
    }

    #[test]
    fn all_slots_start_free() {
        let r = ring(4, 64, true);
        assert!(r.slot_states().iter().all(|s| *s == SlotState::Free));
        assert_eq!(r.ready_count(), 0);
        assert_eq!(r.metrics(), RingMetrics::default());
        assert_eq!(r.slot_count(), 4);
        assert_eq!(r.slot_capacity(), 64);
    }

    #[test]
    fn write_read_round_trip_raw_and_parts() {
        let r = ring(4, 64, true);
        let a = r.write_raw(&bytes(1, 64)).unwrap();
        assert_eq!(a, SlotRef::new(0, 0));
        let b = r.write(&[&bytes(9, 10), &[], &bytes(50, 5)]).unwrap();
        assert_eq!(b, SlotRef::new(1, 1));
        assert_eq!(r.slot_state(0).unwrap(), SlotState::Ready);
        assert_eq!(r.read(a).unwrap(), bytes(1, 64));
        let mut want = bytes(9, 10);
        want.extend(bytes(50, 5));
        let mut dst = [0u8; 64];
        assert_eq!(r.read_into(b, &mut dst).unwrap(), 15);
        assert_eq!(&dst[..15], &want[..]);
        assert_eq!(r.slot_state(0).unwrap(), SlotState::Free);
        // an empty payload is a payload
        let e = r.write_raw(&[]).unwrap();
        assert_eq!(r.read(e).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn oversized_or_failed_writes_leave_the_ring_usable() {
        let r = ring(4, 64, true);
        let e = r.write_raw(&[0u8; 65]).unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument);
        assert_eq!(r.write_index(), 0, "an oversized write claims nothing");
        let e = r
            .write_with(8, |_| Err(Error::new(Status::Io, "source failed")))
            .unwrap_err();
        assert_eq!(e.status(), Status::Io);
        assert_eq!(r.slot_state(0).unwrap(), SlotState::Free);
        assert_eq!(r.ready_count(), 0);
        // the ticket was used: the next write takes the next slot, and a reference to
        // the aborted one is stale
        let next = r.write_raw(b"x").unwrap();
        assert_eq!(next, SlotRef::new(1, 1));
        assert_eq!(
            r.read(SlotRef::new(0, 0)).unwrap_err().status(),
            Status::StaleSlot
        );
        assert_eq!(r.metrics().writes, 1);
    }

    #[test]
    fn views_consume_release_and_drop() {
        let r = ring(4, 64, true);
        let a = r.write_raw(&bytes(3, 20)).unwrap();
        let v = r.read_view(a).unwrap();
        assert_eq!(v.data(), &bytes(3, 20)[..]);
        assert_eq!(v.as_ptr(), r.payload(0) as *const u8, "a view, not a copy");
        assert_eq!(r.slot_state(0).unwrap(), SlotState::Reading);
        assert_eq!(r.ready_count(), 0);
        // a second reader meets the first
        assert_eq!(r.read(a).unwrap_err().status(), Status::SlotBusy);
        assert_eq!(r.try_read(a).unwrap(), None);
        v.release();
        assert_eq!(r.slot_state(0).unwrap(), SlotState::Ready);
        assert_eq!(r.ready_count(), 1);
        drop(r.read_view(a).unwrap());
        assert_eq!(r.slot_state(0).unwrap(), SlotState::Ready, "drop releases");
        r.read_view(a).unwrap().consume().unwrap();
        assert_eq!(r.slot_state(0).unwrap(), SlotState::Free);
        assert_eq!(
            r.read_view(a).err().unwrap().status(),
            Status::StaleSlot,
            "consumed"
        );
        let m = r.metrics();
        assert_eq!(
            (m.reads, m.failed_reads, m.busy, m.stale_reads),
            (1, 2, 2, 1)
        );
    }

    #[test]
    fn finishing_defensively_is_a_no_op() {
        let r = ring(4, 64, true);
        let a = r.write_raw(b"hello").unwrap();
        // mark_consumed / release on a READY slot with no attempt: nothing changes, the
        // data stays readable
        assert!(!r.finish(a, 12345, true, 5));
        assert!(!r.finish(a, 12345, false, 5));
        assert_eq!(r.slot_state(0).unwrap(), SlotState::Ready);
        assert_eq!(r.ready_count(), 1);
        assert_eq!(r.read(a).unwrap(), b"hello");
        // on a FREE slot: stays FREE
        assert!(!r.finish(a, 12345, true, 5));
        assert!(!r.finish(a, 12345, false, 5));
        assert_eq!(r.slot_state(0).unwrap(), SlotState::Free);
        assert_eq!(r.ready_count(), 0);
        assert_eq!(r.metrics().orphan_noops, 4);
    }

    #[test]
    fn ready_slots_and_a_real_ready_count_after_saturation() {
        let r = ring(4, 64, true);
        let refs: Vec<SlotRef> = (0..4u8).map(|i| r.write_raw(&[i]).unwrap()).collect();
        assert!(r.is_full());
        assert_eq!(r.ready_count(), 4);
        assert_eq!(r.ready_slots(), refs);
        assert_eq!(r.slot_ref(2).unwrap(), Some(refs[2]));
        r.read(refs[1]).unwrap();
        r.read(refs[3]).unwrap();
        // the original's counter stayed at max_entries forever after the first lap
        assert_eq!(r.ready_count(), 2);
        assert!(!r.is_full());
        assert_eq!(r.ready_slots(), vec![refs[0], refs[2]]);
        assert_eq!(r.slot_ref(1).unwrap(), None);
        assert_eq!(r.slot_state(4).unwrap_err().status(), Status::OutOfRange);
    }

    #[test]
    fn overwrite_when_full_counts_a_drop_and_stales_the_old_reference() {
        let r = ring(4, 64, true);
        let refs: Vec<SlotRef> = (0..5u8).map(|i| r.write_raw(&[i]).unwrap()).collect();
        assert_eq!(refs[4], SlotRef::new(0, 4));
        let m = r.metrics();
        assert_eq!((m.writes, m.drops, m.ready), (5, 1, 4));
        let e = r.read(refs[0]).unwrap_err();
        assert_eq!(e.status(), Status::StaleSlot);
        assert!(e.message().contains("holds generation 4"), "{e}");
        assert_eq!(r.read(refs[4]).unwrap(), vec![4]);
        assert_eq!(r.metrics().stale_reads, 1);
        assert_eq!(m.current_fill(), 4);
    }

    #[test]
    fn full_without_overwrite_is_a_slot_error_and_never_skips_ahead() {
        let r = ring(4, 64, false);
        assert!(!r.overwrite());
        let refs: Vec<SlotRef> = (0..4u8).map(|i| r.write_raw(&[i]).unwrap()).collect();
        let e = r.write_raw(&[9]).unwrap_err();
        assert_eq!(e.status(), Status::SlotBusy);
        assert!(e.message().contains("full"), "{e}");
        assert_eq!(r.write_index(), 4, "the ticket was not used");
        // slot 1 consumed: still refused, the write index points at slot 0
        r.read(refs[1]).unwrap();
        assert_eq!(r.write_raw(&[9]).unwrap_err().status(), Status::SlotBusy);
        r.read(refs[0]).unwrap();
        assert_eq!(r.write_raw(&[9]).unwrap(), SlotRef::new(0, 4));
        assert_eq!(r.metrics().write_errors, 2);
    }

    #[test]
    fn a_slot_being_read_is_never_overwritten() {
        let r = ring(2, 64, true);
        let a = r.write_raw(b"aa").unwrap();
        r.write_raw(b"bb").unwrap();
        let v = r.read_view(a).unwrap();
        let e = r.write_raw(b"cc").unwrap_err();
        assert_eq!(e.status(), Status::SlotBusy);
        assert!(e.message().contains("being read"), "{e}");
        assert_eq!(v.data(), b"aa");
        v.consume().unwrap();
        assert_eq!(r.write_raw(b"cc").unwrap(), SlotRef::new(0, 2));
    }

    #[test]
    fn attach_by_handle_shares_state_and_metrics() {
        let r = ring(4, 4096, true);
        let h = r.handle();
        assert_eq!(h.max_entries, 4);
        assert_eq!(h.entry_size, 4096);
        let h = RingHandle::parse(&h.to_json().to_string()).unwrap();
        let o = Ring::attach(&h).unwrap();
        assert_eq!(o.name(), r.name());
        assert!(o.overwrite());
        let a = r.write_raw(&bytes(7, 4096)).unwrap();
        assert_eq!(o.ready_count(), 1);
        let v = o.read_view(a).unwrap();
        assert_eq!(r.slot_state(0).unwrap(), SlotState::Reading);
        assert_eq!(v.data(), &bytes(7, 4096)[..]);
        v.consume().unwrap();
        assert_eq!(r.metrics().reads, 1);
        assert_eq!(r.metrics().bytes_read, 4096);
        assert!(Ring::create(&RingConfig {
            name: "x".repeat(65),
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn references_must_match_the_ring() {
        let r = ring(4, 64, true);
        r.write_raw(b"a").unwrap();
        assert_eq!(
            r.read(SlotRef::new(1, 0)).unwrap_err().status(),
            Status::InvalidArgument
        );
        assert_eq!(
            r.read(SlotRef::new(9, 9)).unwrap_err().status(),
            Status::InvalidArgument
        );
        // a generation not written yet is stale, not a hang
        assert_eq!(
            r.read(SlotRef::new(1, 5)).unwrap_err().status(),
            Status::StaleSlot
        );
    }

    #[test]
    fn read_into_a_small_buffer_is_truncated_and_keeps_the_payload() {
        let r = ring(2, 64, true);
        let a = r.write_raw(&[1; 10]).unwrap();
        let mut small = [0u8; 4];
        assert_eq!(
            r.read_into(a, &mut small).unwrap_err().status(),
            Status::OutOfRange
        );
        assert_eq!(r.slot_state(0).unwrap(), SlotState::Ready);
        assert_eq!(r.read(a).unwrap(), vec![1; 10]);
    }

    /// Producer and readers on several threads: no torn payload is ever read, and at
    /// rest every write is accounted for: writes = reads + drops + ready.
    #[test]
    fn concurrent_producer_and_readers_stay_consistent() {
        let r = ring(8, 256, true);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let pattern = |g: u64| -> Vec<u8> {
            let n = 16 + (g as usize * 37) % 240;
            (0..n)
                .map(|i| (g as u8).wrapping_mul(31).wrapping_add(i as u8))
                .collect()
        };
        std::thread::scope(|s| {
            let readers: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        let mut ok = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            for rf in r.ready_slots() {
                                match r.read_view(rf) {
                                    Ok(v) => {
                                        assert_eq!(v.data(), &pattern(rf.generation)[..]);
                                        v.consume().unwrap();
                                        ok += 1;
                                    }
                                    Err(e) => assert!(matches!(
                                        e.status(),
                                        Status::StaleSlot | Status::SlotBusy
                                    )),
                                }
                            }
                        }
                        ok
                    })
                })
                .collect();
            let mut g = 0u64;
            let mut busy = 0u64;
            while g < 5000 {
                let want = r.write_index();
                match r.write_raw(&pattern(want)) {
                    Ok(rf) => {
                        assert_eq!(rf.generation, want);
                        g += 1;
                    }
                    Err(e) => {
                        assert_eq!(e.status(), Status::SlotBusy);
                        busy += 1;
                        std::thread::yield_now();
                    }
                }
            }
            stop.store(true, Ordering::Relaxed);
            let reads: u64 = readers.into_iter().map(|h| h.join().unwrap()).sum();
            let m = r.metrics();
            assert_eq!(m.writes, 5000);
            assert_eq!(m.reads, reads);
            assert_eq!(m.write_errors, busy);
            assert_eq!(m.writes, m.reads + m.drops + m.ready, "{m:?}");
            let ready_now = r
                .slot_states()
                .iter()
                .filter(|s| **s == SlotState::Ready)
                .count();
            assert_eq!(m.ready, ready_now as u64);
        });
    }
}
