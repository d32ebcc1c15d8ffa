//! Ring metrics: counters in the ring's shared header, so every process that writes,
//! reads or serves the ring adds to the same numbers (the original kept them per
//! process).

use std::sync::atomic::{AtomicU64, Ordering};

use super::layout::counter;

/// A snapshot of a ring's counters, shared by every process that maps it.
// `repr(C)`: this is the C ABI's `dlslime_ring_metrics_t` (renamed in cbindgen.toml).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingMetrics {
    /// Payloads published.
    pub writes: u64,
    /// READY payloads overwritten before anyone consumed them (the original's
    /// `drops_total`).
    pub drops: u64,
    /// Payloads consumed (local reads and remote fetches that committed).
    pub reads: u64,
    /// Reads and fetches refused because the reference's generation is gone.
    pub stale_reads: u64,
    pub bytes_written: u64,
    pub bytes_read: u64,
    /// Reads and fetches refused because another attempt held the slot.
    pub busy: u64,
    /// Attempts taken back from a dead owner or an expired lease.
    pub reclaims: u64,
    /// Attempt finishes that found the slot no longer theirs (logged no-ops).
    pub orphan_noops: u64,
    /// Writes refused (the slot at the write index was busy, or full without overwrite).
    pub write_errors: u64,
    /// Read attempts finished as failed (the slot went back to READY).
    pub failed_reads: u64,
    /// Slots in READY now.
    pub ready: u64,
}

impl RingMetrics {
    pub(crate) fn load(c: &[AtomicU64; counter::COUNT], ready: u64) -> RingMetrics {
        let g = |i: usize| c[i].load(Ordering::Relaxed);
        RingMetrics {
            writes: g(counter::WRITES),
            drops: g(counter::DROPS),
            reads: g(counter::READS),
            stale_reads: g(counter::STALE_READS),
            bytes_written: g(counter::BYTES_WRITTEN),
            bytes_read: g(counter::BYTES_READ),
            busy: g(counter::BUSY),
            reclaims: g(counter::RECLAIMS),
            orphan_noops: g(counter::ORPHAN_NOOPS),
            write_errors: g(counter::WRITE_ERRORS),
            failed_reads: g(counter::FAILED_READS),
            ready,
        }
    }

    /// The original's `current_fill`: writes not yet read or dropped.
    pub fn current_fill(&self) -> u64 {
        self.writes.saturating_sub(self.reads + self.drops)
    }
}
