"""PeerAgent: NanoCtrl-driven discovery and connection of peers, over the C ABI
(``dlslime_peer_agent_*``). Names follow the original ``dlslime.peer_agent`` API."""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ._core import (_TIMEOUT, _UNSUPPORTED, Future, _Closing, _OrphanKeeper, _as_buffer, _check, _kept_str,
                    _last_error, _raise, _take_string, _timeout_ms, _uint, ffi, lib)
from ._cuda import cuda_device_count, foreign_array, stream_ordered
from ._errors import error_class
from ._lib import enum_values

__all__ = ["PeerAgent", "PeerConnection"]

# The header's enums, as the strings the original API used: "connected", "shm", ...
_STATES = {v: k.lower() for k, v in enum_values("dlslime_peer_conn_state").items()}
_TRANSPORTS = {v: (None if k == "NONE" else k.lower()) for k, v in enum_values("dlslime_peer_transport").items()}


def has_peer_agent() -> bool:
    """Whether the loaded library has the PeerAgent."""
    return hasattr(lib, "dlslime_peer_agent_new")


class PeerConnection:
    """The connection to a peer, from :meth:`PeerAgent.connect_to` (or one the peer
    started, from :meth:`PeerAgent.get_connections`).

    ``conn_id``, ``peer_alias``, ``state`` (``"idle"``, ``"connecting"``,
    ``"connected"``, ``"failed"``, ``"disconnected"``), ``transport`` (``"shm"``,
    ``"tcp"`` or ``"rdma"`` once connected, else ``None``), ``local_nic`` /
    ``remote_nic`` (the transport once connected: there are no NICs on shared memory and
    TCP), ``wait(timeout)``, ``is_connected()``."""

    def __init__(self, agent: "PeerAgent", peer: str, ptr, request: Optional[str] = None) -> None:
        self._agent = agent
        self.peer_alias = peer
        self._ptr = ffi.gc(ptr, lib.dlslime_peer_connection_free)
        req = request or "auto"
        # Stable for the connection's life, in the shape of the original's ids.
        self.conn_id = f"{agent.alias}:{req}:port1->{peer}:{req}:port1#qp1"

    def wait(self, timeout: float = 60.0) -> "PeerConnection":
        """Blocks until connected (returns self), also while a lost connection is
        re-dialled on its own (``state`` is then ``"disconnected"``). Raises :class:`Timeout` (a
        ``TimeoutError``; the message names the time waited, the state and the connected
        peers), :class:`PeerDisconnected`, :class:`Unsupported` (transport mismatch, an
        original DLSlime peer) or the error of the last connect attempt."""
        start = time.monotonic()
        ms = _timeout_ms(timeout)
        out = ffi.new("dlslime_peer_transport_t *")
        while True:  # slices, so Ctrl-C works; the GIL is released in each
            step = min(ms, 200)
            st = lib.dlslime_peer_connection_wait(self._ptr, step, out)
            # the library answers TIMEOUT only while the connection may still come (dialling,
            # or re-dialling a lost one)
            if st == _TIMEOUT and ms > step:
                ms -= step
                continue
            if st == _TIMEOUT:
                # the library's message names the last slice; say how long we waited
                msg = _last_error()
                head = f"Timeout waiting for connection to {self.peer_alias!r} after {time.monotonic() - start:.1f} s"
                _, sep, rest = msg.partition(" (state: ")
                raise error_class(_TIMEOUT)(head + (sep + rest if sep else f": {msg}"), _TIMEOUT)
            _check(st, f"wait for connection to {self.peer_alias!r}")
            return self

    def is_connected(self) -> bool:
        return lib.dlslime_peer_connection_state(self._ptr) == lib.DLSLIME_PEER_CONN_STATE_CONNECTED

    @property
    def state(self) -> str:
        """``"idle"``, ``"connecting"``, ``"connected"``, ``"failed"`` or ``"disconnected"``."""
        return _STATES.get(lib.dlslime_peer_connection_state(self._ptr), "unknown")

    @property
    def transport(self) -> Optional[str]:
        """``"shm"``, ``"tcp"`` or ``"rdma"`` once connected, else ``None``."""
        return _TRANSPORTS.get(lib.dlslime_peer_connection_transport(self._ptr))

    local_nic = transport
    remote_nic = transport

    def __repr__(self) -> str:
        return f"<dlslime.PeerConnection {self.conn_id} {self.state}>"


