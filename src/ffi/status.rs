//! Status codes (`dlslime_status_t`), the thread-local last-error message, and the
//! strings the library hands out (`dlslime_string_free`).

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::sync::OnceLock;

use crate::error::{Error, Status};

// The Rust `Status` itself: cbindgen emits it as `enum dlslime_status` (renamed in
// cbindgen.toml), so numbers, names and messages have one source (src/error.rs).
/// The status type returned by fallible functions (an `int32_t` in C).
pub type dlslime_status_t = Status;

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

pub(crate) fn set_last_error_message(msg: String) {
    LAST_ERROR.with(|e| *e.borrow_mut() = msg);
}

/// Records `err` as the thread's last error and returns its status.
pub(crate) fn fail(err: Error) -> dlslime_status_t {
    set_last_error_message(err.to_string());
    err.status()
}

/// Maps a Rust result to a status, recording the error.
pub(crate) fn status_of(r: crate::Result<()>) -> dlslime_status_t {
    match r {
        Ok(()) => dlslime_status_t::Ok,
        Err(e) => fail(e),
    }
}

/// Hands an owned string to C (free it with `dlslime_string_free`).
pub(crate) fn string_to_c(s: String) -> crate::Result<*mut c_char> {
    CString::new(s)
        .map(CString::into_raw)
        .map_err(|_| Error::new(Status::Internal, "string contains an interior NUL byte"))
}

/// Copies the calling thread's last error message into `buf`.
///
/// Every failing call (any return other than `DLSLIME_STATUS_OK`, including NULL
/// arguments and caught panics; for futures, a failed `dlslime_future_wait` /
/// `dlslime_future_wait_for`) stores a message in a thread-local slot. Successful calls
/// leave it unchanged, so read it right after the failure, on the same thread.
///
/// Writes at most `len - 1` bytes plus a terminating NUL (the message is truncated if
/// `buf` is too small; nothing is written when `len` is 0, and `buf` may then be NULL).
/// `*out_len` (if `out_len` is not NULL) receives the full message length in bytes,
/// without the NUL, so a caller can retry with a larger buffer. With no error recorded
/// the message is empty.
///
/// Returns `DLSLIME_STATUS_OK`, or `DLSLIME_STATUS_NULL_PARAMETER` when `buf` is NULL and
/// `len` is not 0.
#[no_mangle]
pub extern "C" fn dlslime_last_error_message(
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> dlslime_status_t {
    ffi_boundary! {
        if buf.is_null() && len > 0 {
            null_arg!("buf");
        }
        LAST_ERROR.with(|e| {
            let msg = e.borrow();
            if len > 0 {
                let n = msg.len().min(len - 1);
                // SAFETY: `buf` is not NULL here (checked above for `len > 0`) and holds
                // `len` writable bytes by the caller's contract; `n + 1 <= len` bytes are
                // written, from the thread-local message, which cannot overlap a C buffer
                // the caller owns.
                unsafe {
                    std::ptr::copy_nonoverlapping(msg.as_ptr(), buf.cast::<u8>(), n);
                    *buf.add(n) = 0;
                }
            }
            if let Some(out) = opt_out!(out_len) {
                out.write(msg.len());
            }
        });
        dlslime_status_t::Ok
    }
}

/// Clears the calling thread's last error message.
#[no_mangle]
pub extern "C" fn dlslime_last_error_clear() {
    ffi_boundary! {
        set_last_error_message(String::new())
    }
}

/// A static, NUL-terminated, human-readable name for a status value (for example
/// "out of range" for `DLSLIME_STATUS_OUT_OF_RANGE`); "unknown status" for a number
/// that is not a `dlslime_status_t`. Never NULL; never free it.
#[no_mangle]
pub extern "C" fn dlslime_status_str(status: i32) -> *const c_char {
    static NAMES: OnceLock<Vec<(i32, CString)>> = OnceLock::new();
    ffi_boundary! {
        let names = NAMES.get_or_init(|| {
            Status::ALL.iter().map(|s| (s.code(), CString::new(s.as_str()).expect("no NUL in status names"))).collect()
        });
        match names.iter().find(|(c, _)| *c == status) {
            Some((_, s)) => s.as_ptr(),
            None => c"unknown status".as_ptr(),
        }
    }
}

/// Frees a string this library returned as owned (`dlslime_endpoint_info`,
/// `dlslime_memory_pool_mr_info`). NULL is a no-op. Never pass any other pointer.
#[no_mangle]
pub extern "C" fn dlslime_string_free(s: *mut c_char) {
    ffi_boundary! {
        if !s.is_null() {
            // SAFETY: a non-NULL `s` is a string this library handed out through
            // `string_to_c` (`CString::into_raw`), freed once (the header's contract).
            drop(unsafe { CString::from_raw(s) });
        }
    }
}

/// The thread's last error, for Rust tests.
#[cfg(test)]
pub(crate) fn last_error() -> String {
    LAST_ERROR.with(|e| e.borrow().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn status_strings() {
        for s in Status::ALL {
            let p = dlslime_status_str(s.code());
            // SAFETY: `dlslime_status_str` returns a static NUL-terminated string.
            assert_eq!(unsafe { CStr::from_ptr(p) }.to_str().unwrap(), s.as_str());
        }
        assert_eq!(
            // SAFETY: as above, static and NUL-terminated, also for unknown numbers.
            unsafe { CStr::from_ptr(dlslime_status_str(-7)) }
                .to_str()
                .unwrap(),
            "unknown status"
        );
    }

    #[test]
    fn last_error_truncates_and_reports_length() {
        set_last_error_message("hello world".into());
        let mut buf = [1 as c_char; 6];
        let mut n = 0usize;
        assert_eq!(
            dlslime_last_error_message(buf.as_mut_ptr(), 6, &mut n),
            dlslime_status_t::Ok
        );
        assert_eq!(n, 11);
        assert_eq!(
            // SAFETY: the call above wrote a NUL within `buf`.
            unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap(),
            "hello"
        );
        assert_eq!(
            dlslime_last_error_message(std::ptr::null_mut(), 0, &mut n),
            dlslime_status_t::Ok
        );
        assert_eq!(
            dlslime_last_error_message(std::ptr::null_mut(), 3, &mut n),
            dlslime_status_t::NullParameter
        );
        assert!(last_error().contains("buf"));
        dlslime_last_error_clear();
        assert_eq!(last_error(), "");
    }
}
