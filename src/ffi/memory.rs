//! Memory pool (`dlslime_memory_pool_t`): the table of local memory regions that
//! endpoints read from and write into, each with a name, a dense handle
//! (`dlslime_mr_handle_t`) and a random access key.

use std::ffi::{c_char, c_void};

use super::cast::arc_into_ptr;
use super::status::{dlslime_status_t, status_of};
use crate::memory::device::Location;
use crate::memory::MemoryPool;

/// Handle of a local memory region: dense, starting at 0, never reused within a pool.
pub type dlslime_mr_handle_t = u32;

/// Handle of a peer's memory region as registered on an endpoint (see
/// `dlslime_endpoint_register_remote`; `dlslime_endpoint_connect` registers every region
/// the peer published, in the peer's handle order).
pub type dlslime_remote_handle_t = u32;

/// A table of local memory regions: registered `(ptr, len)` ranges with names and random
/// access keys. Endpoints read from and write into these regions only.
///
/// Ownership: created by `dlslime_memory_pool_new`, released by
/// `dlslime_memory_pool_free`. Reference-counted: every endpoint created over the pool
/// keeps its own reference, so the pool may be freed before its endpoints.
///
/// Thread safety: thread-safe. Any function may be called on the same pool from several
/// threads at once (but not after `dlslime_memory_pool_free`).
///
/// Methods: `dlslime_memory_pool_new`, `dlslime_memory_pool_free`,
/// `dlslime_memory_pool_register`, `dlslime_memory_pool_register_device`,
/// `dlslime_memory_pool_region_device`, `dlslime_memory_pool_unregister`,
/// `dlslime_memory_pool_unregister_name`, `dlslime_memory_pool_handle`,
/// `dlslime_memory_pool_mr_info`.
pub struct dlslime_memory_pool_t {
    _private: [u8; 0],
}

castable!(dlslime_memory_pool_t => Arc<MemoryPool>);

/// Creates an empty memory pool and writes it to `*out`.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER` if `out` is NULL.
#[no_mangle]
pub extern "C" fn dlslime_memory_pool_new(
    out: *mut *mut dlslime_memory_pool_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let out = try_out!(out);
        out.write(arc_into_ptr(MemoryPool::new()));
        dlslime_status_t::Ok
    }
}

/// Releases the caller's reference to a pool. Endpoints created over it keep theirs.
/// NULL is a no-op. The registered memory itself is never freed by the library.
#[no_mangle]
pub extern "C" fn dlslime_memory_pool_free(pool: *mut dlslime_memory_pool_t) {
    free_body!(pool)
}

/// Registers `[ptr, ptr + len)` under `name` (NULL: the default name `mr_<handle>`) and
/// writes its handle to `*out_handle`.
///
/// Registering a pointer again with a length that fits returns the same handle (`name`
/// becomes an alias); with a larger length the same handle is re-registered with the new
/// length and a new access key.
///
/// The memory must stay valid until it is unregistered and every operation using it
/// has completed. The library never frees it.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER` (`pool`, `ptr` or `out_handle` NULL),
/// `DLSLIME_STATUS_INVALID_ARGUMENT` (`len` is 0, `name` not UTF-8),
/// `DLSLIME_STATUS_NAME_CONFLICT` (`name` is bound to another address; nothing is
/// registered), `DLSLIME_STATUS_OUT_OF_RANGE` (the range wraps the address space).
#[no_mangle]
pub extern "C" fn dlslime_memory_pool_register(
    pool: *const dlslime_memory_pool_t,
    name: *const c_char,
    ptr: *mut c_void,
    len: usize,
    out_handle: *mut dlslime_mr_handle_t,
) -> dlslime_status_t {
    register_with(pool, name, ptr, len, out_handle, MemoryPool::register)
}

/// Registers CUDA device memory the caller vouches for (a `__cuda_array_interface__` or
/// DLPack pointer), as `dlslime_memory_pool_register`. (That function already detects
/// device pointers when a CUDA driver is present; this one also fails when the pointer
/// is not device memory, and says why when CUDA is missing.)
///
/// TCP endpoints stage device regions through pinned host buffers; shared-memory and
/// RDMA endpoints refuse them (`DLSLIME_STATUS_UNSUPPORTED`): docs/gpu.md.
///
/// Errors: as `dlslime_memory_pool_register`, and `DLSLIME_STATUS_DEVICE_UNAVAILABLE`
/// (no CUDA driver or device; the last-error message names what is missing),
/// `DLSLIME_STATUS_INVALID_ARGUMENT` (the driver says `ptr` is not device memory).
#[no_mangle]
pub extern "C" fn dlslime_memory_pool_register_device(
    pool: *const dlslime_memory_pool_t,
    name: *const c_char,
    ptr: *mut c_void,
    len: usize,
    out_handle: *mut dlslime_mr_handle_t,
) -> dlslime_status_t {
    register_with(
        pool,
        name,
        ptr,
        len,
        out_handle,
        MemoryPool::register_device,
    )
}

