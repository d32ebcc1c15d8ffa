//! Shared allocations: memory backed by a memfd, so a connected peer can map the same
//! pages and one-sided operations on it become a single memcpy by the initiator.
//!
//! A process-wide table maps each allocation's address range to its memfd; the endpoint
//! sends the fds to a peer at connect time (SCM_RIGHTS), and the peer learns "addresses
//! `[base, base+len)` of that process are this fd".

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use crate::error::{Error, Result, Status};

/// One live shared allocation of this process.
pub struct AllocInfo {
    pub base: usize,
    pub len: usize,
    pub fd: OwnedFd,
}

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
    // SAFETY: plain syscalls on owned values; errors are checked.
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
    // SAFETY: a fresh mapping; the kernel checks fd and size.
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
    // SAFETY: fstat into a zeroed struct.
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
        }),
    );
    Ok(p)
}

/// Frees memory from [`alloc_shared`]. Peers that mapped it keep their own mapping (their
/// pages stay valid, they just no longer alias anything of this process).
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
    libc::munmap(info.base as *mut libc::c_void, info.len);
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
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the buffer is plain memory; synchronisation is the user's, as for Vec<u8>.
unsafe impl Send for SharedBuf {}
unsafe impl Sync for SharedBuf {}

impl SharedBuf {
    pub fn new(len: usize) -> Result<SharedBuf> {
        Ok(SharedBuf {
            ptr: alloc_shared(len)?,
            len,
        })
    }
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    #[allow(clippy::mut_from_ref)]
    /// # Safety
    /// No other access (local or by a peer) may race with the returned slice's use.
    pub unsafe fn as_mut_slice(&self) -> &mut [u8] {
        std::slice::from_raw_parts_mut(self.ptr, self.len)
    }
    /// # Safety
    /// As for [`SharedBuf::as_mut_slice`].
    pub unsafe fn as_slice(&self) -> &[u8] {
        std::slice::from_raw_parts(self.ptr, self.len)
    }
}

impl Drop for SharedBuf {
    fn drop(&mut self) {
        // SAFETY: we own the allocation.
        let _ = unsafe { free_shared(self.ptr) };
    }
}

/// A peer's allocation mapped into this process.
pub(crate) struct PeerMapping {
    /// The peer's address of the allocation.
    pub peer_base: u64,
    pub len: u64,
    pub local: *mut u8,
}

// SAFETY: a mapping of shared memory; accesses go through explicit copies.
unsafe impl Send for PeerMapping {}
unsafe impl Sync for PeerMapping {}

impl Drop for PeerMapping {
    fn drop(&mut self) {
        // SAFETY: we mapped it and own the mapping.
        unsafe { libc::munmap(self.local as *mut libc::c_void, self.len as usize) };
    }
}

/// The peer's allocations this process mapped, by peer address.
#[derive(Default)]
pub(crate) struct PeerMappings {
    by_base: BTreeMap<u64, PeerMapping>,
}

impl PeerMappings {
    /// Maps a peer's memfd. The length mapped is the fd's real size (never what the peer
    /// claims beyond it), so a bogus claim cannot make us touch memory outside the mapping.
    pub fn add(&mut self, peer_base: u64, claimed_len: u64, fd: OwnedFd) -> Result<()> {
        let size = (fd_size(fd.as_raw_fd())? as u64).min(claimed_len);
        if size == 0 || peer_base.checked_add(size).is_none() {
            return Err(Error::new(
                Status::Protocol,
                "peer announced an empty or wrapping shared allocation",
            ));
        }
        let local = map_fd(fd.as_raw_fd(), size as usize)?;
        self.by_base.insert(
            peer_base,
            PeerMapping {
                peer_base,
                len: size,
                local,
            },
        );
        Ok(())
    }

    /// Local address of the peer's `[addr, addr+len)`, if it lies inside one mapping.
    pub fn translate(&self, addr: u64, len: u64) -> Option<*mut u8> {
        let (_, m) = self.by_base.range(..=addr).next_back()?;
        let end = addr.checked_add(len)?;
        (end <= m.peer_base + m.len)
            .then(|| (m.local as usize + (addr - m.peer_base) as usize) as *mut u8)
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
        unsafe {
            *p.add(9999) = 7;
            free_shared(p).unwrap();
            assert_eq!(free_shared(p).unwrap_err().status(), Status::UnknownHandle);
        }
        assert!(find_allocation(p as usize, 1).is_none());
    }
}
