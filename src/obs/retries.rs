//! What the engine did again, process-wide, by kind: the snapshot's `retries` and the
//! summary's `retry_total`. Retries are rare (each follows a failure or a lost
//! message), so these are plain atomic counters.

use std::sync::atomic::{AtomicU64, Ordering};

use super::switch::enabled;

named_enum! {
    /// A kind of retry, named in the snapshot.
    pub enum Retry: u8 {
        /// TCP: a pooled connection found dead on use was dialled again.
        TcpRedial = 0 => "tcp_redial",
        /// PeerAgent: our `qp_ready` got no answer and was sent again.
        QpReadyResend = 1 => "qp_ready_resend",
        /// Slot-ring client: an attempt failed retryably and the fetch moved to another
        /// route (the failed one is quarantined).
        RingFailover = 2 => "ring_failover",
        /// Slot-ring client: `SLOT_BUSY`, asked again after a backoff.
        RingBusy = 3 => "ring_busy",
        /// Slot-ring client: a commit whose reply was lost, confirmed on another session.
        RingCommitFailover = 4 => "ring_commit_failover",
    }
}

static COUNTS: [AtomicU64; Retry::ALL.len()] = [const { AtomicU64::new(0) }; Retry::ALL.len()];

/// Counts one retry of kind `r` (when recording is on).
pub fn retried(r: Retry) {
    if enabled() {
        COUNTS[r as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// `(name, count)` of every kind.
pub fn retry_counts() -> Vec<(&'static str, u64)> {
    Retry::ALL
        .iter()
        .map(|&r| (r.name(), COUNTS[r as usize].load(Ordering::Relaxed)))
        .collect()
}
