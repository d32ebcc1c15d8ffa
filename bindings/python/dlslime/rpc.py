"""SlimeRPC: typed remote calls over dlslime endpoints (the original's public names).

::

    from dlslime.rpc import method, proxy, serve

    class Calc:
        @method
        def add(self, a, b=0):
            return a + b

        @method(raw=True)
        def echo(self, channel, ptr, nbytes):        # server side of a raw method
            return ctypes.string_at(ptr, nbytes)

    # server process                               # client process
    serve(agent, Calc(), "client")                  p = proxy(agent, "server", Calc)
                                                    p.add(1, b=2).wait()     # -> 3

``agent`` is a :class:`dlslime.PeerAgent` connected to the peer, or a connected
:class:`dlslime.Endpoint` (then ``peer`` is omitted: ``proxy(ep, Calc)``,
``serve(ep, Calc())``). On shared memory call :func:`prepare` on the endpoint *before*
``connect`` so the session's buffers are mapped by the peer (one memcpy per message).

Wire: the Rust core's session (``dlslime_rpc_*`` in the C ABI): slots of a mailbox per
direction, the 16-byte header ``{tag, total_len, request_id}``, tags by sorted method
name, typed arguments and results in the session's serializer, JSON
``{"type","message","traceback"}`` for exceptions. Payloads larger than a slot take the
bulk path (no 16 MB cap).

Serializers (``serializer=`` on :func:`proxy`, :func:`serve`, :func:`serve_once`; both
sides must agree): ``"pickle"`` (the original's, the default), ``"json"`` and
``"msgpack"`` (``pip install dlslime[msgpack]``). **Pickle executes code while it
decodes**: a pickle server runs whatever its connected client sends, and a pickle
client whatever its server answers. The endpoint accepts requests only from the peer it
was connected to (authenticated by the transport), so pickle is as safe as that peer;
with any other peer use ``"json"`` or ``"msgpack"``, and refuse pickle entirely with
``allow_pickle=False`` or ``DLSLIME_RPC_ALLOW_PICKLE=0`` (then the default serializer is
``"json"``, and asking for pickle is an error). ``DLSLIME_RPC_SERIALIZER`` sets the
default serializer.

Fixes over the original: a typed method returning ``None`` works; keyword arguments
work; :class:`RemoteRpcError` has ``type_name``, ``message`` and ``remote_traceback``;
``wait(timeout)`` times out in every mode; ``serve()`` returns when the peer closes or
dies; calls in both directions over one pair are safe.
"""

from __future__ import annotations

import ctypes
import inspect
import json
import os
import pickle
import sys
import threading
import traceback as _tb
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ._core import _OK, _TIMEOUT, Endpoint, _as_buffer, _last_error, _timeout_ms, ffi, lib
from ._errors import error_class

__all__ = [
    "method", "proxy", "serve", "serve_once", "wait_all", "prepare", "Session",
    "RpcError", "RemoteRpcError", "RpcTimeoutError", "SoftRnrMonitor", "SERIALIZERS",
]

# The wire format (header, flag bits, slot limits) lives in the Rust core only
# (src/rpc/wire.rs); the library checks the options and reports its limits.
DEFAULT_BUFFER_SIZE = 32_000_000
DEFAULT_MAX_INFLIGHT = 16
# The largest slot (bytes, the 16-byte header included): a 64 KiB message travels inside
# a slot; larger ones take the bulk path. The Rust default (DEFAULT_SLOT_SIZE).
SLOT_SIZE_CAP = (64 << 10) + 64
# wait(None) waits at most this long (seconds): every wait has a deadline.
DEFAULT_WAIT = float(os.environ.get("SLIME_RPC_DEFAULT_TIMEOUT", "600"))



# ---------------------------------------------------------------------------- errors


class RpcError(Exception):
    """Any SlimeRPC failure."""


class RpcTimeoutError(RpcError, TimeoutError):
    """A wait ran out of time (the call may still complete later)."""


class RemoteRpcError(RpcError):
    """The remote handler raised. ``type_name``, ``message`` and ``remote_traceback``
    (also ``traceback``) describe the remote exception; ``str()`` is
    ``"Type: message"`` followed by the remote traceback."""

    def __init__(self, message: str, *, type_name: Optional[str] = None,
                 traceback: Optional[str] = None) -> None:
        self.type_name = type_name
        self.message = message
        self.remote_traceback = traceback
        self.traceback = traceback
        super().__init__(f"{type_name}: {message}" if type_name else message)

    def __str__(self) -> str:
        s = self.args[0] if self.args else ""
        if self.remote_traceback:
            s += "\n--- remote traceback ---\n" + self.remote_traceback
        return s


