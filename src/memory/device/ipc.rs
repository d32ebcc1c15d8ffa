//! CUDA IPC: a handle to device memory another process on this host can open, so
//! device-to-device copies need no staging (the original's `NVLinkEndpoint`).
//!
//! A handle names the whole allocation, not the pointer: [`export`] also returns the
//! pointer's offset from the allocation base (the original ignored it, so a region not
//! at the base of its allocation resolved to the wrong bytes; here the importer adds it).
//!
//! Not yet wired into the shared-memory transport (docs/gpu.md): the functions are the
//! building blocks, exercised only on a GPU machine (`make test-gpu`).

use cudarc::driver::sys;

use super::driver::{check, driver, release_on};
use crate::error::Result;

/// The bytes of a `CUipcMemHandle`.
pub const IPC_HANDLE_LEN: usize = 64;

/// What a peer needs to open a region: the allocation's handle and the region's offset
/// inside that allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpcExport {
    pub handle: [u8; IPC_HANDLE_LEN],
    pub offset: usize,
}

/// Exports the allocation holding device pointer `ptr` of device `ordinal`.
pub fn export(ordinal: i32, ptr: usize) -> Result<IpcExport> {
    let d = driver()?;
    d.bind(ordinal)?;
    let mut base: sys::CUdeviceptr = 0;
    let mut size: usize = 0;
    check(
        // SAFETY: the context is current; out-params are locals.
        unsafe { sys::cuMemGetAddressRange_v2(&mut base, &mut size, ptr as sys::CUdeviceptr) },
        "cuMemGetAddressRange",
    )?;
    // SAFETY: a zeroed handle is a valid out-param value (a plain byte array).
    let mut h: sys::CUipcMemHandle = unsafe { std::mem::zeroed() };
    check(
        // SAFETY: `base` is the allocation base the driver just reported.
        unsafe { sys::cuIpcGetMemHandle(&mut h, base) },
        "cuIpcGetMemHandle",
    )?;
    let mut handle = [0u8; IPC_HANDLE_LEN];
    for (d, s) in handle.iter_mut().zip(h.reserved.iter()) {
        *d = *s as u8;
    }
    Ok(IpcExport {
        handle,
        offset: ptr - base as usize,
    })
}

/// A peer's allocation opened in this process; closed on drop.
pub struct IpcMapping {
    ordinal: i32,
    base: usize,
    offset: usize,
}

impl IpcMapping {
    /// Opens `export` on device `ordinal` (peer access enabled lazily, as the original).
    pub fn open(ordinal: i32, export: &IpcExport) -> Result<IpcMapping> {
        let d = driver()?;
        d.bind(ordinal)?;
        // SAFETY: a zeroed handle is a valid value; filled from the peer's bytes.
        let mut h: sys::CUipcMemHandle = unsafe { std::mem::zeroed() };
        for (d, s) in h.reserved.iter_mut().zip(export.handle.iter()) {
            *d = *s as _;
        }
        let mut base: sys::CUdeviceptr = 0;
        check(
            // SAFETY: the context is current; the out-param is a local.
            unsafe {
                sys::cuIpcOpenMemHandle_v2(
                    &mut base,
                    h,
                    sys::CUipcMem_flags::CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS as u32,
                )
            },
            "cuIpcOpenMemHandle",
        )?;
        Ok(IpcMapping {
            ordinal,
            base: base as usize,
            offset: export.offset,
        })
    }

    /// The peer's region pointer in this process.
    pub fn ptr(&self) -> usize {
        self.base + self.offset
    }

    pub fn device(&self) -> i32 {
        self.ordinal
    }
}

impl Drop for IpcMapping {
    fn drop(&mut self) {
        release_on(self.ordinal, || {
            // SAFETY: opened by cuIpcOpenMemHandle above and closed only here.
            let _ = unsafe { sys::cuIpcCloseMemHandle(self.base as sys::CUdeviceptr) };
        });
    }
}

/// Copies `len` bytes device to device (any two devices) on `stream` and waits for it.
///
/// # Safety
/// Both ranges must be valid device memory for the call; `stream` live or 0.
pub unsafe fn copy_device(dst: usize, src: usize, len: usize, stream: usize) -> Result<()> {
    driver()?;
    check(
        // SAFETY: valid ranges and stream (this fn's contract); unified addressing lets the
        // driver find both devices from the pointers.
        unsafe {
            sys::cuMemcpyAsync(
                dst as sys::CUdeviceptr,
                src as sys::CUdeviceptr,
                len,
                stream as sys::CUstream,
            )
        },
        "cuMemcpyAsync",
    )?;
    check(
        // SAFETY: as above.
        unsafe { sys::cuStreamSynchronize(stream as sys::CUstream) },
        "cuStreamSynchronize",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;

    #[test]
    fn without_a_driver_ipc_is_unavailable() {
        if driver().is_ok() {
            return; // covered by make test-gpu on a GPU machine
        }
        assert_eq!(
            export(0, 0x1000).unwrap_err().status(),
            Status::DeviceUnavailable
        );
        let e = IpcExport {
            handle: [0; IPC_HANDLE_LEN],
            offset: 0,
        };
        assert_eq!(
            IpcMapping::open(0, &e).err().unwrap().status(),
            Status::DeviceUnavailable
        );
    }
}
