//! What the engine did again, process-wide, by kind: the snapshot's `retries` and the
//! summary's `retry_total`. Retries are rare (each follows a failure or a lost
//! message), so these are plain atomic counters.

use std::sync::atomic::{AtomicU64, Ordering};

use super::switch::enabled;

/// A kind of retry, named in the snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// TCP: a pooled connection found dead on use was dialled again.
    TcpRedial = 0,
    /// PeerAgent: our `qp_ready` got no answer and was sent again.
    QpReadyResend = 1,
    /// Slot-ring client: an attempt failed retryably and the fetch moved to another
    /// route (the failed one is quarantined).
    RingFailover = 2,
    /// Slot-ring client: `SLOT_BUSY`, asked again after a backoff.
    RingBusy = 3,
    /// Slot-ring client: a commit whose reply was lost, confirmed on another session.
    RingCommitFailover = 4,
}

impl Retry {
    pub const ALL: [Retry; 5] = [
        Retry::TcpRedial,
        Retry::QpReadyResend,
        Retry::RingFailover,
        Retry::RingBusy,
        Retry::RingCommitFailover,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Retry::TcpRedial => "tcp_redial",
            Retry::QpReadyResend => "qp_ready_resend",
            Retry::RingFailover => "ring_failover",
            Retry::RingBusy => "ring_busy",
            Retry::RingCommitFailover => "ring_commit_failover",
        }
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
