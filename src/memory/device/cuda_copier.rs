//! The CUDA copier: device ↔ pinned host copies on a stream (`cuMemcpyDtoHAsync` /
//! `cuMemcpyHtoDAsync`, then a stream synchronize).
//!
//! Stream ordering: a copier built [`CudaCopier::on_stream`] with the caller's stream
//! issues its copies on that stream, so the data is read only after the work already
//! queued there (a kernel that produced it), and a write lands before the work queued
//! after the operation's completion is awaited.

use cudarc::driver::sys;

use super::copier::Copier;
use super::driver::{check, driver};
use super::location::Location;
use crate::error::Result;

/// Copies between device `ordinal`'s memory and host memory.
pub struct CudaCopier {
    ordinal: i32,
    /// The stream copies go on (0: the legacy default stream).
    stream: usize,
}

impl CudaCopier {
    /// A copier for device `ordinal` on its default stream. `DeviceUnavailable` without a
    /// driver.
    pub fn new(ordinal: i32) -> Result<CudaCopier> {
        driver()?;
        Ok(CudaCopier { ordinal, stream: 0 })
    }

    /// A copier whose copies are queued on `stream` (a `CUstream`/`cudaStream_t`, e.g.
    /// `torch.cuda.current_stream().cuda_stream`), ordered after the work already on it.
    ///
    /// # Safety
    /// `stream` must be a live stream of device `ordinal`'s primary context (or 0) for as
    /// long as the copier is used.
    pub unsafe fn on_stream(ordinal: i32, stream: usize) -> Result<CudaCopier> {
        driver()?;
        Ok(CudaCopier { ordinal, stream })
    }

    fn stream(&self) -> sys::CUstream {
        self.stream as sys::CUstream
    }

    fn sync(&self) -> Result<()> {
        check(
            // SAFETY: the stream is live (constructor contract) in the bound context.
            unsafe { sys::cuStreamSynchronize(self.stream()) },
            "cuStreamSynchronize",
        )
    }
}

impl Copier for CudaCopier {
    fn location(&self) -> Location {
        Location::Device(self.ordinal)
    }

    unsafe fn copy_to_host(&self, src: usize, dst: *mut u8, len: usize) -> Result<()> {
        driver()?.bind(self.ordinal)?;
        check(
            // SAFETY: valid ranges (this fn's contract); the context is current.
            unsafe {
                sys::cuMemcpyDtoHAsync_v2(dst.cast(), src as sys::CUdeviceptr, len, self.stream())
            },
            "cuMemcpyDtoHAsync",
        )?;
        self.sync()
    }

    unsafe fn copy_from_host(&self, src: *const u8, dst: usize, len: usize) -> Result<()> {
        driver()?.bind(self.ordinal)?;
        check(
            // SAFETY: valid ranges (this fn's contract); the context is current.
            unsafe {
                sys::cuMemcpyHtoDAsync_v2(dst as sys::CUdeviceptr, src.cast(), len, self.stream())
            },
            "cuMemcpyHtoDAsync",
        )?;
        self.sync()
    }
}