def _fail(status: int, what: str):
    """The exception for a C status: a timeout, the session gone, or another RpcError."""
    text = f"{what}: {_last_error()}"
    if status == _TIMEOUT:
        return RpcTimeoutError(text)
    e = RpcError(text)
    e.status = status
    e.__cause__ = error_class(status)(text, status)
    return e


def _check(status: int, what: str) -> None:
    if status != _OK:
        raise _fail(status, what)


# ----------------------------------------------------------------------- serializers


class _Serializer:
    """How typed calls encode ``(args, kwargs)`` and results."""

    def __init__(self, name: str, dumps: Callable[[Any], bytes], loads: Callable[[bytes], Any],
                 call_dumps: Callable[[tuple, dict], bytes],
                 call_loads: Callable[[bytes], Tuple[tuple, dict]]) -> None:
        self.name = name
        self.dumps = dumps
        self.loads = loads
        self.call_dumps = call_dumps
        self.call_loads = call_loads


def _pickle() -> _Serializer:
    proto = pickle.HIGHEST_PROTOCOL
    return _Serializer("pickle", lambda v: pickle.dumps(v, proto), pickle.loads,
                       lambda a, k: pickle.dumps((a, k), proto), pickle.loads)


def _call_from(name: str, v: Any) -> Tuple[tuple, dict]:
    if isinstance(v, dict):
        args, kwargs = v.get("args", []), v.get("kwargs", {})
    elif isinstance(v, (list, tuple)) and len(v) == 2:
        args, kwargs = v
    else:
        raise RpcError(f"the request is not a {name} call (args, kwargs)")
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise RpcError(f"the request is not a {name} call (args, kwargs)")
    return tuple(args), kwargs


def _json() -> _Serializer:
    def dumps(v: Any) -> bytes:
        return json.dumps(v, separators=(",", ":")).encode("utf-8")

    def loads(b: bytes) -> Any:
        return json.loads(bytes(b).decode("utf-8"))

    return _Serializer("json", dumps, loads,
                       lambda a, k: dumps({"args": list(a), "kwargs": k}),
                       lambda b: _call_from("json", loads(b)))


def _msgpack() -> _Serializer:
    try:
        import msgpack  # type: ignore
    except ImportError:
        raise RpcError("serializer='msgpack' needs the msgpack package: pip install dlslime[msgpack]") from None

    def dumps(v: Any) -> bytes:
        return msgpack.packb(v, use_bin_type=True)

    def loads(b: bytes) -> Any:
        return msgpack.unpackb(bytes(b), raw=False)

    return _Serializer("msgpack", dumps, loads,
                       lambda a, k: dumps([list(a), k]),
                       lambda b: _call_from("msgpack", loads(b)))


SERIALIZERS = ("pickle", "json", "msgpack")
_MAKERS = {"pickle": _pickle, "json": _json, "msgpack": _msgpack}


def _pickle_allowed(allow_pickle: Optional[bool]) -> bool:
    if allow_pickle is not None:
        return bool(allow_pickle)
    return os.environ.get("DLSLIME_RPC_ALLOW_PICKLE", "1").strip().lower() not in ("0", "false", "no", "off")


def _serializer(name: Optional[str], allow_pickle: Optional[bool]) -> _Serializer:
    """The serializer asked for; the default is ``DLSLIME_RPC_SERIALIZER``, else pickle
    (json when pickle is not allowed). Asking for pickle where it is refused is an
    error, never a silent fallback."""
    allowed = _pickle_allowed(allow_pickle)
    if name is None:
        name = os.environ.get("DLSLIME_RPC_SERIALIZER") or ("pickle" if allowed else "json")
    if name not in _MAKERS:
        raise ValueError(f"unknown serializer {name!r}; choose one of {SERIALIZERS}")
    if name == "pickle" and not allowed:
        raise RpcError("pickle is refused here (allow_pickle=False or DLSLIME_RPC_ALLOW_PICKLE=0): "
                       "pass serializer='json' or 'msgpack'")
    return _MAKERS[name]()


# -------------------------------------------------------------------------- registry


