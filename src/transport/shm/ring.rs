//! The control segment shared by the two processes of a connection: per direction, a
//! lock-free SPSC ring of fixed-size entries (descriptors, inline messages, immediate
//! data, completions), a doorbell futex, a published region table and bounce slots for
//! the staged path.
//!
//! Side 0 is the process that connected, side 1 the one that accepted. Direction `d`
//! holds what side `d` produces. Everything the peer can write is treated as untrusted:
//! our own ring indices live in process memory (the shared copies are only published),
//! entries are copied out before they are checked, and an entry that fails its checks is
//! dropped and counted, never followed.

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::engine::futex;

pub const MAGIC: u64 = 0x6d68_735f_656d_696c; // "lime_shm"
pub const LAYOUT_VERSION: u64 = 3;
pub const RING_CAP: u64 = 1024;
pub const INLINE_CAP: usize = 176;
pub const TABLE_CAP: usize = 256;
pub const NSLOTS: usize = 16;
pub const SLOT_SIZE: usize = 256 << 10;

/// Entry kinds. Requests carry an `id` the reply names.
pub mod kind {
    /// Inline message: `data[..len]`.
    pub const MSG: u32 = 1;
    /// Large message, ready to be pulled: sender address `a`, length `n`, message `id`.
    pub const RTS: u32 = 2;
    /// Immediate data `imm`.
    pub const IMM: u32 = 3;
    /// Write `n` bytes from initiator address `a` to target address `b` (key `key`);
    /// the target checks and pulls.
    pub const WRITE: u32 = 4;
    /// Read grant request: target range `a`+`n`, key `key`.
    pub const READ: u32 = 5;
    /// Staged write: `len` bytes from the sender's bounce slot `slot` to target `b`.
    pub const ST_WRITE: u32 = 6;
    /// Staged read: target copies `a`+`len` (key `key`) into the requester's slot `slot`.
    pub const ST_READ: u32 = 7;
    /// Staged message chunk: message `id`, total `n`, offset `c`, `len` bytes in `slot`.
    pub const ST_MSG: u32 = 8;
    /// Reply to request `id` with `status`.
    pub const DONE: u32 = 9;
    pub const MAX: u32 = 9;
}

/// One ring entry (a 256-byte slot of the ring). Field meaning depends on `kind` (see
/// [`kind`]).
///
/// Only the bytes an entry uses cross to the peer, so the layout puts what the common
/// kinds need in the first cache line: the descriptor of `DONE`, `WRITE`, `READ`, `RTS`
/// and the staged read/write chunks is 64 bytes, one line. In the ring, a `MSG` carries
/// its bytes right after the first 24 bytes ([`MSG_DATA_OFFSET`]) instead of in `data`:
/// a message of up to 40 bytes is one line, 64 bytes two.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct Entry {
    pub seq: u64,
    pub kind: u32,
    pub len: u32,
    pub check: u32,
    pub status: i32,
    pub id: u64,
    pub a: u64,
    pub b: u64,
    pub n: u64,
    pub key: u32,
    pub slot: u32,
    // second cache line: only IMM and ST_MSG use it
    pub c: u64,
    pub imm: i32,
    pub _pad: u32,
    pub data: [u8; INLINE_CAP],
}

const _: () = assert!(std::mem::size_of::<Entry>() == 256);
const _: () = assert!(std::mem::offset_of!(Entry, slot) + 4 == LINE);
const _: () = assert!(MSG_DATA_OFFSET + INLINE_CAP <= std::mem::size_of::<Entry>());

const LINE: usize = 64;
/// Bytes of a descriptor that uses the second line (`c`, `imm`).
const LONG_DESC: usize = std::mem::offset_of!(Entry, data);
/// Where a `MSG` entry's bytes start in its ring slot (after seq, kind, len, check).
pub const MSG_DATA_OFFSET: usize = 24;

