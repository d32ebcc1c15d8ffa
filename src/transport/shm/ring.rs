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
//!
//! All access to the mapping goes through `DirPtr`, whose one invariant (the mapping
//! outlives it) is promised once, by the `unsafe` constructors of [`Producer`] and
//! [`Consumer`].

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::engine::futex;
use crate::error::Status;

pub const MAGIC: u64 = 0x6d68_735f_656d_696c; // "lime_shm"
pub const LAYOUT_VERSION: u64 = 4;
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
    /// A `DONE`'s status (the codes fit 16 bits).
    pub status: i16,
    /// A bounce slot index (< [`NSLOTS`]).
    pub slot: u16,
    pub id: u64,
    pub a: u64,
    pub b: u64,
    pub n: u64,
    /// The 64-bit region key of a request.
    pub key: u64,
    // second cache line: only IMM and ST_MSG use it
    pub c: u64,
    pub imm: i32,
    pub _pad: u32,
    pub data: [u8; INLINE_CAP],
}

const _: () = assert!(std::mem::size_of::<Entry>() == 256);
const _: () = assert!(std::mem::offset_of!(Entry, key) + 8 == LINE);
const _: () = assert!(MSG_DATA_OFFSET + INLINE_CAP <= std::mem::size_of::<Entry>());

const LINE: usize = 64;
/// Bytes of a descriptor that uses the second line (`c`, `imm`).
const LONG_DESC: usize = std::mem::offset_of!(Entry, data);
/// Where a `MSG` entry's bytes start in its ring slot (after seq, kind, len, check).
pub const MSG_DATA_OFFSET: usize = 24;

impl Entry {
    pub fn new(kind: u32) -> Entry {
        // SAFETY: every field is an integer or a byte array: all-zero bits are valid.
        let mut e: Entry = unsafe { std::mem::zeroed() };
        e.kind = kind;
        e
    }

    /// Sets a `DONE`'s status (every code is below 1000, so 16 bits hold it).
    pub fn set_status(&mut self, st: Status) {
        self.status = st.code() as i16;
    }

    /// A `DONE`'s status (an unknown code reads as a protocol error).
    pub fn done_status(&self) -> Status {
        Status::from_code(self.status.into())
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
            mix(self.key);
            mix(self.status as u16 as u64 | (self.slot as u64) << 16);
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
    /// The early-message charge the consumer has handed to receives (see
    /// [`super::window`]); the producer's sends beyond it are held back.
    released: Pad64<AtomicU64>,
}

#[repr(C)]
pub struct TableEntry {
    pub addr: u64,
    pub len: u64,
    pub key: u64,
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
    /// `base` must map at least `SEGMENT_SIZE` bytes, page aligned, that no other thread
    /// or process uses yet.
    pub unsafe fn init(base: *mut u8) {
        // SAFETY: the header is the first 24 bytes of the mapping (caller), page aligned
        // so aligned for u64, and ours alone: a unique reference is sound.
        let h = unsafe { &mut *(base as *mut Header) };
        h.magic = MAGIC;
        h.version = LAYOUT_VERSION;
        h.size = SEGMENT_SIZE as u64;
    }

    /// # Safety
    /// `base` must map at least `SEGMENT_SIZE` bytes, page aligned.
    pub unsafe fn check(base: *const u8) -> bool {
        // SAFETY: the header lies in the mapping (caller) and is aligned; it is read
        // with volatile loads of plain integers (any bits are valid), so a peer that
        // writes it meanwhile can only make the check fail.
        let (magic, version, size) = unsafe {
            let h = base as *const Header;
            (
                std::ptr::addr_of!((*h).magic).read_volatile(),
                std::ptr::addr_of!((*h).version).read_volatile(),
                std::ptr::addr_of!((*h).size).read_volatile(),
            )
        };
        magic == MAGIC && version == LAYOUT_VERSION && size == SEGMENT_SIZE as u64
    }
}

/// One direction of a mapped segment. Made only by [`DirPtr::new`], whose caller
/// promises that the mapping outlives the pointer and all its copies; the safe methods
/// below rely on that and on nothing else. They never make a reference to memory the
/// peer writes, except to atomics.
#[derive(Clone, Copy)]
struct DirPtr(*mut Direction);

// SAFETY: the pointee is a shared mapping that belongs to no thread. Everything done
// through a DirPtr is an atomic access, a raw or volatile copy of bytes that are checked
// before use, or a write to our own direction under the owner's lock (one producer, one
// consumer); none of it depends on the thread it runs on.
unsafe impl Send for DirPtr {}
// SAFETY: as for Send: shared use goes through atomics only (the doorbell, `seq`).
unsafe impl Sync for DirPtr {}

impl DirPtr {
    /// # Safety
    /// `seg` must point to a mapped, initialised segment that outlives the returned
    /// pointer and every copy of it.
    unsafe fn new(seg: *mut Segment, side: usize) -> DirPtr {
        // SAFETY: `seg` points into the mapping (caller); addr_of_mut computes the
        // field's address without reading it or making a reference (and panics on a
        // side out of bounds).
        DirPtr(unsafe { std::ptr::addr_of_mut!((*seg).dir[side]) })
    }

