//! The staging hook: the same whole-frame write and read-into as `sockio`, except that a
//! range inside a staged region (CUDA device memory) goes through the staging pool,
//! chunk by chunk, the copies overlapped with the socket (`memory::device::pipeline`).
//! Ranges that are not staged take `sockio`'s direct path unchanged (one atomic load to
//! find out while no staged region exists).

use std::io::{self, Read, Write};
use std::net::TcpStream;

use super::sockio;
use crate::memory::device::{recv_staged, send_staged, staged, StagingPool};
use crate::memory::mapped::is_mapped;

/// Whether a frame may be written from `[ptr, ptr+len)`: a staged region, or mapped
/// memory of this process. Asked before the frame's header goes out, because once it is
/// out a payload the kernel refuses (EFAULT) can only be answered by closing the
/// connection; asked here, a wrong pointer fails its operation alone.
pub fn readable(ptr: usize, len: usize) -> bool {
    len == 0 || staged::find(ptr, len).is_some() || is_mapped(ptr, len)
}

/// Writes `header` then the `len` bytes at `ptr` (region memory, a send buffer, or a
/// staged region's address).
///
/// # Safety
/// As `sockio::write_frame`: the range must be readable (through its copier when staged)
/// for the duration of the call.
pub unsafe fn write_frame(
    stream: &mut TcpStream,
    header: &[u8],
    ptr: *const u8,
    len: usize,
) -> io::Result<()> {
    match staged::find(ptr as usize, len).filter(|_| len > 0) {
        // SAFETY: forwarded contract.
        None => unsafe { sockio::write_frame(stream, header, &[(ptr, len)]) },
        Some(copier) => {
            stream.write_all(header)?;
            // SAFETY: the range lies in a staged region reachable through `copier`
            // (forwarded contract).
            unsafe {
                send_staged(
                    StagingPool::global(),
                    &*copier,
                    ptr as usize,
                    len,
                    &mut |b| stream.write_all(b),
                )
            }
        }
    }
}

/// Reads exactly `len` bytes into `[ptr, ptr+len)` (through its copier when staged).
///
/// # Safety
/// As `sockio::read_into`: the range must be writable and not otherwise accessed during
/// the call.
pub unsafe fn read_into(stream: &mut TcpStream, ptr: *mut u8, len: usize) -> io::Result<()> {
    match staged::find(ptr as usize, len).filter(|_| len > 0) {
        // SAFETY: forwarded contract.
        None => unsafe { sockio::read_into(stream, ptr, len) },
        // SAFETY: the range lies in a staged region reachable through `copier`
        // (forwarded contract).
        Some(copier) => unsafe {
            recv_staged(
                StagingPool::global(),
                &*copier,
                ptr as usize,
                len,
                &mut |b| stream.read_exact(b),
            )
        },
    }
}
