//! Copiers: how the bytes of a region the CPU cannot address (device memory) get into
//! and out of host staging buffers. The staging pipeline is generic over this trait, so
//! it is tested on host memory ([`HostCopier`]) where no GPU exists; the CUDA copier
//! ([`super::CudaCopier`]) plugs into the same pipeline.

use std::sync::atomic::{AtomicU64, Ordering};

use super::location::Location;
use crate::error::Result;

/// Moves bytes between a region (addressed by `usize`, which may be a device address)
/// and host memory. Each call returns once the bytes are in place.
pub trait Copier: Send + Sync {
    /// Where the region side of the copies lives (for messages and routing).
    fn location(&self) -> Location;

    /// Copies `len` bytes from region address `src` into host memory at `dst`.
    ///
    /// # Safety
    /// `[src, src+len)` must be readable region memory and `[dst, dst+len)` writable host
    /// memory, not otherwise accessed during the call.
    unsafe fn copy_to_host(&self, src: usize, dst: *mut u8, len: usize) -> Result<()>;

    /// Copies `len` bytes from host memory at `src` to region address `dst`.
    ///
    /// # Safety
    /// `[src, src+len)` must be readable host memory and `[dst, dst+len)` writable region
    /// memory, not otherwise accessed during the call.
    unsafe fn copy_from_host(&self, src: *const u8, dst: usize, len: usize) -> Result<()>;
}

/// A copier for host memory (`memcpy`): what the staging path runs on where there is no
/// GPU, so the pipeline and the TCP staging hook are tested in every CI run. Counts the
/// bytes it moved so a test can prove the staged path was taken.
#[derive(Default)]
pub struct HostCopier {
    to_host: AtomicU64,
    from_host: AtomicU64,
}

impl HostCopier {
    pub fn new() -> HostCopier {
        HostCopier::default()
    }

    /// Bytes copied out of regions (`to_host`) and into them (`from_host`).
    pub fn copied(&self) -> (u64, u64) {
        (
            self.to_host.load(Ordering::Relaxed),
            self.from_host.load(Ordering::Relaxed),
        )
    }
}

impl Copier for HostCopier {
    fn location(&self) -> Location {
        Location::Host
    }

    unsafe fn copy_to_host(&self, src: usize, dst: *mut u8, len: usize) -> Result<()> {
        // SAFETY: both ranges are valid and disjoint for the call (this fn's contract).
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst, len) };
        self.to_host.fetch_add(len as u64, Ordering::Relaxed);
        Ok(())
    }

    unsafe fn copy_from_host(&self, src: *const u8, dst: usize, len: usize) -> Result<()> {
        // SAFETY: both ranges are valid and disjoint for the call (this fn's contract).
        unsafe { std::ptr::copy_nonoverlapping(src, dst as *mut u8, len) };
        self.from_host.fetch_add(len as u64, Ordering::Relaxed);
        Ok(())
    }
}
