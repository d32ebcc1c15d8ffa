//! The CUDA driver, loaded at run time through cudarc's dynamic loading: `libdlslime.so`
//! has no NEEDED entry on `libcuda.so`, so it loads and serves host memory on machines
//! without CUDA. Every call that needs the driver goes through [`driver`], which fails
//! with [`Status::DeviceUnavailable`] naming what is missing instead of cudarc's panic.

use std::collections::HashMap;

use cudarc::driver::sys;
use parking_lot::Mutex;

use crate::error::{Error, Result, Status};
use crate::runtime_lib::RuntimeLib;

/// Proof that `libcuda.so` is loaded and `cuInit` succeeded; obtained from [`driver`].
pub struct Driver {
    /// Each device's retained primary context (the one the CUDA runtime and PyTorch use,
    /// so pointers they allocated are valid in it). Retained once, never released.
    contexts: Mutex<HashMap<i32, usize>>,
}

/// The loaded driver, or `DeviceUnavailable` saying why there is none. Probed once; the
/// answer is cached for the life of the process.
pub fn driver() -> Result<&'static Driver> {
    static DRIVER: RuntimeLib<Driver> = RuntimeLib::new(load, Status::DeviceUnavailable);
    DRIVER.get()
}

/// Runs `release` with `device`'s context current, if there is a driver and the device
/// can be bound: for `Drop`s, which cannot report a failure (a release that cannot run
/// is skipped).
pub(crate) fn release_on(device: i32, release: impl FnOnce()) {
    if let Ok(d) = driver() {
        if d.bind(device).is_ok() {
            release();
        }
    }
}

/// Whether a CUDA driver is usable here (never panics, never fails).
pub fn available() -> bool {
    driver().is_ok()
}

fn load() -> std::result::Result<Driver, String> {
    if std::env::var_os("DLSLIME_DISABLE_CUDA").is_some_and(|v| v != "0") {
        return Err("CUDA disabled by DLSLIME_DISABLE_CUDA".into());
    }
    // SAFETY: only tries to dlopen the candidate names; no symbol of the library is
    // called before it is known to be present (cudarc panics on a missing library).
    if !unsafe { sys::is_culib_present() } {
        return Err(
            "no CUDA driver: libcuda.so could not be loaded (install the NVIDIA \
                    driver, or use host memory)"
                .into(),
        );
    }
    // SAFETY: the library is present; cuInit(0) is the documented first call.
    let r = unsafe { sys::cuInit(0) };
    if r != sys::CUresult::CUDA_SUCCESS {
        return Err(format!(
            "cuInit failed: {r:?} (no usable GPU, or driver/device mismatch)"
        ));
    }
    Ok(Driver {
        contexts: Mutex::new(HashMap::new()),
    })
}

/// Maps a driver result to the crate's error, naming the call.
pub fn check(r: sys::CUresult, call: &str) -> Result<()> {
    match r {
        sys::CUresult::CUDA_SUCCESS => Ok(()),
        sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => Err(Error::new(
            Status::ResourceExhausted,
            format!("{call}: out of memory"),
        )),
        sys::CUresult::CUDA_ERROR_INVALID_VALUE | sys::CUresult::CUDA_ERROR_INVALID_HANDLE => {
            Err(Error::invalid(format!("{call}: {r:?}")))
        }
        sys::CUresult::CUDA_ERROR_NO_DEVICE | sys::CUresult::CUDA_ERROR_INVALID_DEVICE => Err(
            Error::new(Status::DeviceUnavailable, format!("{call}: {r:?}")),
        ),
        _ => Err(Error::new(Status::Io, format!("{call}: {r:?}"))),
    }
}

impl Driver {
    /// Makes `device`'s primary context current on this thread (the driver API needs a
    /// current context for copies, pinned allocations, streams and IPC).
    pub fn bind(&self, device: i32) -> Result<()> {
        let ctx = {
            let mut m = self.contexts.lock();
            match m.get(&device) {
                Some(&c) => c,
                None => {
                    let mut dev: sys::CUdevice = 0;
                    // SAFETY: cuInit succeeded (a `Driver` exists); out-param is a local.
                    check(unsafe { sys::cuDeviceGet(&mut dev, device) }, "cuDeviceGet")?;
                    let mut c: sys::CUcontext = std::ptr::null_mut();
                    check(
                        // SAFETY: `dev` is a valid device; out-param is a local.
                        unsafe { sys::cuDevicePrimaryCtxRetain(&mut c, dev) },
                        "cuDevicePrimaryCtxRetain",
                    )?;
                    m.insert(device, c as usize);
                    c as usize
                }
            }
        };
        check(
            // SAFETY: a primary context retained above and never released.
            unsafe { sys::cuCtxSetCurrent(ctx as sys::CUcontext) },
            "cuCtxSetCurrent",
        )
    }

    /// Number of CUDA devices.
    pub fn device_count(&self) -> Result<i32> {
        let mut n = 0;
        // SAFETY: cuInit succeeded; out-param is a local.
        check(unsafe { sys::cuDeviceGetCount(&mut n) }, "cuDeviceGetCount")?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever this machine has, the probe answers without panicking, and without a
    /// driver the error is the typed one and names libcuda.
    #[test]
    fn probe_is_typed() {
        match driver() {
            Ok(d) => assert!(d.device_count().is_ok()),
            Err(e) => {
                assert_eq!(e.status(), Status::DeviceUnavailable);
                assert!(
                    e.message().contains("libcuda")
                        || e.message().contains("cuInit")
                        || e.message().contains("DLSLIME_DISABLE_CUDA"),
                    "{}",
                    e.message()
                );
            }
        }
    }
}