/// The body of the two register exports; `register` is the pool method.
fn register_with(
    pool: *const dlslime_memory_pool_t,
    name: *const c_char,
    ptr: *mut c_void,
    len: usize,
    out_handle: *mut dlslime_mr_handle_t,
    register: unsafe fn(&MemoryPool, Option<&str>, *mut u8, usize) -> crate::Result<u32>,
) -> dlslime_status_t {
    ffi_boundary! {
        let pool = try_ref!(pool);
        let out_handle = try_out!(out_handle);
        let name = try_opt_str!(name);
        if ptr.is_null() {
            null_arg!("ptr");
        }
        // SAFETY: the header makes the caller keep the registered memory valid until it
        // is unregistered and every operation on it is done, `MemoryPool::register`'s
        // contract; the library never creates Rust references into it.
        let h = try_res!(unsafe { register(pool, name, ptr.cast(), len) });
        out_handle.write(h);
        dlslime_status_t::Ok
    }
}

/// Writes where a live region lives to `*out_device`: -1 for host memory, the CUDA
/// device ordinal for device memory.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_UNKNOWN_HANDLE`.
#[no_mangle]
pub extern "C" fn dlslime_memory_pool_region_device(
    pool: *const dlslime_memory_pool_t,
    handle: dlslime_mr_handle_t,
    out_device: *mut i32,
) -> dlslime_status_t {
    ffi_boundary! {
        let pool = try_ref!(pool);
        let out_device = try_out!(out_device);
        let r = try_res!(pool.region(handle));
        out_device.write(match r.location {
            Location::Host => -1,
            Location::Device(n) => n,
        });
        dlslime_status_t::Ok
    }
}

/// Unregisters a region and every name bound to it. The handle is never reused.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_UNKNOWN_HANDLE` (no live
/// region with that handle).
#[no_mangle]
pub extern "C" fn dlslime_memory_pool_unregister(
    pool: *const dlslime_memory_pool_t,
    handle: dlslime_mr_handle_t,
) -> dlslime_status_t {
    status_call_body!(pool, |pool| pool.unregister(handle))
}

/// Unregisters the region `name` is bound to (with all its names).
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_INVALID_ARGUMENT` (not
/// UTF-8), `DLSLIME_STATUS_UNKNOWN_HANDLE` (no region of that name).
#[no_mangle]
pub extern "C" fn dlslime_memory_pool_unregister_name(
    pool: *const dlslime_memory_pool_t,
    name: *const c_char,
) -> dlslime_status_t {
    ffi_boundary! {
        let pool = try_ref!(pool);
        let name = try_str!(name);
        status_of(pool.unregister_name(name))
    }
}

/// Looks up the handle a name is bound to and writes it to `*out_handle`.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_INVALID_ARGUMENT` (not
/// UTF-8), `DLSLIME_STATUS_UNKNOWN_HANDLE` (no region of that name).
#[no_mangle]
pub extern "C" fn dlslime_memory_pool_handle(
    pool: *const dlslime_memory_pool_t,
    name: *const c_char,
    out_handle: *mut dlslime_mr_handle_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let pool = try_ref!(pool);
        let name = try_str!(name);
        let out_handle = try_out!(out_handle);
        let h = try_res!(pool.handle(name).ok_or_else(|| crate::Error::new(
            crate::Status::UnknownHandle,
            format!("no region named {name:?}"),
        )));
        out_handle.write(h);
        dlslime_status_t::Ok
    }
}

/// Writes the pool's regions as an owned JSON string to `*out_json`:
/// `{"<name>": {"handle": H, "addr": A, "rkey": K, "length": L}, ...}`, one entry per
/// name (aliases included). Free it with `dlslime_string_free`.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`.
#[no_mangle]
pub extern "C" fn dlslime_memory_pool_mr_info(
    pool: *const dlslime_memory_pool_t,
    out_json: *mut *mut c_char,
) -> dlslime_status_t {
    string_getter_body!(pool, out_json, |pool| pool.mr_info().to_string())
}
