//! Future (`dlslime_future_t`): the handle on one operation of an endpoint. Wait for it
//! (with or without a deadline), poll it, read its status, immediate data and byte
//! count.

use std::time::Duration;

use super::args::Out;
use super::cast::{Castable, OwnershipBox};
use super::status::{dlslime_status_t, set_last_error_message, status_of};
use crate::error::Status;
use crate::future::Future;

/// The handle on one operation returned by an endpoint.
///
/// Ownership: owned by the caller; release it with `dlslime_future_free` (freeing a
/// pending future does not cancel the operation; its buffers must stay valid until it
/// completes or the endpoint is shut down).
///
/// Thread safety: thread-safe. It may be waited on and queried from any number of threads
/// at once, any number of times; only `dlslime_future_free` must not race with other
/// calls on it.
///
/// Methods: `dlslime_future_wait`, `dlslime_future_wait_for`, `dlslime_future_done`,
/// `dlslime_future_status`, `dlslime_future_imm_data`, `dlslime_future_nbytes`,
/// `dlslime_future_get_imm_data`, `dlslime_future_get_nbytes`, `dlslime_future_free`.
pub struct dlslime_future_t {
    _private: [u8; 0],
}

impl Castable for dlslime_future_t {
    type Ownership = OwnershipBox;
    type RustType = Future;
}

/// Waits until the operation completes or its own deadline passes, and returns its final
/// status (`DLSLIME_STATUS_OK` on success; on failure the status and the last-error
/// message say why). May be called again: it returns the same outcome.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, or the operation's failure status.
#[no_mangle]
pub extern "C" fn dlslime_future_wait(f: *const dlslime_future_t) -> dlslime_status_t {
    status_call_body!(f, |f| f.wait())
}

/// Waits at most `timeout_ms` milliseconds. Returns the final status if the operation
/// completed, or `DLSLIME_STATUS_TIMEOUT` if this wait gave up first; then
/// `dlslime_future_status` tells whether the operation itself is still pending
/// (`DLSLIME_STATUS_PENDING`) or timed out.
#[no_mangle]
pub extern "C" fn dlslime_future_wait_for(
    f: *const dlslime_future_t,
    timeout_ms: u64,
) -> dlslime_status_t {
    status_call_body!(f, |f| f.wait_for(Duration::from_millis(timeout_ms)))
}

/// True once the operation has completed (successfully or not). False for NULL.
#[no_mangle]
pub extern "C" fn dlslime_future_done(f: *const dlslime_future_t) -> bool {
    ffi_boundary! {
        let f = try_ref!(f);
        f.done()
    }
}

/// `DLSLIME_STATUS_PENDING` until the operation completes, then its final status. Does
/// not block and does not set the last-error message (except for NULL:
/// `DLSLIME_STATUS_NULL_PARAMETER`).
#[no_mangle]
pub extern "C" fn dlslime_future_status(f: *const dlslime_future_t) -> dlslime_status_t {
    ffi_boundary! {
        let f = try_ref!(f);
        f.status()
    }
}

/// The immediate data of a completed `dlslime_endpoint_imm_recv`; 0 otherwise and for
/// NULL. `dlslime_future_get_imm_data` tells "not completed yet" from 0.
#[no_mangle]
pub extern "C" fn dlslime_future_imm_data(f: *const dlslime_future_t) -> i32 {
    ffi_boundary! {
        let f = try_ref!(f);
        f.imm_data()
    }
}

/// Bytes moved by the operation (for `dlslime_endpoint_recv`: the received message
/// length); 0 for NULL and before completion. `dlslime_future_get_nbytes` tells "not
/// completed yet" from 0.
#[no_mangle]
pub extern "C" fn dlslime_future_nbytes(f: *const dlslime_future_t) -> u64 {
    ffi_boundary! {
        let f = try_ref!(f);
        f.nbytes()
    }
}

/// Writes `value(f)` to `out` once `f` completed successfully (before that its results
/// are not defined); otherwise returns the status, with the last-error message set.
fn completed_out<T>(
    f: &Future,
    what: &str,
    out: Out<T>,
    value: impl FnOnce(&Future) -> T,
) -> dlslime_status_t {
    match f.status() {
        Status::Ok => {
            out.write(value(f));
            dlslime_status_t::Ok
        }
        Status::Pending => {
            // Not an error of the operation (an `Error` is never Pending): said directly.
            set_last_error_message(format!(
                "{what}: the operation has not completed yet; wait for it first"
            ));
            dlslime_status_t::Pending
        }
        _ => status_of(f.wait()),
    }
}

/// The immediate data of a completed `dlslime_endpoint_imm_recv` (or
/// `dlslime_peer_agent_imm_recv`), written to `*out`.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_INVALID_ARGUMENT` (the future
/// is not an imm_recv's: its immediate data is not defined), `DLSLIME_STATUS_PENDING` (not
/// completed yet), or the operation's failure status; `*out` is written only on success.
#[no_mangle]
pub extern "C" fn dlslime_future_get_imm_data(
    f: *const dlslime_future_t,
    out: *mut i32,
) -> dlslime_status_t {
    ffi_boundary! {
        let f = try_ref!(f);
        let out = try_out!(out);
        if !f.is_imm_recv() {
            set_last_error_message(
                "imm_data is defined only for futures of imm_recv".to_string(),
            );
            return dlslime_status_t::InvalidArgument;
        }
        completed_out(f, "imm_data", out, Future::imm_data)
    }
}

/// Bytes moved by a completed operation (for `dlslime_endpoint_recv`: the received
/// message length; for read/write/write_with_imm: the bytes of every assignment),
/// written to `*out`.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_PENDING` (not completed yet;
/// `*out` is not written), or the operation's failure status.
#[no_mangle]
pub extern "C" fn dlslime_future_get_nbytes(
    f: *const dlslime_future_t,
    out: *mut u64,
) -> dlslime_status_t {
    ffi_boundary! {
        let f = try_ref!(f);
        let out = try_out!(out);
        completed_out(f, "nbytes", out, Future::nbytes)
    }
}

/// Releases a future handle. NULL is a no-op. Call it exactly once, after every other
/// call on it has returned.
#[no_mangle]
pub extern "C" fn dlslime_future_free(f: *mut dlslime_future_t) {
    free_body!(f)
}

/// Stream ordering, after an operation: queues on CUDA stream `stream` a wait for the
/// completion of `f` (`cuStreamWaitValue32`), so work queued on the stream afterwards
/// runs once the operation has ended (successfully or not: check `f` for which). The
/// host does not block. The stream stays live until the operation ends (its deadline
/// bounds that).
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_DEVICE_UNAVAILABLE` (no CUDA
/// driver), `DLSLIME_STATUS_RESOURCE_EXHAUSTED` (over 1024 streams, or 65536 signalled
/// operations pending), or the driver's failure.
#[no_mangle]
pub extern "C" fn dlslime_future_signal_stream(
    f: *const dlslime_future_t,
    stream: usize,
) -> dlslime_status_t {
    ffi_boundary! {
        let f = try_ref!(f);
        // SAFETY: the caller passes a live stream (documented above).
        try_res!(unsafe { crate::memory::device::stream::signal_stream(stream, f) });
        dlslime_status_t::Ok
    }
}