    fn ctl(&self) -> &RingCtl {
        // SAFETY: mapped for our whole life (constructor). RingCtl holds only atomics:
        // a shared reference to them is sound however the peer writes them.
        unsafe { &(*self.0).ctl }
    }

    /// The ring slot of position `pos`.
    fn entry(&self, pos: u64) -> *mut Entry {
        let idx = (pos % RING_CAP) as usize;
        // SAFETY: idx < RING_CAP, inside the mapping (constructor); an address only.
        unsafe { std::ptr::addr_of_mut!((*self.0).entries[idx]) }
    }

    /// The sequence word of position `pos`'s slot: `pos + 1` once it is published.
    fn seq(&self, pos: u64) -> &AtomicU64 {
        // SAFETY: `seq` is the first field of an Entry, which is 64-aligned, so the word
        // is an aligned u64 inside the mapping; it is only ever accessed atomically.
        unsafe { &*(self.entry(pos) as *const AtomicU64) }
    }

    /// Bounce slot `i` (panics unless `i < NSLOTS`).
    fn slot(&self, i: usize) -> *mut u8 {
        // SAFETY: inside the mapping (constructor); the index is bounds-checked; an
        // address only.
        unsafe { std::ptr::addr_of_mut!((*self.0).slots[i]) as *mut u8 }
    }

    fn table(&self) -> *mut RegionTable {
        // SAFETY: inside the mapping (constructor); an address only.
        unsafe { std::ptr::addr_of_mut!((*self.0).table) }
    }

    fn view(&self) -> DirView {
        DirView {
            bell: Doorbell { dir: *self },
            table: self.table(),
            slots: self.slot(0),
        }
    }

