"""The original DLSlime's Python TCP endpoint API, so code written for it runs unchanged:
the TCP endpoint of the original's PR #99 (``TcpEndpoint(ip=, port=)``,
``async_send``/``async_recv``/``async_read``/``async_write`` with ``timeout_ms=``) and
of the 0.1.23 wheel (the same operations without the ``async_`` prefix), and
``TcpMemoryPool``.

An endpoint made the original's way (``TcpEndpoint(ip=..., port=...)``,
``TcpEndpoint(port=...)`` or ``TcpEndpoint(10001)``) behaves as the original's: its
futures' ``wait()`` returns a status (0 ``TCP_SUCCESS``, -1 ``TCP_FAILED``, -2
``TCP_TIMEOUT``, -3 ``TCP_CLOSED``) instead of raising, ``wait_for(seconds)`` returns
``None`` while pending, ``register_memory_region`` returns -1 for an empty or taken
name, and ``connect()`` to a peer it cannot reach leaves it not connected
(``is_connected()``) with a warning instead of raising. The ``async_*`` names return
such futures on every TCP endpoint. Where our semantics are deliberately stricter they
stay (listed in README.md): a message larger than the posted receive fails the receive
(and, over TCP, the send) instead of being cut silently; ranges are checked.
"""

from __future__ import annotations

import json
import warnings
from typing import Any, Dict, Optional

from ._core import Future, MemoryPool, TcpContext, TcpEndpoint
from ._errors import (Cancelled, DLSlimeError, InvalidArgument, IOFailure, NotConnected, OperationError,
                      PeerDisconnected, ShutDown, Timeout)

__all__ = ["TCP_SUCCESS", "TCP_FAILED", "TCP_TIMEOUT", "TCP_CLOSED", "StatusFuture", "TcpMemoryPool",
           "OriginalTcpEndpoint", "async_send", "async_recv", "async_read", "async_write"]

TCP_SUCCESS, TCP_FAILED, TCP_TIMEOUT, TCP_CLOSED = 0, -1, -2, -3


def _status(e: DLSlimeError) -> int:
    """The original's status for one of our errors."""
    if isinstance(e, Timeout):
        return TCP_TIMEOUT
    if isinstance(e, (ShutDown, Cancelled, PeerDisconnected, NotConnected)):
        return TCP_CLOSED
    return TCP_FAILED


class StatusFuture:
    """A future with the original TCP endpoint's semantics: ``wait()`` returns the status
    (``TCP_SUCCESS`` = 0, ``TCP_FAILED`` = -1, ``TCP_TIMEOUT`` = -2, ``TCP_CLOSED`` = -3)
    and never raises; ``wait_for(seconds)`` returns ``None`` while the operation is still
    pending, else its status. ``exact_size``: a received message of another length than
    the buffer is ``TCP_FAILED``. ``error`` holds the exception behind a failure, if any.
    """

    __slots__ = ("_f", "_exact", "error")

    def __init__(self, fut: Future, exact_size: Optional[int] = None) -> None:
        self._f = fut
        self._exact = exact_size
        self.error: Optional[DLSlimeError] = None

    def _done_status(self) -> int:
        if self._exact is not None and self._f.nbytes() != self._exact:
            return TCP_FAILED
        return TCP_SUCCESS

    def wait(self) -> int:
        try:
            self._f.wait()
        except DLSlimeError as e:
            self.error = e
            return _status(e)
        return self._done_status()

    def wait_for(self, seconds: float) -> Optional[int]:
        try:
            if not self._f.wait_for(seconds):
                return None
        except DLSlimeError as e:
            self.error = e
            return _status(e)
        return self._done_status()

    def done(self) -> bool:
        return self._f.done()

    def nbytes(self) -> int:
        return self._f.nbytes()

    def imm_data(self) -> int:
        return self._f.imm_data()


def _seconds(timeout_ms: Optional[int]) -> Optional[float]:
    return None if timeout_ms is None else max(0, int(timeout_ms)) / 1000.0


# The async_* operations (TcpEndpoint delegates its async_* methods here).


def async_send(ep: TcpEndpoint, chunk: Any, timeout_ms: Optional[int], stream: Any) -> StatusFuture:
    return StatusFuture(TcpEndpoint.send(ep, chunk, stream, timeout=_seconds(timeout_ms)))


def async_recv(ep: TcpEndpoint, chunk: Any, timeout_ms: Optional[int], stream: Any,
               exact_size: bool) -> StatusFuture:
    f = TcpEndpoint.recv(ep, chunk, stream, timeout=_seconds(timeout_ms))
    want = None
    if exact_size:
        want = chunk[2] if isinstance(chunk, tuple) and len(chunk) == 3 else memoryview(chunk).nbytes
    return StatusFuture(f, want)


def async_read(ep: TcpEndpoint, assign: Any, timeout_ms: Optional[int], stream: Any) -> StatusFuture:
    return StatusFuture(TcpEndpoint.read(ep, assign, stream, timeout=_seconds(timeout_ms)))


def async_write(ep: TcpEndpoint, assign: Any, timeout_ms: Optional[int], stream: Any) -> StatusFuture:
    return StatusFuture(TcpEndpoint.write(ep, assign, stream, timeout=_seconds(timeout_ms)))


