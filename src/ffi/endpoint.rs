//! Endpoint (`dlslime_endpoint_t`): one side of a connection, of any transport.
//! Connect with the peer's `endpoint_info`, then one-sided read / write (a list of
//! `dlslime_assignment_t` per operation), write with immediate data, and two-sided
//! send / recv; every operation returns a future.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use super::args::{buffer_ptr, future_out, timeout};
use super::future::dlslime_future_t;
use super::memory::{dlslime_mr_handle_t, dlslime_remote_handle_t};
use super::status::{dlslime_status_t, status_of};
use crate::error::{Error, Status};
use crate::future::Future;
use crate::transport::{info, Assignment, Endpoint};

/// One transfer, in the original DLSlime tuple order
/// `(local, remote, remote_offset, local_offset, length)`. A read copies
/// `remote[remote_offset ..]` into `local[local_offset ..]`; a write copies the other way.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dlslime_assignment_t {
    /// Local region handle (`dlslime_memory_pool_register`).
    pub local: dlslime_mr_handle_t,
    /// Remote region handle (`dlslime_endpoint_connect` / `_register_remote`).
    pub remote: dlslime_remote_handle_t,
    pub remote_offset: u64,
    pub local_offset: u64,
    pub length: u64,
}

impl From<&dlslime_assignment_t> for Assignment {
    fn from(a: &dlslime_assignment_t) -> Assignment {
        Assignment::new(a.local, a.remote, a.remote_offset, a.local_offset, a.length)
    }
}

/// An endpoint of any transport (`dlslime_tcp_endpoint_new`, `dlslime_shm_endpoint_new`,
/// `dlslime_rdma_endpoint_new`): one side of a connection that moves bytes between
/// registered memory regions.
///
/// Ownership: owned by the caller; `dlslime_endpoint_free` shuts it down and releases
/// it. Futures it returned stay valid (and complete, with `DLSLIME_STATUS_CANCELLED` if
/// they were pending) after it is freed.
///
/// Thread safety: thread-safe. Operations may be posted on one endpoint from several
/// threads at once; only `dlslime_endpoint_free` must not race with other calls on it.
///
/// Errors: operations validate their local input synchronously (unknown handles,
/// out-of-range offsets: the call fails, touches no memory and returns no future);
/// everything the peer or the network decides is reported by the future.
///
/// Timeouts: every operation takes `timeout_ms`; 0 means the context's default deadline
/// (30 s unless configured). Past the deadline the future fails with
/// `DLSLIME_STATUS_TIMEOUT`.
///
/// Methods: `dlslime_endpoint_info`, `dlslime_endpoint_connect`,
/// `dlslime_endpoint_register_remote`, `dlslime_endpoint_remote_handle`,
/// `dlslime_endpoint_read`, `dlslime_endpoint_write`,
/// `dlslime_endpoint_write_with_imm`, `dlslime_endpoint_imm_recv`,
/// `dlslime_endpoint_send`, `dlslime_endpoint_recv`, `dlslime_endpoint_cancel_all`,
/// `dlslime_endpoint_shutdown`, `dlslime_endpoint_free`.
pub struct dlslime_endpoint_t {
    _private: [u8; 0],
}

castable!(dlslime_endpoint_t => Box<Arc<dyn Endpoint>>);

/// Runs `op` over the C assignment array, converted without a heap allocation for up to
/// 16 assignments.
///
/// # Safety
/// `a` is NULL with `n == 0`, or points at `n` readable assignments.
unsafe fn with_assignments<R>(
    a: *const dlslime_assignment_t,
    n: usize,
    op: impl FnOnce(&[Assignment]) -> crate::Result<R>,
) -> crate::Result<R> {
    if n == 0 {
        return op(&[]);
    }
    if a.is_null() {
        return Err(Error::new(
            Status::NullParameter,
            "argument `assignments` is NULL with a non-zero count",
        ));
    }
    // SAFETY: `a` is not NULL (checked above) and points at `n` readable assignments
    // (this function's contract); the slice is only read, during this call.
    let src = unsafe { std::slice::from_raw_parts(a, n) };
    const STACK: usize = 16;
    if n <= STACK {
        let mut buf = [Assignment::new(0, 0, 0, 0, 0); STACK];
        for (d, s) in buf.iter_mut().zip(src) {
            *d = s.into();
        }
        op(&buf[..n])
    } else {
        let v: Vec<Assignment> = src.iter().map(Assignment::from).collect();
        op(&v)
    }
}

