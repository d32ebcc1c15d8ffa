//! Status codes and the crate's error type.
//!
//! `Status` numbers are part of the stable C ABI: never renumber a variant, and keep
//! retired numbers as comments. Groups: 0 ok / 1 pending, 1xx caller errors, 2xx state
//! errors, 4xx operation outcomes (402 and 403 match the original DLSlime codes), 5xx
//! system errors.

use std::fmt;

/// Outcome of a call or an operation. `#[repr(i32)]` with explicit numbers: this is the
/// `dlslime_status_t` of the C ABI.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    Ok = 0,
    /// The operation has not completed yet (futures only).
    Pending = 1,

    InvalidArgument = 100,
    NullParameter = 101,
    UnknownHandle = 102,
    OutOfRange = 103,
    NameConflict = 104,
    InvalidEndpointInfo = 105,

    NotConnected = 200,
    AlreadyConnected = 201,
    ShutDown = 202,

    Timeout = 402,
    Failed = 403,
    Cancelled = 404,
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
    Panic = 599,
}

impl Status {
    /// Every defined status, in numeric order (used by tests and the C header checks).
    pub const ALL: &'static [Status] = &[
        Status::Ok,
        Status::Pending,
        Status::InvalidArgument,
        Status::NullParameter,
        Status::UnknownHandle,
        Status::OutOfRange,
        Status::NameConflict,
        Status::InvalidEndpointInfo,
        Status::NotConnected,
        Status::AlreadyConnected,
        Status::ShutDown,
        Status::Timeout,
        Status::Failed,
        Status::Cancelled,
        Status::PeerDisconnected,
        Status::RemoteAccess,
        Status::Truncated,
        Status::Protocol,
        Status::VersionMismatch,
        Status::Io,
        Status::Unsupported,
        Status::ResourceExhausted,
        Status::Internal,
        Status::Panic,
    ];

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

    /// A short, static, human-readable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Pending => "pending",
            Status::InvalidArgument => "invalid argument",
            Status::NullParameter => "null parameter",
            Status::UnknownHandle => "unknown handle",
            Status::OutOfRange => "out of range",
            Status::NameConflict => "name conflict",
            Status::InvalidEndpointInfo => "invalid endpoint info",
            Status::NotConnected => "not connected",
            Status::AlreadyConnected => "already connected",
            Status::ShutDown => "endpoint shut down",
            Status::Timeout => "timed out",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::PeerDisconnected => "peer disconnected",
            Status::RemoteAccess => "remote access denied",
            Status::Truncated => "message truncated",
            Status::Protocol => "protocol error",
            Status::VersionMismatch => "protocol version mismatch",
            Status::Io => "I/O error",
            Status::Unsupported => "unsupported",
            Status::ResourceExhausted => "resource exhausted",
            Status::Internal => "internal error",
            Status::Panic => "panic",
        }
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
        assert_eq!(Status::from_code(12345), Status::Internal);
        assert_eq!(Status::Failed.code(), 403);
        assert_eq!(Status::Timeout.code(), 402);
    }
}
