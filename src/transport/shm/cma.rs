//! Cross-memory attach: one copy between this process and the peer's address space for
//! plain (non-shared) memory. Partial transfers are continued; errors come back as errno
//! so the caller can tell EPERM (switch to the staged path) from EFAULT (bad range).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Status;

/// Copies `len` bytes from the peer's `remote` into our `local`.
///
/// # Safety
/// `local..local+len` must be writable memory of this process.
pub unsafe fn read_from(pid: i32, local: *mut u8, remote: u64, len: usize) -> Result<(), i32> {
    transfer(pid, local, remote, len, false)
}

/// Copies `len` bytes from our `local` into the peer's `remote`.
///
/// # Safety
/// `local..local+len` must be readable memory of this process.
pub unsafe fn write_to(pid: i32, local: *const u8, remote: u64, len: usize) -> Result<(), i32> {
    transfer(pid, local as *mut u8, remote, len, true)
}

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
            iov_base: local.add(done) as *mut libc::c_void,
            iov_len: len - done,
        };
        let r = libc::iovec {
            iov_base: (remote as usize + done) as *mut libc::c_void,
            iov_len: len - done,
        };
        let n = if write {
            libc::process_vm_writev(pid, &l, 1, &r, 1, 0)
        } else {
            libc::process_vm_readv(pid, &l, 1, &r, 1, 0)
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

/// A word with a known value whose address a peer probes at connect time to learn
/// whether the kernel lets it attach to us.
pub static PROBE_WORD: u64 = 0x5052_4f42_455f_4f4b; // "PROBE_OK"

/// Whether we can read the peer's probe word at `addr`; Err(errno) otherwise.
pub fn probe(pid: i32, addr: u64) -> Result<(), i32> {
    let mut v = 0u64;
    // SAFETY: reading 8 bytes into a local.
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
        eprintln!("dlslime shm: cross-memory attach refused (EPERM) at run time; operation failed");
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
