//! The one global switch. Off unless the environment says `DLSLIME_OBS=1` (as in the
//! original DLSlime) or [`set_enabled`] turns it on; when off, every hook costs one
//! relaxed load and a branch.

use std::sync::atomic::{AtomicU8, Ordering};

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
    STATE.store(if on { ON } else { OFF }, Ordering::Relaxed);
}

/// Monotonic nanoseconds since an arbitrary origin (CLOCK_MONOTONIC through the vDSO).
#[inline]
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the pointer we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
