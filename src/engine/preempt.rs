//! Whether spinning steals a CPU that another thread needs: the calling thread's
//! involuntary context switches (`getrusage(RUSAGE_THREAD)`).
//!
//! A spinning waiter only pays off while the thread that will answer it runs on another
//! CPU. When every CPU is taken (a busy neighbour, more runnable threads than cores) the
//! answering thread, once woken, waits for a CPU, and the spinner holds one of them: the
//! scheduler ends up preempting the spinner (an involuntary switch) or the answer waits
//! for the spin to run out. The plain socket echo never spins, so it always leaves the
//! CPU to the thread it woke. A thread preempted since its last look therefore stops
//! spinning for a while (waits go straight to the futex, where the answering thread wakes
//! it directly), and looks again after a back-off that doubles while the preemptions go
//! on. The count is read once per [`LOOK_EVERY`] waits that may spin (a syscall, about
//! 1 µs in the loaded VMs this runs on), so seven waits in eight pay nothing for it.

use std::cell::Cell;

/// Waits between two readings of the thread's switch count.
pub const LOOK_EVERY: u32 = 8;
/// Waits without spinning after the first preemption seen.
const FIRST_BACKOFF: u32 = 16;
/// At most this many waits without spinning before looking again.
const MAX_BACKOFF: u32 = 1024;

/// A thread's back-off state.
#[derive(Clone, Copy, Debug, PartialEq)]
struct State {
    /// Involuntary switches at the last look (`None`: never looked).
    seen: Option<u64>,
    /// Waits since the last look.
    since_look: u32,
    /// Waits left that must not spin.
    quiet: u32,
    /// The next back-off (doubles while preemptions go on, resets after a clean look).
    backoff: u32,
}

impl State {
    const NEW: State = State {
        seen: None,
        since_look: 0,
        quiet: 0,
        backoff: FIRST_BACKOFF,
    };

    /// A wait starts: whether it may spin. The back-off's last wait drops the reading,
    /// so the next look judges only waits that spun.
    fn start(&mut self) -> bool {
        if self.quiet == 0 {
            return true;
        }
        self.quiet -= 1;
        if self.quiet == 0 {
            self.seen = None;
        }
        false
    }

    /// A wait ended: whether it is time to look at the switch count (never while
    /// backing off).
    fn due(&mut self) -> bool {
        if self.quiet > 0 {
            return false;
        }
        self.since_look += 1;
        self.since_look >= LOOK_EVERY || self.seen.is_none()
    }

    /// The switch count is `now`: back off if it moved since the last look.
    fn look(&mut self, now: u64) {
        self.since_look = 0;
        match self.seen {
            Some(seen) if now > seen => {
                self.quiet = self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            }
            Some(_) => self.backoff = FIRST_BACKOFF,
            None => {}
        }
        self.seen = Some(now);
    }
}

thread_local! {
    static STATE: Cell<State> = const { Cell::new(State::NEW) };
}

/// The calling thread's involuntary context switches so far (`None` if unreadable).
fn involuntary_switches() -> Option<u64> {
    // SAFETY: an all-zero rusage (plain integers) is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage to the valid, writable pointer we pass.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    (rc == 0).then_some(ru.ru_nivcsw as u64)
}

/// Whether the wait starting now may spin: false while this thread backs off after
/// preemptions.
pub fn may_spin() -> bool {
    STATE.with(|s| {
        let mut st = s.get();
        let ok = st.start();
        s.set(st);
        ok
    })
}

/// A wait ended. Every [`LOOK_EVERY`] waits, looks at the thread's switch count: a
/// preemption since the last look (while it spun, or while it worked between waits:
/// either way the CPUs are oversubscribed) starts or extends a back-off.
pub fn note_wait() {
    STATE.with(|s| {
        let mut st = s.get();
        if st.due() {
            if let Some(now) = involuntary_switches() {
                st.look(now);
            }
        }
        s.set(st);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switch_count_is_readable() {
        assert!(involuntary_switches().is_some());
    }

    /// Ends `n` waits, the switch count reading `count` whenever it is looked at.
    fn waits(st: &mut State, n: u32, count: u64) -> u32 {
        let mut spun = 0;
        for _ in 0..n {
            spun += st.start() as u32;
            if st.due() {
                st.look(count);
            }
        }
        spun
    }

    #[test]
    fn preemptions_stop_spinning_for_a_doubling_backoff() {
        let mut st = State::NEW;
        // Not preempted: every wait spins.
        assert_eq!(waits(&mut st, 100, 5), 100);
        // Preempted: at most LOOK_EVERY more waits spin before the back-off starts,
        // which lasts FIRST_BACKOFF waits.
        let spun = waits(&mut st, LOOK_EVERY, 6);
        assert!(spun <= LOOK_EVERY);
        assert!(st.quiet > 0 && st.quiet <= FIRST_BACKOFF);
        assert_eq!(st.backoff, 2 * FIRST_BACKOFF);
        let quiet = st.quiet;
        assert_eq!(waits(&mut st, quiet, 6), 0, "backing off");
        // Preempted again at the next look: twice as long.
        st.look(7);
        assert_eq!(st.quiet, 2 * FIRST_BACKOFF);
        assert_eq!(waits(&mut st, 2 * FIRST_BACKOFF, 7), 0);
        // Never longer than the cap.
        for c in 8..40 {
            st.quiet = 0;
            st.look(c);
        }
        assert_eq!(st.backoff, MAX_BACKOFF);
        // A clean look: spinning is back, and the next back-off starts short again.
        st.quiet = 0;
        assert_eq!(waits(&mut st, 3 * LOOK_EVERY, 39), 3 * LOOK_EVERY);
        assert_eq!(st.backoff, FIRST_BACKOFF);
    }
}
