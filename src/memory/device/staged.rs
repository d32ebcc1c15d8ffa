//! The process-wide table of staged ranges: registered regions whose bytes are reached
//! only through a [`Copier`] (device memory). A transport's I/O path asks [`find`] for
//! the range it is about to touch; with no staged region registered that costs one
//! atomic load. An entry lives as long as its region ([`StagedRange`] removes it on drop,
//! after the last operation holding the region is done).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use super::copier::Copier;

struct Entry {
    id: u64,
    len: usize,
    copier: Arc<dyn Copier>,
}

static TABLE: RwLock<BTreeMap<usize, Vec<Entry>>> = RwLock::new(BTreeMap::new());
static COUNT: AtomicUsize = AtomicUsize::new(0);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A range in the table; removed when dropped.
pub struct StagedRange {
    addr: usize,
    id: u64,
    copier: Arc<dyn Copier>,
}

impl StagedRange {
    /// Adds `[addr, addr+len)`, reached through `copier`.
    pub fn add(addr: usize, len: usize, copier: Arc<dyn Copier>) -> StagedRange {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        TABLE.write().entry(addr).or_default().push(Entry {
            id,
            len,
            copier: copier.clone(),
        });
        COUNT.fetch_add(1, Ordering::Release);
        StagedRange { addr, id, copier }
    }

    pub fn copier(&self) -> &Arc<dyn Copier> {
        &self.copier
    }
}

impl std::fmt::Debug for StagedRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "StagedRange({:#x}, {})",
            self.addr,
            self.copier.location()
        )
    }
}

impl Drop for StagedRange {
    fn drop(&mut self) {
        let mut t = TABLE.write();
        if let Some(v) = t.get_mut(&self.addr) {
            v.retain(|e| e.id != self.id);
            if v.is_empty() {
                t.remove(&self.addr);
            }
        }
        COUNT.fetch_sub(1, Ordering::Release);
    }
}

/// The copier of the staged range containing `[ptr, ptr+len)`, if there is one.
pub fn find(ptr: usize, len: usize) -> Option<Arc<dyn Copier>> {
    if COUNT.load(Ordering::Acquire) == 0 {
        return None;
    }
    let end = ptr.checked_add(len)?;
    let t = TABLE.read();
    for (&start, entries) in t.range(..=ptr).rev() {
        for e in entries {
            if start.checked_add(e.len).is_some_and(|e_end| end <= e_end) {
                return Some(e.copier.clone());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::device::copier::HostCopier;

    #[test]
    fn find_contained_ranges_only() {
        // Addresses no other test uses (the table is process-wide).
        let base = 0x5a5a_0000_0000usize;
        let c: Arc<dyn Copier> = Arc::new(HostCopier::new());
        let r = StagedRange::add(base, 1000, c);
        assert!(find(base, 1000).is_some());
        assert!(find(base + 10, 990).is_some());
        assert!(find(base + 10, 991).is_none());
        assert!(find(base - 1, 2).is_none());
        drop(r);
        assert!(find(base, 1).is_none());
    }
}
