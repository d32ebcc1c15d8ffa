//! Device memory the library allocates itself (the PeerAgent's `allocate_memory_region`):
//! `cuMemAlloc` on a device's primary context, freed on drop.

use cudarc::driver::sys;

use super::driver::{check, driver, release_on};
use crate::error::{Error, Result, Status};

/// What kind of memory [`DeviceAlloc::new`] makes (the original's `memory_kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryKind {
    /// Plain device memory (`cuMemAlloc`).
    Cuda,
    /// The original's `cuda_fabric` (VMM memory exportable as a fabric handle, for
    /// multi-node NVLink): not implemented; refused with `Unsupported`.
    CudaFabric,
}

impl MemoryKind {
    pub fn parse(s: &str) -> Result<MemoryKind> {
        match s {
            "cuda" => Ok(MemoryKind::Cuda),
            "cuda_fabric" => Ok(MemoryKind::CudaFabric),
            _ => Err(Error::invalid(format!(
                "memory_kind {s:?}: expected \"cuda\" or \"cuda_fabric\""
            ))),
        }
    }
}

/// A device allocation owned by the library.
pub struct DeviceAlloc {
    ptr: usize,
    len: usize,
    ordinal: i32,
}

impl DeviceAlloc {
    /// Allocates `len` bytes of `kind` memory on device `ordinal`. `DeviceUnavailable`
    /// without a CUDA driver (checked first, whatever the kind).
    pub fn new(kind: MemoryKind, ordinal: i32, len: usize) -> Result<DeviceAlloc> {
        let d = driver()?;
        if len == 0 {
            return Err(Error::invalid("allocate: zero length"));
        }
        if kind == MemoryKind::CudaFabric {
            return Err(Error::new(
                Status::Unsupported,
                "memory_kind \"cuda_fabric\" (fabric-handle VMM memory) is not implemented; \
                 use memory_kind=\"cuda\" (docs/gpu.md)",
            ));
        }
        d.bind(ordinal)?;
        let mut p: sys::CUdeviceptr = 0;
        // SAFETY: the device's primary context is current; the out-param is a local.
        check(unsafe { sys::cuMemAlloc_v2(&mut p, len) }, "cuMemAlloc")?;
        Ok(DeviceAlloc {
            ptr: p as usize,
            len,
            ordinal,
        })
    }

    pub fn ptr(&self) -> usize {
        self.ptr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn device(&self) -> i32 {
        self.ordinal
    }
}

impl Drop for DeviceAlloc {
    fn drop(&mut self) {
        release_on(self.ordinal, || {
            // SAFETY: allocated by cuMemAlloc above, freed only here, after every user of
            // it (its owner drops it last).
            let _ = unsafe { sys::cuMemFree_v2(self.ptr as sys::CUdeviceptr) };
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_without_a_driver_allocation_is_unavailable() {
        assert_eq!(MemoryKind::parse("cuda").unwrap(), MemoryKind::Cuda);
        assert_eq!(
            MemoryKind::parse("host").unwrap_err().status(),
            Status::InvalidArgument
        );
        if driver().is_ok() {
            return; // make test-gpu allocates for real
        }
        for k in [MemoryKind::Cuda, MemoryKind::CudaFabric] {
            let e = DeviceAlloc::new(k, 0, 4096).err().unwrap();
            assert_eq!(e.status(), Status::DeviceUnavailable);
        }
    }
}
