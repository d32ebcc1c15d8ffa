//! Stream ordering of operations (the original's device signals, §2.8 of the spec):
//!
//! * [`wait_stream`], before an operation: the caller's thread waits for the work already
//!   queued on the CUDA stream (`cuStreamSynchronize`), so the operation reads the bytes
//!   a kernel queued there produced;
//! * [`signal_stream`], after it: queues on the stream a wait for the operation's
//!   completion (`cuStreamWaitValue32` on a pinned, device-mapped word), so work queued
//!   on the stream afterwards runs only once the operation is done, without blocking
//!   the host. A process-wide thread writes the word when the operation ends (successful
//!   or not: a failed operation releases the stream too; its future says why).
//!
//! One word per stream, counting up: the n-th signalled operation of a stream waits
//! `word >= n`, and the word advances past n only once operations 1..=n have all ended,
//! so operations completing out of order release the stream in order.

use std::collections::{HashMap, VecDeque};
use std::sync::OnceLock;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use cudarc::driver::sys;
use parking_lot::Mutex;

use super::driver::{check, driver};
use crate::error::{Error, Result, Status};
use crate::future::Future;

/// Streams that may hold a signal word at once (each word is one pinned allocation).
const MAX_STREAMS: usize = 1024;
/// Signalled operations not yet ended, over all streams.
const MAX_PENDING: usize = 65536;

/// Waits for the work queued on `stream` (0: the legacy default stream).
/// `DeviceUnavailable` without a CUDA driver.
///
/// # Safety
/// `stream` must be a live stream (or 0) of a context of this process.
pub unsafe fn wait_stream(stream: usize) -> Result<()> {
    driver()?;
    check(
        // SAFETY: a live stream (contract).
        unsafe { sys::cuStreamSynchronize(stream as sys::CUstream) },
        "cuStreamSynchronize",
    )
}

/// A stream's signal word: pinned host memory the device reads.
struct Word {
    host: *mut u32,
    dev: sys::CUdeviceptr,
    /// Operations signalled on this stream so far (the last target).
    issued: u32,
}

// SAFETY: the pointer is a pinned allocation owned by the table, never freed, written
// only by the signal thread (volatile) and read by the device.
unsafe impl Send for Word {}

struct Signals {
    words: Mutex<HashMap<usize, Word>>,
    tx: Sender<(usize, u32, Future)>,
}

fn signals() -> &'static Signals {
    static S: OnceLock<Signals> = OnceLock::new();
    S.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::bounded(MAX_PENDING);
        std::thread::Builder::new()
            .name("dlslime-stream".into())
            .spawn(move || run(rx))
            .expect("spawn the stream-signal thread");
        Signals {
            words: Mutex::new(HashMap::new()),
            tx,
        }
    })
}

/// Queues on `stream` a wait for `fut`'s completion. `DeviceUnavailable` without a CUDA
/// driver; `ResourceExhausted` past the bounds on streams and pending signals.
///
/// # Safety
/// `stream` must be a live stream (or 0, the legacy default stream) of a context of this
/// process; the wait stays queued on it until the operation ends (by its deadline).
pub unsafe fn signal_stream(stream: usize, fut: &Future) -> Result<()> {
    let d = driver()?;
    let s = signals();
    let mut words = s.words.lock();
    if !words.contains_key(&stream) {
        if words.len() >= MAX_STREAMS {
            return Err(Error::new(
                Status::ResourceExhausted,
                format!("signal_stream: more than {MAX_STREAMS} streams"),
            ));
        }
        let mut ctx: sys::CUcontext = std::ptr::null_mut();
        if stream != 0 {
            // SAFETY: a live stream (contract); the out-param is a local.
            let r = unsafe { sys::cuStreamGetCtx(stream as sys::CUstream, &mut ctx) };
            check(r, "cuStreamGetCtx")?;
            // SAFETY: the stream's own context.
            check(unsafe { sys::cuCtxSetCurrent(ctx) }, "cuCtxSetCurrent")?;
        } else {
            d.bind(0)?;
        }
        let mut p: *mut std::ffi::c_void = std::ptr::null_mut();
        check(
            // SAFETY: a context is current; the out-param is a local.
            unsafe {
                sys::cuMemHostAlloc(
                    &mut p,
                    4,
                    sys::CU_MEMHOSTALLOC_PORTABLE | sys::CU_MEMHOSTALLOC_DEVICEMAP,
                )
            },
            "cuMemHostAlloc(DEVICEMAP)",
        )?;
        // SAFETY: 4 bytes just allocated, aligned (driver allocations are).
        unsafe { std::ptr::write_volatile(p as *mut u32, 0) };
        let mut dev: sys::CUdeviceptr = 0;
        check(
            // SAFETY: `p` is a mapped pinned allocation; the out-param is a local.
            unsafe { sys::cuMemHostGetDevicePointer_v2(&mut dev, p, 0) },
            "cuMemHostGetDevicePointer",
        )?;
        words.insert(
            stream,
            Word {
                host: p as *mut u32,
                dev,
                issued: 0,
            },
        );
    }
    let w = words.get_mut(&stream).expect("inserted above");
    let target = w.issued.wrapping_add(1);
    // First the thread's promise to write the word, then the wait: a wait never waits
    // for a write nobody will make.
    match s.tx.try_send((w.host as usize, target, fut.clone())) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            return Err(Error::new(
                Status::ResourceExhausted,
                format!("signal_stream: {MAX_PENDING} signalled operations pending"),
            ))
        }
        Err(TrySendError::Disconnected(_)) => {
            return Err(Error::new(
                Status::Internal,
                "the stream-signal thread is gone",
            ))
        }
    }
    w.issued = target;
    check(
        // SAFETY: a live stream; `dev` is the device address of the stream's word.
        unsafe {
            sys::cuStreamWaitValue32_v2(
                stream as sys::CUstream,
                w.dev,
                target,
                sys::CUstreamWaitValue_flags::CU_STREAM_WAIT_VALUE_GEQ as u32,
            )
        },
        "cuStreamWaitValue32",
    )
}

/// The signal thread: per word, operations in signalling order; the word advances over
/// the ended prefix. Polls while operations are pending (every 100 µs), sleeps otherwise.
fn run(rx: Receiver<(usize, u32, Future)>) {
    let mut pending: HashMap<usize, VecDeque<(u32, Future)>> = HashMap::new();
    loop {
        let first = if pending.is_empty() {
            match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => return,
            }
        } else {
            rx.recv_timeout(Duration::from_micros(100)).ok()
        };
        for (word, target, fut) in first.into_iter().chain(rx.try_iter()) {
            pending.entry(word).or_default().push_back((target, fut));
        }
        pending.retain(|&word, q| {
            let mut reached = None;
            while q.front().is_some_and(|(_, f)| f.done()) {
                reached = q.pop_front().map(|(t, _)| t);
            }
            if let Some(t) = reached {
                // SAFETY: a live pinned word of the table (never freed); the device reads
                // it, only this thread writes it.
                unsafe { std::ptr::write_volatile(word as *mut u32, t) };
            }
            !q.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_driver_streams_are_unavailable() {
        if driver().is_ok() {
            return; // make test-gpu covers real streams
        }
        // SAFETY: refused before the stream is used.
        let e = unsafe { wait_stream(0x1234) }.unwrap_err();
        assert_eq!(e.status(), Status::DeviceUnavailable);
        // SAFETY: as above.
        let e = unsafe { signal_stream(0x1234, &Future::ready(0)) }.unwrap_err();
        assert_eq!(e.status(), Status::DeviceUnavailable);
    }
}
