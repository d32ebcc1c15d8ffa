//! Counters of a shared-memory endpoint: which path each part took, fallbacks, and ring
//! entries refused by validation.

use std::sync::atomic::AtomicU64;

/// Counters, readable at any time.
#[derive(Default, Debug)]
pub struct ShmStats {
    /// One-sided parts done as a memcpy into/from a mapped peer allocation.
    pub fast_path: AtomicU64,
    /// Parts copied device to device (or host to device) through CUDA IPC.
    pub ipc: AtomicU64,
    /// Parts moved with process_vm_readv/writev.
    pub cma: AtomicU64,
    /// Chunks moved through bounce slots.
    pub staged_chunks: AtomicU64,
    /// Connections that fell back to the staged path because attach was refused.
    pub staged_fallbacks: AtomicU64,
    /// Attach refused (EPERM) at run time; those operations failed with `Io`.
    pub cma_eperm: AtomicU64,
    /// Ring entries rejected by validation (never acted on).
    pub rejected_entries: AtomicU64,
    /// Messages refused because the peer sent past the early-message window.
    pub refused_messages: AtomicU64,
    /// Sends that waited for room in the early-message window.
    pub window_waits: AtomicU64,
}
