//! A cheap clock for long deadlines.
//!
//! Every operation gets a deadline when it is submitted. `Instant::now()`
//! (CLOCK_MONOTONIC) costs 50-60 ns on the VMs this runs on, as much as the rest of a
//! small shared-memory operation; CLOCK_MONOTONIC_COARSE costs 15-20 ns but only moves
//! once per scheduler tick (1-4 ms). Both read the same clock, so a coarse reading maps
//! onto `Instant` through one anchor taken at first use. Deadlines of a second or more
//! (the default is 30 s) are built on it, one tick late at most and never early; shorter
//! ones read the precise clock.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Timeouts from which a deadline may be a tick late.
pub const COARSE_FROM: Duration = Duration::from_secs(1);

struct Anchor {
    instant: Instant,
    /// CLOCK_MONOTONIC at `instant`, in ns.
    mono_ns: u64,
    /// One tick: how far the coarse clock may lag.
    tick: Duration,
}

fn read(clock: libc::clockid_t) -> Option<libc::timespec> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the pointer we pass.
    (unsafe { libc::clock_gettime(clock, &mut ts) } == 0).then_some(ts)
}

fn nanos(ts: libc::timespec) -> u64 {
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn anchor() -> Option<&'static Anchor> {
    static ANCHOR: OnceLock<Option<Anchor>> = OnceLock::new();
    ANCHOR
        .get_or_init(|| {
            let mut res = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: clock_getres writes one timespec to the pointer we pass.
            if unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) } != 0 {
                return None;
            }
            // This order maps clock readings onto Instants a little late, never early.
            let mono_ns = nanos(read(libc::CLOCK_MONOTONIC)?);
            let instant = Instant::now();
            let tick = Duration::from_nanos(nanos(res)).min(Duration::from_millis(100));
            Some(Anchor {
                instant,
                mono_ns,
                tick,
            })
        })
        .as_ref()
}

/// A time at or after now, read cheaply: at most one tick (plus the anchor's own
/// reading skew, tens of ns) after the precise clock.
pub fn now_or_slightly_later() -> Instant {
    let Some(a) = anchor() else {
        return Instant::now();
    };
    let Some(c) = read(libc::CLOCK_MONOTONIC_COARSE) else {
        return Instant::now();
    };
    // The coarse clock lags the precise one by up to a tick: add one.
    a.instant + Duration::from_nanos(nanos(c).saturating_sub(a.mono_ns)) + a.tick
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_early_and_at_most_a_tick_late() {
        for _ in 0..1000 {
            let before = Instant::now();
            let t = now_or_slightly_later();
            let after = Instant::now();
            assert!(t >= before, "coarse reading {t:?} before {before:?}");
            let tick = anchor().map_or(Duration::ZERO, |a| a.tick);
            assert!(
                t <= after + 2 * tick + Duration::from_millis(1),
                "coarse reading {:?} past now + 2 ticks",
                t - after
            );
        }
    }
}
