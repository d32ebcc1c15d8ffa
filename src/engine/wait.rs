//! Deadlines, the spin-then-park loop shared by futures, transports and services, and
//! the event count that services park on.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::{clock, futex, preempt};

/// A point in time after which a wait gives up. `None` inside means "never".
#[derive(Clone, Copy, Debug)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// `d` from now. From [`clock::COARSE_FROM`] on, read from the cheap clock: up to one
    /// scheduler tick later than asked, never earlier.
    pub fn after(d: Duration) -> Deadline {
        let now = if d >= clock::COARSE_FROM {
            clock::now_or_slightly_later()
        } else {
            Instant::now()
        };
        Deadline(now.checked_add(d))
    }

    pub const fn never() -> Deadline {
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

/// When a parked waiter sleeps on its futex word.
#[derive(Clone, Copy, Debug)]
pub enum Park {
    /// The word is a state (an operation's): sleep while it equals this value.
    WhileEquals(u32),
    /// The word is an [`EventCount`]: sleep while it has not moved since the waiter last
    /// found its condition false.
    UntilBumped,
}

/// What a waiter parks on: a private futex `word`, when it sleeps there, and the count
/// of threads asleep on it.
pub struct Parking<'a> {
    pub word: &'a AtomicU32,
    pub sleepers: &'a AtomicU32,
    pub park: Park,
}

/// Spins up to `spin` (never past `deadline`) calling `ready`, then parks on `word` (a
/// private futex, see [`Park`]), until `ready` holds or `deadline` passes. `step` is
/// called on every spin iteration and after every park (inline progress) and may make
/// `ready` true; when it is the only source of progress, `park_slice` bounds each park
/// so it runs again. A `step` that returns true waited for progress itself (it received
/// for everyone, say): the waiter then loops without parking. Returns whether `ready`
/// became true.
///
/// `sleepers` counts threads inside the futex wait, so the thread that changes `word`
/// makes the wake syscall only when someone sleeps: it must store `word` and then load
/// `sleepers`, both SeqCst. A spinning waiter costs the waker nothing.
pub fn spin_then_park(
    parking: Parking<'_>,
    spin: Duration,
    deadline: Deadline,
    park_slice: Option<Duration>,
    mut step: impl FnMut() -> bool,
    ready: impl Fn() -> bool,
) -> bool {
    let Parking {
        word,
        sleepers,
        park,
    } = parking;
    let mut clock = SpinClock::new(spin, deadline, 64);
    let mut stepped;
    loop {
        if ready() {
            record_wait(clock.took());
            return true;
        }
        stepped = step();
        if ready() {
            record_wait(clock.took());
            return true;
        }
        if clock.spun_out(stepped) {
            break;
        }
        std::hint::spin_loop();
    }
    let got = park_loop(
        word, sleepers, park, deadline, park_slice, stepped, step, &ready,
    );
    clock.slept();
    record_wait(clock.took());
    got
}

/// When a spinning waiter reads the clock. A read costs 50-60 ns in the VMs this runs on
/// (`engine::clock`), as much as the rest of a small shared-memory round trip, so a
/// wait reads none during its first `every` polls and then one per `every` polls (or
/// when asked): a wait answered within its first polls reads no clock at all, and its
/// length for the spin budget ([`record_wait`]) is estimated from its polls. The spin
/// budget runs from the first reading.
struct SpinClock {
    every: u32,
    polls: u32,
    budget: Duration,
    deadline: Option<Instant>,
    first: Option<Instant>,
    last: Option<Instant>,
    slept: bool,
}

/// Roughly what one poll of an idle transport takes: a wait's length before its first
/// clock reading is estimated at this per poll.
const POLL_NS: u64 = 20;

impl SpinClock {
    fn new(spin: Duration, deadline: Deadline, every: u32) -> SpinClock {
        SpinClock::with_budget(spin_budget(spin), deadline, every)
    }

