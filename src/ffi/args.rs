//! Conversions of C arguments shared by the exports: timeouts, possibly-empty buffers,
//! optional strings in option structs, futures handed out.

use std::ffi::{c_char, c_void, CStr};
use std::ptr::NonNull;
use std::time::Duration;

use super::cast::box_into_ptr;
use super::future::dlslime_future_t;
use super::status::dlslime_status_t;
use crate::error::Error;
use crate::future::Future;

/// `timeout_ms` of an operation: 0 means the context's default deadline.
pub(crate) fn timeout(ms: u64) -> Option<Duration> {
    (ms != 0).then(|| Duration::from_millis(ms))
}

/// A pointer the Rust API accepts for a possibly empty buffer: NULL is fine only with
/// `len == 0`.
pub(crate) fn buffer_ptr(ptr: *mut c_void, len: usize) -> Option<*mut u8> {
    match (ptr.is_null(), len) {
        (false, _) => Some(ptr.cast()),
        (true, 0) => Some(NonNull::<u8>::dangling().as_ptr()),
        (true, _) => None,
    }
}

/// An optional string field of an options struct (`what` names it in the error).
///
/// # Safety
/// `p` is NULL or NUL-terminated.
pub(crate) unsafe fn opt_text(p: *const c_char, what: &str) -> crate::Result<Option<String>> {
    if p.is_null() {
        return Ok(None);
    }
    CStr::from_ptr(p)
        .to_str()
        .map(|s| Some(s.to_string()))
        .map_err(|_| Error::invalid(format!("{what} is not valid UTF-8")))
}

/// Hands a future to C.
///
/// `out` must be non-NULL (checked by the caller with `try_out!`).
pub(crate) fn future_out(f: Future, out: *mut *mut dlslime_future_t) -> dlslime_status_t {
    unsafe { out.write(box_into_ptr::<dlslime_future_t>(f)) };
    dlslime_status_t::Ok
}
