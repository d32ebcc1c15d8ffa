//! How a failed attempt is handled, decided by status code (never by an error's name),
//! and the worst-case wall time that follows from the knobs.
//!
//! | class | statuses | what the client does |
//! |---|---|---|
//! | `Rotate` | `TIMEOUT`, `PEER_DISCONNECTED` (reset, peer closed), `TRUNCATED`, `SHUT_DOWN` (session closed), `NOT_CONNECTED`, `CANCELLED`, `REMOTE_ACCESS`, `PROTOCOL`, `IO`, `FAILED` | quarantine the route, retry on the next one |
//! | `Again` | `SLOT_BUSY` (another attempt holds the slot; a commit that lost its lease) | retry (with backoff inside an attempt, on the next route after it), no quarantine |
//! | `Fatal` | everything else: `STALE_SLOT`, bad arguments, unknown producer, version mismatch, ... | return the error now |

use std::time::Duration;

use crate::error::Status;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    Rotate,
    Again,
    Fatal,
}

pub fn classify(s: Status) -> Retry {
    match s {
        Status::Timeout
        | Status::PeerDisconnected
        | Status::Truncated
        | Status::ShutDown
        | Status::NotConnected
        | Status::Cancelled
        | Status::RemoteAccess
        | Status::Protocol
        | Status::Io
        | Status::Failed => Retry::Rotate,
        Status::SlotBusy => Retry::Again,
        _ => Retry::Fatal,
    }
}

/// The true worst-case wall time of one fetch: every attempt is bounded as a whole
/// (session, grant, read share one deadline; the commit may run `commit_grace` past it),
/// so it is `max_attempts x attempt` with `attempt = timeout + commit_grace` (plus
/// scheduling).
pub fn fetch_worst_case(attempt: Duration, max_attempts: u32) -> Duration {
    attempt * max_attempts.max(1)
}

/// The true worst-case wall time of a batch of `n` references: each round runs at most
/// `concurrency` fetches at a time, and rounds are separated by `round_backoff`.
pub fn batch_worst_case(
    n: usize,
    concurrency: usize,
    attempt: Duration,
    max_attempts: u32,
    max_rounds: u32,
    round_backoff: Duration,
) -> Duration {
    let waves = n.div_ceil(concurrency.max(1)).max(1) as u32;
    let rounds = max_rounds.max(1);
    fetch_worst_case(attempt, max_attempts) * waves * rounds + round_backoff * (rounds - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_by_code() {
        assert_eq!(classify(Status::Timeout), Retry::Rotate);
        assert_eq!(classify(Status::PeerDisconnected), Retry::Rotate);
        assert_eq!(classify(Status::Truncated), Retry::Rotate);
        assert_eq!(classify(Status::SlotBusy), Retry::Again);
        assert_eq!(classify(Status::StaleSlot), Retry::Fatal);
        assert_eq!(classify(Status::UnknownHandle), Retry::Fatal);
        assert_eq!(classify(Status::InvalidArgument), Retry::Fatal);
    }

    #[test]
    fn worst_cases() {
        let t = Duration::from_secs(5);
        assert_eq!(fetch_worst_case(t, 2), Duration::from_secs(10));
        assert_eq!(
            fetch_worst_case(t + Duration::from_secs(1), 2),
            Duration::from_secs(12)
        );
        assert_eq!(
            batch_worst_case(4, 4, t, 2, 3, Duration::from_millis(50)),
            Duration::from_millis(30_100)
        );
        assert_eq!(
            batch_worst_case(9, 4, t, 2, 3, Duration::ZERO),
            Duration::from_secs(90)
        );
    }
}