class OriginalTcpEndpoint(TcpEndpoint):
    """A :class:`TcpEndpoint` made the original's way: ``TcpEndpoint(ip="0.0.0.0",
    port=0)``. See the module documentation for its semantics."""

    def __init__(self, *args: Any, ip: str = "0.0.0.0", port: int = 0) -> None:
        # TcpEndpoint(port) or TcpEndpoint(ip, port), like the C++ constructor
        if len(args) == 1:
            (port,) = args
        elif len(args) == 2:
            ip, port = args
        elif args:
            raise TypeError("TcpEndpoint(ip=..., port=...)")
        if not isinstance(ip, str):
            raise TypeError("ip must be a str")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int in 0..65535, got {port!r}")
        TcpEndpoint.__init__(self, MemoryPool(), TcpContext(bind=f"{ip}:{port}"))

    def register_memory_region(self, name: Any, data: Any, offset: int = 0, length: Optional[int] = None) -> int:
        """``(name, ptr, offset, length)``; -1 for an empty name or one already taken."""
        if isinstance(name, str) and not name:
            return -1
        try:
            self.get_pool().get_handle(name if isinstance(name, str) else f"mr_{name}")
            return -1  # the name is taken (the original's TCP pool refuses it)
        except InvalidArgument:
            pass
        try:
            return TcpEndpoint.register_memory_region(self, name, data, offset, length)
        except InvalidArgument:
            return -1

    def connect(self, remote_endpoint_info: Any) -> None:
        """Connects to the peer; one it cannot reach (or one that speaks the original's
        TCP wire, whose info lacks this build's fields) leaves the endpoint not connected,
        with a warning, as in the original."""
        info = remote_endpoint_info
        if isinstance(info, (str, bytes)):
            info = json.loads(info)
        if isinstance(info, dict) and "transport" not in info and "host" in info and "port" in info:
            warnings.warn(f"connect(): {info.get('host')}:{info.get('port')} is the original DLSlime TCP "
                          "endpoint's info; this build speaks another TCP wire: not connected", stacklevel=2)
            return
        try:
            TcpEndpoint.connect(self, info)
        except (IOFailure, OperationError) as e:
            # unreachable, refused, timed out: not connected, as in the original (bad
            # info, AlreadyConnected and ShutDown still raise)
            warnings.warn(f"connect() failed, the endpoint stays not connected: {e}", stacklevel=2)

    # The 0.1.23 wheel's names: the same operations without the async_ prefix (its
    # arguments: the chunk or assignments, then timeout_ms and stream).
    def send(self, chunk: Any, timeout_ms: Optional[int] = None, stream: Any = None) -> StatusFuture:
        return async_send(self, chunk, timeout_ms, stream)

    def recv(self, chunk: Any, timeout_ms: Optional[int] = None, stream: Any = None, *,
             exact_size: bool = False) -> StatusFuture:
        return async_recv(self, chunk, timeout_ms, stream, exact_size)

    def read(self, assign: Any, timeout_ms: Optional[int] = None, stream: Any = None) -> StatusFuture:
        return async_read(self, assign, timeout_ms, stream)

    def write(self, assign: Any, timeout_ms: Optional[int] = None, stream: Any = None) -> StatusFuture:
        return async_write(self, assign, timeout_ms, stream)


class TcpMemoryPool(MemoryPool):
    """The original's ``TcpMemoryPool``: local regions in its argument order
    ``register_memory_region(addr, offset, length, name=None)`` (-1 for a taken name),
    ``unregister_memory_region(handle)`` (0, or -1 if unknown), ``get_mr_handle(name)``
    (-1 if missing), and a book of peer regions: ``register_remote_memory_region(mr_info,
    name=None)``, ``unregister_remote_memory_region(handle)``,
    ``get_remote_mr_handle(name)``, ``remote_mr_info()``. (Our endpoints keep their peer
    regions themselves; this book is the pool's own, as in the original.)"""

    def __init__(self) -> None:
        super().__init__()
        self._remote: Dict[int, Any] = {}
        self._remote_names: Dict[str, int] = {}

    def register_memory_region(self, addr: Any, offset: int = 0, length: Optional[int] = None,
                               name: Optional[str] = None) -> int:
        try:
            return MemoryPool.register_memory_region(self, addr, length, name, offset=offset)
        except InvalidArgument:
            return -1

    def unregister_memory_region(self, handle: Any) -> int:
        try:
            MemoryPool.unregister_memory_region(self, handle)
            return 0
        except InvalidArgument:
            return -1

    def get_mr_handle(self, name: str) -> int:
        try:
            return self.get_handle(name)
        except InvalidArgument:
            return -1

    def register_remote_memory_region(self, mr_info: Any, name: Optional[str] = None) -> int:
        info = json.loads(mr_info) if isinstance(mr_info, str) else dict(mr_info)
        name = name if name is not None else info.get("name")
        if name is not None and name in self._remote_names:
            h = self._remote_names[name]
        else:
            h = len(self._remote)
            if name is not None:
                self._remote_names[name] = h
        self._remote[h] = info
        return h

    def unregister_remote_memory_region(self, handle: int) -> int:
        if self._remote.pop(handle, None) is None:
            return -1
        self._remote_names = {n: h for n, h in self._remote_names.items() if h != handle}
        return 0

    def get_remote_mr_handle(self, name: str) -> int:
        return self._remote_names.get(name, -1)

    def remote_mr_info(self) -> dict:
        names = {h: n for n, h in self._remote_names.items()}
        return {names.get(h, f"mr_{h}"): v for h, v in self._remote.items()}
