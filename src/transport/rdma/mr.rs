//! Memory registration: `ibv_reg_mr` regions (RAII), the [`Registrar`] that registers
//! every region of a [`MemoryPool`](crate::memory::MemoryPool) bound to a domain, and the
//! registered buffers the endpoint keeps for itself (receive windows, bounce buffers).

use std::alloc::Layout;
use std::sync::Arc;

use rdma_sys::*;

use super::domain::Domain;
use super::verbs::{os_error, verbs};
use crate::error::{Error, Result, Status};
use crate::memory::device::dmabuf;
use crate::memory::{DeviceMr, Registrar};
use std::os::fd::AsRawFd;

/// A registered memory region, deregistered on drop.
pub struct Mr {
    raw: *mut ibv_mr,
    _domain: Arc<Domain>,
}

// SAFETY: an ibv_mr is an immutable registration usable from any thread.
unsafe impl Send for Mr {}
// SAFETY: as above.
unsafe impl Sync for Mr {}

const ACCESS: u32 = ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0
    | ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0
    | ibv_access_flags::IBV_ACCESS_REMOTE_READ.0;

impl Mr {
    /// Registers `[addr, addr+len)` for local write and remote read/write.
    ///
    /// # Safety
    /// The range must stay mapped while the registration lives (the kernel pins it; an
    /// unmapped range fails here with EFAULT).
    pub unsafe fn register(domain: &Arc<Domain>, addr: usize, len: usize) -> Result<Mr> {
        let v = verbs()?;
        // SAFETY: live PD; the range is the caller's (see above).
        let raw = unsafe { (v.ibv_reg_mr)(domain.pd, addr as *mut _, len, ACCESS as i32) };
        if raw.is_null() {
            return Err(os_error(
                Status::ResourceExhausted,
                &format!("ibv_reg_mr({addr:#x}, {len}) on {}", domain.label()),
            ));
        }
        Ok(Mr {
            raw,
            _domain: domain.clone(),
        })
    }

    /// Registers `len` bytes of a dma-buf (`fd`, from `offset`), addressed by the peer
    /// as `iova` (the device pointer, so remote addresses stay the region's addresses).
    /// `Unsupported` when this libibverbs has no `ibv_reg_dmabuf_mr` (rdma-core < 34).
    pub fn register_dmabuf(
        domain: &Arc<Domain>,
        fd: i32,
        offset: u64,
        len: usize,
        iova: u64,
    ) -> Result<Mr> {
        let v = verbs()?;
        let reg = v.ibv_reg_dmabuf_mr.ok_or_else(|| {
            Error::new(
                Status::Unsupported,
                "this libibverbs has no ibv_reg_dmabuf_mr (rdma-core >= 34 needed)",
            )
        })?;
        // SAFETY: live PD; the kernel checks the fd and the range against the dma-buf's
        // size (EINVAL/EBADF, never a fault), and holds its own reference to the buffer.
        let raw = unsafe { reg(domain.pd, offset, len, iova, fd, ACCESS as i32) };
        if raw.is_null() {
            return Err(os_error(
                Status::Io,
                &format!(
                    "ibv_reg_dmabuf_mr(fd {fd}, offset {offset}, {len}) on {}",
                    domain.label()
                ),
            ));
        }
        Ok(Mr {
            raw,
            _domain: domain.clone(),
        })
    }

    pub fn lkey(&self) -> u32 {
        // SAFETY: live registration.
        unsafe { (*self.raw).lkey }
    }

    pub fn rkey(&self) -> u32 {
        // SAFETY: live registration.
        unsafe { (*self.raw).rkey }
    }
}

impl Drop for Mr {
    fn drop(&mut self) {
        if let Ok(v) = verbs() {
            // SAFETY: registered in `register`, deregistered once.
            unsafe { (v.ibv_dereg_mr)(self.raw) };
        }
    }
}

/// Registers a pool's regions on one domain.
pub struct DomainRegistrar(pub Arc<Domain>);

