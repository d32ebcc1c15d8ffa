//! The peer's shared allocations (`alloc_shared` memfds it sent at connect time or
//! announced later), mapped into this process: one-sided operations and pulled messages
//! on them are one memcpy.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use crate::error::{Error, Result, Status};
use crate::memory::shared::{fd_size, map_fd};

/// A peer's allocation mapped into this process; unmapped when the last holder (the
/// table below, a [`PeerView`](crate::transport::PeerView)) lets go.
struct PeerMapping {
    /// The peer's allocation id (see `AllocInfo::id`).
    id: u64,
    /// The peer's address of the allocation.
    peer_base: u64,
    len: u64,
    local: *mut u8,
}

// SAFETY: the pointer is a mapping this value owns, not tied to a thread.
unsafe impl Send for PeerMapping {}
// SAFETY: `&PeerMapping` is only read for its address; the bytes behind it are reached
// through explicit, range-checked copies, never through references.
unsafe impl Sync for PeerMapping {}

impl Drop for PeerMapping {
    fn drop(&mut self) {
        // SAFETY: `add` mapped exactly `len` bytes at `local`; this value owns the mapping
        // and nothing translated through it outlives the connection that holds it.
        unsafe { libc::munmap(self.local as *mut libc::c_void, self.len as usize) };
    }
}

/// The peer's allocations this process mapped, by peer address.
#[derive(Default)]
pub(super) struct PeerMappings {
    by_base: BTreeMap<u64, Arc<PeerMapping>>,
}

impl PeerMappings {
    /// Maps a peer's memfd. The length mapped is the fd's real size (never what the peer
    /// claims beyond it), so a bogus claim cannot make us touch memory outside the mapping.
    /// A mapping at the same peer address (an allocation the peer freed, its range
    /// reused) is replaced.
    pub fn add(&mut self, id: u64, peer_base: u64, claimed_len: u64, fd: OwnedFd) -> Result<()> {
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
            Arc::new(PeerMapping {
                id,
                peer_base,
                len: size,
                local,
            }),
        );
        Ok(())
    }

    /// Unmaps the peer's allocation `id` (the peer freed it).
    pub fn remove(&mut self, id: u64) {
        self.by_base.retain(|_, m| m.id != id);
    }

    /// Local address of the peer's `[addr, addr+len)`, if it lies inside one mapping.
    /// The address is valid while this value is borrowed (callers hold the connection's
    /// read lock across their copy).
    pub fn translate(&self, addr: u64, len: u64) -> Option<*mut u8> {
        self.find(addr, len).map(|(p, _)| p)
    }

    /// As [`PeerMappings::translate`], with the mapping itself: the address stays valid
    /// while the returned holder lives, whatever the peer announces meanwhile.
    pub fn view(&self, addr: u64, len: u64) -> Option<(*mut u8, Arc<dyn Send + Sync>)> {
        self.find(addr, len)
            .map(|(p, m)| (p, m.clone() as Arc<dyn Send + Sync>))
    }

    fn find(&self, addr: u64, len: u64) -> Option<(*mut u8, &Arc<PeerMapping>)> {
        let (_, m) = self.by_base.range(..=addr).next_back()?;
        let end = addr.checked_add(len)?;
        (end <= m.peer_base + m.len).then(|| {
            (
                (m.local as usize + (addr - m.peer_base) as usize) as *mut u8,
                m,
            )
        })
    }
}
