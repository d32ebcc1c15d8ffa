//! The staging pipeline: moves a region the CPU cannot address to a byte sink (a socket)
//! or from a byte source, chunk by chunk through the staging pool, with the copies
//! overlapped with the I/O: while chunk k is on the socket, chunk k+1 is being copied
//! (a copy thread and the caller's thread, joined by a channel as deep as the pool's
//! per-transfer depth). Transfers of one chunk or less run inline, without a thread.
//!
//! Errors are `io::Error`s because the caller is in the middle of a frame: a failed copy
//! leaves the stream out of step and the connection must close (its operations then
//! fail as on any broken connection). The copier's typed error is kept as the source.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::copier::Copier;
use super::staging::{StagingBuf, StagingPool};
use crate::error::Error;

fn io_err(e: Error) -> io::Error {
    io::Error::other(e)
}

/// Stops the other side of a pipeline that failed, and wakes it if it waits for a buffer.
struct Stopper<'a> {
    flag: AtomicBool,
    pool: &'a StagingPool,
}

impl Stopper<'_> {
    fn stop(&self) {
        self.flag.store(true, Ordering::Release);
        self.pool.wake();
    }
}

/// Copies `[src, src+len)` out of a region through `copier` and hands it to `sink` in
/// chunks of at most the pool's chunk size, in order.
///
/// # Safety
/// `[src, src+len)` must be readable through `copier` for the duration of the call.
pub unsafe fn send_staged(
    pool: &Arc<StagingPool>,
    copier: &dyn Copier,
    src: usize,
    len: usize,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let chunk = pool.config().chunk;
    if len <= chunk {
        let mut b = pool.acquire(None).map_err(io_err)?;
        // SAFETY: the source range is valid (contract); the buffer holds `chunk` >= len.
        unsafe { copier.copy_to_host(src, b.as_mut_ptr(), len) }.map_err(io_err)?;
        b.note_staged(len);
        return sink(b.bytes(len));
    }
    let stopper = Stopper {
        flag: AtomicBool::new(false),
        pool,
    };
    let (tx, rx) = crossbeam_channel::bounded::<Result<(StagingBuf, usize), Error>>(
        pool.config().depth.saturating_sub(1),
    );
    std::thread::scope(|s| {
        let stopper = &stopper;
        s.spawn(move || {
            let mut off = 0;
            while off < len {
                let n = chunk.min(len - off);
                let item = pool.acquire(Some(&stopper.flag)).and_then(|mut b| {
                    // SAFETY: inside the source range (contract); the buffer holds n.
                    unsafe { copier.copy_to_host(src + off, b.as_mut_ptr(), n) }.map(|()| (b, n))
                });
                let failed = item.is_err();
                if tx.send(item).is_err() || failed {
                    return;
                }
                off += n;
            }
        });
        let mut sent = 0;
        let mut result = Ok(());
        for item in rx.iter() {
            match item {
                Ok((b, n)) => {
                    b.note_staged(n);
                    if let Err(e) = sink(b.bytes(n)) {
                        result = Err(e);
                        break;
                    }
                    sent += n;
                }
                Err(e) => {
                    result = Err(io_err(e));
                    break;
                }
            }
        }
        if result.is_ok() && sent != len {
            result = Err(io::Error::other("staging copy thread ended early"));
        }
        stopper.stop();
        drop(rx);
        result
    })
}

