//! The staging pool: a bounded set of reusable host buffers that device bytes pass
//! through on their way to a socket (and back). Pinned (`cuMemHostAlloc`) whenever a
//! CUDA driver is present, so a device transfer never goes through pageable memory;
//! plain aligned host memory only where there is no driver (the host-memory tests).
//! Buffers are created on first use, up to the bound, and reused; `acquire` waits (with
//! a deadline) when all are out.

use std::alloc::Layout;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cudarc::driver::sys;
use parking_lot::{Condvar, Mutex};

use super::driver::{check, driver};
use crate::error::{Error, Result, Status};

/// Page alignment for pageable buffers (what pinned allocations get anyway).
const ALIGN: usize = 4096;

/// What the pool's buffers are made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostMemory {
    /// Page-locked, mapped into every CUDA context (`CU_MEMHOSTALLOC_PORTABLE`): DMA
    /// engines copy to and from it directly.
    Pinned,
    /// Ordinary memory: only for the host copier where no driver exists.
    Pageable,
}

/// Knobs of a staging pool.
#[derive(Clone, Debug)]
pub struct StagingConfig {
    /// Bytes per buffer: the pipeline's chunk.
    pub chunk: usize,
    /// Most buffers in existence at once (the pool's memory bound is `chunk * buffers`).
    pub buffers: usize,
    /// A transfer's pipeline depth: it holds at most `depth + 1` buffers at once
    /// (`depth - 1` queued between its two threads, one in each thread's hands).
    pub depth: usize,
    /// How long `acquire` waits for a free buffer before failing with `Timeout`.
    pub acquire_timeout: Duration,
}

impl Default for StagingConfig {
    fn default() -> Self {
        StagingConfig {
            chunk: 1 << 20,
            buffers: 32,
            depth: 4,
            acquire_timeout: Duration::from_secs(30),
        }
    }
}

impl StagingConfig {
    /// Defaults, then `DLSLIME_STAGING_CHUNK` (bytes), `DLSLIME_STAGING_BUFFERS` and
    /// `DLSLIME_STAGING_DEPTH`; malformed or zero values are ignored.
    pub fn from_env() -> StagingConfig {
        let mut c = StagingConfig::default();
        let num = |k: &str| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|&n| n > 0)
        };
        if let Some(n) = num("DLSLIME_STAGING_CHUNK") {
            c.chunk = n;
        }
        if let Some(n) = num("DLSLIME_STAGING_BUFFERS") {
            c.buffers = n;
        }
        if let Some(n) = num("DLSLIME_STAGING_DEPTH") {
            c.depth = n;
        }
        c.depth = c.depth.clamp(1, c.buffers);
        c
    }
}

/// One host buffer of `len` bytes; freed the way it was allocated.
struct HostBuf {
    ptr: *mut u8,
    len: usize,
    memory: HostMemory,
}

// SAFETY: a HostBuf owns its allocation exclusively; it is handed between threads whole.
unsafe impl Send for HostBuf {}

impl HostBuf {
    fn alloc(len: usize, memory: HostMemory) -> Result<HostBuf> {
        let ptr = match memory {
            HostMemory::Pinned => {
                let d = driver()?;
                d.bind(0)?;
                let mut p: *mut std::ffi::c_void = std::ptr::null_mut();
                check(
                    // SAFETY: a context is current; the out-param is a local.
                    unsafe { sys::cuMemHostAlloc(&mut p, len, sys::CU_MEMHOSTALLOC_PORTABLE) },
                    "cuMemHostAlloc",
                )?;
                p.cast()
            }
            HostMemory::Pageable => {
                let layout = Layout::from_size_align(len, ALIGN)
                    .map_err(|_| Error::invalid("staging chunk too large"))?;
                // SAFETY: `len` > 0 (the pool refuses a zero chunk).
                let p = unsafe { std::alloc::alloc(layout) };
                if p.is_null() {
                    return Err(Error::new(
                        Status::ResourceExhausted,
                        "staging buffer allocation failed",
                    ));
                }
                p
            }
        };
        Ok(HostBuf { ptr, len, memory })
    }
}