def _url_list(name: str, v: Union[str, Sequence[str]]) -> str:
    """One URL, or several as a list or a comma-separated string, as the C ABI's
    comma-separated string."""
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple)) and v and all(isinstance(u, str) and u and "," not in u for u in v):
        return ",".join(v)
    raise TypeError(f"{name} must be a str or a non-empty list of str, not {v!r}")


_NamedAssignment = Union[Tuple[str, int, int, int], Tuple[str, str, int, int, int]]


class PeerAgent(_OrphanKeeper, _Closing):
    """Registers with NanoCtrl and connects to peers by alias (through the Redis stream
    mailbox), choosing the transport (shared memory on one host, RDMA between hosts when
    both agents have an active NIC port, TCP otherwise).

    ``PeerAgent(nanoctrl_url="http://127.0.0.1:3000", alias=None, device=None,
    scope=None, *, token=None, ib_port=1, redis_url=None, advertise_host=None,
    heartbeat_interval=None, default_timeout=None, http_timeout=None,
    register_attempts=0, connect_attempts=0, ctrl_url=None)``; times in seconds.
    ``device`` is the agent's RDMA NIC (``None``: the first visible one whose port
    ``ib_port`` is ACTIVE, or no RDMA); a named device that cannot be used raises
    :class:`RdmaUnavailable`. ``ctrl_url`` is the 0.1.23 name of ``nanoctrl_url``.

    ``nanoctrl_url`` is one URL, a list of NanoCtrl replicas (``["http://a:3000",
    "http://b:3000"]``) or the same as a comma-separated string: a replica that does not
    answer is skipped. ``token`` is NanoCtrl's bearer token (default:
    ``$NANOCTRL_TOKEN``). ``redis_url`` overrides the Redis address NanoCtrl hands out
    (with credentials, ``redis://user:password@host:port``; a list or comma-separated
    string for a primary and its replicas).
    """

    def __init__(self, nanoctrl_url: Union[str, Sequence[str], None] = None,
                 alias: Optional[str] = None, device: Optional[str] = None,
                 scope: Optional[str] = None, *, token: Optional[str] = None, ib_port: int = 1,
                 redis_url: Union[str, Sequence[str], None] = None,
                 advertise_host: Optional[str] = None,
                 heartbeat_interval: Optional[float] = None, default_timeout: Optional[float] = None,
                 http_timeout: Optional[float] = None, register_attempts: int = 0,
                 connect_attempts: int = 0, ctrl_url: Optional[str] = None) -> None:
        self._ptr = ffi.NULL
        self._init_orphans()
        if nanoctrl_url is not None and ctrl_url is not None and nanoctrl_url != ctrl_url:
            raise TypeError("pass nanoctrl_url or ctrl_url (the 0.1.23 name), not both")
        if nanoctrl_url is None or nanoctrl_url == "":
            nanoctrl_url = ctrl_url or "http://127.0.0.1:3000"
        if not has_peer_agent():
            raise error_class(_UNSUPPORTED)("this libdlslime has no PeerAgent", _UNSUPPORTED)
        nanoctrl_url = _url_list("nanoctrl_url", nanoctrl_url)
        if redis_url is not None:
            redis_url = _url_list("redis_url", redis_url)
        for n, v in (("alias", alias), ("scope", scope), ("token", token), ("device", device),
                     ("advertise_host", advertise_host)):
            if v is not None and not isinstance(v, str):
                raise TypeError(f"{n} must be a str or None, not {type(v).__name__}")
        o = ffi.new("dlslime_peer_options_t *")
        lib.dlslime_peer_options_init(o)
        keep = []
        if redis_url is not None:
            o.redis_url = _kept_str(keep, redis_url)
        if advertise_host is not None:
            o.advertise_host = _kept_str(keep, advertise_host)
        if token is not None:
            o.nanoctrl_token = _kept_str(keep, token)
        if device:
            o.rdma_device = _kept_str(keep, device)
        o.rdma_ib_port = _uint(ib_port, "ib_port")
        o.heartbeat_interval_ms = _timeout_ms(heartbeat_interval)
        o.default_timeout_ms = _timeout_ms(default_timeout)
        o.http_timeout_ms = _timeout_ms(http_timeout)
        o.register_attempts = _uint(register_attempts, "register_attempts")
        o.connect_attempts = _uint(connect_attempts, "connect_attempts")
        out = ffi.new("dlslime_peer_agent_t **")
        _check(lib.dlslime_peer_agent_new(nanoctrl_url.encode(), alias.encode() if alias is not None else ffi.NULL,
                                          scope.encode() if scope is not None else ffi.NULL, o, out),
               "PeerAgent")
        self._ptr = out[0]
        self.nanoctrl_url = nanoctrl_url
        self._keep: dict = {}  # region name -> buffer kept alive while registered
        self._lock = threading.Lock()
        self._conns: dict = {}
        s = ffi.new("char **")
        _check(lib.dlslime_peer_agent_alias(self._ptr, s), "alias")
        self.alias: str = _take_string(s)

    def _h(self):
        if self._ptr == ffi.NULL:
            raise ValueError("PeerAgent is closed")
        return self._ptr

    def list_agents(self) -> List[str]:
        """The aliases registered in this agent's scope."""
        s = ffi.new("char **")
        _check(lib.dlslime_peer_agent_list_agents(self._h(), s), "list_agents")
        return sorted(json.loads(_take_string(s)))

    def connect_to(self, peer: str, transport: Optional[str] = None, local_device: Optional[str] = None,
                   peer_device: Optional[str] = None, ib_port: Optional[int] = None, qp_num: int = 1,
                   **_ignored: Any) -> PeerConnection:
        """Starts (or reuses) the connection to ``peer``; does not block (call
        ``.wait()``). ``transport``: ``None``/``"auto"`` (shared memory on one host, RDMA
        between hosts when both agents have an active NIC port, TCP otherwise),
        ``"shm"``, ``"tcp"`` or ``"rdma"``. ``qp_num``: RDMA data QPs (the connection
        uses the larger of the two sides' values). ``local_device``/``ib_port``, when
        given, must be the agent's NIC port (one agent registers its memory with one
        NIC); ``peer_device`` is the peer agent's own choice and is ignored here, as are
        the original's other keywords (``min_bw``)."""
        if not isinstance(peer, str) or not peer:
            raise TypeError("peer must be a non-empty str")
        if transport is not None and not isinstance(transport, str):
            raise TypeError("transport must be a str or None")
        if local_device is not None and not isinstance(local_device, str):
            raise TypeError("local_device must be a str or None")
        o = ffi.new("dlslime_peer_connect_options_t *")
        lib.dlslime_peer_connect_options_init(o)
        keep = []
        if transport:
            o.transport = _kept_str(keep, transport)
        if local_device:
            o.local_device = _kept_str(keep, local_device)
        o.qp_num = _uint(qp_num, "qp_num")
        if o.qp_num == 0:
            raise ValueError("qp_num must be at least 1")
        o.ib_port = 0 if ib_port is None else _uint(ib_port, "ib_port")
        out = ffi.new("dlslime_peer_connection_t **")
        _check(lib.dlslime_peer_agent_connect(self._h(), peer.encode(), o, out), f"connect_to({peer!r})")
        c = PeerConnection(self, peer, out[0], transport)
        with self._lock:
            self._conns[peer] = c
        return c

    def _connection(self, peer: str) -> PeerConnection:
        with self._lock:
            c = self._conns.get(peer)
        if c is None:
            out = ffi.new("dlslime_peer_connection_t **")
            _check(lib.dlslime_peer_agent_connection(self._h(), peer.encode(), out), "connection")
            c = PeerConnection(self, peer, out[0])
            with self._lock:
                c = self._conns.setdefault(peer, c)
        return c

    def get_connections(self) -> Dict[str, Dict[str, PeerConnection]]:
        """``{peer: {conn_id: PeerConnection}}`` (the original's shape) for every peer the
        agent knows: the ones dialled with ``connect_to`` and the ones that dialled it.
        One connection per peer here (the original could have one per NIC pair)."""
        s = ffi.new("char **")
        _check(lib.dlslime_peer_agent_connections(self._h(), s), "get_connections")
        out: Dict[str, Dict[str, PeerConnection]] = {}
        for peer in sorted(json.loads(_take_string(s))):
            c = self._connection(peer)
            out[peer] = {c.conn_id: c}
        return out

    def query_connection(self, peer: str, *, local_nic: Optional[str] = None,
                         remote_nic: Optional[str] = None) -> Optional[PeerConnection]:
        """The connection to ``peer`` (first by ``conn_id``), or ``None``. ``local_nic``
        / ``remote_nic`` select by NIC as in the original; here a connection's "NIC" is
        its transport (``"shm"``, ``"tcp"``), so other names match nothing."""
        for _, c in sorted(self.get_connections().get(peer, {}).items()):
            if local_nic is not None and c.local_nic != local_nic:
                continue
            if remote_nic is not None and c.remote_nic != remote_nic:
                continue
            return c
        return None

    def get_resource(self, peer: Optional[str] = None) -> dict:
        """This agent's resource record, or the one ``peer`` published (the original's
        shape: ``schema_version``, ``host``, ``nics``, ...; here also ``transports``)."""
        s = ffi.new("char **")
        _check(lib.dlslime_peer_agent_get_resource(self._h(), _opt(peer, "peer"), s), "get_resource")
        return json.loads(_take_string(s))

    def list_mem_keys(self, peer: Optional[str] = None) -> List[str]:
        """Names of this agent's memory regions, or of the ones ``peer`` published."""
        s = ffi.new("char **")
        _check(lib.dlslime_peer_agent_list_mem_keys(self._h(), _opt(peer, "peer"), s), "list_mem_keys")
        return json.loads(_take_string(s))

    def get_handle(self, mr_name: str, peer_alias: Optional[str] = None, resource_key: Any = None,
                   endpoint: Any = None) -> int:
        """The handle of region ``mr_name``: the local handle, or with ``peer_alias`` the
        remote handle of that peer's region on the connection's endpoint (for raw
        5-tuples on it). ``resource_key`` / ``endpoint`` (NIC selection in the
        original) are accepted and ignored. Raises :class:`UnknownHandle` when the
        region is not (yet) published."""
        if not isinstance(mr_name, str):
            raise TypeError("mr_name must be a str")
        out = ffi.new("uint32_t *")
        _check(lib.dlslime_peer_agent_get_handle(self._h(), mr_name.encode(), _opt(peer_alias, "peer_alias"), out),
               "get_handle")
        return out[0]

    def register_memory_region(self, name: str, ptr: Any, offset: int = 0, length: Optional[int] = None) -> int:
        """Registers ``[ptr, ptr + offset + length)`` as region ``name`` (the original's
        semantics: the region starts at ``ptr``) and publishes it; returns the local
        handle. ``ptr`` is a writable buffer (kept alive while registered; ``length``
        defaults to the rest of it) or an int address (``length`` required)."""
        if not isinstance(name, str):
            raise TypeError("name must be a str")
        offset = _uint(offset, "offset")
        foreign = foreign_array(ptr)
        if foreign is not None:
            # CUDA memory: the library learns the device from the pointer; without a
            # CUDA driver it cannot, so refuse here with the library's reason. DLPack
            # host memory registers as host memory.
            addr, size, on_device, keep = foreign
            if on_device:
                cuda_device_count()
            length = size - offset if length is None else _uint(length, "length")
            if offset + length > size:
                raise ValueError(f"offset {offset} + length {length} is past the end of the {size}-byte array")
            p = ffi.cast("void *", addr)
        elif isinstance(ptr, int) and not isinstance(ptr, bool):
            if length is None:
                raise TypeError("length is required when ptr is an address")
            length = _uint(length, "length")
            p, keep = ffi.cast("void *", _uint(ptr, "ptr")), None
        else:
            keep = _as_buffer(ptr, True, "ptr")
            size = len(keep)
            length = size - offset if length is None else _uint(length, "length")
            if offset + length > size:
                raise ValueError(f"offset {offset} + length {length} is past the end of the {size}-byte buffer")
            p = keep
        out = ffi.new("dlslime_mr_handle_t *")
        _check(lib.dlslime_peer_agent_register_memory_region(self._h(), name.encode(), p, offset, length, out),
               "register_memory_region")
        if keep is not None:
            with self._lock:
                self._keep[name] = keep
        return out[0]

    def allocate_memory_region(self, name: str, length: int, *, memory_kind: str = "cuda",
                               local_device: Optional[Union[str, int]] = None) -> Tuple[int, int]:
        """The original's PeerAgent-owned CUDA allocation: ``length`` bytes of device
        memory on ``local_device`` (``"cuda:N"``, ``N``, default device 0), freed when the
        agent is closed, registered and published as region ``name``. Returns ``(handle,
        device pointer)``. ``memory_kind="cuda"`` (``cuMemAlloc``); ``"cuda_fabric"``
        raises :class:`Unsupported` (not implemented, docs/gpu.md). Raises
        :class:`DeviceUnavailable` without a CUDA driver."""
        if not isinstance(name, str):
            raise TypeError("name must be a str")
        if not isinstance(memory_kind, str):
            raise TypeError("memory_kind must be a str")
        length = _uint(length, "length")
        if local_device is None:
            dev = 0
        elif isinstance(local_device, int) and not isinstance(local_device, bool):
            dev = local_device
        elif isinstance(local_device, str) and local_device.removeprefix("cuda:").isdigit():
            dev = int(local_device.removeprefix("cuda:"))
        else:
            raise ValueError(f"local_device {local_device!r}: expected 'cuda:N' or N")
        h = ffi.new("dlslime_mr_handle_t *")
        p = ffi.new("uint64_t *")
        _check(lib.dlslime_peer_agent_allocate_memory_region(self._h(), name.encode(), length,
                                                             memory_kind.encode(), dev, h, p),
               "allocate_memory_region")
        return h[0], p[0]

    def register_dmabuf_memory_region(self, mr_name: str, fd: int, offset: int, length: int, iova: int) -> int:
        """The original's DMA-BUF (GPUDirect RDMA) registration: ``length`` bytes of the
        dma-buf ``fd`` from ``offset``, registered with the agent's RDMA NIC as region
        ``mr_name`` at ``iova`` (the CUDA device pointer the dma-buf exports) and
        published; returns the local handle. Raises :class:`DeviceUnavailable` without a
        CUDA driver, :class:`Unsupported` without an RDMA NIC or dma-buf support."""
        if not isinstance(mr_name, str):
            raise TypeError("mr_name must be a str")
        if isinstance(fd, bool) or not isinstance(fd, int):
            raise TypeError("fd must be an int")
        out = ffi.new("dlslime_mr_handle_t *")
        _check(lib.dlslime_peer_agent_register_dmabuf_memory_region(
            self._h(), mr_name.encode(), fd, _uint(offset, "offset"), _uint(length, "length"),
            _uint(iova, "iova"), out), "register_dmabuf_memory_region")
        return out[0]

    def unregister_memory_region(self, name: str) -> bool:
        """Unregisters region ``name``; returns whether it existed."""
        if not isinstance(name, str):
            raise TypeError("name must be a str")
        out = ffi.new("bool *")
        _check(lib.dlslime_peer_agent_unregister_memory_region(self._h(), name.encode(), out),
               "unregister_memory_region")
        with self._lock:
            self._keep.pop(name, None)
        return bool(out[0])

    def get_mr_info(self, peer: str, mr_name: str) -> dict:
        """The record ``peer`` published for its region ``mr_name``."""
        if not isinstance(peer, str) or not isinstance(mr_name, str):
            raise TypeError("peer and mr_name must be str")
        s = ffi.new("char **")
        _check(lib.dlslime_peer_agent_get_mr_info(self._h(), peer.encode(), mr_name.encode(), s), "get_mr_info")
        return json.loads(_take_string(s))

    # -- operations -------------------------------------------------------------------

    def _named(self, assign: Sequence[_NamedAssignment]):
        if isinstance(assign, tuple) and len(assign) in (4, 5) and isinstance(assign[0], str):
            assign = [assign]
        if isinstance(assign, (str, bytes)) or not hasattr(assign, "__len__"):
            raise TypeError("assignments must be a list of (name, local_offset, remote_offset, length) or "
                            "(local_name, remote_name, local_offset, remote_offset, length) tuples")
        n = len(assign)
        arr = ffi.new("dlslime_named_assignment_t[]", n) if n else ffi.NULL
        strings, keep = [], []
        for i, t in enumerate(assign):
            if not isinstance(t, (tuple, list)) or len(t) not in (4, 5):
                raise TypeError(f"assignment {i} must be (name, local_off, remote_off, len) or "
                                f"(local_name, remote_name, local_off, remote_off, len), got {t!r}")
            if len(t) == 4:
                local, remote, nums = t[0], None, t[1:]
            else:
                local, remote, nums = t[0], t[1], t[2:]
            if not isinstance(local, str) or (remote is not None and not isinstance(remote, str)):
                raise TypeError(f"assignment {i}: region names must be str")
            lo, ro, ln = (_uint(v, f"assignment {i}: {k}") for v, k in zip(nums, ("local_offset", "remote_offset",
                                                                                 "length")))
            for v, k in ((lo, "local_offset"), (ro, "remote_offset"), (ln, "length")):
                if v > 0xFFFFFFFFFFFFFFFF:
                    raise ValueError(f"assignment {i}: {k} {v} is out of range")
            a = arr[i]
            strings.append(ffi.new("char[]", local.encode()))
            a.local = strings[-1]
            if remote is not None:
                strings.append(ffi.new("char[]", remote.encode()))
                a.remote = strings[-1]
            a.local_offset, a.remote_offset, a.length = lo, ro, ln
            keep.append(self._keep.get(local))
        return arr, n, strings, keep

    def _op(self, fn, peer, assign, timeout, *imm) -> Future:
        if not isinstance(peer, str):
            raise TypeError("peer must be a str")
        if self._orphans:
            self._sweep()
        arr, n, _strings, keep = self._named(assign)
        out = ffi.new("dlslime_future_t **")
        st = fn(self._h(), peer.encode(), arr, n, *imm, _timeout_ms(timeout), out)
        if st:
            _raise(st)
        return Future(out[0], keep, self)

    def read(self, peer: str, assign: Sequence[_NamedAssignment], stream: Any = None, *,
             timeout: Optional[float] = None, **_ignored: Any) -> Future:
        """One-sided read from ``peer`` by region names: each ``(name, local_offset,
        remote_offset, length)`` (or ``(local_name, remote_name, local_offset,
        remote_offset, length)``) copies the peer's range into the local one. Note the
        PeerAgent order: local offset first, as in the original."""
        if stream is not None:
            return stream_ordered(stream, lambda: self.read(peer, assign, timeout=timeout))
        return self._op(lib.dlslime_peer_agent_read, peer, assign, timeout)

    def write(self, peer: str, assign: Sequence[_NamedAssignment], stream: Any = None, *,
              timeout: Optional[float] = None, **_ignored: Any) -> Future:
        """One-sided write to ``peer`` by region names (see :meth:`read`)."""
        if stream is not None:
            return stream_ordered(stream, lambda: self.write(peer, assign, timeout=timeout))
        return self._op(lib.dlslime_peer_agent_write, peer, assign, timeout)

    def write_with_imm(self, peer: str, assign: Sequence[_NamedAssignment], imm_data: int = 0, stream: Any = None,
                       *, timeout: Optional[float] = None, **_ignored: Any) -> Future:
        """Like :meth:`write`, then one notification carrying ``imm_data`` to the peer."""
        if stream is not None:
            return stream_ordered(stream, lambda: self.write_with_imm(peer, assign, imm_data, timeout=timeout))
        if isinstance(imm_data, bool) or not isinstance(imm_data, int):
            raise TypeError("imm_data must be an int")
        if not -(1 << 31) <= imm_data < (1 << 32):
            raise ValueError(f"imm_data {imm_data} does not fit in 32 bits")
        if imm_data >= 1 << 31:
            imm_data -= 1 << 32
        return self._op(lib.dlslime_peer_agent_write_with_imm, peer, assign, timeout, imm_data)

    def imm_recv(self, peer: str, stream: Any = None, *, timeout: Optional[float] = None,
                 **_ignored: Any) -> Future:
        """Receives the next immediate-data notification from ``peer``."""
        if stream is not None:
            return stream_ordered(stream, lambda: self.imm_recv(peer, timeout=timeout))
        if not isinstance(peer, str):
            raise TypeError("peer must be a str")
        out = ffi.new("dlslime_future_t **")
        _check(lib.dlslime_peer_agent_imm_recv(self._h(), peer.encode(), _timeout_ms(timeout), out), "imm_recv")
        return Future(out[0], None, self)

    def send(self, peer: str, chunk: Any, stream: Any = None, *, timeout: Optional[float] = None,
             **_ignored: Any) -> Future:
        """Sends a buffer (or the original ``(ptr, offset, length)``) to ``peer``."""
        return self._msg(lib.dlslime_peer_agent_send, peer, chunk, False, stream, timeout)

    def recv(self, peer: str, chunk: Any, stream: Any = None, *, timeout: Optional[float] = None,
             **_ignored: Any) -> Future:
        """Posts a receive buffer (or ``(ptr, offset, length)``) for a message from ``peer``."""
        return self._msg(lib.dlslime_peer_agent_recv, peer, chunk, True, stream, timeout)

    def _msg(self, fn, peer, chunk, writable, stream, timeout) -> Future:
        if stream is not None:
            return stream_ordered(stream, lambda: self._msg(fn, peer, chunk, writable, None, timeout))
        if not isinstance(peer, str):
            raise TypeError("peer must be a str")
        if self._orphans:
            self._sweep()
        if isinstance(chunk, tuple) and len(chunk) == 3 and all(
                isinstance(x, int) and not isinstance(x, bool) for x in chunk):
            ptr, off, length = (_uint(x, k) for x, k in zip(chunk, ("ptr", "offset", "length")))
            p, keep = ffi.cast("void *", ptr + off), None
            # a raw address may be wrong: refuse it here rather than crash in a copy
            _check(lib.dlslime_check_buffer(p, length, writable), "recv buffer" if writable else "send data")
        else:
            keep = _as_buffer(chunk, writable, "recv buffer" if writable else "send data")
            p, length = keep, len(keep)
        out = ffi.new("dlslime_future_t **")
        _check(fn(self._h(), peer.encode(), p, length, _timeout_ms(timeout), out), "recv" if writable else "send")
        return Future(out[0], keep, self)

    def shutdown(self) -> None:
        """Pending operations fail, everything published is removed and peers are
        notified. Idempotent."""
        if self._ptr != ffi.NULL:
            _check(lib.dlslime_peer_agent_shutdown(self._ptr), "shutdown")

    def close(self) -> None:
        """Shuts down and releases the agent (idempotent)."""
        p, self._ptr = self._ptr, ffi.NULL
        if p != ffi.NULL:
            lib.dlslime_peer_agent_free(p)
            self._release_orphans()

    def __repr__(self) -> str:
        return f"<dlslime.PeerAgent {getattr(self, 'alias', '?')!r}{' closed' if self._ptr == ffi.NULL else ''}>"


def _opt(v: Optional[str], what: str):
    """An optional str argument for the C ABI (NULL for None)."""
    if v is None:
        return ffi.NULL
    if not isinstance(v, str):
        raise TypeError(f"{what} must be a str or None")
    return v.encode()


def start_peer_agent(*args: Any, **kwargs: Any) -> PeerAgent:
    """Same as ``PeerAgent(...)`` (the original's helper)."""
    return PeerAgent(*args, **kwargs)