impl Entry {
    pub fn new(kind: u32) -> Entry {
        // SAFETY: all-zero is a valid Entry.
        let mut e: Entry = unsafe { std::mem::zeroed() };
        e.kind = kind;
        e
    }

    /// Whether this kind's descriptor needs the second line.
    fn long(&self) -> bool {
        matches!(self.kind, kind::IMM | kind::ST_MSG)
    }

    /// Checksum over the descriptor fields that cross to the peer, so a torn or
    /// scribbled entry is caught before any field is used. Inline bytes are not covered:
    /// they are only ever copied, within the length the checked descriptor gives, and a
    /// peer could send any bytes anyway.
    pub fn checksum(&self) -> u32 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut mix = |v: u64| {
            h ^= v;
            h = h.wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29);
        };
        mix(self.kind as u64 | (self.len as u64) << 32);
        if self.kind != kind::MSG {
            mix(self.id);
            mix(self.a);
            mix(self.b);
            mix(self.n);
            mix(self.key as u64 | (self.status as u32 as u64) << 32);
            mix(self.slot as u64);
            if self.long() {
                mix(self.c);
                mix(self.imm as u32 as u64);
            }
        }
        (h ^ (h >> 32)) as u32
    }

    /// Bytes of the ring slot that carry meaning: the descriptor, or for a message its
    /// header and inline bytes (clamped, so a bad length cannot reach past the slot).
    fn used_bytes(&self) -> usize {
        if self.kind == kind::MSG {
            MSG_DATA_OFFSET + (self.len as usize).min(INLINE_CAP)
        } else if self.long() {
            LONG_DESC
        } else {
            LINE
        }
    }

    pub fn seal(&mut self) {
        self.check = self.checksum();
    }

    /// Structural checks; `Err` says why the entry is rejected.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.kind == 0 || self.kind > kind::MAX {
            return Err("unknown entry kind");
        }
        if self.check != self.checksum() {
            return Err("checksum mismatch");
        }
        match self.kind {
            kind::MSG if self.len as usize > INLINE_CAP => Err("inline length beyond entry"),
            kind::ST_WRITE | kind::ST_READ | kind::ST_MSG
                if self.slot as usize >= NSLOTS || self.len as usize > SLOT_SIZE =>
            {
                Err("bounce slot or chunk length out of range")
            }
            kind::ST_MSG
                if self
                    .c
                    .checked_add(self.len as u64)
                    .is_none_or(|e| e > self.n) =>
            {
                Err("message chunk beyond message")
            }
            _ => Ok(()),
        }
    }
}

#[repr(C, align(64))]
pub struct Pad64<T>(T);

/// The consumer's controls of one direction. The consumer has two kinds of sleepers:
/// threads that drive it inline while they wait on an operation (they sleep on
/// `doorbell`), and its background thread (it sleeps on `bg_bell`). The producer wakes
/// the inline sleepers while any inline driver is active (one of them will handle the
/// entry) and the background thread only when none is, so a message wakes exactly the
/// thread that will use it: no hand-off between the consumer's threads.
#[repr(C)]
pub struct RingCtl {
    /// Consumer position. (No head: each entry's own `seq` says it is published, so the
    /// producer touches one cache line less per message.)
    tail: Pad64<AtomicU64>,
    doorbell: Pad64<AtomicU32>,
    /// Inline drivers asleep on `doorbell`.
    waiters: Pad64<AtomicU32>,
    /// Inline drivers active (polling or asleep on `doorbell`).
    inline_active: Pad64<AtomicU32>,
    bg_bell: Pad64<AtomicU32>,
    /// The background thread asleep on `bg_bell` (0 or 1).
    bg_waiters: Pad64<AtomicU32>,
}

#[repr(C)]
pub struct TableEntry {
    pub addr: u64,
    pub len: u64,
    pub key: u32,
    pub _pad: u32,
}

