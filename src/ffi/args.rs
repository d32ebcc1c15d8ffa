//! Conversions of C arguments shared by the exports: timeouts, possibly-empty buffers,
//! optional strings in option structs, futures, strings and endpoints handed out.

use std::ffi::{c_char, c_void, CStr};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use super::cast::{box_into_ptr, into_ptr, Castable, Held};
use super::endpoint::dlslime_endpoint_t;
use super::future::dlslime_future_t;
use super::status::{dlslime_status_t, fail, string_to_c};
use crate::error::Error;
use crate::future::Future;
use crate::transport::Endpoint;

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
    // SAFETY: not NULL (checked above) and NUL-terminated by the caller's contract; the
    // borrow ends before this returns (the text is copied).
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map(|s| Some(s.to_string()))
        .map_err(|_| Error::invalid(format!("{what} is not valid UTF-8")))
}

/// An out-parameter of an export that is not NULL: all one can do with it is write the
/// result, once, when the call succeeds. Made by `try_out!` (or `Out::new` for optional
/// ones), so each export states the caller's contract once instead of at every write.
pub(crate) struct Out<T>(NonNull<T>);

impl<T> Out<T> {
    /// `None` for NULL.
    ///
    /// # Safety
    /// `p` is NULL or points at storage for a `T`, aligned and writable until the export
    /// returns: what the header requires of every out-parameter.
    pub(crate) unsafe fn new(p: *mut T) -> Option<Out<T>> {
        NonNull::new(p).map(Out)
    }

    /// Writes the result. The old value (often uninitialised C storage) is neither read
    /// nor dropped.
    pub(crate) fn write(self, v: T) {
        // SAFETY: non-NULL, aligned and writable for a `T` (the contract of `Out::new`),
        // and the export that made `self` has not returned yet (`Out` is not kept).
        unsafe { self.0.as_ptr().write(v) }
    }
}

/// Hands a future to C.
pub(crate) fn future_out(f: Future, out: Out<*mut dlslime_future_t>) -> dlslime_status_t {
    out.write(box_into_ptr::<dlslime_future_t>(f));
    dlslime_status_t::Ok
}

/// Hands an owned string to C (the caller frees it with `dlslime_string_free`).
pub(crate) fn string_out(s: String, out: Out<*mut c_char>) -> dlslime_status_t {
    match string_to_c(s) {
        Ok(p) => {
            out.write(p);
            dlslime_status_t::Ok
        }
        Err(e) => fail(e),
    }
}

/// Hands a new endpoint of any transport to C.
pub(crate) fn endpoint_out(
    ep: Arc<dyn Endpoint>,
    out: Out<*mut dlslime_endpoint_t>,
) -> dlslime_status_t {
    out.write(box_into_ptr::<dlslime_endpoint_t>(ep));
    dlslime_status_t::Ok
}

/// Hands a new handle to C: the object (Box handles) or a strong reference (Arc handles).
pub(crate) fn handle_out<C: Castable>(v: Held<C>, out: Out<*mut C>) -> dlslime_status_t {
    out.write(into_ptr::<C>(v));
    dlslime_status_t::Ok
}