    /// Whether the entry at ring position `pos` is published.
    fn published(&self, pos: u64) -> bool {
        self.seq(pos).load(Ordering::Acquire) == pos + 1
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
    dir: DirPtr,
    head: u64,
    /// Last tail read from the peer: re-read only when the ring looks full, so a push
    /// does not pull the consumer's cache line every time.
    tail_cache: u64,
}

/// The consuming end. `tail` is our own count, only published.
pub struct Consumer {
    dir: DirPtr,
    tail: u64,
}

/// What a connection keeps of one direction, usable without the producer or consumer
/// lock: its doorbell, its region table and its first bounce slot.
pub struct DirView {
    pub bell: Doorbell,
    pub table: *mut RegionTable,
    pub slots: *mut u8,
}

/// The doorbell and waiter count of one direction, usable without the producer lock.
#[derive(Clone, Copy)]
pub struct Doorbell {
    dir: DirPtr,
}

impl Doorbell {
    fn ctl(&self) -> &RingCtl {
        self.dir.ctl()
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
        self.dir.published(tail)
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

    /// Consumer side: `n` more of the early-message charge was handed to receives
    /// (wrapping: a message that goes back to the queue takes its charge back).
    pub fn release(&self, n: u64, back: bool) {
        let r = &self.ctl().released;
        if back {
            r.fetch_sub(n, Ordering::AcqRel);
        } else {
            r.fetch_add(n, Ordering::AcqRel);
        }
    }

    /// Producer side: the charge the consumer has released so far (the peer writes it:
    /// any value only makes our window look larger or smaller).
    pub fn released(&self) -> u64 {
        self.ctl().released.load(Ordering::Acquire)
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
    /// `seg` must point to a mapped, initialised segment that outlives the producer and
    /// its doorbells; nobody else produces on direction `side`.
    pub unsafe fn new(seg: *mut Segment, side: usize) -> Producer {
        Producer {
            // SAFETY: the caller's promise is DirPtr::new's.
            dir: unsafe { DirPtr::new(seg, side) },
            head: 0,
            tail_cache: 0,
        }
    }

    /// Tries to publish `e`; false when the ring is full.
    pub fn try_push(&mut self, e: &Entry) -> bool {
        // A garbage tail from the peer can only make us think the ring is full or empty;
        // either way we write only inside our own ring.
        if self.head.wrapping_sub(self.tail_cache) >= RING_CAP {
            self.tail_cache = self.dir.ctl().tail.load(Ordering::Acquire);
            if self.head.wrapping_sub(self.tail_cache) >= RING_CAP {
                return false;
            }
        }
        let slot = self.dir.entry(self.head);
        // Only the used bytes cross to the peer's cache (see `Entry`), sealed with the
        // checksum on the way.
        let check = e.checksum();
        let used = e.used_bytes();
        let src = e as *const Entry as *const u8;
        // SAFETY: `slot` is a 256-byte ring slot in the mapping (DirPtr), ours until we
        // publish its sequence number (the consumer reads it only after that, and a peer
        // that scribbles on it can only spoil what it will read: no reference is made).
        // `e` is a 256-byte Entry; every copy stays inside both (used_bytes is at most
        // 256, MSG_DATA_OFFSET + INLINE_CAP <= 256). `seq` (the first 8 bytes) is left
        // alone and published last, with Release, through the aligned atomic word.
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
        }
        self.dir
            .seq(self.head)
            .store(self.head + 1, Ordering::Release);
        self.head += 1;
        true
    }

    /// Writes raw bytes as the next entry, bypassing sealing (tests of the checks).
    pub fn push_raw_for_test(&mut self, raw: &Entry) -> bool {
        if self
            .head
            .wrapping_sub(self.dir.ctl().tail.load(Ordering::Acquire))
            >= RING_CAP
        {
            return false;
        }
        let slot = self.dir.entry(self.head);
        // SAFETY: as in try_push: an aligned ring slot of the mapping, ours until
        // published; the whole entry is written (its `seq` is overwritten just below).
        unsafe { std::ptr::write_volatile(slot, *raw) };
        self.dir
            .seq(self.head)
            .store(self.head + 1, Ordering::Release);
        self.head += 1;
        true
    }

    /// Our direction: our bounce slots (we write them for ST_WRITE/ST_MSG, the peer for
    /// ST_READ) and the region table we publish.
    pub fn view(&self) -> DirView {
        self.dir.view()
    }
}

impl Consumer {
    /// # Safety
    /// `seg` must point to a mapped, initialised segment that outlives the consumer and
    /// its doorbells; `side` is the *peer's* side, and nobody else consumes it.
    pub unsafe fn new(seg: *mut Segment, side: usize) -> Consumer {
        Consumer {
            // SAFETY: the caller's promise is DirPtr::new's.
            dir: unsafe { DirPtr::new(seg, side) },
            tail: 0,
        }
    }

    /// Our position: the number of entries consumed.
    pub fn position(&self) -> u64 {
        self.tail
    }

    /// Whether an entry is ready (cheap; for sleepers' last check).
    pub fn has_work(&self) -> bool {
        self.dir.published(self.tail)
    }