impl Registrar for DomainRegistrar {
    fn register(&self, addr: usize, len: usize) -> Result<DeviceMr> {
        // SAFETY: the pool registers memory its caller promised stays valid while
        // registered (MemoryPool::register's contract).
        let mr = unsafe { Mr::register(&self.0, addr, len)? };
        Ok(DeviceMr {
            lkey: mr.lkey(),
            rkey: mr.rkey(),
            guard: Box::new(mr),
        })
    }

    /// GPUDirect RDMA: dma-buf first (no kernel module needed), then plain `ibv_reg_mr`
    /// when nvidia-peermem is loaded; otherwise `Unsupported`, naming both.
    fn register_device(&self, addr: usize, len: usize, ordinal: i32) -> Result<DeviceMr> {
        let dmabuf = dmabuf::export(ordinal, addr, len).and_then(|b| {
            Mr::register_dmabuf(&self.0, b.fd.as_raw_fd(), b.offset, len, addr as u64)
        });
        let mr = match dmabuf {
            Ok(mr) => mr,
            Err(e) if e.status() == Status::DeviceUnavailable => return Err(e),
            Err(e) if dmabuf::peermem_loaded() => {
                crate::info_log!("rdma: dma-buf registration failed ({e}); using nvidia-peermem");
                // SAFETY: as in `register`; nvidia-peermem pins device memory for the NIC.
                unsafe { Mr::register(&self.0, addr, len)? }
            }
            Err(e) => {
                return Err(Error::new(
                    Status::Unsupported,
                    format!(
                        "cuda:{ordinal} memory cannot be registered with {}: dma-buf failed \
                         ({}) and nvidia-peermem is not loaded; use TCP or shared memory, \
                         which stage device memory (docs/gpu.md)",
                        self.domain(),
                        e.message()
                    ),
                ))
            }
        };
        Ok(DeviceMr {
            lkey: mr.lkey(),
            rkey: mr.rkey(),
            guard: Box::new(mr),
        })
    }

    fn register_dmabuf(&self, fd: i32, offset: u64, len: usize, iova: u64) -> Result<DeviceMr> {
        let mr = Mr::register_dmabuf(&self.0, fd, offset, len, iova)?;
        Ok(DeviceMr {
            lkey: mr.lkey(),
            rkey: mr.rkey(),
            guard: Box::new(mr),
        })
    }

    fn domain(&self) -> String {
        format!("{} (pd {:p})", self.0.label(), self.0.pd)
    }
}

/// A zeroed, page-aligned buffer owned by the library and registered on a domain.
pub struct RegBuf {
    ptr: *mut u8,
    len: usize,
    mr: Option<Mr>,
}

// SAFETY: the buffer is plain memory; who writes where is coordinated by its users (a
// slot is written by one side at a time, ordered by the verbs completions).
unsafe impl Send for RegBuf {}
// SAFETY: as above.
unsafe impl Sync for RegBuf {}

impl RegBuf {
    pub fn new(domain: &Arc<Domain>, len: usize) -> Result<RegBuf> {
        let len = len.max(1);
        let layout =
            Layout::from_size_align(len, 4096).map_err(|e| Error::invalid(e.to_string()))?;
        // SAFETY: non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(Error::new(Status::ResourceExhausted, "out of memory"));
        }
        let mut b = RegBuf { ptr, len, mr: None };
        // SAFETY: the allocation lives as long as the RegBuf, which drops the MR first.
        b.mr = Some(unsafe { Mr::register(domain, ptr as usize, len)? });
        Ok(b)
    }

    pub fn addr(&self, off: usize) -> u64 {
        debug_assert!(off <= self.len);
        self.ptr as u64 + off as u64
    }

    pub fn ptr(&self, off: usize) -> *mut u8 {
        debug_assert!(off <= self.len);
        // SAFETY: within the allocation.
        unsafe { self.ptr.add(off) }
    }

    pub fn lkey(&self) -> u32 {
        self.mr.as_ref().map_or(0, Mr::lkey)
    }

    pub fn rkey(&self) -> u32 {
        self.mr.as_ref().map_or(0, Mr::rkey)
    }
}

impl Drop for RegBuf {
    fn drop(&mut self) {
        self.mr.take();
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, Layout::from_size_align_unchecked(self.len, 4096)) };
    }
}