/// The body of the one-sided exports: checks the handles, converts the assignment array,
/// starts the operation with `start` and hands its future out.
fn assignment_io(
    ep: *const dlslime_endpoint_t,
    assignments: *const dlslime_assignment_t,
    n: usize,
    out: *mut *mut dlslime_future_t,
    start: impl FnOnce(&Arc<dyn Endpoint>, &[Assignment]) -> crate::Result<Future>,
) -> dlslime_status_t {
    let ep = try_ref!(ep);
    let out = try_out!(out);
    // SAFETY: `assignments` is NULL with `n == 0` or points at `n` readable assignments,
    // as the header requires of this array argument.
    let f = try_res!(unsafe { with_assignments(assignments, n, |a| start(ep, a)) });
    future_out(f, out)
}

/// Writes this endpoint's `endpoint_info` (a JSON document: transport, protocol version,
/// `mr_info`, transport fields) as an owned string to `*out_json`; free it with
/// `dlslime_string_free`. Give it to the peer's `dlslime_endpoint_connect`.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`.
#[no_mangle]
pub extern "C" fn dlslime_endpoint_info(
    ep: *const dlslime_endpoint_t,
    out_json: *mut *mut c_char,
) -> dlslime_status_t {
    string_getter_body!(ep, out_json, |ep| ep.endpoint_info().to_string())
}

/// Connects to the peer described by `peer_info_json` (the peer's `endpoint_info`) and
/// registers every region it published as a remote region. Both sides call it.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_INVALID_ENDPOINT_INFO`
/// (malformed JSON, wrong transport, missing fields), `DLSLIME_STATUS_VERSION_MISMATCH`,
/// `DLSLIME_STATUS_ALREADY_CONNECTED`, `DLSLIME_STATUS_IO`.
#[no_mangle]
pub extern "C" fn dlslime_endpoint_connect(
    ep: *const dlslime_endpoint_t,
    peer_info_json: *const c_char,
) -> dlslime_status_t {
    ffi_boundary! {
        let ep = try_ref!(ep);
        let text = try_str!(peer_info_json);
        let v = try_res!(info::parse(text));
        status_of(ep.connect(&v))
    }
}

/// Registers (or updates) a peer region named `name` from its JSON description
/// `{"addr": A, "length": L, "rkey": K}` and writes its handle to `*out_handle`.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_INVALID_ENDPOINT_INFO`
/// (malformed JSON or missing fields).
#[no_mangle]
pub extern "C" fn dlslime_endpoint_register_remote(
    ep: *const dlslime_endpoint_t,
    name: *const c_char,
    region_json: *const c_char,
    out_handle: *mut dlslime_remote_handle_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let ep = try_ref!(ep);
        let name = try_str!(name);
        let text = try_str!(region_json);
        let out_handle = try_out!(out_handle);
        let v = try_res!(info::parse(text));
        let h = try_res!(ep.register_remote_memory_region(name, &v));
        out_handle.write(h);
        dlslime_status_t::Ok
    }
}

/// Looks up the handle of the peer region named `name` (registered by
/// `dlslime_endpoint_connect` or `dlslime_endpoint_register_remote`) and writes it to
/// `*out_handle`.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_INVALID_ARGUMENT` (not
/// UTF-8), `DLSLIME_STATUS_UNKNOWN_HANDLE` (no remote region of that name).
#[no_mangle]
pub extern "C" fn dlslime_endpoint_remote_handle(
    ep: *const dlslime_endpoint_t,
    name: *const c_char,
    out_handle: *mut dlslime_remote_handle_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let ep = try_ref!(ep);
        let name = try_str!(name);
        let out_handle = try_out!(out_handle);
        let h = try_res!(ep
            .remote_pool()
            .handle(name)
            .ok_or_else(|| Error::new(Status::UnknownHandle, format!("no remote region named {name:?}"))));
        out_handle.write(h);
        dlslime_status_t::Ok
    }
}

