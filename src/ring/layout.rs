//! The ring's shared-memory layout: one ring header, the slot headers, the data area.
//!
//! ```text
//! offset 0           RingHeader (384 bytes, repr(C), fixed field offsets)
//!                      geometry and name (written once by the creator, magic last)
//!                      +192 write_idx | ready_count | next_token   (own cache line)
//!                      +256 counters[16]                            (metrics)
//! SLOTS_OFFSET (512) SlotHeader x slot_count (64 bytes each, see `slot`)
//! data_offset        slot i's payload at data_offset + i * stride (page aligned)
//! ```
//!
//! Every field that more than one process changes is an atomic in the mapping, so a
//! second process that maps the region obeys the same state machine. Only the data
//! area is registered with endpoints: a peer can reach payload bytes, never a header.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::slot::SlotHeader;
use crate::error::{Error, Result, Status};

/// `"DLSRING1"`: the creator stores it last, so an attacher never sees half a header.
pub const MAGIC: u64 = u64::from_le_bytes(*b"DLSRING1");
pub const RING_LAYOUT_VERSION: u32 = 1;
pub const MAX_NAME: usize = 64;
pub const SLOTS_OFFSET: usize = 512;
pub const SLOT_HEADER_LEN: usize = std::mem::size_of::<SlotHeader>();
const PAGE: usize = 4096;

/// Header flag: the producer overwrites READY slots nobody consumed (the original's
/// default) instead of failing the write.
pub const FLAG_OVERWRITE: u32 = 1;

/// Indices of the shared counters (see `metrics`).
pub mod counter {
    pub const WRITES: usize = 0;
    pub const DROPS: usize = 1;
    pub const READS: usize = 2;
    pub const STALE_READS: usize = 3;
    pub const BYTES_WRITTEN: usize = 4;
    pub const BYTES_READ: usize = 5;
    pub const BUSY: usize = 6;
    pub const RECLAIMS: usize = 7;
    pub const ORPHAN_NOOPS: usize = 8;
    pub const WRITE_ERRORS: usize = 9;
    pub const FAILED_READS: usize = 10;
    pub const COUNT: usize = 16;
}

#[repr(C)]
pub struct RingHeader {
    pub magic: AtomicU64,
    pub version: u32,
    pub flags: u32,
    pub slot_count: u64,
    pub capacity: u64,
    pub stride: u64,
    pub slots_offset: u64,
    pub data_offset: u64,
    pub total_len: u64,
    pub creator_pid: u32,
    pub name_len: u32,
    pub name: [u8; MAX_NAME],
    _pad0: [u8; 56],
    /// The next write ticket (= the generation the next write gets).
    pub write_idx: AtomicU64,
    /// Slots in READY, kept by every transition that enters or leaves READY.
    pub ready_count: AtomicU64,
    /// Attempt tokens (never 0).
    pub next_token: AtomicU32,
    _pad1: [u8; 44],
    pub counters: [AtomicU64; counter::COUNT],
}

const _: () = assert!(std::mem::size_of::<RingHeader>() == 384);
const _: () = assert!(std::mem::offset_of!(RingHeader, write_idx) == 192);
const _: () = assert!(std::mem::offset_of!(RingHeader, counters) == 256);
const _: () = assert!(SLOT_HEADER_LEN == 64);

/// Where everything lies for a geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub slot_count: u64,
    pub capacity: u64,
    pub stride: u64,
    pub data_offset: u64,
    pub total_len: u64,
}

fn round_up(v: u64, to: u64) -> Option<u64> {
    v.checked_add(to - 1).map(|x| x / to * to)
}

impl Geometry {
    /// Slots of `capacity` payload bytes; strides are page-aligned (64-byte aligned below
    /// a page) so large payloads copy at full speed.
    pub fn new(slot_count: u64, capacity: u64) -> Result<Geometry> {
        if slot_count == 0 || slot_count > u32::MAX as u64 {
            return Err(Error::invalid(format!(
                "slot_count must be in 1..=4294967295, got {slot_count}"
            )));
        }
        if capacity == 0 {
            return Err(Error::invalid("slot capacity must be at least 1 byte"));
        }
        let too_big = || Error::invalid("ring size overflows");
        let stride = round_up(
            capacity,
            if capacity >= PAGE as u64 {
                PAGE as u64
            } else {
                64
            },
        )
        .ok_or_else(too_big)?;
        let headers = slot_count
            .checked_mul(SLOT_HEADER_LEN as u64)
            .and_then(|h| h.checked_add(SLOTS_OFFSET as u64))
            .ok_or_else(too_big)?;
        let data_offset = round_up(headers, PAGE as u64).ok_or_else(too_big)?;
        let total_len = stride
            .checked_mul(slot_count)
            .and_then(|d| d.checked_add(data_offset))
            .filter(|&t| t <= isize::MAX as u64)
            .ok_or_else(too_big)?;
        Ok(Geometry {
            slot_count,
            capacity,
            stride,
            data_offset,
            total_len,
        })
    }
}

