//! Status codes, the thread-local last-error message and owned strings.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::sync::OnceLock;

use crate::error::{Error, Status};

/// Outcome of a call or of an operation. The numbers are stable ABI and equal the Rust
/// `dlslime::Status` numbers: 0 ok, 1 pending, 1xx caller errors, 2xx state errors,
/// 4xx operation outcomes, 5xx system errors. A number is never reused.
///
/// Functions take status values as `int32_t` (see `dlslime_status_str`), so a number
/// this header does not know is never undefined behaviour.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum dlslime_status {
    Ok = 0,
    /// The operation has not completed yet (futures only).
    Pending = 1,
    InvalidArgument = 100,
    /// A required pointer argument was NULL.
    NullParameter = 101,
    /// A memory-region handle (local or remote) or name that is not registered.
    UnknownHandle = 102,
    /// An offset/length outside its region; nothing was read or written.
    OutOfRange = 103,
    /// A region name already bound to another address.
    NameConflict = 104,
    /// Malformed `endpoint_info` JSON, or one for another transport.
    InvalidEndpointInfo = 105,
    NotConnected = 200,
    AlreadyConnected = 201,
    /// The endpoint was shut down.
    ShutDown = 202,
    /// The operation's deadline passed, or (from `dlslime_future_wait_for`) the wait
    /// gave up while the operation is still pending.
    Timeout = 402,
    Failed = 403,
    /// Cancelled by `dlslime_endpoint_cancel_all` or `dlslime_endpoint_shutdown`.
    Cancelled = 404,
    /// The peer died or closed the connection.
    PeerDisconnected = 405,
    /// The target refused the range: outside every registered region, or a wrong key.
    RemoteAccess = 406,
    /// A received message was larger than the posted receive buffer.
    Truncated = 407,
    /// The peer sent bytes that do not follow the wire protocol.
    Protocol = 408,
    /// The peer speaks another protocol version.
    VersionMismatch = 409,
    Io = 500,
    Unsupported = 501,
    ResourceExhausted = 502,
    Internal = 598,
    /// A Rust panic was caught at the C boundary; the last-error message says where.
    Panic = 599,
}

/// The status type returned by fallible functions (a `int32_t` in C).
pub type dlslime_status_t = dlslime_status;

impl From<Status> for dlslime_status {
    fn from(s: Status) -> Self {
        // Exhaustive on purpose: a new `Status` variant fails to compile here.
        match s {
            Status::Ok => Self::Ok,
            Status::Pending => Self::Pending,
            Status::InvalidArgument => Self::InvalidArgument,
            Status::NullParameter => Self::NullParameter,
            Status::UnknownHandle => Self::UnknownHandle,
            Status::OutOfRange => Self::OutOfRange,
            Status::NameConflict => Self::NameConflict,
            Status::InvalidEndpointInfo => Self::InvalidEndpointInfo,
            Status::NotConnected => Self::NotConnected,
            Status::AlreadyConnected => Self::AlreadyConnected,
            Status::ShutDown => Self::ShutDown,
            Status::Timeout => Self::Timeout,
            Status::Failed => Self::Failed,
            Status::Cancelled => Self::Cancelled,
            Status::PeerDisconnected => Self::PeerDisconnected,
            Status::RemoteAccess => Self::RemoteAccess,
            Status::Truncated => Self::Truncated,
            Status::Protocol => Self::Protocol,
            Status::VersionMismatch => Self::VersionMismatch,
            Status::Io => Self::Io,
            Status::Unsupported => Self::Unsupported,
            Status::ResourceExhausted => Self::ResourceExhausted,
            Status::Internal => Self::Internal,
            Status::Panic => Self::Panic,
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

pub(crate) fn set_last_error_message(msg: String) {
    LAST_ERROR.with(|e| *e.borrow_mut() = msg);
}

/// Records `err` as the thread's last error and returns its status.
pub(crate) fn fail(err: Error) -> dlslime_status_t {
    set_last_error_message(err.to_string());
    err.status().into()
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
                unsafe {
                    std::ptr::copy_nonoverlapping(msg.as_ptr(), buf.cast::<u8>(), n);
                    *buf.add(n) = 0;
                }
            }
            if !out_len.is_null() {
                unsafe { out_len.write(msg.len()) };
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
    fn numbers_match_rust_status() {
        for s in Status::ALL {
            assert_eq!(dlslime_status::from(*s) as i32, s.code(), "{s:?}");
        }
    }

    #[test]
    fn status_strings() {
        for s in Status::ALL {
            let p = dlslime_status_str(s.code());
            assert_eq!(unsafe { CStr::from_ptr(p) }.to_str().unwrap(), s.as_str());
        }
        assert_eq!(
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
