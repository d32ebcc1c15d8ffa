//! Where a region's bytes live: host memory, or the memory of CUDA device N. Learned from
//! the pointer itself, so the ordinary register calls take device pointers unchanged.

use cudarc::driver::sys;

use super::driver::{check, driver};
use crate::error::{Error, Result};

/// Where a region lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Location {
    /// Host memory: any transport reaches it directly (this includes CUDA pinned and
    /// managed memory, which the CPU can address).
    Host,
    /// Memory of CUDA device `ordinal`: the CPU cannot address it; transports reach it
    /// through a copier (staging) or a device path (CUDA IPC, GPUDirect).
    Device(i32),
}

impl Location {
    pub fn is_device(self) -> bool {
        matches!(self, Location::Device(_))
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Host => f.write_str("host"),
            Location::Device(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Where `ptr` lives. Without a CUDA driver no device memory can exist in this process,
/// so the answer is `Host` (and no CUDA call is made). With one, the driver is asked; a
/// pointer it does not know (plain `malloc` memory) is host memory.
pub fn locate(ptr: usize) -> Location {
    match driver() {
        Err(_) => Location::Host,
        Ok(_) => device_of(ptr)
            .ok()
            .flatten()
            .map_or(Location::Host, Location::Device),
    }
}

/// The device owning `ptr` when the caller says it is device memory (a
/// `__cuda_array_interface__`): `DeviceUnavailable` without a driver, `InvalidArgument`
/// when the driver says it is not device memory.
pub fn require_device(ptr: usize) -> Result<i32> {
    driver()?;
    device_of(ptr)?.ok_or_else(|| {
        Error::invalid(format!(
            "{ptr:#x} is not CUDA device memory (the CUDA driver does not know it)"
        ))
    })
}

/// `Some(ordinal)` for device memory, `None` for memory the CPU can address.
fn device_of(ptr: usize) -> Result<Option<i32>> {
    let mut kind: u32 = 0;
    // SAFETY: the driver is initialised (callers checked `driver()`); the out-param is a
    // local of the attribute's documented type (unsigned int). cuPointerGetAttribute
    // needs no current context.
    let r = unsafe {
        sys::cuPointerGetAttribute(
            (&mut kind as *mut u32).cast(),
            sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
            ptr as sys::CUdeviceptr,
        )
    };
    if r == sys::CUresult::CUDA_ERROR_INVALID_VALUE {
        return Ok(None); // not a CUDA allocation: host memory
    }
    check(r, "cuPointerGetAttribute(MEMORY_TYPE)")?;
    if kind != sys::CUmemorytype::CU_MEMORYTYPE_DEVICE as u32 {
        return Ok(None); // pinned host memory; managed memory is addressable too
    }
    let mut ordinal: i32 = -1;
    check(
        // SAFETY: as above; DEVICE_ORDINAL is an int.
        unsafe {
            sys::cuPointerGetAttribute(
                (&mut ordinal as *mut i32).cast(),
                sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                ptr as sys::CUdeviceptr,
            )
        },
        "cuPointerGetAttribute(DEVICE_ORDINAL)",
    )?;
    Ok(Some(ordinal))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;

    #[test]
    fn host_memory_is_host() {
        let v = [0u8; 64];
        assert_eq!(locate(v.as_ptr() as usize), Location::Host);
    }

    #[test]
    fn claimed_device_pointer_without_driver_is_typed() {
        if driver().is_ok() {
            // With a driver, a heap pointer is not device memory.
            let v = [0u8; 64];
            let e = require_device(v.as_ptr() as usize).unwrap_err();
            assert_eq!(e.status(), Status::InvalidArgument);
        } else {
            let e = require_device(0x7000_0000_0000).unwrap_err();
            assert_eq!(e.status(), Status::DeviceUnavailable);
        }
    }
}
