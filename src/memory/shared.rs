//! Shared allocations: memory backed by a memfd, so another process can map the same
//! pages. The shared-memory transport sends these fds to its peer at connect time
//! (SCM_RIGHTS), which makes one-sided operations on them a single memcpy by the
//! initiator; SlimeRPC allocates its mailboxes here so that holds for its traffic too.
//!
//! A process-wide table maps each allocation's address range to its memfd, so a peer
//! learns "addresses `[base, base+len)` of that process are this fd".

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use super::span::Span;
use crate::error::{Error, Result, Status};

/// One live shared allocation of this process.
pub struct AllocInfo {
    pub base: usize,
    pub len: usize,
    pub fd: OwnedFd,
    /// Process-unique, never reused: a later allocation at the same address (the kernel
    /// reuses freed ranges) is another allocation to a peer that mapped this one.
    pub id: u64,
}

static NEXT_ALLOC_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn table() -> &'static Mutex<BTreeMap<usize, Arc<AllocInfo>>> {
    static T: OnceLock<Mutex<BTreeMap<usize, Arc<AllocInfo>>>> = OnceLock::new();
    T.get_or_init(Default::default)
}

fn page_round(len: usize) -> Option<usize> {
    let page = 4096usize;
    len.checked_add(page - 1).map(|l| l & !(page - 1))
}

/// Creates a memfd of `len` bytes (rounded up to a page) and maps it read-write.
pub(crate) fn memfd_map(name: &str, len: usize) -> Result<(OwnedFd, *mut u8, usize)> {
    let size = page_round(len)
        .filter(|&l| l > 0)
        .ok_or_else(|| Error::invalid("shared allocation: bad length"))?;
    let cname = std::ffi::CString::new(name).unwrap();
    // SAFETY: `cname` is a valid C string for the call; memfd_create's result is checked
    // before OwnedFd takes ownership of it (a fresh fd nobody else owns), and ftruncate
    // and map_fd only act on that fd.
    unsafe {
        let fd = libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC);
        if fd < 0 {
            return Err(Error::io("memfd_create", std::io::Error::last_os_error()));
        }
        let fd = OwnedFd::from_raw_fd(fd);
        if libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) != 0 {
            return Err(Error::io(
                "ftruncate(memfd)",
                std::io::Error::last_os_error(),
            ));
        }
        let p = map_fd(fd.as_raw_fd(), size)?;
        Ok((fd, p, size))
    }
}

/// Maps `size` bytes of a memfd shared and read-write.
pub(crate) fn map_fd(fd: i32, size: usize) -> Result<*mut u8> {
    // SAFETY: asks for a fresh mapping (null hint), so no existing memory is affected;
    // the kernel checks fd and size, and MAP_FAILED is handled below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Error::io("mmap(memfd)", std::io::Error::last_os_error()));
    }
    Ok(p as *mut u8)
}

/// Size of a file descriptor's file (to learn how much of a peer's memfd may be mapped,
/// whatever length the peer claims).
pub(crate) fn fd_size(fd: i32) -> Result<usize> {
    // SAFETY: `stat` is plain old data, so all-zero is a valid value, and fstat writes
    // only into the struct we pass; a bad fd is reported as an error.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return Err(Error::io("fstat", std::io::Error::last_os_error()));
        }
        Ok(st.st_size as usize)
    }
}

/// Allocates `len` bytes of zeroed memory that connected shared-memory peers can map.
/// Free it with [`free_shared`]. Register it in a memory pool as usual.
pub fn alloc_shared(len: usize) -> Result<*mut u8> {
    if len == 0 {
        return Err(Error::invalid("alloc_shared: zero length"));
    }
    let (fd, p, size) = memfd_map("dlslime-shared", len)?;
    table().lock().insert(
        p as usize,
        Arc::new(AllocInfo {
            base: p as usize,
            len: size,
            fd,
            id: NEXT_ALLOC_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }),
    );
    Ok(p)
}