def method(fn: Optional[Callable] = None, *, streaming: bool = False, raw: bool = False,
           parallel: bool = False, inplace: bool = False, in_request: bool = False):
    """Marks a service method. ``raw``: bytes in, bytes out (server signature
    ``fn(self, channel, ptr, nbytes)``); ``inplace`` (with ``raw``): the server writes
    the reply in place, ``fn(self, req_ptr, req_nbytes, resp_ptr, resp_cap) -> nbytes``,
    and the client passes ``writer(send_ptr, send_cap) -> nbytes``; ``parallel``: the
    handler may run concurrently with others (no service lock); ``in_request`` (with
    ``inplace``, an extension): the handler's reply buffer *is* the request buffer
    (``resp_ptr == req_ptr``, ``resp_cap == req_nbytes``), so a handler that transforms
    its input in place (an echo: ``memmove`` to itself) answers without a copy, and a
    bulk payload is sent back from where it lies. ``streaming`` is accepted and ignored,
    as in the original."""
    if inplace and not raw:
        raise ValueError("@method(inplace=True) requires raw=True")
    if in_request and not inplace:
        raise ValueError("@method(in_request=True) requires inplace=True")

    def mark(f: Callable) -> Callable:
        f._slime_rpc = {"streaming": streaming, "raw": raw, "parallel": parallel, "inplace": inplace}
        if in_request:
            f._slime_rpc["in_request"] = True
        return f

    return mark(fn) if fn is not None else mark


class MethodRegistry:
    """The marked methods of a class, tagged 0..n-1 in sorted name order."""

    def __init__(self, cls: type) -> None:
        if not isinstance(cls, type):
            cls = type(cls)
        found = [(n, f) for n, f in inspect.getmembers(cls, inspect.isfunction) if hasattr(f, "_slime_rpc")]
        found.sort(key=lambda x: x[0])
        self.cls = cls
        self.names = [n for n, _ in found]
        self.by_name = {n: (i, f, f._slime_rpc) for i, (n, f) in enumerate(found)}
        self.by_tag = [(n, f, f._slime_rpc) for n, f in found]


# --------------------------------------------------------------------------- session

_WRITER = "int64_t(void *, uint8_t *, size_t)"


def _rpc_knobs(owner: Any) -> Tuple[int, int]:
    """(buffer size, max in-flight) from the agent/endpoint attributes and environment."""
    size = getattr(owner, "_rpc_buffer_size", None) or DEFAULT_BUFFER_SIZE
    inflight = getattr(owner, "_rpc_max_inflight", None)
    if inflight is None:
        env = os.environ.get("SLIME_RPC_MAX_INFLIGHT")
        inflight = int(env) if env else DEFAULT_MAX_INFLIGHT
    inflight = max(1, int(inflight))
    size = int(size)
    if size < 64:
        raise ValueError(f"_rpc_buffer_size must be >= 64, got {size}")
    return size, inflight


def _options(buffer_size: int, max_inflight: int, arena: bool, progress: Optional[str],
             spin_us: Optional[int], default_timeout: Optional[float]):
    o = ffi.new("dlslime_rpc_options_t *")
    lib.dlslime_rpc_options_init(o)
    slot = min(buffer_size, SLOT_SIZE_CAP)
    o.slot_size = slot
    o.slot_count = max_inflight
    o.progress = {"auto": 0, None: 0, "inline": 1, "pump": 2}[progress]
    if spin_us:
        o.spin_us = int(spin_us)
    if default_timeout:
        o.default_timeout_ms = _timeout_ms(default_timeout)
    o.bulk_arena = buffer_size if (arena and buffer_size > slot) else 0
    return o


_PREPARED: Dict[int, Any] = {}
_SESSIONS: Dict[Any, "Session"] = {}
_SESSIONS_LOCK = threading.Lock()
# One creation lock per session key (see _session_for).
_MAKING: Dict[Any, threading.Lock] = {}


def _closed_owner(owner: Any) -> bool:
    """An endpoint or agent that was closed (its handle is released)."""
    return getattr(owner, "_ptr", ffi.NULL) == ffi.NULL


def _prune() -> None:
    """Forgets the cached sessions and prepared memory of closed endpoints and agents, and
    closed sessions: they hold the owner, the session's thread and its memory (the soak
    run saw 6 fds and 2 threads kept per closed endpoint). Called under _SESSIONS_LOCK."""
    for k in [k for k, s in _SESSIONS.items() if _closed_owner(s._owner) or s.closed]:
        _SESSIONS.pop(k).close()
    for k in [k for k, p in _PREPARED.items() if _closed_owner(p[3])]:
        del _PREPARED[k]


