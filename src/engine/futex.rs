//! Thin wrappers over the Linux futex syscall.
//!
//! `private` futexes are for words inside one process (futures); `shared` ones work on
//! words in memory mapped by several processes (the shared-memory transport's rings).

use std::sync::atomic::AtomicU32;
use std::time::Duration;

fn futex(word: &AtomicU32, op: libc::c_int, val: u32, timeout: Option<Duration>) -> libc::c_long {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call; the kernel only
    // reads it (WAIT) or uses its address as a key (WAKE).
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op,
            val,
            ts_ptr,
            std::ptr::null::<u32>(),
            0,
        )
    }
}

/// Sleeps while `*word == expected`, at most `timeout`. Spurious returns are allowed.
pub fn wait_private(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    futex(
        word,
        libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
        expected,
        timeout,
    );
}

/// Wakes up to `n` threads sleeping on `word` in this process (`n` is an i32 for the
/// kernel: pass `i32::MAX as u32` for all).
pub fn wake_private(word: &AtomicU32, n: u32) {
    futex(word, libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, n, None);
}

/// Like [`wait_private`] for a word in memory shared between processes.
pub fn wait_shared(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    futex(word, libc::FUTEX_WAIT, expected, timeout);
}

/// Like [`wake_private`] for a word in memory shared between processes.
pub fn wake_shared(word: &AtomicU32, n: u32) {
    futex(word, libc::FUTEX_WAKE, n, None);
}
