"""The dlslime Python API over the C ABI (``libdlslime.so`` through cffi, ABI mode).

Every object here owns one C handle and frees it exactly once (``close()``, the context
manager, or garbage collection). Nothing reaches the Rust core except through the C
functions declared in ``include/dlslime.h``.
"""

from __future__ import annotations

import json
import math
import threading
from collections import namedtuple
from typing import Any, Iterable, List, Optional, Sequence, Tuple, Union

from ._errors import DLSlimeError, StateError, error_class
from ._cuda import foreign_array, stream_ordered
from ._lib import ffi, lib

__all__ = [
    "Assignment", "MemoryPool", "TcpContext", "Endpoint", "TcpEndpoint", "ShmEndpoint",
    "Future", "alloc_shared", "has_shm", "version", "lib", "ffi", "buffer_address",
]

_OK = lib.DLSLIME_STATUS_OK
_PENDING = lib.DLSLIME_STATUS_PENDING
_TIMEOUT = lib.DLSLIME_STATUS_TIMEOUT
_UNSUPPORTED = lib.DLSLIME_STATUS_UNSUPPORTED
_UNKNOWN_HANDLE = lib.DLSLIME_STATUS_UNKNOWN_HANDLE
_NULL = ffi.NULL
_new = ffi.new
_FUTURE_OUT = ffi.typeof("dlslime_future_t **")
_ONE_ASSIGNMENT = ffi.typeof("dlslime_assignment_t[1]")
_ASSIGNMENTS = ffi.typeof("dlslime_assignment_t[]")
# Slice of a blocking wait: Python gets control back this often, so Ctrl-C works while a
# wait is in progress; the GIL is released inside each slice.
_WAIT_SLICE_MS = 200

# Hot-path functions bound once (a lookup on ``lib`` per call is measurable).
_future_wait_for = lib.dlslime_future_wait_for
_future_status = lib.dlslime_future_status
_future_done = lib.dlslime_future_done
_future_free = lib.dlslime_future_free
_ep_read = lib.dlslime_endpoint_read
_ep_write = lib.dlslime_endpoint_write
_ep_write_with_imm = lib.dlslime_endpoint_write_with_imm

Assignment = namedtuple("Assignment", ["local", "remote", "remote_offset", "local_offset", "length"])
Assignment.__doc__ = """One transfer in the original DLSlime order
``(local_handle, remote_handle, remote_offset, local_offset, length)``. Plain 5-tuples
work the same; this is only a convenience with field names."""


def version() -> str:
    """The version of the loaded ``libdlslime`` (e.g. ``"0.1.0"``)."""
    return ffi.string(lib.dlslime_version()).decode()


def has_shm() -> bool:
    """Whether the loaded library has the shared-memory transport."""
    return hasattr(lib, "dlslime_shm_endpoint_new")


def _last_error() -> str:
    n = ffi.new("size_t *")
    buf = ffi.new("char[512]")
    lib.dlslime_last_error_message(buf, 512, n)
    if n[0] >= 512:
        buf = ffi.new("char[]", n[0] + 1)
        lib.dlslime_last_error_message(buf, n[0] + 1, n)
    return ffi.string(buf).decode("utf-8", "replace")


def _raise(status: int, what: str = "") -> None:
    text = _last_error() or "%s (%d)" % (ffi.string(lib.dlslime_status_str(status)).decode(), status)
    if what:
        text = f"{what}: {text}"
    raise error_class(status)(text, status)


def _check(status: int, what: str = "") -> None:
    if status != _OK:
        _raise(status, what)


def _take_string(pp) -> str:
    try:
        return ffi.string(pp[0]).decode("utf-8")
    finally:
        lib.dlslime_string_free(pp[0])


_MAX_TIMEOUT_MS = (1 << 64) - 1


def _timeout_ms(timeout: Optional[float]) -> int:
    """Seconds (``None``: the default deadline) to the C ``timeout_ms`` (0 = default)."""
    if timeout is None:
        return 0
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
        raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
    if timeout != timeout or timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    if timeout == math.inf:
        raise ValueError("timeout must be finite (None: the default deadline)")
    # Beyond the C range (u64 milliseconds, about 585 million years) means "no sooner".
    return min(max(1, int(timeout * 1000 + 0.5)), _MAX_TIMEOUT_MS)