/// The regions a side published for fast-path checks by its peer, under a seqlock, and
/// how many allocation announcements (frames on the Unix socket carrying memfds) it sent
/// before publishing them: the peer processes that many before it trusts a table entry
/// to lie in a mapping it holds.
#[repr(C)]
pub struct RegionTable {
    seq: AtomicU64,
    count: AtomicU64,
    announced: AtomicU64,
    entries: [TableEntry; TABLE_CAP],
}

#[repr(C)]
pub struct Direction {
    ctl: RingCtl,
    entries: [Entry; RING_CAP as usize],
    table: RegionTable,
    slots: [[u8; SLOT_SIZE]; NSLOTS],
}

#[repr(C)]
pub struct Header {
    pub magic: u64,
    pub version: u64,
    pub size: u64,
}

#[repr(C)]
pub struct Segment {
    pub header: Pad64<Header>,
    pub dir: [Direction; 2],
}

pub const SEGMENT_SIZE: usize = std::mem::size_of::<Segment>();

impl Segment {
    /// # Safety
    /// `base` must map at least `SEGMENT_SIZE` bytes, page aligned.
    pub unsafe fn init(base: *mut u8) {
        let h = &mut *(base as *mut Header);
        h.magic = MAGIC;
        h.version = LAYOUT_VERSION;
        h.size = SEGMENT_SIZE as u64;
    }

    /// # Safety
    /// As for `init`.
    pub unsafe fn check(base: *const u8) -> bool {
        let h = &*(base as *const Header);
        h.magic == MAGIC && h.version == LAYOUT_VERSION && h.size == SEGMENT_SIZE as u64
    }
}

impl<T> std::ops::Deref for Pad64<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The producing end of one direction. One producer at a time (callers hold a lock);
/// `head` is our own count, only published to the segment.
pub struct Producer {
    dir: *mut Direction,
    head: u64,
    /// Last tail read from the peer: re-read only when the ring looks full, so a push
    /// does not pull the consumer's cache line every time.
    tail_cache: u64,
}

/// The consuming end. `tail` is our own count, only published.
pub struct Consumer {
    dir: *mut Direction,
    tail: u64,
}

// SAFETY: both point into a shared mapping that outlives them (the endpoint keeps it);
// all shared fields are accessed atomically or copied out.
unsafe impl Send for Producer {}
unsafe impl Send for Consumer {}
unsafe impl Send for Doorbell {}
unsafe impl Sync for Doorbell {}

/// The doorbell and waiter count of one direction, usable without the producer lock.
#[derive(Clone, Copy)]
pub struct Doorbell {
    dir: *mut Direction,
}

impl Doorbell {
    fn ctl(&self) -> &RingCtl {
        // SAFETY: see the Send impls.
        unsafe { &(*self.dir).ctl }
    }

    /// Called by the producer after publishing: wakes the consumer's inline sleepers
    /// while an inline driver is active, else its background thread if it sleeps.
    pub fn ring(&self) {
        fence(Ordering::SeqCst);
        let c = self.ctl();
        if c.inline_active.load(Ordering::SeqCst) != 0 {
            if c.waiters.load(Ordering::SeqCst) != 0 {
                c.doorbell.fetch_add(1, Ordering::SeqCst);
                futex::wake_shared(&c.doorbell, i32::MAX as u32);
            }
        } else if c.bg_waiters.load(Ordering::SeqCst) != 0 {
            c.bg_bell.fetch_add(1, Ordering::SeqCst);
            futex::wake_shared(&c.bg_bell, 1);
        }
    }

