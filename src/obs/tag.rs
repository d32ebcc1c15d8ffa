//! What an operation carries for the counters: its endpoint's [`EndpointStats`], kind,
//! bytes and start time. The transport tags the operation when it hands out the future,
//! which may be after the operation has already completed; whichever of "tagged" and
//! "done" comes second records the outcome, so it is recorded exactly once. Timing is
//! sampled (see `local`): an operation whose start was not stamped is counted untimed.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use super::counters::{EndpointStats, OpKind};
use super::local::sample;
use super::switch::{enabled, now_ns};
use crate::error::Status;

const TAGGED: u8 = 1;
const DONE: u8 = 2;

pub struct OpTag {
    flags: AtomicU8,
    kind: AtomicU8,
    bytes: AtomicU64,
    start_ns: AtomicU64,
    end_ns: AtomicU64,
    stats: OnceLock<Arc<EndpointStats>>,
}

impl OpTag {
    pub const fn new() -> OpTag {
        OpTag {
            flags: AtomicU8::new(0),
            kind: AtomicU8::new(0),
            bytes: AtomicU64::new(0),
            start_ns: AtomicU64::new(0),
            end_ns: AtomicU64::new(0),
            stats: OnceLock::new(),
        }
    }

    /// For reuse of a finished operation (the only reference: `&mut`).
    pub fn reset(&mut self) {
        *self.flags.get_mut() = 0;
        // a start stamp of an earlier operation must not time this one (0: untimed)
        *self.start_ns.get_mut() = 0;
        *self.end_ns.get_mut() = 0;
        self.stats.take();
    }

    /// The operation starts now (when recording is on and this thread times it).
    #[inline]
    pub fn start(&self) {
        if enabled() && sample() {
            self.start_ns.store(now_ns(), Ordering::Relaxed);
        }
    }

    /// The operation ended with `status` (called once, by whoever completes it).
    #[inline]
    pub fn done(&self, status: Status, nbytes: impl FnOnce() -> u64) {
        if enabled() {
            self.done_slow(status, nbytes);
        }
    }

    fn done_slow(&self, status: Status, nbytes: impl FnOnce() -> u64) {
        if self.start_ns.load(Ordering::Relaxed) != 0 {
            self.end_ns.store(now_ns(), Ordering::Relaxed);
        }
        if self.flags.fetch_or(DONE, Ordering::AcqRel) & TAGGED != 0 {
            self.record(status, nbytes());
        }
    }

    /// Tags the operation as one `kind` of `bytes` on `stats`, started at `start_ns` (0:
    /// when it was made). Returns true when it had already ended: the caller then calls
    /// [`OpTag::record`] with its outcome.
    pub fn tag(&self, stats: &Arc<EndpointStats>, kind: OpKind, bytes: u64, start_ns: u64) -> bool {
        if self.stats.set(stats.clone()).is_err() {
            return false; // tagged already
        }
        self.kind.store(kind as u8, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
        if start_ns != 0 {
            self.start_ns.store(start_ns, Ordering::Relaxed);
        } else if stats.needs_timing(kind) && self.start_ns.load(Ordering::Relaxed) == 0 {
            // the endpoint's first of its kind is timed (from now, just after submission)
            self.start_ns.store(now_ns(), Ordering::Relaxed);
        }
        stats.submitted(kind, bytes);
        self.flags.fetch_or(TAGGED, Ordering::AcqRel) & DONE != 0
    }

    /// Counts the outcome; `nbytes` is what the operation reports having moved (used for
    /// receives, whose size is known only at completion).
    pub fn record(&self, status: Status, nbytes: u64) {
        let Some(stats) = self.stats.get() else {
            return;
        };
        let Some(kind) = OpKind::from_repr(self.kind.load(Ordering::Relaxed)) else {
            return;
        };
        let bytes = match kind {
            OpKind::Recv => nbytes,
            _ => self.bytes.load(Ordering::Relaxed),
        };
        let start = self.start_ns.load(Ordering::Relaxed);
        let latency = (start != 0).then(|| {
            // 0 when "done" looked before a start stamped by `tag`: it ended by now
            let end = match self.end_ns.load(Ordering::Relaxed) {
                0 => now_ns(),
                e => e,
            };
            end.saturating_sub(start)
        });
        stats.finished(kind, status, bytes, latency);
    }
}

impl Default for OpTag {
    fn default() -> Self {
        OpTag::new()
    }
}