    /// A clock whose spin lasts `budget` (already adapted by the caller).
    fn with_budget(budget: Duration, deadline: Deadline, every: u32) -> SpinClock {
        SpinClock {
            every,
            polls: 0,
            budget,
            deadline: deadline.instant(),
            first: None,
            last: None,
            slept: false,
        }
    }

    /// Counts one poll; true once the spin is over (its budget or the deadline passed),
    /// which it looks at every `every` polls, or now when `look`.
    #[inline]
    fn spun_out(&mut self, look: bool) -> bool {
        self.polls = self.polls.wrapping_add(1);
        if !look && self.polls % self.every != 0 {
            return false;
        }
        let now = Instant::now();
        let first = *self.first.get_or_insert(now);
        self.last = Some(now);
        now.duration_since(first) >= self.budget || self.deadline.is_some_and(|d| now >= d)
    }

    /// The wait went on asleep: its length needs a reading at its end.
    fn slept(&mut self) {
        self.slept = true;
    }

    /// How long the wait took: estimated before the first reading, measured after it
    /// (to the last reading while it only spun).
    fn took(&self) -> Duration {
        let before = Duration::from_nanos(POLL_NS * self.polls.min(self.every) as u64);
        match self.first {
            None => before,
            Some(first) => {
                let end = if self.slept {
                    Instant::now()
                } else {
                    self.last.unwrap_or(first)
                };
                end.duration_since(first) + before
            }
        }
    }
}

/// The parking half of [`spin_then_park`].
#[allow(clippy::too_many_arguments)]
fn park_loop(
    word: &AtomicU32,
    sleepers: &AtomicU32,
    park: Park,
    deadline: Deadline,
    park_slice: Option<Duration>,
    mut stepped: bool,
    mut step: impl FnMut() -> bool,
    ready: &impl Fn() -> bool,
) -> bool {
    loop {
        let parked_value = match park {
            Park::WhileEquals(v) => v,
            // Sampled before `ready`: an event after this point changes the word, and the
            // futex then refuses to sleep.
            Park::UntilBumped => word.load(Ordering::SeqCst),
        };
        if ready() {
            return true;
        }
        let left = match (deadline.remaining(), park_slice) {
            (Some(d), _) if d.is_zero() => return ready(),
            (Some(d), Some(s)) => Some(d.min(s)),
            (d, s) => d.or(s),
        };
        if !stepped {
            // Announce the sleep before the last look at `word` (SeqCst on both sides):
            // the waker either sees the count, or its store is visible here and we do not
            // sleep.
            sleepers.fetch_add(1, Ordering::SeqCst);
            if word.load(Ordering::SeqCst) == parked_value {
                futex::wait_private(word, parked_value, left);
            }
            sleepers.fetch_sub(1, Ordering::SeqCst);
        }
        stepped = step();
    }
}

/// What a waiter drives while it waits on an operation with inline progress: it polls
/// the transport while it spins, then sleeps where the transport's peer wakes it
/// directly (the shared-memory doorbell), so a completion needs no hand-off between
/// threads. Implemented by transports that can be driven by the waiting thread.
pub trait Drive {
    /// Makes progress without blocking; true if it did anything.
    fn poll(&self) -> bool;
    /// Sleeps until the transport may have work for this thread, `ready()` holds (checked
    /// after announcing the sleep, so a `wake` after it is never lost) or `deadline`.
    fn sleep(&self, deadline: Deadline, ready: &dyn Fn() -> bool);
    /// Wakes the threads inside `sleep`: another thread completed what one of them waits
    /// for.
    fn wake(&self);
    /// A thread starts driving (it polls and may sleep in `sleep`).
    fn enter(&self) {}
    /// The thread stops driving.
    fn leave(&self) {}
    /// How long a waiter polls before it sleeps, at most `max`. By default this thread's
    /// adaptive [`spin_budget`].
    fn spin_budget(&self, max: Duration) -> Duration {
        spin_budget(max)
    }
    /// A wait driven by this thread ended after `took`; `polled_only`: without sleeping.
    /// By default fed to this thread's spin budget ([`record_wait`]).
    fn waited(&self, took: Duration, polled_only: bool) {
        let _ = polled_only;
        record_wait(took);
    }
}