    /// Copies the next published entry, if any, into `e` (whose earlier contents are
    /// overwritten: the descriptor is cleared first, and a message's bytes beyond its
    /// length are never read) and releases its slot.
    pub fn pop_into(&mut self, e: &mut Entry) -> bool {
        if !self.dir.published(self.tail) {
            return false;
        }
        let src = self.dir.entry(self.tail) as *const u8;
        let dst = e as *mut Entry as *mut u8;
        // SAFETY: `src` is a 256-byte ring slot of the mapping (DirPtr), `dst` our own
        // 256-byte Entry (a unique borrow, so the two do not overlap); every offset and
        // length stays inside 256 bytes (MSG_DATA_OFFSET < LONG_DESC <= 256; a message
        // length is clamped to INLINE_CAP; used_bytes <= 256). The slot's bytes are
        // copied raw, never referenced: a peer that scribbles on them meanwhile can
        // only produce an entry that fails its checks (checksum, lengths) before any
        // field is used. Kind and length are read from our copy, not the slot, and
        // every bit pattern is a valid Entry.
        unsafe {
            std::ptr::write_bytes(dst.add(MSG_DATA_OFFSET), 0, LONG_DESC - MSG_DATA_OFFSET);
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
        // Our own count, only published: the peer's copy is never read back.
        self.dir.ctl().tail.store(self.tail, Ordering::Release);
        true
    }

    /// The peer's direction: its bounce slots and the region table it publishes.
    pub fn view(&self) -> DirView {
        self.dir.view()
    }
}

impl RegionTable {
    /// Publishes `regions` (addr, len, key) after `announced` allocation announcements
    /// were sent; at most TABLE_CAP are published, the rest simply take the checked slow
    /// path.
    pub fn publish(&mut self, regions: &[(u64, u64, u64)], announced: u64) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s | 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.announced.store(announced, Ordering::Relaxed);
        let n = regions.len().min(TABLE_CAP);
        for (i, &(addr, len, key)) in regions[..n].iter().enumerate() {
            let e = std::ptr::addr_of_mut!(self.entries[i]);
            // SAFETY: `e` is an aligned, in-bounds element of our own table (`&mut
            // self`). Volatile, because the peer reads the table concurrently (it retries
            // while `seq` is odd or moved): the store must really happen, in this window.
            unsafe { std::ptr::write_volatile(e, TableEntry { addr, len, key }) };
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
    pub fn permits(&self, addr: u64, len: u64, key: u64) -> bool {
        for _ in 0..4 {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let n = (self.count.load(Ordering::Relaxed) as usize).min(TABLE_CAP);
            let mut found = false;
            for i in 0..n {
                // SAFETY: an aligned, in-bounds element (n <= TABLE_CAP); TableEntry is
                // plain integers, so whatever the peer is writing reads as some value,
                // and a torn one is caught by the seqlock or fails the range check.
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

    /// A fresh segment, with the producer and the consumer of direction 0 (a loop back).
    /// The mapping is never unmapped: it outlives everything the test makes from it.
    fn ring() -> (*mut u8, Producer, Consumer) {
        let (fd, base, _) = crate::memory::shared::memfd_map("t", SEGMENT_SIZE).unwrap();
        std::mem::forget(fd);
        let seg = base as *mut Segment;
        // SAFETY: a fresh, page-aligned mapping of SEGMENT_SIZE bytes, ours alone and
        // never unmapped; one producer and one consumer of direction 0.
        unsafe {
            Segment::init(base);
            (base, Producer::new(seg, 0), Consumer::new(seg, 0))
        }
    }

    #[test]
    fn push_pop_validate() {
        let (_, mut p, mut c) = ring();
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
        // SAFETY: our table in the mapping, aligned; nothing else uses it in this test.
        let t = unsafe { &mut *p.view().table };
        t.publish(&[(1000, 100, 7)], 3);
        assert_eq!(t.announced(), 3);
        assert!(t.permits(1000, 100, 7));
        assert!(!t.permits(1000, 101, 7));
        assert!(!t.permits(1000, 10, 8));
        assert!(!t.permits(u64::MAX, 2, 7));
    }

    #[test]
    fn entries_cross_in_as_few_lines_as_they_need() {
        let (base, mut p, mut c) = ring();
        let entries = base
            .wrapping_add(std::mem::offset_of!(Segment, dir))
            .wrapping_add(std::mem::offset_of!(Direction, entries));
        // SAFETY: slot i < 8 of direction 0's ring, inside the mapping; read only between
        // pushes and pops of this thread.
        let slot = |i: usize| unsafe { std::slice::from_raw_parts(entries.add(i * 256), 256) };
        // Mark every slot, to see which bytes a push writes.
        // SAFETY: the first 8 slots of the ring, inside the mapping, unused yet.
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
        d.set_status(Status::RemoteAccess);
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
