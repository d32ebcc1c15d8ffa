//! The bulk path: payloads larger than a slot stay in a registered buffer of the sender
//! (the message carries a [`BulkDesc`]) and the receiver reads them one-sided into a
//! buffer of its own.
//!
//! Where the transport maps the peer's memory (shared memory) the receiver reads the
//! payload where it lies instead ([`Inner::bulk_view`]): no copy into a buffer of its own.
//!
//! Buffers are cached per slot and use ([`BulkUse`]): a request's buffer is reused after
//! its reply arrived, a reply's buffer after the next request in that slot arrived (by
//! then the peer has finished reading it), so no extra acknowledgement is needed. With
//! an arena ([`RpcConfig::bulk_arena`](super::RpcConfig::bulk_arena)) payloads up to its
//! segment size use the slot's pre-allocated segment instead.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};

use super::mailbox::next_region_id;
use super::session::Inner;
use super::wire::{self, BulkDesc};
use crate::error::{Error, Result};
use crate::memory::{alloc_shared, free_shared, MemoryPool, MrHandle, RemoteRegion};
use crate::transport::{Assignment, PeerView};

/// A registered buffer for bulk payloads.
pub(super) struct BulkBuf {
    pool: Arc<MemoryPool>,
    pub ptr: *mut u8,
    cap: usize,
    pub handle: MrHandle,
    /// Offset of `ptr` in the region `handle`.
    pub off: u64,
    /// False for a segment of the session's arena (nothing to free).
    owned: bool,
}

// SAFETY: the buffer is owned by this value (or is an arena segment that outlives it);
// it is only reached through the cache's mutex.
unsafe impl Send for BulkBuf {}

impl BulkBuf {
    pub fn new(pool: &Arc<MemoryPool>, len: usize) -> Result<BulkBuf> {
        let cap = len.max(4096);
        let ptr = alloc_shared(cap)?;
        let id = next_region_id();
        // SAFETY: a fresh allocation of `cap` bytes, freed in Drop after unregistering.
        match unsafe { pool.register(Some(&format!("rpc:bulk:{id}")), ptr, cap) } {
            Ok(handle) => Ok(BulkBuf {
                pool: pool.clone(),
                ptr,
                cap,
                handle,
                off: 0,
                owned: true,
            }),
            Err(e) => {
                // SAFETY: allocated above by alloc_shared; never registered.
                unsafe { free_shared(ptr).ok() };
                Err(e)
            }
        }
    }

    /// Bytes the buffer holds.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Whether the buffer serves a payload of `len` bytes: large enough, and not much
    /// too large when over `cache_max`.
    pub fn fits(&self, len: usize, cache_max: usize) -> bool {
        self.cap >= len && (self.cap <= cache_max || self.cap <= 2 * len)
    }

    /// The access key of the buffer's region (what the peer needs to read it).
    pub fn key(&self) -> u64 {
        self.pool.region(self.handle).map(|r| r.key).unwrap_or(0)
    }

    /// Where a peer reads `len` bytes of this buffer.
    pub fn desc(&self, len: usize) -> BulkDesc {
        BulkDesc {
            addr: self.ptr as u64,
            len: len as u64,
            key: self.key(),
        }
    }
}

impl Drop for BulkBuf {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        self.pool.unregister(self.handle).ok();
        // SAFETY: allocated by alloc_shared in new(); its region is unregistered and the
        // cache slot holding this value was the only reference.
        unsafe { free_shared(self.ptr).ok() };
    }
}

/// What a slot's bulk buffer is for. Each use has its own cache per slot and its own
/// arena segment (`use * slot_count + slot`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BulkUse {
    RequestOut = 0,
    ReplyOut = 1,
    RequestIn = 2,
    ReplyIn = 3,
}

impl BulkUse {
    /// The use of an outgoing message of `kind` (request or reply).
    pub fn outgoing(kind: u32) -> BulkUse {
        if kind == wire::IMM_REPLY {
            BulkUse::ReplyOut
        } else {
            BulkUse::RequestOut
        }
    }