/// Waits until `ready` or `deadline`, driving `d`: polls for the adaptive spin budget,
/// then sleeps in `d.sleep`. `sleepers` counts the threads asleep there, for the thread
/// that makes `ready` true (it calls `d.wake()` when non-zero: store, then load, both
/// SeqCst). Returns whether `ready` became true.
pub fn drive_until(
    d: &dyn Drive,
    sleepers: &AtomicU32,
    spin: Duration,
    deadline: Deadline,
    ready: &dyn Fn() -> bool,
) -> bool {
    d.enter();
    let mut clock = SpinClock::with_budget(d.spin_budget(spin), deadline, 16);
    let got = drive_loop(d, sleepers, &mut clock, deadline, ready);
    d.leave();
    d.waited(clock.took(), !clock.slept);
    got || ready()
}

/// Returns (whether `ready` became true, whether the thread went to sleep).
fn drive_loop(
    d: &dyn Drive,
    sleepers: &AtomicU32,
    clock: &mut SpinClock,
    deadline: Deadline,
    ready: &dyn Fn() -> bool,
) -> bool {
    loop {
        if ready() {
            return true;
        }
        let worked = d.poll();
        if clock.spun_out(false) {
            break;
        }
        if !worked {
            std::hint::spin_loop();
        }
    }
    clock.slept();
    loop {
        if ready() {
            return true;
        }
        if deadline.expired() {
            return false;
        }
        sleepers.fetch_add(1, Ordering::SeqCst);
        if !ready() {
            d.sleep(deadline, ready);
        }
        sleepers.fetch_sub(1, Ordering::SeqCst);
        d.poll();
    }
}

/// How long this thread may spin before sleeping, at most `max`: adaptive, from how long
/// its recent waits took. When they are answered within the spin window (an idle peer on
/// another core), spinning saves the wake-up; when they take longer (the peer is busy or
/// shares a core with other work), spinning only burns a core the peer may need, so the
/// thread sleeps at once and the kernel wakes it directly. One wait in 16 spins the full
/// `max`, to notice when the peer got fast again.
pub fn spin_budget(max: Duration) -> Duration {
    if max.is_zero() || !preempt::may_spin() {
        return Duration::ZERO;
    }
    GOVERNOR.with(|g| {
        let (ewma_ns, n) = g.get();
        g.set((ewma_ns, n.wrapping_add(1)));
        let max_ns = max.as_nanos() as u64;
        if n % 16 == 0 || ewma_ns == 0 {
            max
        } else if ewma_ns <= max_ns {
            Duration::from_nanos((2 * ewma_ns + 2_000).min(max_ns))
        } else {
            Duration::ZERO
        }
    })
}

/// Feeds the length of a finished wait into this thread's spin budget.
pub fn record_wait(took: Duration) {
    record_in(&GOVERNOR, took);
    preempt::note_wait();
}

/// A thread's record of its waits: (moving average of their lengths in ns, 0 before the
/// first; waits started).
pub type WaitRecord = std::cell::Cell<(u64, u32)>;

/// Folds a finished wait of length `took` into the moving average of `rec`.
pub fn record_in(rec: &'static std::thread::LocalKey<WaitRecord>, took: Duration) {
    let ns = took.as_nanos().min(u64::MAX as u128) as u64;
    rec.with(|g| {
        let (ewma_ns, n) = g.get();
        let e = if ewma_ns == 0 {
            ns
        } else {
            (3 * (ewma_ns / 4)).saturating_add(ns / 4)
        };
        g.set((e.max(1), n));
    });
}

