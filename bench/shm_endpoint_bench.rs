//! Shared-memory endpoint measurements: 64 B send/recv round trips and one-sided
//! write/read bandwidth on shared-allocated regions.

use std::time::{Duration, Instant};

use dlslime::engine::{Config, ProgressMode};
use dlslime::memory::SharedBuf;
use dlslime::transport::shm::{ShmConfig, ShmEndpoint};
use dlslime::{Assignment, Endpoint, MemoryPool};

pub const REGION: usize = 256 << 20;

/// `spin`: inline progress that spins (bounded at 1 s); otherwise inline progress that
/// sleeps on the doorbell at once (futex mode).
pub fn endpoint(spin: bool) -> (ShmEndpoint, SharedBuf) {
    let engine = Config {
        spin: if spin {
            Duration::from_secs(1)
        } else {
            Duration::ZERO
        },
        progress: ProgressMode::Inline,
        ..Config::default()
    };
    let buf = SharedBuf::new(REGION).unwrap();
    // SAFETY: nothing else uses `buf` yet: it is not registered or shared.
    unsafe { buf.as_mut_slice().fill(1) };
    let pool = MemoryPool::new();
    // SAFETY: `buf` is returned with the endpoint; the callers keep it (`_buf`) until the
    // end of their scope, after their last operation on the endpoint.
    unsafe { pool.register(Some("buf"), buf.as_ptr(), REGION).unwrap() };
    let ep = ShmEndpoint::new(
        pool,
        ShmConfig {
            engine,
            force_staged: false,
            host_id_override: None,
            ..ShmConfig::default()
        },
    )
    .unwrap();
    (ep, buf)
}

/// `n` 64 B round trips, each timed with the cheap per-sample timer
/// ([`crate::bench_common::Ticks`], as the raw floor and `ucx_perftest` time theirs).
pub fn rtt_parent(ep: &ShmEndpoint, n: usize) -> Vec<Duration> {
    let ticks = crate::bench_common::Ticks::calibrate();
    let msg = [7u8; 64];
    let mut back = [0u8; 64];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = ticks.now();
        // SAFETY: `back` is untouched until `r.wait()` returns. `msg` is never modified and
        // outlives the loop; its bytes have been delivered once the echo arrives (`r.wait()`).
        let r = unsafe { ep.recv(back.as_mut_ptr(), 64, None).unwrap() };
        // SAFETY: see above.
        unsafe { ep.send(msg.as_ptr(), 64, None).unwrap() };
        r.wait().unwrap();
        out.push(ticks.since(t));
    }
    out
}

pub fn echo_child(ep: &ShmEndpoint, n: usize) {
    let mut b = [0u8; 64];
    for _ in 0..n {
        // SAFETY: the receive writes `b` only when the next message arrives, which the parent
        // sends after it got the previous echo, i.e. after the send below has delivered `b`.
        unsafe { ep.recv(b.as_mut_ptr(), 64, None).unwrap() }
            .wait()
            .unwrap();
        // SAFETY: `b` is not modified until the next message arrives (see above).
        unsafe { ep.send(b.as_ptr(), 64, None).unwrap() };
    }
}

/// Time per one-sided op of `size` bytes (write or read, waited).
pub fn one_sided(ep: &ShmEndpoint, size: usize, write: bool, reps: usize) -> Vec<Duration> {
    let a = [Assignment::new(0, 0, 0, 0, size as u64)];
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            op_waited(ep, &a, write);
            t.elapsed()
        })
        .collect()
}

/// One one-sided op (write or read), waited.
fn op_waited(ep: &ShmEndpoint, a: &[Assignment], write: bool) {
    let f = if write {
        ep.write(a, None)
    } else {
        ep.read(a, None)
    }
    .unwrap();
    f.wait().unwrap();
}

/// Mean time per one-sided op of `size` bytes over `reps` back-to-back ops (write or
/// read, each waited), in ns: one clock read per batch, not per op.
pub fn batch_mean_ns(ep: &ShmEndpoint, size: usize, write: bool, reps: usize) -> f64 {
    let a = [Assignment::new(0, 0, 0, 0, size as u64)];
    let t = Instant::now();
    for _ in 0..reps {
        op_waited(ep, &a, write);
    }
    t.elapsed().as_nanos() as f64 / reps as f64
}