    /// Consumer side, an inline driver: sleeps up to `timeout` unless `has_work` says
    /// there is something (checked after advertising, so a producer that publishes later
    /// sees us).
    pub fn sleep(&self, timeout: Option<Duration>, has_work: impl Fn() -> bool) {
        let c = self.ctl();
        c.waiters.fetch_add(1, Ordering::SeqCst);
        let bell = c.doorbell.load(Ordering::SeqCst);
        if !has_work() {
            futex::wait_shared(&c.doorbell, bell, timeout);
        }
        c.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// Consumer side, the background thread: sleeps up to `timeout` unless `has_work`.
    /// The producer wakes it only while no inline driver is active.
    pub fn sleep_background(&self, timeout: Duration, has_work: impl Fn() -> bool) {
        let c = self.ctl();
        c.bg_waiters.fetch_add(1, Ordering::SeqCst);
        let bell = c.bg_bell.load(Ordering::SeqCst);
        if !has_work() {
            futex::wait_shared(&c.bg_bell, bell, Some(timeout));
        }
        c.bg_waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// An inline driver starts (the producer now wakes inline sleepers, not the
    /// background thread).
    pub fn enter_inline(&self) {
        self.ctl().inline_active.fetch_add(1, Ordering::SeqCst);
    }

    /// An inline driver stops. The caller must poll once more afterwards: an entry
    /// published before the producer saw this decrement woke nobody (SeqCst on both
    /// sides: the producer either sees no inline driver and wakes the background thread,
    /// or the entry is visible to that last poll).
    pub fn leave_inline(&self) {
        self.ctl().inline_active.fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether an inline driver is active.
    pub fn inline_active(&self) -> bool {
        self.ctl().inline_active.load(Ordering::SeqCst) != 0
    }

    /// Whether the entry at ring position `tail` is published (a hint for pollers: the
    /// consumer checks again under its lock).
    pub fn published(&self, tail: u64) -> bool {
        peek_ready(self.dir, tail)
    }

    /// Wakes every sleeper, inline and background (shutdown, peer death, or another
    /// thread completed what an inline sleeper waits for).
    pub fn wake_all(&self) {
        let c = self.ctl();
        c.doorbell.fetch_add(1, Ordering::SeqCst);
        futex::wake_shared(&c.doorbell, i32::MAX as u32);
        c.bg_bell.fetch_add(1, Ordering::SeqCst);
        futex::wake_shared(&c.bg_bell, i32::MAX as u32);
    }

    /// Wakes the inline sleepers only.
    pub fn wake_inline(&self) {
        let c = self.ctl();
        c.doorbell.fetch_add(1, Ordering::SeqCst);
        futex::wake_shared(&c.doorbell, i32::MAX as u32);
    }
}

impl Producer {
    /// # Safety
    /// `seg` must be a mapped, initialised segment that outlives the producer.
    pub unsafe fn new(seg: *mut Segment, side: usize) -> Producer {
        let dir = std::ptr::addr_of_mut!((*seg).dir[side]);
        Producer {
            dir,
            head: 0,
            tail_cache: 0,
        }
    }

    /// Tries to publish `e`; false when the ring is full.
    pub fn try_push(&mut self, e: &Entry) -> bool {
        // SAFETY: see the Send impls.
        let d = unsafe { &mut *self.dir };
        // A garbage tail from the peer can only make us think the ring is full or empty;
        // either way we write only inside our own ring.
        if self.head.wrapping_sub(self.tail_cache) >= RING_CAP {
            self.tail_cache = d.ctl.tail.load(Ordering::Acquire);
            if self.head.wrapping_sub(self.tail_cache) >= RING_CAP {
                return false;
            }
        }
        let idx = (self.head % RING_CAP) as usize;
        let slot = std::ptr::addr_of_mut!(d.entries[idx]);
        // Only the used bytes cross to the peer's cache (see `Entry`), sealed with the
        // checksum on the way.
        let check = e.checksum();
        let used = e.used_bytes();
        let src = e as *const Entry as *const u8;
        // SAFETY: the slot is ours until we publish its sequence number; `seq` (the
        // first 8 bytes) is left alone and published last. Every copy stays inside the
        // 256-byte entry and slot (used_bytes is clamped).
        unsafe {
            let dst = slot as *mut u8;
            if e.kind == kind::MSG {
                std::ptr::copy_nonoverlapping(src.add(8), dst.add(8), MSG_DATA_OFFSET - 8);
                std::ptr::copy_nonoverlapping(
                    e.data.as_ptr(),
                    dst.add(MSG_DATA_OFFSET),
                    used - MSG_DATA_OFFSET,
                );
            } else {
                std::ptr::copy_nonoverlapping(src.add(8), dst.add(8), used - 8);
            }
            std::ptr::addr_of_mut!((*slot).check).write(check);
            (*(slot as *const AtomicU64)).store(self.head + 1, Ordering::Release);
        }
        self.head += 1;
        true
    }

    /// Writes raw bytes as the next entry, bypassing sealing (tests of the checks).
    pub fn push_raw_for_test(&mut self, raw: &Entry) -> bool {
        // SAFETY: as in try_push.
        let d = unsafe { &mut *self.dir };
        if self.head.wrapping_sub(d.ctl.tail.load(Ordering::Acquire)) >= RING_CAP {
            return false;
        }
        let idx = (self.head % RING_CAP) as usize;
        let slot = std::ptr::addr_of_mut!(d.entries[idx]);
        unsafe {
            std::ptr::write_volatile(slot, *raw);
            (*(slot as *const AtomicU64)).store(self.head + 1, Ordering::Release);
        }
        self.head += 1;
        true
    }

    pub fn doorbell(&self) -> Doorbell {
        Doorbell { dir: self.dir }
    }

    /// Our bounce slot `i` (we write it for ST_WRITE/ST_MSG, the peer for ST_READ).
    pub fn slot_ptr(&self, i: usize) -> *mut u8 {
        // SAFETY: i < NSLOTS is checked by callers; pointer arithmetic only.
        unsafe { std::ptr::addr_of_mut!((*self.dir).slots[i]) as *mut u8 }
    }

    pub fn table(&self) -> *mut RegionTable {
        unsafe { std::ptr::addr_of_mut!((*self.dir).table) }
    }
}

impl Consumer {
    /// # Safety
    /// As for [`Producer::new`]; `side` is the *peer's* side.
    pub unsafe fn new(seg: *mut Segment, side: usize) -> Consumer {
        let dir = std::ptr::addr_of_mut!((*seg).dir[side]);
        Consumer { dir, tail: 0 }
    }

    /// Our position: the number of entries consumed.
    pub fn position(&self) -> u64 {
        self.tail
    }

    /// Whether an entry is ready (cheap; for sleepers' last check).
    pub fn has_work(&self) -> bool {
        peek_ready(self.dir, self.tail)
    }

    /// Copies the next published entry, if any, into `e` (whose earlier contents are
    /// overwritten: the descriptor is cleared first, and a message's bytes beyond its
    /// length are never read) and releases its slot.
    pub fn pop_into(&mut self, e: &mut Entry) -> bool {
        if !peek_ready(self.dir, self.tail) {
            return false;
        }
        let idx = (self.tail % RING_CAP) as usize;
        let dst = e as *mut Entry as *mut u8;
        // SAFETY: reading our mapping, within the 256-byte slot, into our own entry; the
        // copy is checked (checksum, lengths) before use, so whatever the peer scribbles
        // meanwhile is caught there. Kind and length come from our copy, and the length
        // is clamped.
        unsafe {
            std::ptr::write_bytes(dst.add(MSG_DATA_OFFSET), 0, LONG_DESC - MSG_DATA_OFFSET);
            let src = std::ptr::addr_of!((*self.dir).entries[idx]) as *const u8;
            std::ptr::copy_nonoverlapping(src, dst, MSG_DATA_OFFSET);
            if e.kind == kind::MSG {
                let n = (e.len as usize).min(INLINE_CAP);
                std::ptr::copy_nonoverlapping(src.add(MSG_DATA_OFFSET), e.data.as_mut_ptr(), n);
            } else {
                let used = e.used_bytes();
                std::ptr::copy_nonoverlapping(
                    src.add(MSG_DATA_OFFSET),
                    dst.add(MSG_DATA_OFFSET),
                    used - MSG_DATA_OFFSET,
                );
            }
        }
        self.tail += 1;
        // SAFETY: the ring control block lies in the mapping; the tail is only published.
        unsafe { (*self.dir).ctl.tail.store(self.tail, Ordering::Release) };
        true
    }

    pub fn doorbell(&self) -> Doorbell {
        Doorbell { dir: self.dir }
    }

    /// The peer's bounce slot `i`.
    pub fn slot_ptr(&self, i: usize) -> *mut u8 {
        unsafe { std::ptr::addr_of_mut!((*self.dir).slots[i]) as *mut u8 }
    }

    pub fn table(&self) -> *mut RegionTable {
        unsafe { std::ptr::addr_of_mut!((*self.dir).table) }
    }
}

fn peek_ready(dir: *mut Direction, tail: u64) -> bool {
    let idx = (tail % RING_CAP) as usize;
    // SAFETY: the sequence word is the first field of the entry, 8-aligned.
    let seq = unsafe { &*(std::ptr::addr_of!((*dir).entries[idx]) as *const AtomicU64) };
    seq.load(Ordering::Acquire) == tail + 1
}

impl RegionTable {
    /// Publishes `regions` (addr, len, key) after `announced` allocation announcements
    /// were sent; at most TABLE_CAP are published, the rest simply take the checked slow
    /// path.
    pub fn publish(&mut self, regions: &[(u64, u64, u32)], announced: u64) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s | 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.announced.store(announced, Ordering::Relaxed);
        let n = regions.len().min(TABLE_CAP);
        for (i, &(addr, len, key)) in regions[..n].iter().enumerate() {
            let e = std::ptr::addr_of_mut!(self.entries[i]);
            unsafe {
                std::ptr::write_volatile(
                    e,
                    TableEntry {
                        addr,
                        len,
                        key,
                        _pad: 0,
                    },
                )
            };
        }
        self.count.store(n as u64, Ordering::Relaxed);
        self.seq.store((s | 1) + 1, Ordering::Release);
    }

    /// How many allocation announcements the publisher had sent when it last published
    /// (never decreases; a torn read only makes the reader look for frames too early).
    pub fn announced(&self) -> u64 {
        self.announced.load(Ordering::Acquire)
    }

    /// Whether the peer's table holds a region containing `[addr, addr+len)` with `key`.
    /// A torn or endlessly changing table just answers false (the caller takes the
    /// target-checked path).
    pub fn permits(&self, addr: u64, len: u64, key: u32) -> bool {
        for _ in 0..4 {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let n = (self.count.load(Ordering::Relaxed) as usize).min(TABLE_CAP);
            let mut found = false;
            for i in 0..n {
                let e = unsafe { std::ptr::read_volatile(std::ptr::addr_of!(self.entries[i])) };
                if e.key == key
                    && addr >= e.addr
                    && addr
                        .checked_add(len)
                        .is_some_and(|end| e.addr.checked_add(e.len).is_some_and(|re| end <= re))
                {
                    found = true;
                    break;
                }
            }
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return found;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Status;

    #[test]
    fn push_pop_validate() {
        let (_fd, base, _) = crate::memory::shared::memfd_map("t", SEGMENT_SIZE).unwrap();
        unsafe { Segment::init(base) };
        let seg = base as *mut Segment;
        let mut p = unsafe { Producer::new(seg, 0) };
        let mut c = unsafe { Consumer::new(seg, 0) };
        let mut e = Entry::new(0);
        assert!(!c.pop_into(&mut e));
        for i in 0..RING_CAP {
            let mut e = Entry::new(kind::IMM);
            e.imm = i as i32;
            assert!(p.try_push(&e));
        }
        assert!(!p.try_push(&Entry::new(kind::IMM)));
        for i in 0..RING_CAP {
            assert!(c.pop_into(&mut e));
            assert!(e.validate().is_ok());
            assert_eq!(e.imm, i as i32);
        }
        let mut bad = Entry::new(kind::MSG);
        bad.len = 1000;
        bad.seal();
        assert!(bad.validate().is_err());
        let mut e = Entry::new(kind::DONE);
        e.seal();
        e.id ^= 1;
        assert_eq!(e.validate(), Err("checksum mismatch"));
        let t = unsafe { &mut *p.table() };
        t.publish(&[(1000, 100, 7)], 3);
        assert_eq!(t.announced(), 3);
        assert!(t.permits(1000, 100, 7));
        assert!(!t.permits(1000, 101, 7));
        assert!(!t.permits(1000, 10, 8));
        assert!(!t.permits(u64::MAX, 2, 7));
    }

    #[test]
    fn entries_cross_in_as_few_lines_as_they_need() {
        let (_fd, base, _) = crate::memory::shared::memfd_map("t", SEGMENT_SIZE).unwrap();
        unsafe { Segment::init(base) };
        let seg = base as *mut Segment;
        let mut p = unsafe { Producer::new(seg, 0) };
        let mut c = unsafe { Consumer::new(seg, 0) };
        let entries = base
            .wrapping_add(std::mem::offset_of!(Segment, dir))
            .wrapping_add(std::mem::offset_of!(Direction, entries));
        let slot = |i: usize| unsafe { std::slice::from_raw_parts(entries.add(i * 256), 256) };
        // Mark every slot, to see which bytes a push writes.
        unsafe { std::ptr::write_bytes(entries, 0xaa, 256 * 8) };
        let mut got = Entry::new(0);
        let mut i = 0;
        for len in [0usize, 1, 40, 41, 64, INLINE_CAP] {
            let mut e = Entry::new(kind::MSG);
            e.len = len as u32;
            e.id = 99; // not part of a message: neither sent nor checked
            for (k, b) in e.data[..len].iter_mut().enumerate() {
                *b = (k * 7 + len) as u8;
            }
            assert!(p.try_push(&e));
            let written = slot(i)
                .iter()
                .rposition(|&b| b != 0xaa)
                .map_or(0, |x| x + 1);
            assert!(
                written <= MSG_DATA_OFFSET + len,
                "{len}: {written} bytes written"
            );
            if len <= LINE - MSG_DATA_OFFSET {
                assert!(written <= LINE, "a {len}-byte message takes one line");
            }
            assert!(c.pop_into(&mut got));
            assert_eq!(got.validate(), Ok(()), "{len}");
            assert_eq!((got.kind, got.len as usize), (kind::MSG, len));
            assert_eq!(&got.data[..len], &e.data[..len]);
            i += 1;
        }
        // A one-line descriptor, then a two-line one, into the same (reused) entry.
        let mut d = Entry::new(kind::DONE);
        d.id = 5;
        d.status = Status::RemoteAccess.code();
        d.slot = 3;
        assert!(p.try_push(&d));
        assert!(
            slot(i)[LINE..].iter().all(|&b| b == 0xaa),
            "DONE is one line"
        );
        assert!(c.pop_into(&mut got));
        assert_eq!(got.validate(), Ok(()));
        assert_eq!(
            (got.kind, got.id, got.status, got.slot),
            (kind::DONE, 5, d.status, 3)
        );
        let mut m = Entry::new(kind::ST_MSG);
        m.id = 6;
        m.n = 1000;
        m.c = 200;
        m.len = 100;
        m.slot = 1;
        assert!(p.try_push(&m));
        assert!(c.pop_into(&mut got));
        assert_eq!(got.validate(), Ok(()));
        assert_eq!(
            (got.kind, got.id, got.n, got.c, got.len),
            (kind::ST_MSG, 6, 1000, 200, 100)
        );
        assert_eq!(got.imm, 0);
    }
}
