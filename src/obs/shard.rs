//! One thread's share of an endpoint's counters. Each shard has a single writer (the
//! thread that holds it in its cache, see `local`), which updates it with plain relaxed
//! loads and stores: no locked read-modify-write, no cache line shared with another
//! writer. Readers (snapshots) sum every shard of the endpoint with relaxed loads.

use std::sync::atomic::{AtomicU64, Ordering};

use super::histogram::Histogram;
use crate::error::Status;

/// A counter with one writer: `add` is a load and a store, not an atomic add. Readers on
/// other threads see every value it had, never a torn one.
#[derive(Default)]
pub struct Cell(AtomicU64);

impl Cell {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One operation kind's counters in a shard. An operation done within its submission
/// (a shared-memory copy) costs two adds when untimed: `at_once` and `at_once_bytes`;
/// the rest count operations that had a future to tag.
#[derive(Default)]
pub struct KindCells {
    pub submitted: Cell,
    pub submitted_bytes: Cell,
    pub completed_bytes: Cell,
    pub failed: Cell,
    pub failed_bytes: Cell,
    /// Refused at submission (bad handle, not connected...): no future was made.
    pub rejected: Cell,
    /// Done (`Ok`) within submission, timed or not, and their bytes.
    pub at_once: Cell,
    pub at_once_bytes: Cell,
    /// Of `at_once`, those timed (in `latency`).
    pub at_once_timed: Cell,
    /// Tagged operations that ended untimed (not in `latency`).
    pub untimed: Cell,
    /// The timed operations, recorded with [`Histogram::record_one_writer`].
    pub latency: Histogram,
}

/// Where a status is counted in a shard's per-status table.
pub fn status_index(s: Status) -> usize {
    Status::ALL.iter().position(|&x| x == s).unwrap_or(0)
}

pub struct Shard {
    pub ops: [KindCells; 6],
    pub errors: [Cell; Status::ALL.len()],
    /// Work the engine did again on this endpoint (see `EndpointStats::retried`).
    pub retries: Cell,
}

impl Default for Shard {
    fn default() -> Self {
        Shard {
            ops: Default::default(),
            errors: [const { Cell(AtomicU64::new(0)) }; Status::ALL.len()],
            retries: Cell::default(),
        }
    }
}