impl Drop for HostBuf {
    fn drop(&mut self) {
        match self.memory {
            // SAFETY: allocated by cuMemHostAlloc (portable: any context may free it).
            HostMemory::Pinned => unsafe {
                let _ = sys::cuMemFreeHost(self.ptr.cast());
            },
            // SAFETY: allocated above with exactly this layout.
            HostMemory::Pageable => unsafe {
                std::alloc::dealloc(self.ptr, Layout::from_size_align_unchecked(self.len, ALIGN))
            },
        }
    }
}

#[derive(Default)]
struct Free {
    bufs: Vec<HostBuf>,
    created: usize,
}

/// A bounded pool of staging buffers. Thread-safe.
pub struct StagingPool {
    config: StagingConfig,
    memory: HostMemory,
    free: Mutex<Free>,
    returned: Condvar,
    staged_bytes: AtomicU64,
}

/// Counters of a pool, for tests and stats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StagingStats {
    /// Buffers allocated so far (never more than the bound).
    pub created: usize,
    /// Buffers handed out right now.
    pub in_use: usize,
    /// Bytes that went through the pool's buffers.
    pub staged_bytes: u64,
}

impl StagingPool {
    pub fn new(config: StagingConfig, memory: HostMemory) -> Result<Arc<StagingPool>> {
        if config.chunk == 0 || config.buffers == 0 || config.depth == 0 {
            return Err(Error::invalid(
                "staging pool: chunk, buffers and depth must be positive",
            ));
        }
        if memory == HostMemory::Pinned {
            driver()?;
        }
        Ok(Arc::new(StagingPool {
            config,
            memory,
            free: Mutex::new(Free::default()),
            returned: Condvar::new(),
            staged_bytes: AtomicU64::new(0),
        }))
    }

    /// The process-wide pool the transports stage through: pinned when a CUDA driver is
    /// present, pageable otherwise; sized by [`StagingConfig::from_env`].
    pub fn global() -> &'static Arc<StagingPool> {
        static POOL: OnceLock<Arc<StagingPool>> = OnceLock::new();
        POOL.get_or_init(|| {
            let memory = if driver().is_ok() {
                HostMemory::Pinned
            } else {
                HostMemory::Pageable
            };
            StagingPool::new(StagingConfig::from_env(), memory)
                .expect("the environment's staging config is validated")
        })
    }

    pub fn config(&self) -> &StagingConfig {
        &self.config
    }

    pub fn memory(&self) -> HostMemory {
        self.memory
    }

    pub fn stats(&self) -> StagingStats {
        let f = self.free.lock();
        StagingStats {
            created: f.created,
            in_use: f.created - f.bufs.len(),
            staged_bytes: self.staged_bytes.load(Ordering::Relaxed),
        }
    }

    /// A free buffer: a reused one, a new one while under the bound, or the next one
    /// returned. `Timeout` after the pool's acquire timeout; `Cancelled` once `stop` is
    /// set (a pipeline that failed elsewhere calls [`StagingPool::wake`]).
    pub fn acquire(self: &Arc<Self>, stop: Option<&AtomicBool>) -> Result<StagingBuf> {
        let deadline = Instant::now() + self.config.acquire_timeout;
        let mut f = self.free.lock();
        loop {
            if stop.is_some_and(|s| s.load(Ordering::Acquire)) {
                return Err(Error::new(Status::Cancelled, "staging transfer stopped"));
            }
            if let Some(b) = f.bufs.pop() {
                return Ok(StagingBuf {
                    pool: self.clone(),
                    buf: Some(b),
                });
            }
            if f.created < self.config.buffers {
                f.created += 1;
                drop(f);
                return match HostBuf::alloc(self.config.chunk, self.memory) {
                    Ok(b) => Ok(StagingBuf {
                        pool: self.clone(),
                        buf: Some(b),
                    }),
                    Err(e) => {
                        self.free.lock().created -= 1;
                        Err(e)
                    }
                };
            }
            if self.returned.wait_until(&mut f, deadline).timed_out() {
                return Err(Error::new(
                    Status::Timeout,
                    format!(
                        "no staging buffer free within {:?} (all {} in use)",
                        self.config.acquire_timeout, self.config.buffers
                    ),
                ));
            }
        }
    }

    /// Wakes every waiter of `acquire` (so a stopped one sees its flag).
    pub fn wake(&self) {
        let _f = self.free.lock();
        self.returned.notify_all();
    }

    fn put_back(&self, b: HostBuf) {
        self.free.lock().bufs.push(b);
        self.returned.notify_one();
    }
}