    /// The name part of the peer's region registered for an incoming read.
    fn dir(self) -> &'static str {
        match self {
            BulkUse::RequestOut | BulkUse::RequestIn => "req",
            BulkUse::ReplyOut | BulkUse::ReplyIn => "rep",
        }
    }
}

/// The per-slot bulk buffer caches of a session, one set per [`BulkUse`].
pub(super) struct BulkCaches([Box<[Mutex<Option<BulkBuf>>]>; 4]);

impl BulkCaches {
    pub fn new(slot_count: usize) -> BulkCaches {
        BulkCaches(std::array::from_fn(|_| {
            (0..slot_count).map(|_| Mutex::new(None)).collect()
        }))
    }

    pub fn get(&self, u: BulkUse, slot: usize) -> &Mutex<Option<BulkBuf>> {
        &self.0[u as usize][slot]
    }
}

impl Inner {
    /// The bulk buffer of `slot` for `u`, at least `len` bytes: the slot's arena segment
    /// when the payload fits, else the cached buffer, reallocated when too small (or
    /// much too large).
    pub(super) fn bulk_buf(
        &self,
        u: BulkUse,
        slot: usize,
        len: usize,
    ) -> Result<MutexGuard<'_, Option<BulkBuf>>> {
        let mut g = self.bulk.get(u, slot).lock();
        if let Some(a) = self.mem.arena {
            if len <= a.seg {
                if g.as_ref().is_none_or(|b| b.owned) {
                    let off = (u as usize * self.cfg.slot_count + slot) * a.seg;
                    *g = Some(BulkBuf {
                        pool: self.mem.pool.clone(),
                        // SAFETY: the segment index is below 4 * slot_count, the arena's
                        // segment count, so `off` lies in the arena.
                        ptr: unsafe { a.base.add(off) },
                        cap: a.seg,
                        handle: a.handle,
                        off: off as u64,
                        owned: false,
                    });
                }
                return Ok(g);
            }
        }
        if !g
            .as_ref()
            .is_some_and(|b| b.fits(len, self.cfg.bulk_cache_max))
        {
            *g = None;
            *g = Some(BulkBuf::new(&self.mem.pool, len)?);
        }
        Ok(g)
    }

    /// A peer's bulk payload where it lies, when the transport maps the peer's memory
    /// and the peer's table permits the range (`None`: read it with [`Inner::bulk_read`]).
    pub(super) fn bulk_view(&self, d: BulkDesc) -> Option<PeerView> {
        if d.len == 0 {
            return None;
        }
        let v = self.ep.peer_view(d.addr, d.len, d.key)?;
        self.stats.bulk_received.fetch_add(1, Ordering::Relaxed);
        Some(v)
    }

    /// Reads a peer's bulk payload into this slot's buffer for `u` (an incoming use);
    /// returns where it lies.
    pub(super) fn bulk_read(&self, u: BulkUse, slot: usize, d: BulkDesc) -> Result<*const u8> {
        let g = self.bulk_buf(u, slot, d.len as usize)?;
        let b = g.as_ref().expect("bulk_buf fills the cache");
        // Named per session (unregistered when it ends), as the mailbox.
        let name = format!("rpc:peer-bulk:{:x}:{}:{slot}", self.id, u.dir());
        let remote = self.ep.remote_pool();
        let fresh = remote.handle(&name).is_none();
        let rh = remote.register(
            &name,
            RemoteRegion {
                addr: d.addr,
                len: d.len,
                key: d.key,
            },
        )?;
        if fresh {
            self.peer_regions.lock().push(rh);
        }
        let f = self.ep.read(
            &[Assignment::new(b.handle, rh, 0, b.off, d.len)],
            Some(self.cfg.default_timeout.max(Duration::from_secs(60))),
        )?;
        f.wait().map_err(|e| {
            Error::new(
                e.status(),
                format!("RPC bulk read of {} bytes failed: {}", d.len, e.message()),
            )
        })?;
        self.stats.bulk_received.fetch_add(1, Ordering::Relaxed);
        Ok(b.ptr)
    }
}