def prepare(endpoint: Any, peer: Optional[str] = None, *, buffer_size: Optional[int] = None,
            max_inflight: Optional[int] = None) -> None:
    """Allocates the RPC session memory now, before the connection is made: for a
    connected-later :class:`dlslime.Endpoint` call it before ``connect()``; for a
    :class:`dlslime.PeerAgent` call ``prepare(agent, peer)`` before
    ``agent.connect_to(peer)``. On shared memory the peer then maps it, so messages and
    bulk payloads up to ``buffer_size`` are a single memcpy. The session made later for
    that endpoint / (agent, peer) uses it. Knobs default to the object's
    ``_rpc_buffer_size`` / ``_rpc_max_inflight`` attributes and
    ``SLIME_RPC_MAX_INFLIGHT``."""
    size, inflight = _rpc_knobs(endpoint)
    size = buffer_size or size
    inflight = max_inflight or inflight
    o = _options(size, inflight, True, None, None, None)
    out = ffi.new("dlslime_rpc_memory_t **")
    if isinstance(endpoint, Endpoint):
        _check(lib.dlslime_rpc_memory_new(endpoint.get_pool()._handle(), o, out), "prepare")
        key = ("ep", id(endpoint))
    else:
        if peer is None:
            raise TypeError("prepare(agent, peer): name the peer the session will talk to")
        _check(lib.dlslime_rpc_memory_new_peer(endpoint._h(), o, out), "prepare")
        key = ("agent", id(endpoint), peer)
    with _SESSIONS_LOCK:
        _prune()
        _PREPARED[key] = (ffi.gc(out[0], lib.dlslime_rpc_memory_free), size, inflight, endpoint)


class Session:
    """One side of an RPC connection (the C session). Thread-safe. Creating it blocks
    until the peer creates its session too. Usually made by :func:`proxy` /
    :func:`serve`; use it directly for raw tag-level calls::

        s = Session(endpoint)
        f = s.call(0, b"payload"); f.wait()
    """

    def __init__(self, endpoint: Any = None, peer: Optional[str] = None, *,
                 buffer_size: Optional[int] = None, max_inflight: Optional[int] = None,
                 progress: Optional[str] = None, spin_us: Optional[int] = None,
                 default_timeout: Optional[float] = None) -> None:
        self._ptr = ffi.NULL
        owner = endpoint
        size, inflight = _rpc_knobs(owner)
        size = buffer_size or size
        inflight = max_inflight or inflight
        mem = ffi.NULL
        key = ("ep", id(endpoint)) if peer is None else ("agent", id(endpoint), peer)
        prepared = _PREPARED.get(key)
        if prepared is not None and prepared[3] is endpoint:
            mem, size, inflight = prepared[0], prepared[1], prepared[2]
        o = _options(size, inflight, mem != ffi.NULL, progress, spin_us, default_timeout)
        out = ffi.new("dlslime_rpc_session_t **")
        if peer is None:
            if not isinstance(endpoint, Endpoint):
                raise TypeError("Session(endpoint) needs a connected dlslime.Endpoint, or (agent, peer)")
            st = lib.dlslime_rpc_session_new(endpoint._handle(), mem, o, out)
        else:
            st = lib.dlslime_rpc_session_new_peer(endpoint._h(), peer.encode(), mem, o, out)
        _check(st, "RPC session")
        self._ptr = out[0]
        self._owner = endpoint
        self.peer = peer
        self.slot_count = inflight
        self.slot_size = o.slot_size
        self.payload_capacity = lib.dlslime_rpc_session_slot_capacity(self._ptr)
        self._outp = threading.local()

    # -- client ------------------------------------------------------------------

    def set_method_names(self, names: Sequence[str]) -> None:
        """Names this session's calls in :func:`dlslime.obs_snapshot`'s ``rpc`` rows:
        ``names[i]`` is method ``i``'s (the service's names in sorted order, as
        :func:`proxy` passes them); unnamed tags show as ``tag:N``."""
        enc = [ffi.new("char[]", n.encode()) for n in names]
        arr = ffi.new("const char *[]", enc) if enc else ffi.NULL
        _check(lib.dlslime_rpc_session_set_method_names(self._h(), arr, len(enc)), "set_method_names")

    def _outs(self):
        t = self._outp
        try:
            return t.call, t.data, t.len
        except AttributeError:
            t.call = ffi.new("dlslime_rpc_call_t **")
            t.data = ffi.new("const uint8_t **")
            t.len = ffi.new("size_t *")
            return t.call, t.data, t.len

    def call(self, tag: int, payload: Any = b"", *, decode: Optional[Callable] = None,
             name: str = "", timeout: Optional[float] = None) -> "RpcFuture":
        """Sends ``payload`` (any bytes-like object) to method ``tag``. While every slot
        is in flight it waits for one at most ``timeout`` seconds (default: the session's
        ``default_timeout``), then raises :class:`RpcTimeoutError`. A reply frees its slot
        when it arrives, so futures may be held in any number."""
        out, _, _ = self._outs()
        n = len(payload) if isinstance(payload, (bytes, bytearray)) else memoryview(payload).nbytes
        buf = payload if isinstance(payload, bytes) else _as_buffer(payload, False, "payload")
        st = lib.dlslime_rpc_call_timeout(self._h(), tag, buf, n, _timeout_ms(timeout), out)
        if st != _OK:
            raise _fail(st, f"RPC call {name or tag}")
        return RpcFuture(self, out[0], decode, name or str(tag))

    def call_inplace(self, tag: int, writer: Callable[[int, int], int], *,
                     max_len: Optional[int] = None, decode: Optional[Callable] = None,
                     name: str = "", timeout: Optional[float] = None) -> "RpcFuture":
        """Sends a payload that ``writer(send_ptr, send_cap) -> nbytes`` builds in place
        (``send_cap`` = ``max_len``, default the slot's payload capacity). ``timeout``:
        as for :meth:`call`."""
        cap = self.payload_capacity if max_len is None else int(max_len)
        err: List[BaseException] = []

        def cb(_user, buf, n):
            try:
                k = writer(int(ffi.cast("uintptr_t", buf)), n)
            except BaseException as e:  # reported after the C call returns
                err.append(e)
                return -1
            if k is None or k < 0:
                err.append(RpcError("call_inplace: writer returned negative byte count"))
                return -1
            if k > n:
                err.append(RpcError("call_inplace: writer overflowed send capacity"))
                return -1
            return k

        c = ffi.callback(_WRITER, cb)
        out, _, _ = self._outs()
        st = lib.dlslime_rpc_call_inplace_timeout(self._h(), tag, cap, c, ffi.NULL,
                                                  _timeout_ms(timeout), out)
        if err:
            raise err[0]
        if st != _OK:
            raise _fail(st, f"RPC call {name or tag}")
        return RpcFuture(self, out[0], decode, name or str(tag))

    # -- server ------------------------------------------------------------------

    def poll_request(self, timeout: Optional[float] = None) -> Optional["Request"]:
        """The next request; ``None`` when ``timeout`` passed. Raises :class:`RpcError`
        (``.status`` ``lib.DLSLIME_STATUS_SHUT_DOWN`` closed /
        ``lib.DLSLIME_STATUS_PEER_DISCONNECTED`` peer gone) when the session ended."""
        out = ffi.new("dlslime_rpc_request_t **")
        st = lib.dlslime_rpc_poll_request(self._h(), _timeout_ms(timeout), out)
        if st == _TIMEOUT:
            return None
        _check(st, "poll_request")
        return Request(self, out[0])

    # -- lifecycle ---------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._ptr == ffi.NULL or bool(lib.dlslime_rpc_session_closed(self._ptr))

    def _h(self):
        if self._ptr == ffi.NULL:
            raise RpcError("RPC session closed")
        return self._ptr

    def close(self) -> None:
        """Closes the session (the peer's serve() ends, pending calls fail)."""
        if self._ptr != ffi.NULL:
            lib.dlslime_rpc_session_close(self._ptr)

    def __del__(self):
        p, self._ptr = getattr(self, "_ptr", ffi.NULL), ffi.NULL
        if p != ffi.NULL:
            try:
                lib.dlslime_rpc_session_free(p)
            except Exception:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# The original's name for the per-(agent, peer) transport object.
