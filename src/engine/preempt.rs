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
//! on. The count is read once per [`LOOK_EVERY`] waits (a syscall, 0.2-0.5 µs in the VMs
//! this runs on), so an uncontended wait pays almost nothing for it.

use std::cell::Cell;

/// Waits between two readings of the thread's switch count.
pub const LOOK_EVERY: u32 = 8;
/// Waits without spinning after the first preemption seen.
const FIRST_BACKOFF: u32 = 16;
/// At most this many waits without spinning before looking again.
const MAX_BACKOFF: u32 = 1024;

#[derive(Clone, Copy)]
struct State {
    /// Involuntary switches at the last look (`u64::MAX`: never looked).
    seen: u64,
    /// Waits since the last look.
    since_look: u32,
    /// Waits left that must not spin.
    quiet: u32,
    /// The next back-off (doubles while preemptions go on, resets after a clean look).
    backoff: u32,
}

thread_local! {
    static STATE: Cell<State> = const {
        Cell::new(State { seen: u64::MAX, since_look: 0, quiet: 0, backoff: FIRST_BACKOFF })
    };
}

/// The calling thread's involuntary context switches so far (`None` if unreadable).
fn involuntary_switches() -> Option<u64> {
    // SAFETY: an all-zero rusage (plain integers) is valid; getrusage writes one rusage
    // to the pointer we pass and reads nothing.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above: a valid, writable rusage for the duration of the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    (rc == 0).then_some(ru.ru_nivcsw as u64)
}

/// Whether the wait starting now may spin: false while this thread backs off after
/// preemptions. Counts the wait.
pub fn may_spin() -> bool {
    STATE.with(|s| {
        let mut st = s.get();
        let ok = st.quiet == 0;
        st.quiet = st.quiet.saturating_sub(1);
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
        st.since_look += 1;
        if st.since_look < LOOK_EVERY && st.seen != u64::MAX {
            s.set(st);
            return;
        }
        st.since_look = 0;
        let Some(now) = involuntary_switches() else {
            s.set(st);
            return;
        };
        if st.seen != u64::MAX && now > st.seen {
            st.quiet = st.backoff;
            st.backoff = (st.backoff * 2).min(MAX_BACKOFF);
        } else if st.seen != u64::MAX {
            st.backoff = FIRST_BACKOFF;
        }
        st.seen = now;
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

    #[test]
    fn a_preemption_stops_spinning_for_the_backoff() {
        // This thread's own state: set it as if it had looked before and been preempted
        // since (seen below the real count).
        STATE.with(|s| {
            s.set(State {
                seen: 0,
                since_look: LOOK_EVERY - 1,
                quiet: 0,
                backoff: FIRST_BACKOFF,
            })
        });
        let real = involuntary_switches().unwrap();
        note_wait();
        if real > 0 {
            for _ in 0..FIRST_BACKOFF {
                assert!(!may_spin());
            }
        }
        assert!(may_spin());
    }
}
