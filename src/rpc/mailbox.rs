//! The registered memory of one session side ([`RpcMemory`]) and where each slot lies
//! in it.
//!
//! ```text
//! [ req_send | rep_send ]  local only: where this side stages what it writes
//! [ req_mbox | rep_mbox ]  published to the peer: where the peer writes
//! each part: slot_count slots of slot_size bytes
//! [ arena ]                optional: 4 x slot_count segments of bulk_arena bytes
//! ```
//!
//! Both sides have the same slot configuration (checked at the handshake), so a slot's
//! offset in our send region is also its offset in the peer's mailbox.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::config::RpcConfig;
use super::wire;
use crate::error::Result;
use crate::memory::{alloc_shared, free_shared, MemoryPool, MrHandle};

/// The registered memory of one session side. Create it *before* the endpoint connects
/// when the transport is shared memory: allocations that exist at connect time are
/// mapped by the peer, so every message is a single memcpy.
pub struct RpcMemory {
    pub(super) pool: Arc<MemoryPool>,
    base: *mut u8,
    pub(super) slot_size: usize,
    pub(super) slot_count: usize,
    /// The send parts, registered as one region starting at `base`.
    pub(super) send_h: MrHandle,
    /// The mailbox parts, published to the peer.
    pub(super) mbox_h: MrHandle,
    pub(super) arena: Option<Arena>,
}

/// The pre-allocated bulk buffers: `4 * slot_count` segments of `seg` bytes, one per
/// slot and use (see [`BulkUse`](super::bulk::BulkUse)).
#[derive(Clone, Copy)]
pub(super) struct Arena {
    pub base: *mut u8,
    pub handle: MrHandle,
    pub seg: usize,
}

// SAFETY: the allocations are owned by RpcMemory and freed only in Drop; threads share
// the bytes following the slot protocol (a slot has one writer at a time).
unsafe impl Send for RpcMemory {}
// SAFETY: as for Send: &RpcMemory hands out raw pointers only, used under the protocol.
unsafe impl Sync for RpcMemory {}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A process-unique number for the names of the regions the RPC layer registers.
pub(super) fn next_region_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Bytes of one arena segment for a `bulk_arena` of `n` bytes (whole pages).
pub(super) fn arena_segment(n: usize) -> usize {
    (n + 4095) & !4095
}

impl RpcMemory {
    pub fn new(pool: &Arc<MemoryPool>, cfg: &RpcConfig) -> Result<Arc<RpcMemory>> {
        cfg.validate()?;
        let part = cfg.slot_size * cfg.slot_count;
        let base = alloc_shared(4 * part)?;
        let id = next_region_id();
        // SAFETY: a fresh allocation of 4 * part bytes, owned until Drop.
        let send_h = match unsafe { pool.register(Some(&format!("rpc:send:{id}")), base, 2 * part) }
        {
            Ok(h) => h,
            Err(e) => {
                // SAFETY: allocated above by alloc_shared; nothing else holds it.
                unsafe { free_shared(base).ok() };
                return Err(e);
            }
        };
        // SAFETY: the upper half of the same fresh allocation (2 * part..4 * part).
        let mbox_h = match unsafe {
            pool.register(
                Some(&format!("rpc:mailbox:{id}")),
                base.add(2 * part),
                2 * part,
            )
        } {
            Ok(h) => h,
            Err(e) => {
                pool.unregister(send_h).ok();
                // SAFETY: allocated above by alloc_shared; its region is unregistered.
                unsafe { free_shared(base).ok() };
                return Err(e);
            }
        };
        let mut mem = RpcMemory {
            pool: pool.clone(),
            base,
            slot_size: cfg.slot_size,
            slot_count: cfg.slot_count,
            send_h,
            mbox_h,
            arena: None,
        };
        if cfg.bulk_arena > 0 {
            let seg = arena_segment(cfg.bulk_arena);
            let total = 4 * cfg.slot_count * seg;
            let a = alloc_shared(total)?;
            // SAFETY: a fresh allocation of `total` bytes; freed in Drop after
            // unregistering.
            match unsafe { pool.register(Some(&format!("rpc:arena:{id}")), a, total) } {
                Ok(handle) => {
                    mem.arena = Some(Arena {
                        base: a,
                        handle,
                        seg,
                    })
                }
                Err(e) => {
                    // SAFETY: allocated above by alloc_shared; never registered.
                    unsafe { free_shared(a).ok() };
                    return Err(e);
                }
            }
        }
        Ok(Arc::new(mem))
    }

    /// Bytes of one arena segment (0 without an arena).
    pub(super) fn arena_segment_len(&self) -> usize {
        self.arena.map_or(0, |a| a.seg)
    }

    fn part(&self) -> usize {
        self.slot_size * self.slot_count
    }

    /// Offset of slot `slot` of `kind` (request or reply) inside a send region or a
    /// mailbox: both hold the request slots, then the reply slots.
    pub(super) fn slot_off(&self, kind: u32, slot: usize) -> usize {
        (if kind == wire::IMM_REPLY {
            self.part()
        } else {
            0
        }) + slot * self.slot_size
    }

    /// Our send slot `slot` of `kind`: where we stage what we write to the peer.
    pub(super) fn send_ptr(&self, kind: u32, slot: usize) -> *mut u8 {
        debug_assert!(slot < self.slot_count);
        // SAFETY: slot < slot_count, so the offset lies in the send parts [0, 2 * part).
        unsafe { self.base.add(self.slot_off(kind, slot)) }
    }

    /// Our mailbox slot `slot` of `kind`: where the peer writes.
    pub(super) fn mbox_ptr(&self, kind: u32, slot: usize) -> *mut u8 {
        debug_assert!(slot < self.slot_count);
        // SAFETY: slot < slot_count, so the offset lies in the mailbox parts
        // [2 * part, 4 * part) of the allocation.
        unsafe { self.base.add(2 * self.part() + self.slot_off(kind, slot)) }
    }
}

impl Drop for RpcMemory {
    fn drop(&mut self) {
        self.pool.unregister(self.send_h).ok();
        self.pool.unregister(self.mbox_h).ok();
        // SAFETY: allocated by alloc_shared in new(); its regions are unregistered and
        // no session holds this memory any more (sessions keep an Arc of it).
        unsafe { free_shared(self.base).ok() };
        if let Some(a) = self.arena {
            self.pool.unregister(a.handle).ok();
            // SAFETY: as above, for the arena allocation.
            unsafe { free_shared(a.base).ok() };
        }
    }
}
