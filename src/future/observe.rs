//! Counting an endpoint's operations in its [`EndpointStats`] (see [`crate::obs`]): the
//! two calls transports make where they hand out a future.

use std::sync::Arc;

use super::handle::Future;
use crate::error::Result;
use crate::obs::{self, EndpointStats, OpKind};

/// Counts `f`'s future (or its refusal) as one `kind` of `bytes()` on `stats`, timed
/// (when sampled) from before `f` runs: for transports that may complete an operation
/// inside submission. Off, this is one branch before `f` (a tail call).
#[inline]
pub fn observe(
    stats: &Arc<EndpointStats>,
    kind: OpKind,
    bytes: impl FnOnce() -> u64,
    f: impl FnOnce() -> Result<Future>,
) -> Result<Future> {
    if !obs::enabled() {
        return f();
    }
    observe_on(stats, kind, bytes, f)
}

/// [`observe`] with recording on. Out of line, so that the transport's call stays a tail
/// call when it is off.
#[inline(never)]
fn observe_on(
    stats: &Arc<EndpointStats>,
    kind: OpKind,
    bytes: impl FnOnce() -> u64,
    f: impl FnOnce() -> Result<Future>,
) -> Result<Future> {
    let start = if obs::sample() || stats.needs_timing(kind) {
        obs::now_ns()
    } else {
        0
    };
    let r = f();
    // Looked at through a reference and, on the fast path, made anew rather than moved:
    // moving the result the transport just wrote (wide loads of narrow stores still in
    // the store buffer) stalls on store forwarding, which cost more than the counting.
    match &r {
        // the shared-memory fast path: done within submission, no state to tag
        // (its `nbytes` is what it moved: every assignment, or the message)
        Ok(fut) if fut.shared_state().is_none() => {
            let n = fut.nbytes();
            let lat = (start != 0).then(|| obs::now_ns().saturating_sub(start));
            stats.completed_at_once(kind, n, lat);
            std::mem::forget(r); // a ready future holds nothing to drop
            return Ok(Future::ready(n));
        }
        Ok(fut) => track_from(stats, kind, bytes(), start, fut),
        Err(e) => stats.rejected(kind, e.status()),
    }
    r
}

/// Counts `fut` as one `kind` of `bytes` on `stats`, timed (when sampled) from when its
/// operation was made. Returns `fut`.
#[inline]
pub fn track(stats: &Arc<EndpointStats>, kind: OpKind, bytes: u64, fut: Future) -> Future {
    if obs::enabled() {
        track_from(stats, kind, bytes, 0, &fut);
    }
    fut
}

fn track_from(stats: &Arc<EndpointStats>, kind: OpKind, bytes: u64, start: u64, fut: &Future) {
    match fut.shared_state() {
        Some(op) => op.observe(stats, kind, bytes, start),
        None => {
            // complete at submission: no state to tag
            let lat = (start != 0).then(|| obs::now_ns().saturating_sub(start));
            stats.completed_at_once(kind, fut.nbytes().max(bytes), lat);
        }
    }
}

/// The bytes of an assignment list.
pub fn bytes_of(assignments: &[crate::Assignment]) -> u64 {
    assignments.iter().map(|a| a.length).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::future::op::tests::op;
    use crate::Status;
    use std::time::Duration;

    /// Whichever of "tagged" and "done" comes second records the outcome, once.
    #[test]
    fn recorded_once_whether_done_before_or_after_tagging() {
        obs::set_enabled(true);
        let stats = obs::register_endpoint("test");
        let early = op(1, Duration::from_secs(5));
        early.part_done(Status::Ok, None);
        let f = track(&stats, OpKind::Write, 10, Future::new(early.clone()));
        let late = op(1, Duration::from_secs(5));
        let g = track(&stats, OpKind::Write, 20, Future::new(late.clone()));
        late.part_done(Status::RemoteAccess, None);
        // completing or tagging again changes nothing
        early.finish(Status::Failed, None);
        let _ = track(&stats, OpKind::Write, 99, f.clone());
        let _ = track(&stats, OpKind::Write, 99, g);
        let w = &stats.read().ops[OpKind::Write as usize];
        assert_eq!((w.submitted, w.submitted_bytes), (2, 30));
        assert_eq!(
            (w.completed, w.completed_bytes, w.failed, w.failed_bytes),
            (1, 10, 1, 20)
        );
        assert_eq!(w.latency.count, 2);
        assert_eq!(stats.read().errors_of(Status::RemoteAccess), 1);
    }
}