Channel = Session


class RpcFuture:
    """The result of one call. ``wait(timeout)`` returns the result (typed methods: the
    unpickled value; raw: ``bytes``), raises :class:`RemoteRpcError` for a remote
    exception and :class:`RpcTimeoutError` when ``timeout`` passes (then it may be
    waited again)."""

    __slots__ = ("_s", "_c", "_decode", "_name", "_done", "_value", "_error")

    def __init__(self, session: Session, c, decode, name: str) -> None:
        self._s = session
        self._c = c
        self._decode = decode
        self._name = name
        self._done = False
        self._value = None
        self._error = None

    def done(self) -> bool:
        return self._done or bool(lib.dlslime_rpc_call_done(self._c))

    def wait(self, timeout: Optional[float] = None) -> Any:
        if not self._done:
            self._finish(timeout)
        if self._error is not None:
            raise self._error
        return self._value

    result = wait

    def _finish(self, timeout: Optional[float]) -> None:
        c = self._c
        st = lib.dlslime_rpc_call_wait(c, _timeout_ms(DEFAULT_WAIT if timeout is None else timeout))
        if st == _TIMEOUT:
            raise RpcTimeoutError(f"RPC {self._name!r} timed out after {timeout if timeout is not None else DEFAULT_WAIT}s")
        self._done = True
        self._c = None
        try:
            if st != _OK:
                self._error = _fail(st, f"RPC {self._name!r}")
                return
            _, data, n = self._s._outs()
            lib.dlslime_rpc_call_reply(c, data, n)
            raw = ffi.buffer(data[0], n[0])[:] if n[0] else b""
            if lib.dlslime_rpc_call_is_exception(c):
                self._error = _remote_error(raw)
                return
            if self._decode is not None:
                try:
                    self._value = self._decode(raw)
                except Exception as e:
                    self._error = RpcError(f"RPC {self._name!r}: cannot decode the reply: {e!r}")
            else:
                self._value = raw
        finally:
            lib.dlslime_rpc_call_free(c)

    def __del__(self):
        c = self._c
        if c is not None:
            self._c = None
            try:
                lib.dlslime_rpc_call_free(c)  # detaches a pending call
            except Exception:
                pass


