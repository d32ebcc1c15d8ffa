//! Raw floors measured in the same run as the endpoint: shared-memory ping-pong between
//! two processes (spinning, and futex sleeping) and single-thread memcpy bandwidth.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Two words in a shared page: `ping` written by the parent, `pong` by the child.
pub struct PingPong {
    pub base: *mut u8,
}

impl PingPong {
    /// Creates the page in an inheritable memfd; returns (fd, page).
    pub fn create() -> (i32, PingPong) {
        // SAFETY: plain system calls on a NUL-terminated name and the fd they return; `map`
        // checks its result.
        unsafe {
            let fd = libc::memfd_create(c"pingpong".as_ptr(), 0);
            assert!(fd >= 0);
            assert_eq!(libc::ftruncate(fd, 4096), 0);
            (fd, PingPong::map(fd))
        }
    }
    pub fn map(fd: i32) -> PingPong {
        // SAFETY: a fresh shared mapping of one page of `fd` (at least 4096 bytes long): it aliases
        // no Rust memory, and failure is checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        PingPong { base: p as *mut u8 }
    }
    pub fn ping(&self) -> &AtomicU32 {
        // SAFETY: `base` is a page-aligned 4096-byte mapping that is never unmapped; atomics
        // are the only access to these words, from either process.
        unsafe { &*(self.base as *const AtomicU32) }
    }
    pub fn pong(&self) -> &AtomicU32 {
        // SAFETY: as for `ping`: offset 128 is aligned and inside the page.
        unsafe { &*(self.base.add(128) as *const AtomicU32) }
    }
}

fn futex(w: &AtomicU32, op: i32, v: u32) {
    let ts = libc::timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    // SAFETY: `w` is a live, aligned u32 for the call; the kernel only reads it (WAIT) or uses
    // its address as a key (WAKE), and `ts` outlives the call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            w.as_ptr(),
            op,
            v,
            &ts as *const _,
            0usize,
            0,
        )
    };
}

/// Waits until `w` holds `want`; spinning, or sleeping on the futex.
pub fn await_value(w: &AtomicU32, want: u32, sleep: bool) {
    loop {
        let v = w.load(Ordering::Acquire);
        if v == want {
            return;
        }
        if sleep {
            futex(w, libc::FUTEX_WAIT, v);
        } else {
            std::hint::spin_loop();
        }
    }
}

pub fn post(w: &AtomicU32, v: u32, sleep: bool) {
    w.store(v, Ordering::Release);
    if sleep {
        futex(w, libc::FUTEX_WAKE, 1);
    }
}

/// Parent side: `n` round trips; returns per-round-trip times (read from the cheap
/// per-sample timer, as the endpoint's round trips are).
pub fn pingpong_parent(pp: &PingPong, n: u32, sleep: bool) -> Vec<Duration> {
    let ticks = crate::bench_common::Ticks::calibrate();
    let mut out = Vec::with_capacity(n as usize);
    for i in 1..=n {
        let t = ticks.now();
        post(pp.ping(), i, sleep);
        await_value(pp.pong(), i, sleep);
        out.push(ticks.since(t));
    }
    out
}

pub fn pingpong_child(pp: &PingPong, n: u32, sleep: bool) {
    for i in 1..=n {
        await_value(pp.ping(), i, sleep);
        post(pp.pong(), i, sleep);
    }
}

/// Both ping-pong floors (spinning, then futex sleeping), `n` round trips each, against
/// a child `exe --child raw <fd> <n>` that runs [`raw_child`]; returns their times.
pub fn raw_pingpong(exe: &std::path::Path, n: u32) -> (Vec<Duration>, Vec<Duration>) {
    let (fd, pp) = PingPong::create();
    let mut child = std::process::Command::new(exe)
        .args(["--child", "raw", &fd.to_string(), &n.to_string()])
        .spawn()
        .unwrap();
    let spin = pingpong_parent(&pp, n, false);
    let fut = pingpong_parent(&pp, n, true);
    child.wait().unwrap();
    (spin, fut)
}

/// The child of [`raw_pingpong`]; `args` are `<fd> <n>`.
pub fn raw_child(args: &[String]) {
    let fd: i32 = args[0].parse().unwrap();
    let n: u32 = args[1].parse().unwrap();
    let pp = PingPong::map(fd);
    pingpong_child(&pp, n, false);
    pingpong_child(&pp, n, true);
}

/// Single-thread memcpy time per copy of `size` bytes (several repetitions).
pub fn memcpy_times(size: usize, reps: usize) -> Vec<Duration> {
    let src = vec![1u8; size];
    let mut dst = vec![0u8; size];
    dst.copy_from_slice(&src); // fault the pages in
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            // SAFETY: `src` and `dst` are distinct vectors of `size` bytes.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr(), size) };
            std::hint::black_box(&dst);
            t.elapsed()
        })
        .collect()
}