/// One-sided read: for each assignment, copies the remote range into the local range.
/// `assignments` (`n` entries; NULL allowed when `n` is 0) is only read during the call.
/// On success writes a future to `*out` that completes when every byte is in local
/// memory. Local memory must stay valid until then.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_UNKNOWN_HANDLE`,
/// `DLSLIME_STATUS_OUT_OF_RANGE` (no memory touched), `DLSLIME_STATUS_NOT_CONNECTED`,
/// `DLSLIME_STATUS_SHUT_DOWN`.
#[no_mangle]
pub extern "C" fn dlslime_endpoint_read(
    ep: *const dlslime_endpoint_t,
    assignments: *const dlslime_assignment_t,
    n: usize,
    timeout_ms: u64,
    out: *mut *mut dlslime_future_t,
) -> dlslime_status_t {
    ffi_boundary! {
        assignment_io(ep, assignments, n, out, |ep, a| ep.read(a, timeout(timeout_ms)))
    }
}

/// One-sided write: for each assignment, copies the local range into the remote range.
/// The future completes when the target has applied every byte. Same arguments and
/// errors as `dlslime_endpoint_read`.
#[no_mangle]
pub extern "C" fn dlslime_endpoint_write(
    ep: *const dlslime_endpoint_t,
    assignments: *const dlslime_assignment_t,
    n: usize,
    timeout_ms: u64,
    out: *mut *mut dlslime_future_t,
) -> dlslime_status_t {
    ffi_boundary! {
        assignment_io(ep, assignments, n, out, |ep, a| ep.write(a, timeout(timeout_ms)))
    }
}

/// Like `dlslime_endpoint_write`, then delivers exactly one notification carrying `imm`
/// to the peer's `dlslime_endpoint_imm_recv`, after the data is visible there.
#[no_mangle]
pub extern "C" fn dlslime_endpoint_write_with_imm(
    ep: *const dlslime_endpoint_t,
    assignments: *const dlslime_assignment_t,
    n: usize,
    imm: i32,
    timeout_ms: u64,
    out: *mut *mut dlslime_future_t,
) -> dlslime_status_t {
    ffi_boundary! {
        assignment_io(ep, assignments, n, out, |ep, a| ep.write_with_imm(a, imm, timeout(timeout_ms)))
    }
}

/// Posts a receive for the next immediate-data notification (notifications that arrived
/// earlier are queued). The future's `dlslime_future_imm_data` is the value.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_NOT_CONNECTED`,
/// `DLSLIME_STATUS_SHUT_DOWN`.
#[no_mangle]
pub extern "C" fn dlslime_endpoint_imm_recv(
    ep: *const dlslime_endpoint_t,
    timeout_ms: u64,
    out: *mut *mut dlslime_future_t,
) -> dlslime_status_t {
    future_call_body!(ep, out, |ep| ep.imm_recv(timeout(timeout_ms)))
}

/// Sends the `len` bytes at `ptr` to the peer's next posted `dlslime_endpoint_recv`
/// (messages match receives in FIFO order). The buffer need not be registered, but must
/// stay valid and unmodified until the future completes. `ptr` may be NULL when `len`
/// is 0.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_NOT_CONNECTED`,
/// `DLSLIME_STATUS_SHUT_DOWN`.
#[no_mangle]
pub extern "C" fn dlslime_endpoint_send(
    ep: *const dlslime_endpoint_t,
    ptr: *const c_void,
    len: usize,
    timeout_ms: u64,
    out: *mut *mut dlslime_future_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let ep = try_ref!(ep);
        let out = try_out!(out);
        let Some(p) = buffer_ptr(ptr.cast_mut(), len) else { null_arg!("ptr") };
        // SAFETY: the header makes the caller keep `[ptr, ptr+len)` valid and unmodified
        // until the future completes, which is `Endpoint::send`'s contract (an empty
        // buffer may be NULL: `buffer_ptr` gives a dangling, never-dereferenced pointer).
        let f = try_res!(unsafe { ep.send(p, len, timeout(timeout_ms)) });
        future_out(f, out)
    }
}