def _remote_error(raw: bytes) -> RemoteRpcError:
    try:
        info = json.loads(raw.decode("utf-8"))
    except Exception as e:
        return RemoteRpcError(f"<failed to decode remote exception: {e}>")
    if not isinstance(info, dict):
        return RemoteRpcError(str(info))
    return RemoteRpcError(info.get("message", ""), type_name=info.get("type") or None,
                          traceback=info.get("traceback") or None)


def wait_all(futures, timeout: Optional[float] = None) -> list:
    """``[f.wait(timeout) for f in futures]`` (the timeout applies per future)."""
    return [f.wait(timeout) for f in futures]


class Request:
    """A request the server side received (answer it once)."""

    __slots__ = ("_s", "_r", "tag", "request_id")

    def __init__(self, session: Session, r) -> None:
        self._s = session
        self._r = r
        self.tag = lib.dlslime_rpc_request_tag(r)
        self.request_id = lib.dlslime_rpc_request_id(r)

    def payload(self) -> Tuple[int, int]:
        """(address, length) of the payload (valid until answered)."""
        _, data, n = self._s._outs()
        _check(lib.dlslime_rpc_request_payload(self._r, data, n), "request payload")
        return int(ffi.cast("uintptr_t", data[0])), n[0]

    def reply(self, data: Any) -> None:
        n = len(data) if isinstance(data, (bytes, bytearray)) else memoryview(data).nbytes
        buf = data if isinstance(data, bytes) else _as_buffer(data, False, "reply")
        _check(lib.dlslime_rpc_request_reply(self._r, buf, n), "post_reply")

    def reply_inplace(self, max_len: int, writer: Callable[[int, int], int]) -> None:
        err: List[BaseException] = []

        def cb(_user, buf, n):
            try:
                k = writer(int(ffi.cast("uintptr_t", buf)), n)
            except BaseException as e:
                err.append(e)
                return -1
            if k is None or k < 0 or k > n:
                err.append(RpcError(f"inplace handler returned {k!r} for a {n}-byte buffer"))
                return -1
            return k

        c = ffi.callback(_WRITER, cb)
        st = lib.dlslime_rpc_request_reply_inplace(self._r, max_len, c, ffi.NULL)
        if err:
            raise err[0]
        _check(st, "post_reply_inplace")

    def reply_error(self, type_name: str, message: str, traceback: str = "") -> None:
        _check(lib.dlslime_rpc_request_reply_error(self._r, type_name.encode(), message.encode("utf-8", "replace"),
                                                   traceback.encode("utf-8", "replace")), "reply_error")

    def free(self) -> None:
        r, self._r = self._r, None
        if r is not None:
            lib.dlslime_rpc_request_free(r)

    def __del__(self):
        try:
            self.free()
        except Exception:
            pass


# -------------------------------------------------------------------- proxy / serve


def _session_for(agent: Any, peer: Optional[str]) -> Session:
    """The cached session for (agent, peer) or a connected endpoint; made on first use
    (blocks until the peer makes its own)."""
    if isinstance(agent, Session):
        return agent
    if isinstance(agent, Endpoint):
        peer = None
        key = ("ep", id(agent))
    else:
        if peer is None:
            conns = agent.get_connections()
            live = [p for p, cs in conns.items() if any(c.is_connected() for c in cs.values())]
            if len(live) != 1:
                raise ValueError(f"serve() with peer=None requires exactly 1 connected peer, got {len(live)}: "
                                 f"{sorted(live)}.  Pass peer=... explicitly.")
            peer = live[0]
        key = ("agent", id(agent), peer)
    with _SESSIONS_LOCK:
        _prune()
        s = _SESSIONS.get(key)
        if s is not None and s._owner is agent and not s.closed:
            return s
        making = _MAKING.setdefault(key, threading.Lock())
    # Creating a session blocks until the peer creates its own (a handshake), so only
    # this (agent, peer) waits here: a process-wide lock held across the handshake
    # would stop the peer agent of the same process from making its half.
    with making:
        with _SESSIONS_LOCK:
            s = _SESSIONS.get(key)
            if s is not None and s._owner is agent and not s.closed:
                return s
        s = Session(agent, peer)
        with _SESSIONS_LOCK:
            _SESSIONS[key] = s
        return s


