"""Exceptions: one class per C status code, raised with the library's last-error message."""

from __future__ import annotations

import builtins
from typing import Dict, Type


class DLSlimeError(RuntimeError):
    """Base of every dlslime error. ``status`` is the C ``dlslime_status_t`` number,
    ``message`` the library's last-error message for the failed call.

    A subclass of ``RuntimeError``, which is what the original DLSlime raised, so code
    that catches ``RuntimeError`` keeps working.
    """

    status: int = -1

    def __init__(self, message: str = "", status: int | None = None):
        if status is not None:
            self.status = status
        self.message = message
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.message, self.status))


# Caller errors (1xx): bad input detected before anything was sent.
class InvalidArgument(DLSlimeError, ValueError):
    """An argument is invalid (status 100). Also a ``ValueError``."""
    status = 100


class NullParameter(InvalidArgument):
    """A required pointer was NULL (status 101)."""
    status = 101


class UnknownHandle(InvalidArgument):
    """A memory-region handle or name that is not registered (status 102)."""
    status = 102


class OutOfRange(InvalidArgument):
    """An offset/length outside its region; nothing was read or written (status 103)."""
    status = 103


class NameConflict(InvalidArgument):
    """A region name already bound to another address (status 104)."""
    status = 104


class InvalidEndpointInfo(InvalidArgument):
    """Malformed ``endpoint_info``, or one of another transport (status 105)."""
    status = 105


# State errors (2xx).
class StateError(DLSlimeError):
    """The endpoint is in the wrong state for the call (2xx)."""


class NotConnected(StateError):
    status = 200


class AlreadyConnected(StateError):
    status = 201


class ShutDown(StateError):
    """The endpoint was shut down (status 202)."""
    status = 202


# Operation outcomes (4xx): reported by futures.
class OperationError(DLSlimeError):
    """An operation failed (4xx); raised by ``Future.wait()`` / ``wait_for()``."""


class Timeout(OperationError, builtins.TimeoutError):
    """The operation's deadline passed (status 402). Also a builtin ``TimeoutError``."""
    status = 402


class Failed(OperationError):
    status = 403


class Cancelled(OperationError):
    """Cancelled by ``cancel_all()`` or ``shutdown()`` (status 404)."""
    status = 404


class PeerDisconnected(OperationError, builtins.ConnectionError):
    """The peer died or closed the connection (status 405). Also a ``ConnectionError``."""
    status = 405


class RemoteAccess(OperationError):
    """The target refused the range: outside its regions or a wrong key (status 406)."""
    status = 406


class Truncated(OperationError):
    """A received message was larger than the posted receive buffer (status 407)."""
    status = 407


class ProtocolError(OperationError):
    """The peer broke the wire protocol (status 408)."""
    status = 408


class VersionMismatch(OperationError):
    """The peer speaks another protocol version (status 409)."""
    status = 409


# System errors (5xx).
class SystemFailure(DLSlimeError):
    """A system-level failure (5xx)."""


class IOFailure(SystemFailure, builtins.OSError):
    """An I/O error (status 500). Also an ``OSError``."""
    status = 500


class Unsupported(SystemFailure):
    status = 501


class ResourceExhausted(SystemFailure):
    status = 502


class InternalError(SystemFailure):
    status = 598


class Panic(SystemFailure):
    """A Rust panic was caught at the C boundary (status 599)."""
    status = 599


_BY_STATUS: Dict[int, Type[DLSlimeError]] = {
    c.status: c
    for c in (
        InvalidArgument, NullParameter, UnknownHandle, OutOfRange, NameConflict,
        InvalidEndpointInfo, NotConnected, AlreadyConnected, ShutDown, Timeout, Failed,
        Cancelled, PeerDisconnected, RemoteAccess, Truncated, ProtocolError,
        VersionMismatch, IOFailure, Unsupported, ResourceExhausted, InternalError, Panic,
    )
}


def error_class(status: int) -> Type[DLSlimeError]:
    """The exception class of a status number (``DLSlimeError`` for unknown numbers)."""
    cls = _BY_STATUS.get(status)
    if cls is not None:
        return cls
    if 100 <= status < 200:
        return InvalidArgument
    if 200 <= status < 300:
        return StateError
    if 400 <= status < 500:
        return OperationError
    if 500 <= status < 600:
        return SystemFailure
    return DLSlimeError