def _as_buffer(data: Any, writable: bool, what: str):
    """A cffi ``char[]`` over a Python buffer (keeps the buffer exported while alive)."""
    if isinstance(data, (str, int, float)) or data is None:
        raise TypeError(f"{what} must be a buffer (bytes, bytearray, memoryview, numpy array), "
                        f"not {type(data).__name__}")
    try:
        return ffi.from_buffer(data, require_writable=writable)
    except TypeError as e:
        raise TypeError(f"{what} must support the buffer protocol: {e}") from None
    except (ValueError, BufferError) as e:
        # read-only where writable is needed: a type problem (bytes for recv);
        # released or non-contiguous views: a value problem.
        try:
            readonly = memoryview(data).readonly
        except (ValueError, BufferError, TypeError):
            readonly = False
        if writable and readonly:
            raise TypeError(f"{what} must be writable (got a read-only {type(data).__name__})") from None
        raise ValueError(f"{what}: {e} (need a live, C-contiguous buffer)") from None


def buffer_address(data: Any) -> int:
    """The address of a Python buffer's first byte (the object must stay alive and
    must not be resized while the address is in use)."""
    return int(ffi.cast("uintptr_t", _as_buffer(data, False, "data")))


def _uint(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        try:
            v = v.__index__()  # numpy integers
        except AttributeError:
            raise TypeError(f"{what} must be an int, not {type(v).__name__}") from None
    if v < 0:
        raise ValueError(f"{what} must not be negative, got {v}")
    return v


def _kept_str(keep: list, s: str):
    """A C string for a field of an options struct, kept alive by ``keep``."""
    keep.append(ffi.new("char[]", s.encode()))
    return keep[-1]


class _Closing:
    """``close()`` by the context manager or GC (never raising from ``__del__``)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class _Owned(_Closing):
    """A C handle freed exactly once by ``close()``, the context manager or GC."""

    _ptr = _NULL
    _free = None

    def close(self) -> None:
        """Releases the C handle (idempotent). The object is unusable afterwards."""
        p, self._ptr = self._ptr, _NULL
        if p != _NULL and self._free is not None:
            self._free(p)

    def _handle(self):
        p = self._ptr
        if p == _NULL:
            raise ValueError(f"{type(self).__name__} is closed")
        return p


class MemoryPool(_Owned):
    """A table of local memory regions that endpoints read from and write into.

    Thread-safe. Several endpoints may share one pool; each keeps its own reference to
    the C pool, so the pool object may be closed before them.
    """

    def __init__(self) -> None:
        out = ffi.new("dlslime_memory_pool_t **")
        _check(lib.dlslime_memory_pool_new(out), "MemoryPool")
        self._free = lib.dlslime_memory_pool_free
        self._ptr = out[0]
        # handle -> cffi buffers exported for it (kept alive while registered)
        self._keep: dict = {}
        self._lock = threading.Lock()

    def register_memory_region(self, data: Any, length: Optional[int] = None,
                               name: Optional[str] = None, *, offset: int = 0) -> int:
        """Registers memory and returns its handle (dense, never reused).

        ``data`` is an object with ``__cuda_array_interface__`` or DLPack (a CUDA tensor
        or array: registered as device memory, :class:`DeviceUnavailable` without a CUDA
        driver; a DLPack host array: host memory), a writable Python buffer (``bytearray``, writable
        ``memoryview``, numpy array, :func:`alloc_shared` memory), kept alive and
        un-resizable while registered, of which ``[offset, offset+length)`` is
        registered (``length`` defaults to the rest of the buffer); or an int address
        (as in the original API, e.g. ``tensor.data_ptr()``; a device address is
        recognised when a CUDA driver is present) with a required ``length``, which the
        caller keeps valid. ``name`` defaults to ``mr_<handle>``.

        Raises :class:`NameConflict`, :class:`InvalidArgument`, ``TypeError``.
        """
        offset = _uint(offset, "offset")
        register = lib.dlslime_memory_pool_register
        foreign = foreign_array(data)
        if foreign is not None:
            # CUDA memory (__cuda_array_interface__, DLPack CUDA): registered as a device
            # pointer (DeviceUnavailable without a CUDA driver); DLPack host memory as
            # host memory. The object is kept alive while registered.
            dptr, size, on_device, keep = foreign
            what = "CUDA array" if on_device else "DLPack array"
            if offset > size:
                raise ValueError(f"offset {offset} is past the end of the {size}-byte {what}")
            length = size - offset if length is None else _uint(length, "length")
            if offset + length > size:
                raise ValueError(f"offset {offset} + length {length} is past the end of the {size}-byte {what}")
            ptr = ffi.cast("void *", dptr + offset)
            if on_device:
                register = lib.dlslime_memory_pool_register_device
        elif isinstance(data, int) and not isinstance(data, bool):
            if length is None:
                raise TypeError("length is required when data is an address")
            length = _uint(length, "length")
            ptr = ffi.cast("void *", _uint(data, "address") + offset)
            keep = None
        else:
            keep = _as_buffer(data, True, "data")
            size = len(keep)
            if offset > size:
                raise ValueError(f"offset {offset} is past the end of the {size}-byte buffer")
            length = size - offset if length is None else _uint(length, "length")
            if offset + length > size:
                raise ValueError(f"offset {offset} + length {length} is past the end of the {size}-byte buffer")
            ptr = keep + offset
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, not {type(name).__name__}")
        cname = name.encode() if name is not None else _NULL
        out = ffi.new("dlslime_mr_handle_t *")
        _check(register(self._handle(), cname, ptr, length, out), "register_memory_region")
        h = out[0]
        if keep is not None:
            with self._lock:
                self._keep.setdefault(h, []).append(keep)
        return h

    def unregister_memory_region(self, key: Union[int, str]) -> None:
        """Unregisters a region by handle (int) or name (str), with all its names.

        Raises :class:`UnknownHandle` if there is no such live region.
        """
        if isinstance(key, str):
            h = self.get_handle(key)
            _check(lib.dlslime_memory_pool_unregister_name(self._handle(), key.encode()),
                   "unregister_memory_region")
        elif isinstance(key, int) and not isinstance(key, bool):
            h = key
            if key < 0 or key > 0xFFFFFFFF:
                raise error_class(_UNKNOWN_HANDLE)(f"unregister_memory_region: no region with handle {key}", _UNKNOWN_HANDLE)
            _check(lib.dlslime_memory_pool_unregister(self._handle(), key), "unregister_memory_region")
        else:
            raise TypeError(f"key must be a handle (int) or a name (str), not {type(key).__name__}")
        with self._lock:
            self._keep.pop(h, None)

    def get_handle(self, name: str) -> int:
        """The handle a name is bound to. Raises :class:`UnknownHandle`."""
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        out = ffi.new("dlslime_mr_handle_t *")
        _check(lib.dlslime_memory_pool_handle(self._handle(), name.encode(), out), "get_handle")
        return out[0]

    def mr_info(self) -> dict:
        """``{name: {"handle", "addr", "rkey", "length"}}`` (``{}`` when empty)."""
        out = ffi.new("char **")
        _check(lib.dlslime_memory_pool_mr_info(self._handle(), out), "mr_info")
        return json.loads(_take_string(out)) or {}

    def close(self) -> None:
        super().close()
        # Registered buffers stay exported while endpoints may still use the regions:
        # endpoints hold this Python object (and therefore the buffers) alive.


class TcpContext(_Owned):
    """A TCP transport context: a listener plus pooled connections, shared by the
    endpoints created over it. Thread-safe.

    ``bind`` is a numeric ``"IP:port"`` (default ``"0.0.0.0:0"``); ``advertise_host``
    the host published in ``endpoint_info``; ``lanes`` connections per peer;
    ``chunk_size`` bytes per stripe; ``idle_timeout`` and ``default_timeout`` in
    seconds (``None``: the library defaults).
    """

    def __init__(self, bind: Optional[str] = None, advertise_host: Optional[str] = None,
                 lanes: int = 0, chunk_size: int = 0, idle_timeout: Optional[float] = None,
                 default_timeout: Optional[float] = None) -> None:
        o = ffi.new("dlslime_tcp_options_t *")
        lib.dlslime_tcp_options_init(o)
        keep = []
        if bind is not None:
            o.bind = _kept_str(keep, str(bind))
        if advertise_host is not None:
            o.advertise_host = _kept_str(keep, str(advertise_host))
        o.lanes = _uint(lanes, "lanes")
        o.chunk_size = _uint(chunk_size, "chunk_size")
        o.idle_timeout_ms = _timeout_ms(idle_timeout)
        o.default_timeout_ms = _timeout_ms(default_timeout)
        out = ffi.new("dlslime_tcp_context_t **")
        _check(lib.dlslime_tcp_context_new(o, out), "TcpContext")
        self._free = lib.dlslime_tcp_context_free
        self._ptr = out[0]

    @property
    def local_addr(self) -> str:
        """The listener's bound ``"IP:port"``."""
        out = ffi.new("char **")
        _check(lib.dlslime_tcp_context_local_addr(self._handle(), out), "local_addr")
        return _take_string(out)


class Future:
    """One operation. ``wait()``, ``wait_for(timeout)``, ``done()``, ``status()``,
    ``imm_data()``, ``nbytes()``. Thread-safe; may be waited any number of times from
    any thread. The GIL is released while waiting.

    The future keeps the operation's Python buffers alive until it completes; if it is
    dropped while pending, its endpoint keeps them until the operation completes or the
    endpoint is closed.
    """

    __slots__ = ("_f", "_keep", "_ep", "__weakref__")

    def __init__(self, f, keep, ep) -> None:
        self._f = f
        self._keep = keep
        self._ep = ep

    def _h(self):
        f = self._f
        if f is None:
            raise ValueError("Future is released")
        return f

    def _finished(self, st: int) -> int:
        # Completed: the library no longer touches the buffers.
        self._keep = None
        if st != _OK:
            _raise(st)
        return 0

    def wait(self) -> int:
        """Waits for completion (at most the operation's own deadline). Returns 0 on
        success, like the original; raises the status's exception on failure."""
        f = self._f
        if f is None:
            self._h()
        while True:
            st = _future_wait_for(f, _WAIT_SLICE_MS)
            if st == _OK:
                self._keep = None
                return 0
            if st != _TIMEOUT or _future_status(f) != _PENDING:
                return self._finished(st)

    def wait_for(self, timeout: float) -> bool:
        """Waits at most ``timeout`` seconds. True: completed successfully. False: still
        pending (the operation goes on). Raises the status's exception if it failed.
        ``math.inf`` waits like ``wait()`` (until the operation's own deadline)."""
        if isinstance(timeout, float) and timeout == math.inf:
            self.wait()
            return True
        ms = _timeout_ms(timeout)
        f = self._h()
        while True:
            step = min(ms, _WAIT_SLICE_MS)
            st = lib.dlslime_future_wait_for(f, step)
            if st == _TIMEOUT and lib.dlslime_future_status(f) == _PENDING:
                ms -= step
                if ms <= 0:
                    return False
                continue
            self._finished(st)
            return True

    def done(self) -> bool:
        """True once the operation completed (successfully or not)."""
        return bool(lib.dlslime_future_done(self._h()))

    def status(self) -> int:
        """``1`` (pending) until completion, then the final status (0 = OK)."""
        return lib.dlslime_future_status(self._h())

    def _result(self, getter, ctype: str, what: str) -> int:
        out = ffi.new(ctype)
        st = getter(self._h(), out)
        if st == _PENDING:
            raise StateError(f"{what} is not defined before the operation completes; wait() first", st)
        _check(st, what)
        return out[0]

    def imm_data(self) -> int:
        """The immediate data of a completed ``imm_recv``. Raises ``ValueError`` for any
        other operation's future, ``StateError`` before completion and the operation's
        error if it failed (the library tells which futures are imm_recv's)."""
        return self._result(lib.dlslime_future_get_imm_data, "int32_t *", "imm_data()")

    def nbytes(self) -> int:
        """Bytes moved (for ``recv``: the received message's length). Raises
        ``StateError`` before completion and the operation's error if it failed."""
        return self._result(lib.dlslime_future_get_nbytes, "uint64_t *", "nbytes()")

    def __del__(self):
        f, self._f = self._f, None
        if f is None:
            return
        try:
            if self._keep is not None and not _future_done(f):
                ep = self._ep
                if ep is not None:
                    ep._orphan(f, self._keep)
                    return
            _future_free(f)
        except Exception:
            pass

    def __repr__(self) -> str:
        if self._f is None:
            return "<dlslime.Future released>"
        st = self.status()
        return f"<dlslime.Future {'pending' if st == _PENDING else 'status=%d' % st}>"


_AssignmentLike = Union[Tuple[int, int, int, int, int], Sequence[int]]


def _bad_assignment(assign):
    """Raises the precise error for a malformed assignment list (slow path)."""
    if isinstance(assign, (str, bytes)) or not hasattr(assign, "__len__"):
        raise TypeError("assignments must be a list of (local_handle, remote_handle, "
                        "remote_offset, local_offset, length) tuples, not %s" % type(assign).__name__)
    for i, t in enumerate(assign):
        if not isinstance(t, (tuple, list)) or len(t) != 5:
            raise TypeError(f"assignment {i} must be a 5-tuple (local_handle, remote_handle, "
                            f"remote_offset, local_offset, length), got {t!r}")
        for name, v in zip(Assignment._fields, t):
            v = _uint(v, f"assignment {i}: {name}")
            limit = 0xFFFFFFFF if name in ("local", "remote") else 0xFFFFFFFFFFFFFFFF
            if v > limit:
                raise ValueError(f"assignment {i}: {name} {v} is out of range")
    raise TypeError("malformed assignments")  # pragma: no cover


def _assignments(assign, regions):
    """(C array, count, buffers to keep alive) of a list of assignments."""
    if type(assign) is list and len(assign) == 1:  # fast path: one assignment
        t = assign[0]
        if isinstance(t, (tuple, list)) and len(t) == 5:
            try:
                arr = _new(_ONE_ASSIGNMENT, assign)
            except (TypeError, OverflowError, ValueError):
                _bad_assignment(assign)
            return arr, 1, regions.get(t[0])
    if isinstance(assign, tuple) and len(assign) == 5 and all(isinstance(x, int) for x in assign):
        assign = [assign]  # a single tuple
    if isinstance(assign, (str, bytes)) or not hasattr(assign, "__len__"):
        _bad_assignment(assign)
    assign = list(assign)
    n = len(assign)
    for t in assign:
        if not isinstance(t, (tuple, list)) or len(t) != 5:
            _bad_assignment(assign)
    try:
        arr = _new(_ASSIGNMENTS, assign) if n else _NULL
    except (TypeError, OverflowError, ValueError):
        _bad_assignment(assign)
    return arr, n, [regions.get(t[0]) for t in assign]


class _OrphanKeeper:
    """Holds the buffers of futures dropped while their operation was pending, until the
    operation completes (checked on each new submission) or the owner is closed."""

    def _init_orphans(self) -> None:
        self._orphans: List[Tuple[Any, Any]] = []
        self._olock = threading.Lock()

    def _orphan(self, f, keep) -> None:
        with self._olock:
            self._orphans.append((f, keep))

    def _sweep(self) -> None:
        with self._olock:
            if not self._orphans:
                return
            still = []
            for f, keep in self._orphans:
                if lib.dlslime_future_done(f):
                    lib.dlslime_future_free(f)
                else:
                    still.append((f, keep))
            self._orphans = still

    def _release_orphans(self) -> None:
        """After the owner was freed (which fails every pending operation)."""
        with self._olock:
            orphans, self._orphans = self._orphans, []
        for f, _keep in orphans:
            lib.dlslime_future_wait(f)  # completes at once: cancelled by the free
            lib.dlslime_future_free(f)


class Endpoint(_Owned, _OrphanKeeper):
    """One side of a connection (any transport). Create :class:`TcpEndpoint` or
    :class:`ShmEndpoint`. Thread-safe. Use as a context manager, or call
    ``shutdown()`` / ``close()``.
    """

    def _init_endpoint(self, ptr, pool: MemoryPool, extra_keep=()) -> None:
        self._free = lib.dlslime_endpoint_free
        self._ptr = ptr
        self._pool = pool
        self._extra = extra_keep
        self._closed = False
        self._connected_to = None
        self._init_orphans()

    # -- connection -------------------------------------------------------------------

    def endpoint_info(self) -> dict:
        """This endpoint's connection info (a dict; ``json.dumps`` it for transport)."""
        out = ffi.new("char **")
        _check(lib.dlslime_endpoint_info(self._handle(), out), "endpoint_info")
        return json.loads(_take_string(out))

    def connect(self, remote_endpoint_info: Union[dict, str, bytes]) -> None:
        """Connects to the peer from its ``endpoint_info()`` (a dict or a JSON string) and
        registers every region it published. Both sides call it. Calling it again with
        the same info is accepted (nothing happens); other info raises
        :class:`AlreadyConnected`."""
        info = remote_endpoint_info
        if isinstance(info, dict):
            info = json.dumps(info)
        if isinstance(info, str):
            info = info.encode()
        if not isinstance(info, bytes):
            raise TypeError(f"connect() takes a dict or a JSON string, not {type(remote_endpoint_info).__name__}")
        if self._connected_to is not None and json.loads(info) == self._connected_to:
            return  # the same peer again: already connected to it
        _check(lib.dlslime_endpoint_connect(self._handle(), info), "connect")
        self._connected_to = json.loads(info)

    def is_connected(self) -> bool:
        """Whether ``connect()`` succeeded (the peer may have gone since: operations then
        fail with :class:`PeerDisconnected`)."""
        return self._connected_to is not None and not self._closed

    # -- memory regions ---------------------------------------------------------------

    def get_pool(self) -> MemoryPool:
        """The endpoint's local memory pool."""
        return self._pool

    def mr_info(self) -> dict:
        """The local pool's ``mr_info()``."""
        return self._pool.mr_info()

    def register_memory_region(self, name: Union[str, int], data: Any, offset: int = 0,
                               length: Optional[int] = None) -> int:
        """Registers ``data[offset : offset+length]`` in the endpoint's pool under
        ``name`` (an int key ``k`` means the name ``"mr_<k>"``, as in the original) and
        returns the local handle. ``data`` is a writable buffer or an int address."""
        if isinstance(name, int) and not isinstance(name, bool):
            name = f"mr_{name}"
        return MemoryPool.register_memory_region(self._pool, data, length, name, offset=offset)

    def register_remote_memory_region(self, name: str, mr_info: Union[dict, str]) -> int:
        """Registers (or updates) a peer region from ``{"addr", "length", "rkey"}`` and
        returns its remote handle."""
        if not isinstance(name, str):
            raise TypeError("name must be a str")
        js = json.dumps(mr_info) if isinstance(mr_info, dict) else mr_info
        if not isinstance(js, str):
            raise TypeError("mr_info must be a dict or a JSON string")
        out = ffi.new("dlslime_remote_handle_t *")
        _check(lib.dlslime_endpoint_register_remote(self._handle(), name.encode(), js.encode(), out),
               "register_remote_memory_region")
        return out[0]

    def remote_handle(self, name: str) -> int:
        """The remote handle of the peer region ``name``. Raises :class:`UnknownHandle`."""
        if not isinstance(name, str):
            raise TypeError("name must be a str")
        out = ffi.new("dlslime_remote_handle_t *")
        _check(lib.dlslime_endpoint_remote_handle(self._handle(), name.encode(), out), "remote_handle")
        return out[0]

    # -- operations -------------------------------------------------------------------

    def _submit(self, fn, assign, timeout, imm=None) -> Future:
        """Submits a one-sided operation; the hot path of read/write/write_with_imm."""
        if self._orphans:
            self._sweep()
        if self._closed:
            raise ValueError(f"{type(self).__name__} is closed")
        # Fast path, one assignment (kept inline: every call level costs here).
        if type(assign) is list and len(assign) == 1 and type(assign[0]) is tuple and len(assign[0]) == 5:
            try:
                arr = _new(_ONE_ASSIGNMENT, assign)
            except (TypeError, OverflowError, ValueError):
                _bad_assignment(assign)
            n = 1
            keep = self._pool._keep.get(assign[0][0])
        else:
            arr, n, keep = _assignments(assign, self._pool._keep)
        out = _new(_FUTURE_OUT)
        if imm is None:
            st = fn(self._ptr, arr, n, timeout, out)
        else:
            st = fn(self._ptr, arr, n, imm, timeout, out)
        if st:
            _raise(st)
        # The future keeps the local regions' buffers alive until completion, even if
        # they are unregistered meanwhile.
        return Future(out[0], keep, self)

    def _one_sided(fn, name: str, doc: str):
        """Builds ``read`` and ``write`` (class-body helper, not a method): one body, with
        ``fn`` bound in a closure so the fast path costs no extra call level."""
        def op(self, assign: Iterable[_AssignmentLike], stream: Any = None, *,
               timeout: Optional[float] = None) -> Future:
            # Fast path (one tuple, defaults, no orphans): inline, see bench/python.
            if (stream is None and timeout is None and type(assign) is list and len(assign) == 1
                    and not self._orphans and not self._closed):
                t = assign[0]
                if type(t) is tuple and len(t) == 5:
                    try:
                        arr = _new(_ONE_ASSIGNMENT, assign)
                    except (TypeError, OverflowError, ValueError):
                        _bad_assignment(assign)
                    out = _new(_FUTURE_OUT)
                    st = fn(self._ptr, arr, 1, 0, out)
                    if st:
                        _raise(st)
                    return Future(out[0], self._pool._keep.get(t[0]), self)
            if stream is not None:
                return stream_ordered(stream, lambda: self._submit(fn, assign, _timeout_ms(timeout)))
            return self._submit(fn, assign, 0 if timeout is None else _timeout_ms(timeout))

        op.__name__ = name
        op.__qualname__ = "Endpoint." + name
        op.__doc__ = doc
        return op

    read = _one_sided(_ep_read, "read", """One-sided read: for each ``(local, remote, remote_offset, local_offset,
        length)`` copies the remote range into the local one. One future for the list.
        ``timeout`` (seconds) overrides the default deadline.""")
    write = _one_sided(_ep_write, "write", """One-sided write: copies each local range into the remote range; completes
        when the target has applied every byte.""")
    del _one_sided

    def write_with_imm(self, assign: Iterable[_AssignmentLike], imm_data: int = 0, stream: Any = None,
                       *, timeout: Optional[float] = None) -> Future:
        """Like :meth:`write`, then delivers one notification carrying ``imm_data``
        (an int32) to the peer's :meth:`imm_recv`."""
        if isinstance(imm_data, bool) or not isinstance(imm_data, int):
            raise TypeError("imm_data must be an int")
        if not -(1 << 31) <= imm_data < (1 << 32):
            raise ValueError(f"imm_data {imm_data} does not fit in 32 bits")
        if imm_data >= (1 << 31):
            imm_data -= 1 << 32
        if stream is not None:
            return stream_ordered(stream, lambda: self._submit(_ep_write_with_imm, assign, _timeout_ms(timeout), imm_data))
        return self._submit(_ep_write_with_imm, assign, _timeout_ms(timeout), imm_data)

    def imm_recv(self, stream: Any = None, *, timeout: Optional[float] = None) -> Future:
        """Receives the next immediate-data notification; ``future.imm_data()``."""
        if stream is not None:
            return stream_ordered(stream, lambda: self.imm_recv(timeout=timeout))
        if self._orphans:
            self._sweep()
        out = ffi.new("dlslime_future_t **")
        _check(lib.dlslime_endpoint_imm_recv(self._handle(), _timeout_ms(timeout), out), "imm_recv")
        return Future(out[0], None, self)

    def _chunk(self, chunk, writable: bool):
        if isinstance(chunk, tuple) and len(chunk) == 3 and all(
                isinstance(x, int) and not isinstance(x, bool) for x in chunk):
            ptr, off, length = (_uint(x, n) for x, n in zip(chunk, ("ptr", "offset", "length")))
            if ptr == 0 and length:
                raise ValueError("ptr is 0")
            addr = ffi.cast("void *", ptr + off)
            # a raw address may be wrong: refuse it here rather than crash in a copy
            _check(lib.dlslime_check_buffer(addr, length, writable), "recv buffer" if writable else "send data")
            return addr, length, None
        buf = _as_buffer(chunk, writable, "recv buffer" if writable else "send data")
        return buf, len(buf), buf

    def _message(self, fn, what: str, data: Any, writable: bool, timeout: Optional[float]) -> Future:
        """Posts a send (``fn`` is ``dlslime_endpoint_send``) or a receive of one buffer."""
        if self._orphans:
            self._sweep()
        ptr, length, keep = self._chunk(data, writable)
        out = ffi.new("dlslime_future_t **")
        _check(fn(self._handle(), ptr, length, _timeout_ms(timeout), out), what)
        return Future(out[0], keep, self)

    def send(self, data: Any, stream: Any = None, *, timeout: Optional[float] = None) -> Future:
        """Sends a message to the peer's next posted :meth:`recv`. ``data`` is any
        C-contiguous buffer (``bytes`` too), kept alive until the send completes, or
        the original ``(ptr, offset, length)`` tuple (the caller keeps it valid)."""
        if stream is not None:
            return stream_ordered(stream, lambda: self.send(data, timeout=timeout))
        return self._message(lib.dlslime_endpoint_send, "send", data, False, timeout)

    def recv(self, data: Any, stream: Any = None, *, timeout: Optional[float] = None) -> Future:
        """Posts a receive into a writable buffer (or ``(ptr, offset, length)``);
        ``future.nbytes()`` is the message length. A larger message fails the future
        with :class:`Truncated`."""
        if stream is not None:
            return stream_ordered(stream, lambda: self.recv(data, timeout=timeout))
        return self._message(lib.dlslime_endpoint_recv, "recv", data, True, timeout)

    def cancel_all(self) -> int:
        """Fails every pending operation with :class:`Cancelled`; returns how many. The
        endpoint stays usable."""
        n = ffi.new("size_t *")
        _check(lib.dlslime_endpoint_cancel_all(self._handle(), n), "cancel_all")
        return n[0]

    def shutdown(self) -> None:
        """Cancels pending operations and closes the endpoint. Idempotent."""
        if self._ptr == _NULL:
            return
        _check(lib.dlslime_endpoint_shutdown(self._ptr), "shutdown")

    def close(self) -> None:
        """Shuts down and releases the endpoint (idempotent)."""
        p = self._ptr
        self._closed = True
        super().close()  # dlslime_endpoint_free shuts down: pending ops are cancelled
        if p != _NULL:
            self._release_orphans()

    def __repr__(self) -> str:
        return f"<dlslime.{type(self).__name__}{' closed' if self._ptr == _NULL else ''}>"


class TcpEndpoint(Endpoint):
    """An endpoint over TCP (any two hosts).

    ``TcpEndpoint(pool=None, context=None)``: ``pool`` defaults to a new
    :class:`MemoryPool`, ``context`` to a new :class:`TcpContext` with default options.

    ``TcpEndpoint(ip=..., port=...)`` (or ``TcpEndpoint(port)``), the original's
    constructor, makes an endpoint with the original's semantics (``_original.py``):
    futures whose ``wait()`` returns a status, ``register_memory_region`` returning -1
    on a taken name, ``connect()`` that leaves an unreachable peer not connected. The
    original's ``async_send``/``async_recv``/``async_read``/``async_write`` (with
    ``timeout_ms=``) exist on every TCP endpoint.
    """

    def __new__(cls, *args: Any, **kwargs: Any):
        original = "ip" in kwargs or "port" in kwargs or (
            bool(args) and isinstance(args[0], (int, str)) and not isinstance(args[0], bool))
        if cls is TcpEndpoint and original:
            from ._original import OriginalTcpEndpoint
            return object.__new__(OriginalTcpEndpoint)
        return object.__new__(cls)

    def async_send(self, chunk: Any, timeout_ms: Optional[int] = None, stream: Any = None):
        """The original's send: a future whose ``wait()`` returns a status."""
        from ._original import async_send
        return async_send(self, chunk, timeout_ms, stream)

    def async_recv(self, chunk: Any, timeout_ms: Optional[int] = None, stream: Any = None, *,
                   exact_size: bool = False):
        """The original's recv; ``exact_size``: a message of another length fails."""
        from ._original import async_recv
        return async_recv(self, chunk, timeout_ms, stream, exact_size)

    def async_read(self, assign: Any, timeout_ms: Optional[int] = None, stream: Any = None):
        """The original's read: a future whose ``wait()`` returns a status."""
        from ._original import async_read
        return async_read(self, assign, timeout_ms, stream)

    def async_write(self, assign: Any, timeout_ms: Optional[int] = None, stream: Any = None):
        """The original's write: a future whose ``wait()`` returns a status."""
        from ._original import async_write
        return async_write(self, assign, timeout_ms, stream)

    def __init__(self, pool: Optional[MemoryPool] = None, context: Optional[TcpContext] = None) -> None:
        if isinstance(pool, TcpContext) and (context is None or isinstance(context, MemoryPool)):
            pool, context = context, pool  # TcpEndpoint(ctx, pool), like the C order
        pool = MemoryPool() if pool is None else pool
        context = TcpContext() if context is None else context
        if not isinstance(pool, MemoryPool) or not isinstance(context, TcpContext):
            raise TypeError("TcpEndpoint(pool: MemoryPool, context: TcpContext)")
        out = ffi.new("dlslime_endpoint_t **")
        _check(lib.dlslime_tcp_endpoint_new(context._handle(), pool._handle(), out), "TcpEndpoint")
        self._init_endpoint(out[0], pool, (context,))
        self.context = context


class ShmEndpoint(Endpoint):
    """An endpoint over shared memory, to a peer process on the same host.

    Memory from :func:`alloc_shared` is mapped by the peer (one-sided operations are a
    single memcpy); other memory moves by cross-memory attach or bounce slots.

    ``spin_us``: the most a waiter spins before it sleeps (``None``: default 50 µs; the
    spin adapts below it); ``no_spin``: sleep at once; ``inline_progress``: ``None``
    (default) or ``True``: the waiting thread drives the transport and the peer wakes it
    directly, ``False``: a background thread completes operations;
    ``force_staged``: always use bounce slots; ``default_timeout`` in seconds.
    """

    def __init__(self, pool: Optional[MemoryPool] = None, *, spin_us: Optional[int] = None,
                 no_spin: bool = False, inline_progress: Optional[bool] = None, force_staged: bool = False,
                 default_timeout: Optional[float] = None) -> None:
        if not has_shm():
            raise error_class(_UNSUPPORTED)("this libdlslime has no shared-memory transport", _UNSUPPORTED)
        pool = MemoryPool() if pool is None else pool
        if not isinstance(pool, MemoryPool):
            raise TypeError("ShmEndpoint(pool: MemoryPool)")
        o = ffi.new("dlslime_shm_options_t *")
        lib.dlslime_shm_options_init(o)
        flags = 0
        if force_staged:
            flags |= lib.DLSLIME_SHM_FLAG_FORCE_STAGED
        if no_spin:
            flags |= lib.DLSLIME_SHM_FLAG_NO_SPIN
        if inline_progress:
            flags |= lib.DLSLIME_SHM_FLAG_INLINE_PROGRESS
        elif inline_progress is not None:
            flags |= lib.DLSLIME_SHM_FLAG_BACKGROUND_PROGRESS
        o.flags = flags
        o.spin_us = 0 if spin_us is None else _uint(spin_us, "spin_us")
        o.default_timeout_ms = _timeout_ms(default_timeout)
        out = ffi.new("dlslime_endpoint_t **")
        _check(lib.dlslime_shm_endpoint_new(pool._handle(), o, out), "ShmEndpoint")
        self._init_endpoint(out[0], pool)


def alloc_shared(length: int) -> memoryview:
    """Allocates ``length`` zeroed bytes of shared memory (memfd-backed) that a connected
    :class:`ShmEndpoint` peer maps directly. Returns a writable ``memoryview`` (use it
    with numpy via ``numpy.frombuffer``). The memory is freed when the last reference
    to it (the view, its slices, registrations, pending operations) is gone."""
    if not hasattr(lib, "dlslime_alloc_shared"):
        raise error_class(_UNSUPPORTED)("this libdlslime has no shared allocations", _UNSUPPORTED)
    length = _uint(length, "length")
    out = ffi.new("void **")
    _check(lib.dlslime_alloc_shared(length, out), "alloc_shared")
    p = ffi.gc(ffi.cast("char *", out[0]), lib.dlslime_free_shared)
    return memoryview(ffi.buffer(p, length))
