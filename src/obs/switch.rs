//! The one global switch. Off unless the environment says `DLSLIME_OBS=1` (as in the
//! original DLSlime) or [`set_enabled`] turns it on; when off, every hook costs one
//! relaxed load and a branch.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

const UNSET: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNSET);

/// Whether counters are being recorded.
#[inline]
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        ON => true,
        OFF => false,
        _ => from_env(),
    }
}

#[cold]
fn from_env() -> bool {
    let on = std::env::var("DLSLIME_OBS")
        .map(|v| matches!(v.trim(), "1" | "true" | "on" | "yes"))
        .unwrap_or(false);
    let _ = STATE.compare_exchange(
        UNSET,
        if on { ON } else { OFF },
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    STATE.load(Ordering::Relaxed) == ON
}

/// Turns recording on or off for the whole process (overrides `DLSLIME_OBS`). Operations
/// already in flight when it turns on are not counted; counters keep their values.
pub fn set_enabled(on: bool) {
    if on {
        calibrate();
    }
    STATE.store(if on { ON } else { OFF }, Ordering::Relaxed);
}

/// Monotonic nanoseconds since an arbitrary origin, for latencies only. On x86_64 it is
/// the time-stamp counter scaled by a factor calibrated against CLOCK_MONOTONIC when
/// recording is turned on (an `rdtsc` costs a fraction of a vDSO `clock_gettime`, which
/// matters for shared-memory operations of ~100 ns); elsewhere CLOCK_MONOTONIC itself.
#[inline]
pub fn now_ns() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        let mult = TSC_MULT.load(Ordering::Relaxed);
        if mult != 0 {
            // SAFETY: rdtsc has no preconditions on x86_64.
            let t = unsafe { core::arch::x86_64::_rdtsc() };
            return ((t as u128 * mult as u128) >> 32) as u64;
        }
    }
    mono_ns()
}

fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the pointer we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Nanoseconds per TSC tick in 32.32 fixed point; 0 until calibrated (or when the TSC
/// is not usable: then [`now_ns`] reads CLOCK_MONOTONIC).
static TSC_MULT: AtomicU64 = AtomicU64::new(0);

/// Measures the TSC against CLOCK_MONOTONIC over 2 ms, once, when the CPU says its TSC
/// is invariant (`constant_tsc` and `nonstop_tsc`).
fn calibrate() {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::Once;
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            if !(flags.contains("constant_tsc") && flags.contains("nonstop_tsc")) {
                return;
            }
            // SAFETY: rdtsc has no preconditions on x86_64.
            let tsc = || unsafe { core::arch::x86_64::_rdtsc() };
            let (m0, t0) = (mono_ns(), tsc());
            while mono_ns() - m0 < 2_000_000 {
                std::hint::spin_loop();
            }
            let (m1, t1) = (mono_ns(), tsc());
            if t1 > t0 {
                let mult = (((m1 - m0) as u128) << 32) / (t1 - t0) as u128;
                TSC_MULT.store(mult as u64, Ordering::Relaxed);
            }
        });
    }
}
