//! GPUDirect RDMA for device memory: what lets a NIC reach device memory directly.
//!
//! * dma-buf (`cuMemGetHandleForAddressRange` exports the range as a dma-buf fd, which
//!   `ibv_reg_dmabuf_mr` registers): upstream kernels, no extra module;
//! * nvidia-peermem (the kernel module that lets plain `ibv_reg_mr` take a device
//!   pointer), detected from sysfs.
//!
//! The RDMA registrar tries them in that order (src/transport/rdma/mr.rs).

use std::os::fd::{FromRawFd, OwnedFd};

use cudarc::driver::sys;

use super::driver::{check, driver};
use crate::error::{Error, Result, Status};

/// A device range exported as a dma-buf: the fd covers `[base, base+len)` (host-page
/// aligned, as the driver requires); the region starts `offset` bytes into it.
pub struct DmaBuf {
    pub fd: OwnedFd,
    pub offset: u64,
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// Exports `[ptr, ptr+len)` of device `ordinal` as a dma-buf fd. `DeviceUnavailable`
/// without a driver; `Unsupported` when the device or driver cannot export dma-bufs.
pub fn export(ordinal: i32, ptr: usize, len: usize) -> Result<DmaBuf> {
    let d = driver()?;
    d.bind(ordinal)?;
    let mut supported = 0;
    check(
        // SAFETY: cuInit succeeded; the out-param is a local.
        unsafe {
            sys::cuDeviceGetAttribute(
                &mut supported,
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED,
                ordinal,
            )
        },
        "cuDeviceGetAttribute(DMA_BUF_SUPPORTED)",
    )?;
    if supported == 0 {
        return Err(Error::new(
            Status::Unsupported,
            format!(
                "cuda:{ordinal} cannot export dma-bufs (driver or kernel without dma-buf support)"
            ),
        ));
    }
    let page = page_size();
    let base = ptr & !(page - 1);
    let end = ptr
        .checked_add(len)
        .and_then(|e| e.checked_add(page - 1))
        .map(|e| e & !(page - 1))
        .ok_or_else(|| Error::new(Status::OutOfRange, "dma-buf range wraps"))?;
    let mut fd: libc::c_int = -1;
    check(
        // SAFETY: the context is current; the out-param is a local int (the handle type
        // DMA_BUF_FD writes an int fd).
        unsafe {
            sys::cuMemGetHandleForAddressRange(
                (&mut fd as *mut libc::c_int).cast(),
                base as sys::CUdeviceptr,
                end - base,
                sys::CUmemRangeHandleType::CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD,
                0,
            )
        },
        "cuMemGetHandleForAddressRange(DMA_BUF_FD)",
    )?;
    if fd < 0 {
        return Err(Error::new(
            Status::Io,
            "cuMemGetHandleForAddressRange returned no fd",
        ));
    }
    Ok(DmaBuf {
        // SAFETY: a fresh fd the driver just handed us; owned from here on.
        fd: unsafe { OwnedFd::from_raw_fd(fd) },
        offset: (ptr - base) as u64,
    })
}

/// Whether nvidia-peermem (or the older nv_peer_mem) is loaded, so `ibv_reg_mr` accepts
/// device pointers.
pub fn peermem_loaded() -> bool {
    [
        "/sys/module/nvidia_peermem",
        "/sys/kernel/mm/memory_peers/nvidia-peermem/version",
        "/sys/kernel/mm/memory_peers/nv_mem/version",
    ]
    .iter()
    .any(|p| std::path::Path::new(p).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_driver_export_is_unavailable() {
        if driver().is_ok() {
            return; // make test-gpu covers a real export
        }
        let e = export(0, 0x7000_0000_1000, 4096).err().unwrap();
        assert_eq!(e.status(), Status::DeviceUnavailable);
    }
}