thread_local! {
    /// This thread's waits, for [`spin_budget`].
    static GOVERNOR: WaitRecord = const { std::cell::Cell::new((0, 0)) };
}

/// An event count: a futex word bumped by every change that waiters may be waiting for
/// (each with its own condition), and the count of threads asleep on it. Wait with
/// [`spin_then_park`] on [`EventCount::parking`]; [`EventCount::notify`] after each change.
#[derive(Default)]
pub struct EventCount {
    word: AtomicU32,
    sleepers: AtomicU32,
}

impl EventCount {
    /// Publishes a change: wakes every parked waiter (a syscall only when one sleeps).
    pub fn notify(&self) {
        self.word.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            futex::wake_private(&self.word, i32::MAX as u32);
        }
    }

    /// Parks, without spinning, until `ready` holds (true) or `deadline` (false). Whoever
    /// makes `ready` true calls [`EventCount::notify`] after. Unlike [`spin_then_park`]
    /// it leaves the spin governor alone: for a waiter that already spun (and will record
    /// its whole wait).
    pub fn sleep_until(&self, deadline: Deadline, ready: &dyn Fn() -> bool) -> bool {
        loop {
            // Sampled before `ready`: a notify after this point changes the word, and the
            // futex then refuses to sleep.
            let seen = self.word.load(Ordering::SeqCst);
            if ready() {
                return true;
            }
            let left = deadline.remaining();
            if left.is_some_and(|d| d.is_zero()) {
                return false;
            }
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            if self.word.load(Ordering::SeqCst) == seen {
                futex::wait_private(&self.word, seen, left);
            }
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
    }

    pub fn parking(&self) -> Parking<'_> {
        Parking {
            word: &self.word,
            sleepers: &self.sleepers,
            park: Park::UntilBumped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn spin_never_passes_the_deadline() {
        let (word, sleepers) = (AtomicU32::new(0), AtomicU32::new(0));
        let t = Instant::now();
        let got = spin_then_park(
            Parking {
                word: &word,
                sleepers: &sleepers,
                park: Park::WhileEquals(0),
            },
            Duration::from_secs(10),
            Deadline::after(Duration::from_millis(20)),
            None,
            || false,
            || false,
        );
        assert!(!got);
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(20), "{took:?}");
        assert!(
            took < Duration::from_secs(5),
            "spun {took:?} past a 20 ms deadline"
        );
    }

    #[test]
    fn event_count_wakes_a_parked_waiter() {
        let ev = Arc::new(EventCount::default());
        let flag = Arc::new(AtomicBool::new(false));
        let (e, f) = (ev.clone(), flag.clone());
        let waiter = std::thread::spawn(move || {
            let t = Instant::now();
            let got = spin_then_park(
                e.parking(),
                Duration::ZERO,
                Deadline::after(Duration::from_secs(20)),
                None,
                || false,
                || f.load(Ordering::SeqCst),
            );
            (got, t.elapsed())
        });
        // Let the waiter park (no slice: only notify can wake it).
        while ev.sleepers.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        flag.store(true, Ordering::SeqCst);
        ev.notify();
        let (got, took) = waiter.join().unwrap();
        assert!(got);
        assert!(took < Duration::from_secs(10), "woke after {took:?}");
    }

    #[test]
    fn a_step_that_waited_replaces_the_park() {
        let (word, sleepers) = (AtomicU32::new(0), AtomicU32::new(0));
        let steps = AtomicU32::new(0);
        let t = Instant::now();
        // Nothing bumps the word: a park between steps would sleep the whole 10 s slice.
        let got = spin_then_park(
            Parking {
                word: &word,
                sleepers: &sleepers,
                park: Park::UntilBumped,
            },
            Duration::ZERO,
            Deadline::after(Duration::from_secs(30)),
            Some(Duration::from_secs(10)),
            || {
                steps.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(1));
                true
            },
            || steps.load(Ordering::SeqCst) >= 5,
        );
        assert!(got);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }
}