class _Proxy:
    def __init__(self, session: Session, registry: MethodRegistry, ser: _Serializer) -> None:
        self._session = session
        self._registry = registry
        self._ser = ser
        # the client's per-method counters show these names instead of ``tag:N``
        session.set_method_names(registry.names)
        for name, (tag, fn, flags) in registry.by_name.items():
            setattr(self, name, self._make(name, tag, fn, flags))

    def _make(self, name: str, tag: int, fn: Callable, flags: dict) -> Callable:
        s = self._session
        if flags["inplace"]:
            def call(writer, max_len=None):
                return s.call_inplace(tag, writer, max_len=max_len, name=name)
        elif flags["raw"]:
            def call(data):
                return s.call(tag, data, name=name)
        else:
            dumps, loads = self._ser.call_dumps, self._ser.loads

            def call(*args, **kwargs):
                return s.call(tag, dumps(args, kwargs), decode=loads, name=name)
        call.__name__ = name
        call.__doc__ = fn.__doc__
        return call

    def __getattr__(self, name: str):
        raise AttributeError(f"No RPC method {name!r}. Available: {self._registry.names}")


def proxy(agent: Any, peer_alias: Any = None, service_cls: Optional[type] = None, *,
          serializer: Optional[str] = None, allow_pickle: Optional[bool] = None) -> _Proxy:
    """A client for ``service_cls`` on ``peer_alias`` through ``agent`` (a connected
    :class:`dlslime.PeerAgent`), or through a connected endpoint: ``proxy(ep, Cls)``.
    Each method call returns an :class:`RpcFuture`. Blocks until the peer has created
    its session (``serve``/``proxy`` on its side). ``serializer``/``allow_pickle``: see
    the module documentation (the server must use the same serializer)."""
    if service_cls is None and isinstance(peer_alias, type):
        peer_alias, service_cls = None, peer_alias
    if service_cls is None:
        raise TypeError("proxy(agent, peer_alias, service_cls)")
    ser = _serializer(serializer, allow_pickle)
    return _Proxy(_session_for(agent, peer_alias), MethodRegistry(service_cls), ser)


def _exc_reply(req: Request, e: BaseException) -> None:
    tb = "".join(_tb.format_exception(type(e), e, e.__traceback__))
    req.reply_error(type(e).__name__, str(e), tb)


def _dispatch(svc: Any, session: Session, registry: MethodRegistry, req: Request,
              lock: threading.Lock, ser: _Serializer) -> None:
    try:
        entry = registry.by_tag[req.tag] if req.tag < len(registry.by_tag) else None
        if entry is None:
            req.reply_error("RuntimeError", f"Unknown RPC tag {req.tag} on remote service")
            return
        name, fn, flags = entry
        guard = _NOLOCK if flags["parallel"] else lock
        ptr, n = req.payload()
        try:
            with guard:
                if flags.get("in_request"):
                    k = fn(svc, ptr, n, ptr, n)
                    if k is None or k < 0 or k > n:
                        raise RpcError(f"inplace handler returned {k!r} for a {n}-byte buffer")
                    _check(lib.dlslime_rpc_request_reply_from_payload(req._r, k), "post_reply")
                    return
                if flags["inplace"]:
                    cap = max(session.payload_capacity, n)

                    def writer(resp_ptr, resp_cap):
                        return fn(svc, ptr, n, resp_ptr, resp_cap)

                    req.reply_inplace(cap, writer)
                    return
                if flags["raw"]:
                    out = fn(svc, session, ptr, n)
                    if out is None:
                        out = b""
                    elif not isinstance(out, (bytes, bytearray, memoryview)):
                        out = ser.dumps(out)
                else:
                    try:
                        args, kwargs = ser.call_loads(ctypes.string_at(ptr, n))
                    except RpcError:
                        raise
                    except Exception as e:
                        raise RpcError(f"cannot decode the request as {ser.name}: {e}") from None
                    result = fn(svc, *args, **kwargs)
                    out = ser.dumps(result)
        except Exception as e:  # the handler (or pickling its result) failed
            _exc_reply(req, e)
            return
        try:
            req.reply(out)
        except RpcError as e:
            if session.closed:
                return
            # e.g. larger than max_payload: the caller still gets an answer
            try:
                _exc_reply(req, e)
            except RpcError:
                pass
    except RpcError as e:
        if not session.closed:
            print(f"SlimeRPC: could not answer request {req.request_id}: {e}", file=sys.stderr)
    finally:
        req.free()


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


_NOLOCK = _NoLock()
_POLL_SLICE = 1.0


