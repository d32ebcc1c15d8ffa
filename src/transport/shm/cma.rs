//! Cross-memory attach: one copy between this process and the peer's address space for
//! plain (non-shared) memory. Partial transfers are continued; errors come back as errno
//! so the caller can tell EPERM (switch to the staged path) from EFAULT (bad range).
//!
//! The peer's side of a transfer needs no promise from us: the kernel checks the remote
//! range against the peer's mappings and answers EFAULT. Our side does: the kernel
//! writes (or reads) `len` bytes at `local`, so the public functions are `unsafe`.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Status;

/// Copies `len` bytes from the peer's `remote` into our `local`.
///
/// # Safety
/// `local..local+len` must be writable memory of this process that nothing else reads
/// or writes during the call.
pub unsafe fn read_from(pid: i32, local: *mut u8, remote: u64, len: usize) -> Result<(), i32> {
    // SAFETY: the caller's promise is transfer's for a read.
    unsafe { transfer(pid, local, remote, len, false) }
}

/// Copies `len` bytes from our `local` into the peer's `remote`.
///
/// # Safety
/// `local..local+len` must be readable memory of this process that nothing writes
/// during the call.
pub unsafe fn write_to(pid: i32, local: *const u8, remote: u64, len: usize) -> Result<(), i32> {
    // SAFETY: the caller's promise is transfer's for a write (which only reads `local`).
    unsafe { transfer(pid, local as *mut u8, remote, len, true) }
}

/// # Safety
/// `local..local+len` must be memory of this process, writable if `!write` (the kernel
/// stores the peer's bytes there), readable if `write`, and not used by anything else
/// during the call.
unsafe fn transfer(
    pid: i32,
    local: *mut u8,
    remote: u64,
    len: usize,
    write: bool,
) -> Result<(), i32> {
    let mut done = 0usize;
    while done < len {
        let l = libc::iovec {
            // In bounds (done < len), but only an address for the kernel: wrapping_add
            // needs no promise.
            iov_base: local.wrapping_add(done) as *mut libc::c_void,
            iov_len: len - done,
        };
        let r = libc::iovec {
            iov_base: (remote as usize + done) as *mut libc::c_void,
            iov_len: len - done,
        };
        // SAFETY: one local iovec over the rest of the caller's range (valid for the
        // direction, caller) and one remote iovec the kernel checks against the peer's
        // mappings; both iovecs live on our stack for the call. The kernel copies at
        // most `len - done` bytes into or out of `local + done`.
        let n = unsafe {
            if write {
                libc::process_vm_writev(pid, &l, 1, &r, 1, 0)
            } else {
                libc::process_vm_readv(pid, &l, 1, &r, 1, 0)
            }
        };
        if n < 0 {
            let e = std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(libc::EFAULT);
        }
        done += n as usize;
    }
    Ok(())
}

/// Whether `[addr, addr+len)` is memory of this process the library may read (and, if
/// `writable`, write): one byte of every page is read through the kernel (and written
/// back unchanged), which answers EFAULT instead of the segmentation fault a plain copy
/// would take on an unmapped or read-only page. Err(errno) otherwise. Needs no promise:
/// the kernel checks every address, and a byte is written back only where it was just
/// read, in memory the caller hands to an operation (no one else may use it meanwhile).
pub fn check_own_range(addr: usize, len: usize, writable: bool) -> Result<(), i32> {
    const PAGE: usize = 4096;
    const BATCH: usize = 256;
    if len == 0 {
        return Ok(());
    }
    let end = addr.checked_add(len).ok_or(libc::EFAULT)?;
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let mut bytes = [0u8; BATCH];
    let mut at = addr;
    while at < end {
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 1,
        }; BATCH];
        let mut n = 0;
        while n < BATCH && at < end {
            iov[n].iov_base = at as *mut libc::c_void;
            n += 1;
            at = (at / PAGE + 1) * PAGE; // the next page's first byte
        }
        let local = libc::iovec {
            iov_base: bytes.as_mut_ptr() as *mut libc::c_void,
            iov_len: n,
        };
        // SAFETY: the kernel writes at most `n` bytes into `bytes` (ours, on the stack)
        // and reads the `n` one-byte remote iovecs from our own address space, checking
        // each against our mappings (EFAULT, never a fault here).
        let r = unsafe { libc::process_vm_readv(me, &local, 1, iov.as_ptr(), n as _, 0) };
        if r != n as isize {
            return Err(if r < 0 { last_errno() } else { libc::EFAULT });
        }
        if writable {
            // SAFETY: as above, the other way: each checked byte gets its own value back.
            let w = unsafe { libc::process_vm_writev(me, &local, 1, iov.as_ptr(), n as _, 0) };
            if w != n as isize {
                return Err(if w < 0 { last_errno() } else { libc::EFAULT });
            }
        }
    }
    Ok(())
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// A word with a known value whose address a peer probes at connect time to learn
/// whether the kernel lets it attach to us.
pub static PROBE_WORD: u64 = 0x5052_4f42_455f_4f4b; // "PROBE_OK"

/// Whether we can read the peer's probe word at `addr`; Err(errno) otherwise.
pub fn probe(pid: i32, addr: u64) -> Result<(), i32> {
    let mut v = 0u64;
    // SAFETY: the kernel writes at most 8 bytes into `v`, a local u64 of ours (any
    // bits are a valid u64) that nothing else touches.
    unsafe { read_from(pid, &mut v as *mut u64 as *mut u8, addr, 8)? };
    if v == PROBE_WORD {
        Ok(())
    } else {
        Err(libc::EFAULT)
    }
}

/// The status and message of a failed transfer; EPERM at run time also counts in
/// `eperm` and is logged (attach worked at connect time, so something changed).
pub fn errno_status(e: i32, eperm: &AtomicU64) -> (Status, String) {
    if e == libc::EPERM {
        eperm.fetch_add(1, Ordering::Relaxed);
        crate::warn_log!("shm: cross-memory attach refused (EPERM) at run time; operation failed");
        (
            Status::Io,
            "cross-memory attach refused by the kernel (EPERM)".into(),
        )
    } else if e == libc::ESRCH {
        (Status::PeerDisconnected, "peer process is gone".into())
    } else {
        (
            Status::Io,
            format!(
                "cross-memory attach failed: {}",
                std::io::Error::from_raw_os_error(e)
            ),
        )
    }
}
