//! The client's receive buffers: reused across fetches (a 512 MiB payload must not cost
//! a fresh allocation and page faults each time), registered lazily in the memory pool
//! of each endpoint that reads into them, and handed to the caller as a [`Payload`].

use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::error::Result;
use crate::memory::{MemoryPool, MrHandle};

/// Buffers kept for reuse (the original kept up to 8 pinned buffers).
const KEEP: usize = 8;

pub(crate) struct Buf {
    mem: Box<[u8]>,
    /// Pools this buffer is registered in, with its handle there.
    regs: Vec<(Weak<MemoryPool>, MrHandle)>,
}

impl Buf {
    fn new(len: usize) -> Buf {
        Buf {
            mem: vec![0u8; len.max(1)].into_boxed_slice(),
            regs: Vec::new(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.mem.len()
    }

    #[cfg(test)]
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.mem.as_mut_ptr()
    }

    /// This buffer's handle in `pool`, registering it there the first time.
    pub fn handle_in(&mut self, pool: &Arc<MemoryPool>) -> Result<MrHandle> {
        if let Some((_, h)) = self
            .regs
            .iter()
            .find(|(p, _)| p.upgrade().is_some_and(|p| Arc::ptr_eq(&p, pool)))
        {
            return Ok(*h);
        }
        self.regs.retain(|(p, _)| p.strong_count() > 0);
        // SAFETY: the buffer outlives its registration: Drop unregisters it first.
        let h = unsafe { pool.register(None, self.mem.as_mut_ptr(), self.mem.len())? };
        self.regs.push((Arc::downgrade(pool), h));
        Ok(h)
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        for (p, h) in self.regs.drain(..) {
            if let Some(p) = p.upgrade() {
                let _ = p.unregister(h);
            }
        }
    }
}

/// Free buffers, smallest first.
#[derive(Default)]
pub(crate) struct BufferPool {
    free: Mutex<Vec<Buf>>,
}

impl BufferPool {
    /// A buffer of at least `len` bytes: the smallest free one that fits, else a new one
    /// (the largest free one is dropped when the pool is full).
    pub fn take(&self, len: usize) -> Buf {
        let mut f = self.free.lock();
        if let Some(i) = f.iter().position(|b| b.capacity() >= len) {
            return f.remove(i);
        }
        drop(f);
        Buf::new(len)
    }

    pub fn give(&self, b: Buf) {
        let mut f = self.free.lock();
        let at = f.partition_point(|x| x.capacity() <= b.capacity());
        f.insert(at, b);
        if f.len() > KEEP {
            f.remove(0);
        }
    }
}

/// A fetched payload in a pooled receive buffer; the buffer goes back to the client's
/// pool when this is dropped. Derefs to the payload bytes.
pub struct Payload {
    buf: Option<Buf>,
    len: usize,
    pool: Arc<BufferPool>,
}

impl Payload {
    pub(crate) fn new(buf: Buf, len: usize, pool: Arc<BufferPool>) -> Payload {
        debug_assert!(len <= buf.capacity());
        Payload {
            buf: Some(buf),
            len,
            pool,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.buf
            .as_ref()
            .map_or(std::ptr::null(), |b| b.mem.as_ptr())
    }

    pub fn to_vec(&self) -> Vec<u8> {
        (**self).to_vec()
    }
}

impl std::ops::Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.buf {
            Some(b) => &b.mem[..self.len],
            None => &[],
        }
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({} bytes)", self.len)
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            self.pool.give(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuse_smallest_fit_and_registration_follows_the_buffer() {
        let p = Arc::new(BufferPool::default());
        let mp = MemoryPool::new();
        let mut a = p.take(100);
        let h = a.handle_in(&mp).unwrap();
        assert_eq!(a.handle_in(&mp).unwrap(), h, "registered once per pool");
        let ptr = a.as_mut_ptr();
        p.give(a);
        p.give(Buf::new(1000));
        let mut b = p.take(50);
        assert_eq!(b.as_mut_ptr(), ptr, "the smallest buffer that fits");
        assert_eq!(b.handle_in(&mp).unwrap(), h);
        drop(b);
        assert!(mp.region(h).is_err(), "dropping the buffer unregistered it");
        let big = p.take(500);
        assert_eq!(big.capacity(), 1000);
        for _ in 0..20 {
            p.give(Buf::new(10));
        }
        assert_eq!(p.free.lock().len(), KEEP);
    }
}
