//! Memory: the local regions this process registered (with their access keys), the
//! remote regions a peer published, and shared allocations (memfd memory another process
//! on this host can map), and CUDA device memory ([`device`]): where a region lives, and
//! the staging that moves device bytes for transports that cannot reach them directly.
//!
//! Handles are dense indices that are never reused, so a stale handle can only ever
//! name a dead slot, never someone else's region.

pub mod device;
pub mod local;
pub(crate) mod mapped;
pub mod remote;
pub mod shared;
pub mod span;

pub use local::{DeviceMr, MemoryPool, MrHandle, Region, Registrar};
pub use remote::{RemoteHandle, RemotePool, RemoteRegion};
pub use shared::{alloc_shared, free_shared, SharedBuf};
pub use span::Span;

use crate::error::{Error, Result, Status};

/// `offset + len <= bound`, without overflow; the error names what was out of range
/// (`what` is only formatted on failure: this check runs on every operation).
pub(crate) fn check_range(
    what: std::fmt::Arguments<'_>,
    offset: u64,
    len: u64,
    bound: u64,
) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= bound => Ok(()),
        _ => Err(Error::new(
            Status::OutOfRange,
            format!("{what}: offset {offset} + length {len} exceeds region length {bound}"),
        )),
    }
}