/// Maps a memfd another process shares (for example one opened through
/// `/proc/<pid>/fd/<n>`) and enters it in this process's allocation table, so
/// shared-memory peers connected later map it too. Returns `(address, mapped length)`;
/// free it with [`free_shared`].
pub fn adopt_shared(fd: OwnedFd) -> Result<(*mut u8, usize)> {
    let size = fd_size(fd.as_raw_fd())?;
    if size == 0 {
        return Err(Error::invalid("adopt_shared: the file is empty"));
    }
    let p = map_fd(fd.as_raw_fd(), size)?;
    let info = Arc::new(AllocInfo {
        base: p as usize,
        len: size,
        fd,
        id: NEXT_ALLOC_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    });
    table().lock().insert(p as usize, info);
    Ok((p, size))
}

/// Frees memory from [`alloc_shared`]. Peers that mapped it keep their mapping until the
/// next time the connection publishes its regions, which tells them to unmap it (their
/// pages stay valid meanwhile, they just no longer alias anything of this process).
///
/// # Safety
/// `ptr` must come from `alloc_shared` and must not be used afterwards.
pub unsafe fn free_shared(ptr: *mut u8) -> Result<()> {
    let info = table().lock().remove(&(ptr as usize)).ok_or_else(|| {
        Error::new(
            Status::UnknownHandle,
            "free_shared: pointer is not a live shared allocation",
        )
    })?;
    // SAFETY: the table entry (now removed, so this runs once) describes a mapping made by
    // memfd_map; the caller promises nothing uses it any more.
    unsafe { libc::munmap(info.base as *mut libc::c_void, info.len) };
    Ok(())
}

/// Every live shared allocation, in address order.
pub fn live_allocations() -> Vec<Arc<AllocInfo>> {
    table().lock().values().cloned().collect()
}

/// The allocation containing `[addr, addr+len)`, if any.
pub fn find_allocation(addr: usize, len: usize) -> Option<Arc<AllocInfo>> {
    let t = table().lock();
    let (_, a) = t.range(..=addr).next_back()?;
    let end = addr.checked_add(len)?;
    (end <= a.base + a.len).then(|| a.clone())
}

/// RAII owner of a shared allocation (the Rust-side convenience).
pub struct SharedBuf {
    span: Span,
}

// SAFETY: the buffer is plain memory owned by this value, not tied to a thread.
unsafe impl Send for SharedBuf {}
// SAFETY: `&SharedBuf` only hands out the pointer and length; every access to the bytes
// goes through unsafe methods whose callers synchronise, as for a raw buffer.
unsafe impl Sync for SharedBuf {}

impl SharedBuf {
    pub fn new(len: usize) -> Result<SharedBuf> {
        Ok(SharedBuf {
            span: Span::new(alloc_shared(len)?, len),
        })
    }

    /// Maps the whole memfd `fd` (another process's shared allocation), as
    /// [`adopt_shared`].
    pub fn adopt(fd: OwnedFd) -> Result<SharedBuf> {
        let (ptr, len) = adopt_shared(fd)?;
        Ok(SharedBuf {
            span: Span::new(ptr, len),
        })
    }
    #[allow(clippy::mut_from_ref)]
    /// # Safety
    /// No other access (local or by a peer) may race with the returned slice's use.
    pub unsafe fn as_mut_slice(&self) -> &mut [u8] {
        // SAFETY: `ptr` is a live mapping of at least `len` bytes for as long as `self`
        // lives; exclusive use is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr(), self.len()) }
    }
    /// # Safety
    /// As for [`SharedBuf::as_mut_slice`].
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: as in `as_mut_slice`; the absence of writers is the caller's promise.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len()) }
    }
}

/// The buffer's address and length.
impl std::ops::Deref for SharedBuf {
    type Target = Span;
    fn deref(&self) -> &Span {
        &self.span
    }
}

impl Drop for SharedBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from alloc_shared in `new`, is freed only here, and the
        // buffer is gone after this.
        let _ = unsafe { free_shared(self.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_find_free() {
        let p = alloc_shared(10_000).unwrap();
        let a = find_allocation(p as usize + 100, 50).unwrap();
        assert_eq!(a.base, p as usize);
        assert_eq!(a.len, 12288);
        assert!(find_allocation(p as usize + 12280, 100).is_none());
        // SAFETY: 9999 < 10_000 bytes allocated above; p is not used after the first free
        // except as a (rejected) key for the second.
        unsafe {
            *p.add(9999) = 7;
            free_shared(p).unwrap();
            assert_eq!(free_shared(p).unwrap_err().status(), Status::UnknownHandle);
        }
        assert!(find_allocation(p as usize, 1).is_none());
    }
}
