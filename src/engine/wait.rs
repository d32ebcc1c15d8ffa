//! Deadlines and the spin-then-park loop shared by futures and transports.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::futex;

/// A point in time after which a wait gives up. `None` inside means "never".
#[derive(Clone, Copy, Debug)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    pub fn after(d: Duration) -> Deadline {
        Deadline(Instant::now().checked_add(d))
    }

    pub fn never() -> Deadline {
        Deadline(None)
    }

    pub fn expired(&self) -> bool {
        self.0.is_some_and(|t| Instant::now() >= t)
    }

    /// Time left, or `None` for no deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.0.map(|t| t.saturating_duration_since(Instant::now()))
    }

    /// The earlier of two deadlines.
    pub fn min(self, other: Deadline) -> Deadline {
        match (self.0, other.0) {
            (Some(a), Some(b)) => Deadline(Some(a.min(b))),
            (a, b) => Deadline(a.or(b)),
        }
    }

    pub fn instant(&self) -> Option<Instant> {
        self.0
    }
}

/// What a waiter parks on: a private futex `word`, the value it has while the wait is
/// still on, and the count of threads asleep on it.
pub struct Parking<'a> {
    pub word: &'a AtomicU32,
    pub sleepers: &'a AtomicU32,
    pub parked_value: u32,
}

/// Spins up to `spin` calling `ready`, then parks on `word` (a private futex) while it
/// still equals `parked_value`, until `ready` holds or `deadline` passes. `step` is
/// called on every spin iteration (inline progress) and may make `ready` true; when it
/// is the only source of progress, `park_slice` bounds each park so it runs again.
/// Returns whether `ready` became true.
///
/// `sleepers` counts threads inside the futex wait, so the thread that changes `word`
/// makes the wake syscall only when someone sleeps: it must store `word` and then load
/// `sleepers`, both SeqCst. A spinning waiter costs the waker nothing.
pub fn spin_then_park(
    park: Parking<'_>,
    spin: Duration,
    deadline: Deadline,
    park_slice: Option<Duration>,
    mut step: impl FnMut(),
    ready: impl Fn() -> bool,
) -> bool {
    let Parking {
        word,
        sleepers,
        parked_value,
    } = park;
    let spin_until = Instant::now() + spin;
    let mut i: u32 = 0;
    loop {
        if ready() {
            return true;
        }
        step();
        if ready() {
            return true;
        }
        i = i.wrapping_add(1);
        if i % 64 == 0 && Instant::now() >= spin_until {
            break;
        }
        std::hint::spin_loop();
    }
    loop {
        if ready() {
            return true;
        }
        let left = match (deadline.remaining(), park_slice) {
            (Some(d), _) if d.is_zero() => return ready(),
            (Some(d), Some(s)) => Some(d.min(s)),
            (d, s) => d.or(s),
        };
        // Announce the sleep before the last look at `word` (SeqCst on both sides): the
        // waker either sees the count, or its store is visible here and we do not sleep.
        sleepers.fetch_add(1, Ordering::SeqCst);
        if word.load(Ordering::SeqCst) == parked_value {
            futex::wait_private(word, parked_value, left);
        }
        sleepers.fetch_sub(1, Ordering::SeqCst);
        step();
    }
}