/// Writes a fresh header into a zeroed mapping of `geo.total_len` bytes.
///
/// # Safety
/// `base` is the start of a mapping (page-aligned) of `geo.total_len` zeroed, writable
/// bytes that nobody else uses yet.
pub unsafe fn init(base: *mut u8, geo: &Geometry, name: &str, flags: u32) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(Error::invalid(format!(
            "ring name must be 1..={MAX_NAME} bytes, got {}",
            name.len()
        )));
    }
    // SAFETY: the caller gives `geo.total_len` (≥ the header's size) zeroed, writable,
    // page-aligned bytes nobody else uses: a valid, exclusive `RingHeader`.
    let h = unsafe { &mut *(base as *mut RingHeader) };
    h.version = RING_LAYOUT_VERSION;
    h.flags = flags;
    h.slot_count = geo.slot_count;
    h.capacity = geo.capacity;
    h.stride = geo.stride;
    h.slots_offset = SLOTS_OFFSET as u64;
    h.data_offset = geo.data_offset;
    h.total_len = geo.total_len;
    h.creator_pid = std::process::id();
    h.name_len = name.len() as u32;
    h.name[..name.len()].copy_from_slice(name.as_bytes());
    h.next_token.store(1, Ordering::Relaxed);
    h.magic.store(MAGIC, Ordering::Release);
    Ok(())
}

/// Checks the header of a mapping of `mapped` bytes someone else created and returns
/// its geometry, flags and name.
///
/// # Safety
/// `base` is the start of a mapping (page-aligned) of `mapped` readable bytes.
pub unsafe fn check(base: *const u8, mapped: u64) -> Result<(Geometry, u32, String)> {
    let bad = |m: String| Error::new(Status::InvalidArgument, format!("ring attach: {m}"));
    if mapped < (SLOTS_OFFSET as u64) {
        return Err(bad(format!("region of {mapped} bytes is too small")));
    }
    // SAFETY: the caller gives `mapped` readable, page-aligned bytes, checked above to
    // hold the header; its fields are plain integers or atomics, valid for any bytes.
    let h = unsafe { &*(base as *const RingHeader) };
    if h.magic.load(Ordering::Acquire) != MAGIC {
        return Err(bad("not a dlslime ring (bad magic)".into()));
    }
    if h.version != RING_LAYOUT_VERSION {
        return Err(Error::new(
            Status::VersionMismatch,
            format!(
                "ring attach: layout version {} (this library: {RING_LAYOUT_VERSION})",
                h.version
            ),
        ));
    }
    let geo = Geometry::new(h.slot_count, h.capacity)?;
    let same = geo.stride == h.stride
        && geo.data_offset == h.data_offset
        && geo.total_len == h.total_len
        && h.slots_offset == SLOTS_OFFSET as u64;
    if !same || geo.total_len > mapped {
        return Err(bad(format!(
            "inconsistent geometry ({} slots of {} bytes in {mapped} mapped bytes)",
            h.slot_count, h.capacity
        )));
    }
    let n = (h.name_len as usize).min(MAX_NAME);
    let name = String::from_utf8_lossy(&h.name[..n]).into_owned();
    Ok((geo, h.flags, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_aligns_and_refuses_nonsense() {
        let g = Geometry::new(4, 100).unwrap();
        assert_eq!(g.stride, 128);
        assert_eq!(g.data_offset, 4096);
        assert_eq!(g.total_len, 4096 + 512);
        let g = Geometry::new(1000, 65536 + 1).unwrap();
        assert_eq!(g.stride, 65536 + 4096);
        assert_eq!(g.data_offset % 4096, 0);
        assert!(g.data_offset >= 512 + 1000 * 64);
        assert!(Geometry::new(0, 1).is_err());
        assert!(Geometry::new(1, 0).is_err());
        assert!(Geometry::new(u32::MAX as u64, u64::MAX / 2).is_err());
    }

    #[test]
    fn init_then_check_round_trips_and_check_refuses_garbage() {
        let geo = Geometry::new(3, 5000).unwrap();
        let mut mem = vec![0u64; geo.total_len as usize / 8];
        let base = mem.as_mut_ptr() as *mut u8;
        // SAFETY: `mem` is a zeroed, writable buffer of `total_len` bytes, 8-byte aligned.
        unsafe {
            assert!(
                check(base, geo.total_len).is_err(),
                "zeroed memory has no magic"
            );
            assert!(init(base, &geo, "", 0).is_err());
            init(base, &geo, "rollouts", FLAG_OVERWRITE).unwrap();
            let (g, flags, name) = check(base, geo.total_len).unwrap();
            assert_eq!((g, flags, name.as_str()), (geo, FLAG_OVERWRITE, "rollouts"));
            assert!(check(base, geo.total_len - 1).is_err(), "mapping too short");
            (*(base as *mut RingHeader)).stride = 1;
            assert!(check(base, geo.total_len).is_err());
        }
    }
}