def serve(agent: Any, svc: Any, peer: Optional[str] = None, *, channel: Any = None,
          max_workers: Optional[int] = None, serializer: Optional[str] = None,
          allow_pickle: Optional[bool] = None) -> None:
    """Serves ``svc``'s methods until the session ends: returns when the peer closes its
    session or dies (or this side is closed). ``max_workers`` (else
    ``SLIME_RPC_SERVER_WORKERS``, else 1) handler threads; handlers not marked
    ``parallel`` still run one at a time. ``serializer``/``allow_pickle``: see the module
    documentation; a pickle server executes what its (authenticated) client sends."""
    ser = _serializer(serializer, allow_pickle)
    session = channel if isinstance(channel, Session) else _session_for(agent, peer)
    registry = MethodRegistry(type(svc))
    if max_workers is None:
        max_workers = int(os.environ.get("SLIME_RPC_SERVER_WORKERS", "1") or 1)
    max_workers = max(1, int(max_workers))
    lock = threading.Lock()
    pool = ThreadPoolExecutor(max_workers, "slime-rpc-handler") if max_workers > 1 else None
    try:
        while True:
            try:
                req = session.poll_request(_POLL_SLICE)
            except RpcError:
                return  # closed here, or the peer closed/died
            if req is None:
                continue
            if pool is None:
                _dispatch(svc, session, registry, req, lock, ser)
            else:
                pool.submit(_dispatch, svc, session, registry, req, lock, ser)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)


def serve_once(agent: Any, svc: Any, peer: Optional[str] = None, *, channel: Any = None,
               timeout: Optional[float] = None, serializer: Optional[str] = None,
               allow_pickle: Optional[bool] = None) -> bool:
    """Handles one request inline (waits up to ``timeout``, default the session's);
    returns whether one was handled."""
    ser = _serializer(serializer, allow_pickle)
    session = channel if isinstance(channel, Session) else _session_for(agent, peer)
    req = session.poll_request(timeout)
    if req is None:
        return False
    _dispatch(svc, session, MethodRegistry(type(svc)), req, _NOLOCK, ser)
    return True


# ------------------------------------------------------------------ SoftRnrMonitor


def read_rnr_counter(device: str, port: int = 1, name: str = "out_of_buffer") -> int:
    """An RDMA hardware counter from sysfs, or -1 when it cannot be read."""
    try:
        with open(_counter_path(device, port, name)) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return -1


def _counter_path(device: str, port: int, name: str) -> str:
    return f"/sys/class/infiniband/{device}/ports/{port}/hw_counters/{name}"


# The receive-not-ready counter under other drivers' names, for a NIC that has no
# counter of the asked-for name: mlx5's out_of_buffer (a message found no posted
# receive) is soft-RoCE's send_rnr_err (the responder answered with an RNR NAK).
_RNR_ALIASES = {"out_of_buffer": ("send_rnr_err",)}


class SoftRnrMonitor:
    """Watches an RDMA receive-not-ready counter (default ``out_of_buffer``) in sysfs
    (``/sys/class/infiniband/<dev>/ports/<port>/hw_counters``) on the given devices
    (``"dev"`` or ``"dev:port"``; default: every device under ``/sys/class/infiniband``,
    port 1). A device without a counter of that name uses its driver's equivalent
    (soft-RoCE: ``send_rnr_err``); :attr:`counters` says which file each key reads. A
    counter that cannot be read counts 0. No RDMA device: nothing is watched and every
    delta is empty/0."""

    def __init__(self, devices: Optional[List[str]] = None, counter: str = "out_of_buffer") -> None:
        if devices is None:
            try:
                devices = sorted(os.listdir("/sys/class/infiniband"))
            except OSError:
                devices = []
        self.counter = counter
        self.keys: List[Tuple[str, int]] = []
        self.counters: Dict[str, str] = {}
        for d in devices:
            dev, _, port = d.partition(":")
            p = int(port) if port else 1
            self.keys.append((dev, p))
            name = counter
            if not os.path.exists(_counter_path(dev, p, counter)):
                name = next((a for a in _RNR_ALIASES.get(counter, ()) if os.path.exists(_counter_path(dev, p, a))),
                            counter)
            self.counters[f"{dev}:{p}"] = name
        self.snapshot()

    def _read(self) -> Dict[str, int]:
        return {f"{d}:{p}": read_rnr_counter(d, p, self.counters[f"{d}:{p}"]) for d, p in self.keys}

    def snapshot(self) -> None:
        """Re-baselines every counter."""
        self._base = self._read()

    def delta(self) -> Dict[str, int]:
        """``{"dev:port": increase since the last snapshot}`` (0 where unreadable)."""
        cur = self._read()
        out = {}
        for k, v in cur.items():
            b = self._base.get(k, -1)
            out[k] = 0 if v < 0 or b < 0 else max(0, v - b)
        return out

    def total_delta(self) -> int:
        return sum(self.delta().values())
