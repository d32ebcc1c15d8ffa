//! Status codes and the crate's error type.
//!
//! [`Status`] is the one definition of every status: its variants and numbers are the C
//! ABI's `dlslime_status_t` (cbindgen emits this enum under that name, see
//! `cbindgen.toml`), its messages are [`Status::as_str`] (`dlslime_status_str` in C), and
//! the Python exception classes are derived from the generated header. Numbers are
//! stable ABI: never renumber a variant, and keep retired numbers as comments. Groups:
//! 0 ok / 1 pending, 1xx caller errors, 2xx state errors, 4xx operation outcomes (402 and
//! 403 match the original DLSlime codes), 5xx system errors.

use std::fmt;

/// Outcome of a call or of an operation. The numbers are stable ABI: 0 ok, 1 pending,
/// 1xx caller errors, 2xx state errors, 4xx operation outcomes, 5xx system errors. A
/// number is never reused.
///
/// Functions take status values as `int32_t` (see `dlslime_status_str`), so a number
/// this header does not know is never undefined behaviour.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
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
    /// A credential check refused the caller (e.g. NanoCtrl's bearer token is missing
    /// or wrong).
    PermissionDenied = 106,

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
    /// A slot reference whose generation the ring no longer holds (overwritten,
    /// consumed, or never written).
    StaleSlot = 410,
    /// The slot is held by another attempt (being written or read), or the ring is full
    /// and overwriting is off (the original's `SlotError`).
    SlotBusy = 411,

    Io = 500,
    Unsupported = 501,
    ResourceExhausted = 502,
    /// RDMA cannot be used here: libibverbs is not installed, or no (active) RDMA device.
    RdmaUnavailable = 503,
    /// CUDA device memory cannot be used here: no CUDA driver (`libcuda.so`), no device,
    /// or the driver refused to initialise. The message names what is missing.
    DeviceUnavailable = 504,
    Internal = 598,
    /// A Rust panic was caught at the C boundary; the last-error message says where.
    Panic = 599,
}

/// Defines [`Status::as_str`] and [`Status::ALL`] from one table. `as_str` is an
/// exhaustive `match`, so a variant without a message does not compile, and `ALL` is the
/// same list, so it holds every variant.
macro_rules! status_messages {
    ($($variant:ident => $msg:literal,)+) => {
        impl Status {
            /// Every defined status, in numeric order (used by tests and the C header
            /// checks).
            pub const ALL: &'static [Status] = &[$(Status::$variant),+];

            /// A short, static, human-readable name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Status::$variant => $msg,)+
                }
            }
        }
    };
}

status_messages! {
    Ok => "ok",
    Pending => "pending",
    InvalidArgument => "invalid argument",
    NullParameter => "null parameter",
    UnknownHandle => "unknown handle",
    OutOfRange => "out of range",
    NameConflict => "name conflict",
    InvalidEndpointInfo => "invalid endpoint info",
    PermissionDenied => "permission denied",
    NotConnected => "not connected",
    AlreadyConnected => "already connected",
    ShutDown => "endpoint shut down",
    Timeout => "timed out",
    Failed => "failed",
    Cancelled => "cancelled",
    PeerDisconnected => "peer disconnected",
    RemoteAccess => "remote access denied",
    Truncated => "message truncated",
    Protocol => "protocol error",
    VersionMismatch => "protocol version mismatch",
    StaleSlot => "stale slot",
    SlotBusy => "slot busy",
    Io => "I/O error",
    Unsupported => "unsupported",
    ResourceExhausted => "resource exhausted",
    RdmaUnavailable => "RDMA unavailable",
    DeviceUnavailable => "CUDA device unavailable",
    Internal => "internal error",
    Panic => "panic",
}

impl Status {
    pub fn code(self) -> i32 {
        self as i32
    }

    /// Maps a wire or C number back; unknown numbers become `Internal`.
    pub fn from_code(code: i32) -> Status {
        Status::ALL
            .iter()
            .copied()
            .find(|s| s.code() == code)
            .unwrap_or(Status::Internal)
    }

    pub fn is_ok(self) -> bool {
        self == Status::Ok
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The crate's error: a stable [`Status`] plus a message that says what went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    status: Status,
    message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(status: Status, message: impl Into<String>) -> Error {
        debug_assert!(!matches!(status, Status::Ok | Status::Pending));
        Error {
            status,
            message: message.into(),
        }
    }

    pub fn status(&self) -> Status {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(Status::InvalidArgument, message)
    }

    pub fn io(context: &str, err: std::io::Error) -> Error {
        Error::new(Status::Io, format!("{context}: {err}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.status,
            self.status.code(),
            self.message
        )
    }
}

impl std::error::Error for Error {}

impl From<Status> for Error {
    fn from(status: Status) -> Error {
        Error::new(status, status.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for s in Status::ALL {
            assert!(seen.insert(s.code()), "duplicate code {}", s.code());
            assert_eq!(Status::from_code(s.code()), *s);
        }
        assert!(
            Status::ALL.windows(2).all(|w| w[0].code() < w[1].code()),
            "Status::ALL is not in numeric order"
        );
        assert_eq!(Status::from_code(12345), Status::Internal);
        assert_eq!(Status::Failed.code(), 403);
        assert_eq!(Status::Timeout.code(), 402);
    }
}