/// Checks that `[ptr, ptr+len)` is memory of this process that a send may read (or, with
/// `writable`, a receive may write), page by page through the kernel (a system call or
/// two). For bindings that take raw addresses from callers who may get them wrong
/// (Python's `(ptr, offset, length)` form): `dlslime_endpoint_send` and `_recv` trust
/// their pointers, as their contract says, and pay nothing for this.
///
/// Errors: `DLSLIME_STATUS_INVALID_ARGUMENT`.
#[no_mangle]
pub extern "C" fn dlslime_check_buffer(
    ptr: *const c_void,
    len: usize,
    writable: bool,
) -> dlslime_status_t {
    ffi_boundary! {
        let addr = ptr as usize;
        try_res!(
            crate::transport::shm::cma::check_own_range(addr, len, writable).map_err(|e| {
                Error::invalid(format!(
                    "[{addr:#x}, +{len}) is not {} memory of this process ({})",
                    if writable { "writable" } else { "readable" },
                    std::io::Error::from_raw_os_error(e)
                ))
            })
        );
        dlslime_status_t::Ok
    }
}

/// Posts a receive buffer of `len` bytes. The future completes when a message has been
/// received into it; `dlslime_future_nbytes` is the message length. A message larger
/// than `len` fails the future with `DLSLIME_STATUS_TRUNCATED`. The buffer must stay
/// valid and untouched by the caller until the future completes (a failed or timed-out
/// wait also ends the library's access).
///
/// Errors: as `dlslime_endpoint_send`.
#[no_mangle]
pub extern "C" fn dlslime_endpoint_recv(
    ep: *const dlslime_endpoint_t,
    ptr: *mut c_void,
    len: usize,
    timeout_ms: u64,
    out: *mut *mut dlslime_future_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let ep = try_ref!(ep);
        let out = try_out!(out);
        let Some(p) = buffer_ptr(ptr, len) else { null_arg!("ptr") };
        // SAFETY: the header makes the caller keep `[ptr, ptr+len)` valid and untouched
        // until the future completes, which is `Endpoint::recv`'s contract.
        let f = try_res!(unsafe { ep.recv(p, len, timeout(timeout_ms)) });
        future_out(f, out)
    }
}

/// Fails every pending operation of the endpoint with `DLSLIME_STATUS_CANCELLED`;
/// completed ones keep their outcome. The endpoint stays usable. Writes how many were
/// cancelled to `*out_cancelled` if it is not NULL.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER` (`ep`).
#[no_mangle]
pub extern "C" fn dlslime_endpoint_cancel_all(
    ep: *const dlslime_endpoint_t,
    out_cancelled: *mut usize,
) -> dlslime_status_t {
    ffi_boundary! {
        let ep = try_ref!(ep);
        let n = ep.cancel_all();
        if let Some(out) = opt_out!(out_cancelled) {
            out.write(n);
        }
        dlslime_status_t::Ok
    }
}

/// Cancels pending operations (`DLSLIME_STATUS_CANCELLED`) and closes the endpoint;
/// later operations fail with `DLSLIME_STATUS_SHUT_DOWN`. Idempotent.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`.
#[no_mangle]
pub extern "C" fn dlslime_endpoint_shutdown(ep: *const dlslime_endpoint_t) -> dlslime_status_t {
    ffi_boundary! {
        let ep = try_ref!(ep);
        ep.shutdown();
        dlslime_status_t::Ok
    }
}

/// Shuts the endpoint down (as `dlslime_endpoint_shutdown`) and releases the handle.
/// NULL is a no-op. Call it exactly once, after every other call on the endpoint has
/// returned.
#[no_mangle]
pub extern "C" fn dlslime_endpoint_free(ep: *mut dlslime_endpoint_t) {
    ffi_boundary! {
        // SAFETY: `ep` is NULL or a live endpoint handle that no other call uses now (the
        // header's contract for `_free`): borrowed to shut it down, then freed, once.
        if let Some(e) = unsafe { super::cast::try_from_ptr(ep.cast_const()) } {
            Endpoint::shutdown(&**e);
        }
        // SAFETY: as above; `e` is no longer used.
        unsafe { super::cast::free(ep) }
    }
}