/// Fills `[dst, dst+len)` of a region through `copier` with bytes from `source`, which
/// is called with consecutive chunks to fill (at most the pool's chunk size each).
///
/// # Safety
/// `[dst, dst+len)` must be writable through `copier` and not otherwise accessed for the
/// duration of the call.
pub unsafe fn recv_staged(
    pool: &Arc<StagingPool>,
    copier: &dyn Copier,
    dst: usize,
    len: usize,
    source: &mut dyn FnMut(&mut [u8]) -> io::Result<()>,
) -> io::Result<()> {
    let chunk = pool.config().chunk;
    if len <= chunk {
        let mut b = pool.acquire(None).map_err(io_err)?;
        source(b.bytes_mut(len))?;
        b.note_staged(len);
        // SAFETY: the destination range is valid (contract); the buffer holds len bytes.
        return unsafe { copier.copy_from_host(b.as_mut_ptr(), dst, len) }.map_err(io_err);
    }
    let stopper = Stopper {
        flag: AtomicBool::new(false),
        pool,
    };
    let (tx, rx) = crossbeam_channel::bounded::<(StagingBuf, usize, usize)>(
        pool.config().depth.saturating_sub(1),
    );
    std::thread::scope(|s| {
        let stopper = &stopper;
        let copy = s.spawn(move || -> Result<(), Error> {
            for (mut b, off, n) in rx.iter() {
                // SAFETY: inside the destination range (contract); the buffer holds n.
                if let Err(e) = unsafe { copier.copy_from_host(b.as_mut_ptr(), dst + off, n) } {
                    stopper.stop();
                    return Err(e);
                }
            }
            Ok(())
        });
        let mut off = 0;
        let mut result = Ok(());
        while off < len {
            let n = chunk.min(len - off);
            let mut b = match pool.acquire(Some(&stopper.flag)) {
                Ok(b) => b,
                Err(e) => {
                    result = Err(io_err(e));
                    break;
                }
            };
            if let Err(e) = source(b.bytes_mut(n)) {
                result = Err(e);
                break;
            }
            b.note_staged(n);
            if tx.send((b, off, n)).is_err() {
                break; // the copy thread failed: its error is reported below
            }
            off += n;
        }
        drop(tx);
        let copied = copy.join().expect("staging copy thread does not panic");
        match (result, copied) {
            (Err(e), _) => Err(e),
            (Ok(()), Err(e)) => Err(io_err(e)),
            (Ok(()), Ok(())) => Ok(()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::device::copier::HostCopier;
    use crate::memory::device::location::Location;
    use crate::memory::device::staging::{HostMemory, StagingConfig};
    use crate::Status;
    use std::time::Duration;

    fn pool(chunk: usize, buffers: usize, depth: usize) -> Arc<StagingPool> {
        StagingPool::new(
            StagingConfig {
                chunk,
                buffers,
                depth,
                acquire_timeout: Duration::from_secs(5),
            },
            HostMemory::Pageable,
        )
        .unwrap()
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn send_and_recv_round_trip_every_size() {
        let p = pool(1000, 4, 3);
        let c = HostCopier::new();
        for len in [1, 999, 1000, 1001, 2500, 10_000, 123_457] {
            let src = pattern(len);
            let mut wire = Vec::new();
            // SAFETY: `src` is a live host buffer of `len` bytes.
            unsafe {
                send_staged(&p, &c, src.as_ptr() as usize, len, &mut |b| {
                    assert!(b.len() <= 1000);
                    wire.extend_from_slice(b);
                    Ok(())
                })
            }
            .unwrap();
            assert_eq!(wire, src);
            let mut dst = vec![0u8; len];
            let mut at = 0;
            // SAFETY: `dst` is a live, exclusively used host buffer of `len` bytes.
            unsafe {
                recv_staged(&p, &c, dst.as_mut_ptr() as usize, len, &mut |b| {
                    b.copy_from_slice(&wire[at..at + b.len()]);
                    at += b.len();
                    Ok(())
                })
            }
            .unwrap();
            assert_eq!(dst, src);
            let s = p.stats();
            assert!(s.created <= 4, "pool bound exceeded: {s:?}");
            assert_eq!(s.in_use, 0);
        }
        assert_eq!(c.copied().0, c.copied().1);
    }

    /// A sink that fails mid-transfer ends the send with its error, stops the copy
    /// thread, and gives every buffer back.
    #[test]
    fn sink_failure_stops_and_returns_buffers() {
        let p = pool(100, 2, 2);
        let c = HostCopier::new();
        let src = pattern(10_000);
        let mut calls = 0;
        // SAFETY: `src` is a live host buffer.
        let e = unsafe {
            send_staged(&p, &c, src.as_ptr() as usize, src.len(), &mut |_| {
                calls += 1;
                if calls == 3 {
                    Err(io::Error::new(io::ErrorKind::BrokenPipe, "gone"))
                } else {
                    Ok(())
                }
            })
        }
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(p.stats().in_use, 0);
        assert!(p.stats().created <= 2);
    }

    struct FailingCopier;
    impl Copier for FailingCopier {
        fn location(&self) -> Location {
            Location::Device(0)
        }
        unsafe fn copy_to_host(&self, _: usize, _: *mut u8, _: usize) -> crate::Result<()> {
            Err(Error::new(Status::Io, "copy failed"))
        }
        unsafe fn copy_from_host(&self, _: *const u8, _: usize, _: usize) -> crate::Result<()> {
            Err(Error::new(Status::Io, "copy failed"))
        }
    }

    #[test]
    fn copier_failure_is_reported() {
        let p = pool(100, 2, 2);
        for len in [50, 1000] {
            // SAFETY: the failing copier touches no memory.
            let e = unsafe { send_staged(&p, &FailingCopier, 0x1000, len, &mut |_| Ok(())) }
                .unwrap_err();
            assert!(e.to_string().contains("copy failed"), "{e}");
            // SAFETY: as above.
            let e = unsafe {
                recv_staged(&p, &FailingCopier, 0x1000, len, &mut |b| {
                    b.fill(0);
                    Ok(())
                })
            }
            .unwrap_err();
            assert!(e.to_string().contains("copy failed"), "{e}");
            assert_eq!(p.stats().in_use, 0);
        }
    }
}
