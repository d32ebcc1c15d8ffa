//! Whether a range of this process's address space is mapped, asked of the kernel
//! without touching it: the check a transport makes before the first byte of a frame
//! goes out, so that a wrong pointer fails its operation instead of a connection.

/// Whether every page of `[addr, addr+len)` is mapped (an empty range is). One
/// `msync(MS_ASYNC)` over the page-aligned range: the kernel walks the mappings under
/// its read lock and answers ENOMEM for a hole; no page is touched and nothing is
/// written back (MS_ASYNC has been a no-op for data since Linux 2.6.19). About 0.2 µs
/// whatever the length, as it costs per mapping, not per page.
///
/// A mapped page without read permission (`PROT_NONE`) passes; so does a range
/// unmapped by another thread right after the check: callers still handle EFAULT.
pub(crate) fn is_mapped(addr: usize, len: usize) -> bool {
    if len == 0 {
        return true;
    }
    let Some(end) = addr.checked_add(len) else {
        return false;
    };
    let page = page_size();
    let start = addr & !(page - 1);
    // SAFETY: msync with MS_ASYNC only inspects the mappings of the range (EINVAL for
    // an unaligned start, which `start` is not; ENOMEM for a hole); it reads and writes
    // no memory of ours.
    unsafe { libc::msync(start as *mut libc::c_void, end - start, libc::MS_ASYNC) == 0 }
}

fn page_size() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    match PAGE.load(Ordering::Relaxed) {
        0 => {
            // SAFETY: sysconf has no preconditions.
            let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
            PAGE.store(p, Ordering::Relaxed);
            p
        }
        p => p,
    }
}

#[cfg(test)]
mod tests {
    use super::is_mapped;

    #[test]
    fn heap_stack_and_holes() {
        let v = vec![7u8; 3 * 4096 + 5];
        assert!(is_mapped(v.as_ptr() as usize, v.len()));
        let x = 5u64;
        assert!(is_mapped(&x as *const u64 as usize, 8));
        assert!(is_mapped(0x10, 0));
        assert!(!is_mapped(0x10, 64), "page 0 is never mapped");
        assert!(!is_mapped(usize::MAX - 8, 64), "wraps around");
        // a hole punched in the middle of a mapping
        // SAFETY: a fresh anonymous mapping of three pages, only passed to the kernel.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                3 * 4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            let a = p as usize;
            assert!(is_mapped(a, 3 * 4096));
            assert_eq!(libc::munmap((a + 4096) as *mut libc::c_void, 4096), 0);
            assert!(is_mapped(a, 4096));
            assert!(!is_mapped(a + 100, 2 * 4096));
            assert!(is_mapped(a + 2 * 4096, 4096));
            libc::munmap(p, 3 * 4096);
        }
    }
}