/// A buffer out of the pool; goes back on drop.
pub struct StagingBuf {
    pool: Arc<StagingPool>,
    buf: Option<HostBuf>,
}

impl StagingBuf {
    pub fn capacity(&self) -> usize {
        self.buf.as_ref().map_or(0, |b| b.len)
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.buf.as_ref().map_or(std::ptr::null_mut(), |b| b.ptr)
    }

    /// The first `n` bytes (`n` <= capacity).
    pub fn bytes(&self, n: usize) -> &[u8] {
        let b = self.buf.as_ref().expect("live until drop");
        assert!(n <= b.len);
        // SAFETY: the buffer owns `len` bytes and this guard owns the buffer.
        unsafe { std::slice::from_raw_parts(b.ptr, n) }
    }

    /// The first `n` bytes, writable (`n` <= capacity).
    pub fn bytes_mut(&mut self, n: usize) -> &mut [u8] {
        let b = self.buf.as_ref().expect("live until drop");
        assert!(n <= b.len);
        // SAFETY: as in `bytes`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(b.ptr, n) }
    }

    /// Counts `n` bytes as staged through this pool.
    pub(crate) fn note_staged(&self, n: usize) {
        self.pool
            .staged_bytes
            .fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl Drop for StagingBuf {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            self.pool.put_back(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(buffers: usize, timeout_ms: u64) -> Arc<StagingPool> {
        StagingPool::new(
            StagingConfig {
                chunk: 4096,
                buffers,
                depth: 2,
                acquire_timeout: Duration::from_millis(timeout_ms),
            },
            HostMemory::Pageable,
        )
        .unwrap()
    }

    #[test]
    fn bounded_and_reused() {
        let p = pool(3, 50);
        let a = p.acquire(None).unwrap();
        let b = p.acquire(None).unwrap();
        let c = p.acquire(None).unwrap();
        assert_eq!(p.stats().created, 3);
        assert_eq!(p.stats().in_use, 3);
        let t = Instant::now();
        let e = p.acquire(None).err().unwrap();
        assert_eq!(e.status(), Status::Timeout);
        assert!(t.elapsed() >= Duration::from_millis(50));
        let addr = {
            let mut a = a;
            a.as_mut_ptr() as usize
        };
        // `a` went back: the next acquire reuses it, and nothing new is allocated.
        let mut d = p.acquire(None).unwrap();
        assert_eq!(d.as_mut_ptr() as usize, addr);
        assert_eq!(p.stats().created, 3);
        drop((b, c, d));
        assert_eq!(p.stats().in_use, 0);
    }

    #[test]
    fn waiter_gets_a_returned_buffer() {
        let p = pool(1, 5000);
        let a = p.acquire(None).unwrap();
        let p2 = p.clone();
        let t = std::thread::spawn(move || p2.acquire(None).map(|b| b.capacity()));
        std::thread::sleep(Duration::from_millis(20));
        drop(a);
        assert_eq!(t.join().unwrap().unwrap(), 4096);
    }

    #[test]
    fn stop_flag_ends_a_wait() {
        let p = pool(1, 5000);
        let _a = p.acquire(None).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (p2, s2) = (p.clone(), stop.clone());
        let t = std::thread::spawn(move || p2.acquire(Some(&s2)).map(|_| ()));
        std::thread::sleep(Duration::from_millis(20));
        stop.store(true, Ordering::Release);
        p.wake();
        assert_eq!(t.join().unwrap().unwrap_err().status(), Status::Cancelled);
    }

    #[test]
    fn zero_sizes_refused_and_pinned_needs_a_driver() {
        let c = StagingConfig {
            chunk: 0,
            ..StagingConfig::default()
        };
        assert_eq!(
            StagingPool::new(c, HostMemory::Pageable)
                .err()
                .unwrap()
                .status(),
            Status::InvalidArgument
        );
        if driver().is_err() {
            assert_eq!(
                StagingPool::new(StagingConfig::default(), HostMemory::Pinned)
                    .err()
                    .unwrap()
                    .status(),
                Status::DeviceUnavailable
            );
        }
    }
}
