//! CUDA devices: whether this process can use device memory. The library loads the
//! CUDA driver (`libcuda.so`) at run time and works without it; device memory then
//! fails with `DLSLIME_STATUS_DEVICE_UNAVAILABLE`.

use super::status::dlslime_status_t;
use crate::memory::device::{driver, stream};

/// Writes the number of CUDA devices to `*out_count`.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_DEVICE_UNAVAILABLE` (no CUDA
/// driver, or `cuInit` failed; the last-error message says which).
#[no_mangle]
pub extern "C" fn dlslime_cuda_device_count(out_count: *mut i32) -> dlslime_status_t {
    ffi_boundary! {
        let out_count = try_out!(out_count);
        let n = try_res!(driver().and_then(|d| d.device_count()));
        out_count.write(n);
        dlslime_status_t::Ok
    }
}

/// Stream ordering, before an operation: waits until the work already queued on CUDA
/// stream `stream` (a `CUstream` / `cudaStream_t`; 0 is the legacy default stream) is
/// done, so the operation submitted next reads what that work produced.
///
/// `stream` must be a live stream of this process.
///
/// Errors: `DLSLIME_STATUS_DEVICE_UNAVAILABLE` (no CUDA driver), or the driver's failure.
#[no_mangle]
pub extern "C" fn dlslime_cuda_stream_wait(stream: usize) -> dlslime_status_t {
    ffi_boundary! {
        // SAFETY: the caller passes a live stream (documented above).
        try_res!(unsafe { stream::wait_stream(stream) });
        dlslime_status_t::Ok
    }
}
