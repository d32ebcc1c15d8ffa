"""The slot ring: a ring of fixed-size payload slots in shared memory, with the names of
cosmos-rl's ``SharedRingBuffer`` where they fit, served to remote readers by
:class:`RingServer` and fetched by reference ``(producer, slot, generation)`` with
:class:`RingClient` (see ``docs/ring.md``)::

    from dlslime.ring import SharedRingBuffer, RingServer, RingClient

    ring = SharedRingBuffer(max_entries=64, entry_size=1 << 20, buffer_name="rollouts")
    ref = ring.write_raw(packed)              # SlotRef(slot, generation)
    server = RingServer(); server.add_ring(ring); server.serve(endpoint)   # or serve_peer
    # in the trainer:
    client = RingClient(); client.add_endpoint("rollouts", endpoint)      # or add_peer
    arr = client.fetch("rollouts", ref)       # numpy uint8 array over a pooled buffer

Differences from the original, on purpose: every reference carries the slot's
generation, so a reference whose payload was overwritten fails with
:class:`StaleSlotError` instead of silently reading the newer payload; slot states are
shared-memory atomics obeyed by every process that maps the ring; ``read`` consumes the
payload (the original left the slot READING until ``mark_consumed``); ``read_view`` and
``read_raw`` keep the slot READING until ``mark_consumed`` / ``release_reading``, as in
the original; metrics are shared by every process of the ring.
"""

from __future__ import annotations

import json
from collections import namedtuple
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Dict, List, Optional, Sequence, Union

from ._core import Endpoint, _as_buffer, _check, _raise, _take_string, _uint, ffi, lib
from ._errors import SlotBusy, StaleSlot

__all__ = [
    "SlotRef", "SlotState", "TensorSpec", "BufferMetrics", "SharedRingBuffer", "RingServer",
    "RingClient", "StaleSlotError", "SlotError",
]

#: A reference to one payload: ``slot == generation % max_entries``.
SlotRef = namedtuple("SlotRef", ["slot", "generation"])

#: The original's names for the ring's errors.
StaleSlotError = StaleSlot
SlotError = SlotBusy

_OK = 0
_NO_OVERWRITE = 1
_OVERWRITE = 2


class SlotState(IntEnum):
    FREE = 0
    WRITING = 1
    READY = 2
    READING = 3


class TensorSpec(namedtuple("TensorSpec", ["name", "shape", "dtype"])):
    """One tensor of a payload schema; payloads pack the schema's tensors back to back,
    in schema order, with no padding (the original's layout)."""

    @property
    def nbytes(self) -> int:
        import numpy as np

        n = 1
        for d in self.shape:
            n *= int(d)
        return n * np.dtype(self.dtype).itemsize


def _schema(schema) -> List[TensorSpec]:
    out = []
    for s in schema or []:
        if isinstance(s, dict):
            s = TensorSpec(s["name"], tuple(s["shape"]), s["dtype"])
        elif not isinstance(s, TensorSpec):
            s = TensorSpec(*s)
        out.append(TensorSpec(s.name, tuple(int(d) for d in s.shape), str(s.dtype)))
    return out


def unpack(buf, schema) -> Dict[str, Any]:
    """Views of the schema's tensors in ``buf`` (a numpy uint8 array or any buffer)."""
    import numpy as np

    arr = buf if isinstance(buf, np.ndarray) else np.frombuffer(buf, dtype=np.uint8)
    out, at = {}, 0
    for s in _schema(schema):
        n = s.nbytes
        out[s.name] = arr[at:at + n].view(np.dtype(s.dtype)).reshape(s.shape)
        at += n
    return out


def _counters(fn, ptr, ctype: str) -> Dict[str, int]:
    """The ``ctype`` struct that ``fn(ptr, out)`` fills, as a dict, its fields named and
    ordered as in the header."""
    c = ffi.new(ctype + " *")
    _check(fn(ptr, c), "counters")
    return {name: getattr(c, name) for name, _ in ffi.typeof(c).item.fields}


@dataclass
class BufferMetrics:
    """The ring's counters (shared by every process of the ring)."""

    writes_total: int = 0
    reads_total: int = 0
    drops_total: int = 0
    stale_reads: int = 0
    bytes_written: int = 0
    bytes_read: int = 0
    busy: int = 0
    reclaims: int = 0
    orphan_noops: int = 0
    write_errors: int = 0
    failed_reads: int = 0
    ready: int = 0

    @property
    def current_fill(self) -> int:
        return max(0, self.writes_total - self.reads_total - self.drops_total)


def _as_ref(ref) -> SlotRef:
    """A SlotRef from a SlotRef, ``(slot, generation)`` or ``{"slot", "generation"}``."""
    if isinstance(ref, SlotRef):
        return ref
    if isinstance(ref, dict):
        return SlotRef(int(ref["slot"]), int(ref["generation"]))
    if isinstance(ref, (tuple, list)) and len(ref) == 2:
        return SlotRef(int(ref[0]), int(ref[1]))
    raise TypeError("a reference is a SlotRef, (slot, generation) or {'slot', 'generation'}")


def _c_ref(ref) -> Any:
    r = ffi.new("dlslime_slot_ref_t *")
    r.slot = ref.slot
    r.generation = ref.generation
    return r[0]


def _array(ptr, n, owner_free=None):
    """A numpy uint8 array over ``n`` bytes at ``ptr`` (memoryview without numpy). With
    ``owner_free``, the memory is released by it once no array or view uses it."""
    if n == 0:
        if owner_free is not None:
            owner_free()
        try:
            import numpy as np

            return np.empty(0, dtype=np.uint8)
        except ImportError:
            return memoryview(b"")
    p = ffi.cast("char *", ptr)
    if owner_free is not None:
        p = ffi.gc(p, lambda _p: owner_free())
    buf = ffi.buffer(p, n)
    try:
        import numpy as np
    except ImportError:
        return memoryview(buf)
    return np.frombuffer(buf, dtype=np.uint8)


class SharedRingBuffer:
    """A ring of ``max_entries`` slots of ``entry_size`` bytes in shared memory.

    ``SharedRingBuffer(max_entries=64, entry_size=65536, buffer_name=None, schema=None,
    overwrite_if_full=True)``; with a ``schema`` (a list of :class:`TensorSpec` or
    ``{"name", "shape", "dtype"}``) ``entry_size`` is the schema's size and ``write`` /
    ``read`` / ``read_view`` take and return dicts of arrays. Other processes of the host
    map it with ``SharedRingBuffer.from_handle(ring.get_handle())``. Thread-safe.
    """

    def __init__(self, max_entries: int = 64, entry_size: int = 65536, buffer_name: Optional[str] = None,
                 schema: Optional[Sequence[Any]] = None, overwrite_if_full: bool = True, *, _ptr=None) -> None:
        self.schema = _schema(schema)
        if _ptr is None:
            if self.schema:
                entry_size = sum(s.nbytes for s in self.schema)
            o = ffi.new("dlslime_ring_options_t *")
            lib.dlslime_ring_options_init(o)
            name = None
            if buffer_name is not None:
                if not isinstance(buffer_name, str):
                    raise TypeError("buffer_name must be a str")
                name = ffi.new("char[]", buffer_name.encode())
                o.name = name
            o.slot_count = _uint(max_entries, "max_entries")
            o.slot_capacity = _uint(entry_size, "entry_size")
            o.flags = 0 if overwrite_if_full else _NO_OVERWRITE
            out = ffi.new("dlslime_ring_t **")
            _check(lib.dlslime_ring_new(o, out), "SharedRingBuffer")
            _ptr = out[0]
        self._ptr = ffi.gc(_ptr, lib.dlslime_ring_free)
        h = self.get_handle()
        self.buffer_name: str = h["buffer_name"]
        self.max_entries: int = h["max_entries"]
        self.entry_data_size: int = h["entry_size"]
        self.entry_size = self.entry_data_size
        # slot -> the view handle of a read_view/read_raw awaiting mark_consumed/release
        self._views: Dict[int, Any] = {}

    @classmethod
    def from_handle(cls, handle: Union[dict, str]) -> "SharedRingBuffer":
        """Maps the ring of another process of this host (its ``get_handle()``)."""
        d = json.loads(handle) if isinstance(handle, str) else dict(handle)
        schema = d.pop("schema", None)
        out = ffi.new("dlslime_ring_t **")
        _check(lib.dlslime_ring_attach(json.dumps(d).encode(), out), "from_handle")
        return cls(schema=schema, _ptr=out[0])

    def get_handle(self) -> dict:
        """``{"type", "buffer_name", "max_entries", "entry_size", "node_id", "host_id",
        "pid", "fd", "len"}`` (+ ``"schema"``): what ``from_handle`` needs."""
        s = ffi.new("char **")
        _check(lib.dlslime_ring_handle(self._ptr, s), "get_handle")
        h = json.loads(_take_string(s))
        if getattr(self, "schema", None):
            h["schema"] = [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in self.schema]
        return h

    # -- references ---------------------------------------------------------------------

    def _ref(self, ref) -> SlotRef:
        """A reference, or a slot index (its READY payload's reference, as the original
        addressed slots)."""
        if isinstance(ref, int) and not isinstance(ref, bool):
            r = self.slot_ref(ref)
            if r is None:
                raise StaleSlot(f"slot {ref} holds no READY payload", 410)
            return r
        return _as_ref(ref)

    def slot_ref(self, index: int) -> Optional[SlotRef]:
        """The reference of the READY payload in slot ``index``, if any."""
        for r in self.ready_refs():
            if r.slot == index:
                return r
        return None

    def ready_refs(self) -> List[SlotRef]:
        """References of every READY payload, oldest first."""
        arr = ffi.new("dlslime_slot_ref_t[]", max(1, self.max_entries))
        n = ffi.new("size_t *")
        _check(lib.dlslime_ring_ready_slots(self._ptr, arr, self.max_entries, n), "ready_refs")
        return [SlotRef(arr[i].slot, arr[i].generation) for i in range(n[0])]

    # -- producer ------------------------------------------------------------------------

    @staticmethod
    def _flags(overwrite_if_full) -> int:
        if overwrite_if_full is None:
            return 0
        return _OVERWRITE if overwrite_if_full else _NO_OVERWRITE

    def write_raw(self, buf: Any, overwrite_if_full: Optional[bool] = None) -> SlotRef:
        """Writes one pre-packed buffer (at most ``entry_size`` bytes) into the next slot.
        Raises :class:`SlotError` when that slot is being read, or holds an unconsumed
        payload and overwriting is off."""
        b = _as_buffer(buf, False, "buf")
        out = ffi.new("dlslime_slot_ref_t *")
        _check(lib.dlslime_ring_write(self._ptr, b, len(b), self._flags(overwrite_if_full), out), "write_raw")
        return SlotRef(out.slot, out.generation)

    def write(self, data: Any, overwrite_if_full: Optional[bool] = None) -> SlotRef:
        """Writes a payload: a dict of arrays in schema order (with a schema), a list of
        buffers (back to back), or one buffer."""
        if isinstance(data, dict):
            if not self.schema:
                raise TypeError("write(dict) needs a schema")
            import numpy as np

            parts = []
            for s in self.schema:
                if s.name not in data:
                    raise KeyError(f"missing tensor {s.name!r}")
                a = data[s.name]
                if hasattr(a, "detach"):  # torch
                    a = a.detach().cpu().numpy()
                a = np.ascontiguousarray(np.asarray(a, dtype=s.dtype).reshape(s.shape))
                parts.append(a)
        elif isinstance(data, (list, tuple)):
            parts = list(data)
        else:
            return self.write_raw(data, overwrite_if_full)
        keep = [_as_buffer(p, False, "part") for p in parts]
        ptrs = ffi.new("void *[]", [ffi.cast("void *", k) for k in keep] or [ffi.NULL])
        lens = ffi.new("size_t[]", [len(k) for k in keep] or [0])
        out = ffi.new("dlslime_slot_ref_t *")
        _check(lib.dlslime_ring_write_parts(self._ptr, ptrs, lens, len(keep), self._flags(overwrite_if_full), out),
               "write")
        return SlotRef(out.slot, out.generation)

    # -- local readers -------------------------------------------------------------------

    def _view(self, ref):
        r = self._ref(ref)
        out = ffi.new("dlslime_ring_view_t **")
        _check(lib.dlslime_ring_read_view(self._ptr, _c_ref(r), out), "read_view")
        v = out[0]
        p = ffi.new("void **")
        n = ffi.new("size_t *")
        st = lib.dlslime_ring_view_data(v, ffi.cast("const void **", p), n)
        if st != _OK:
            lib.dlslime_ring_view_free(v)
            _raise(st, "read_view")
        return r, v, p[0], n[0]

    def _decode(self, data: bytes):
        if self.schema:
            return {k: a.copy() for k, a in unpack(data, self.schema).items()}
        return data

    def read(self, ref) -> Any:
        """Reads and consumes a payload: a copy (a dict of arrays with a schema, else
        bytes). Raises :class:`StaleSlotError` (overwritten, consumed, never written),
        :class:`SlotError` (another reader holds it)."""
        r, v, p, n = self._view(ref)
        try:
            data = bytes(ffi.buffer(p, n)) if n else b""
            _check(lib.dlslime_ring_view_consume(v), "read")
        finally:
            lib.dlslime_ring_view_free(v)
        return self._decode(data)

    def try_read(self, ref) -> Any:
        """Like ``read``, but ``None`` when the payload is not available to read now."""
        try:
            return self.read(ref)
        except SlotBusy:
            return None

    def read_view(self, ref) -> Any:
        """Views of a payload in place (zero copy): a dict of numpy arrays with a schema,
        else a numpy uint8 array. The slot stays READING (the producer cannot overwrite
        it) until ``mark_consumed(ref)`` or ``release_reading(ref)``; the views are valid
        until then."""
        r, v, p, n = self._view(ref)
        old = self._views.pop(r.slot, None)
        if old is not None:
            lib.dlslime_ring_view_free(old)
        self._views[r.slot] = v
        arr = _array(p, n)
        return unpack(arr, self.schema) if self.schema else arr

    def read_raw(self, ref):
        """The payload as one numpy uint8 view (see ``read_view``)."""
        r, v, p, n = self._view(ref)
        self._views[r.slot] = v
        return _array(p, n)

    def _finish(self, ref, consume: bool) -> None:
        slot = ref if isinstance(ref, int) and not isinstance(ref, bool) else self._ref(ref).slot
        v = self._views.pop(slot, None)
        if v is None:
            return  # the original's defensive no-op
        try:
            if consume:
                _check(lib.dlslime_ring_view_consume(v), "mark_consumed")
            else:
                _check(lib.dlslime_ring_view_release(v), "release_reading")
        finally:
            lib.dlslime_ring_view_free(v)

    def mark_consumed(self, ref) -> None:
        """Ends a ``read_view``/``read_raw``: the slot becomes FREE. A no-op for a slot
        this object holds no view of."""
        self._finish(ref, True)

    def release_reading(self, ref) -> None:
        """Gives a viewed payload back unconsumed (READY again, readable again)."""
        self._finish(ref, False)

    # -- state and metrics ---------------------------------------------------------------

    def get_slot_state(self, index: int) -> SlotState:
        s = ffi.new("uint32_t *")
        _check(lib.dlslime_ring_slot_state(self._ptr, index, s), "get_slot_state")
        return SlotState(s[0])

    def get_slot_states(self) -> Dict[int, SlotState]:
        return {i: self.get_slot_state(i) for i in range(self.max_entries)}

    def is_ready(self, index: int) -> bool:
        return self.get_slot_state(index) == SlotState.READY

    def get_ready_count(self) -> int:
        """READY slots now (a counter, not a scan)."""
        return lib.dlslime_ring_ready_count(self._ptr)

    def get_ready_indices(self) -> List[int]:
        return [r.slot for r in self.ready_refs()]

    def is_full(self) -> bool:
        return self.get_ready_count() >= self.max_entries

    def get_metrics(self) -> BufferMetrics:
        m = ffi.new("dlslime_ring_metrics_t *")
        _check(lib.dlslime_ring_metrics(self._ptr, m), "get_metrics")
        return BufferMetrics(m.writes, m.reads, m.drops, m.stale_reads, m.bytes_written, m.bytes_read, m.busy,
                             m.reclaims, m.orphan_noops, m.write_errors, m.failed_reads, m.ready)

    def close(self) -> None:
        """Releases held views and this process's mapping (once nothing else uses it)."""
        for v in self._views.values():
            lib.dlslime_ring_view_free(v)
        self._views.clear()

    def unlink(self) -> None:
        """Kept for the original's API: the memory (a memfd) goes away by itself when the
        last process unmaps it."""


class RingServer:
    """Serves rings over endpoints (``serve``) or to PeerAgent peers (``serve_peer``).

    ``RingServer(max_lease=None, default_lease=None, idle_timeout=None)``, seconds.
    The server owns the immediate-data stream of the endpoints it serves. Keep the
    endpoints open until ``stop()``."""

    def __init__(self, max_lease: Optional[float] = None, default_lease: Optional[float] = None,
                 idle_timeout: Optional[float] = None) -> None:
        o = ffi.new("dlslime_ring_server_options_t *")
        lib.dlslime_ring_server_options_init(o)
        o.max_lease_ms = int((max_lease or 0) * 1000)
        o.default_lease_ms = int((default_lease or 0) * 1000)
        o.idle_timeout_ms = int((idle_timeout or 0) * 1000)
        out = ffi.new("dlslime_ring_server_t **")
        _check(lib.dlslime_ring_server_new(o, out), "RingServer")
        self._ptr = ffi.gc(out[0], lib.dlslime_ring_server_free)
        self._keep: list = []

    def add_ring(self, ring: SharedRingBuffer) -> None:
        _check(lib.dlslime_ring_server_add_ring(self._ptr, ring._ptr), "add_ring")
        self._keep.append(ring)

    def serve(self, endpoint: Endpoint) -> None:
        """Serves the rings over a connected endpoint, on a server thread."""
        _check(lib.dlslime_ring_server_serve_endpoint(self._ptr, endpoint._handle()), "serve")
        self._keep.append(endpoint)

    def serve_peer(self, agent, alias: str, transport: str = "auto") -> None:
        """Serves the rings to PeerAgent peer ``alias`` (dialled now), across its restarts."""
        _check(lib.dlslime_ring_server_serve_peer(self._ptr, agent._h(), alias.encode(), transport.encode()),
               "serve_peer")
        self._keep.append(agent)

    def counters(self) -> dict:
        return _counters(lib.dlslime_ring_server_counters, self._ptr, "dlslime_ring_server_counters_t")

    def stop(self) -> None:
        _check(lib.dlslime_ring_server_stop(self._ptr), "stop")


class RingClient:
    """Fetches payloads by reference ``(producer, slot, generation)`` from the producers'
    serving endpoints, round robin over the healthy ones, quarantining a failing one.

    ``RingClient(timeout=5.0, max_attempts=2, quarantine=30.0, max_idle=100.0,
    max_rounds=3, round_backoff=0.05, concurrency=4, commit_grace=1.0)``; seconds.
    Thread-safe."""

    def __init__(self, timeout: Optional[float] = None, max_attempts: int = 0, quarantine: Optional[float] = None,
                 max_idle: Optional[float] = None, max_rounds: int = 0, round_backoff: Optional[float] = None,
                 concurrency: int = 0, commit_grace: Optional[float] = None) -> None:
        o = ffi.new("dlslime_ring_client_options_t *")
        lib.dlslime_ring_client_options_init(o)
        o.timeout_ms = int((timeout or 0) * 1000)
        o.max_attempts = _uint(max_attempts, "max_attempts")
        o.quarantine_ms = int((quarantine or 0) * 1000)
        o.max_idle_ms = int((max_idle or 0) * 1000)
        o.max_rounds = _uint(max_rounds, "max_rounds")
        o.round_backoff_ms = int((round_backoff or 0) * 1000)
        o.concurrency = _uint(concurrency, "concurrency")
        o.commit_grace_ms = int((commit_grace or 0) * 1000)
        out = ffi.new("dlslime_ring_client_t **")
        _check(lib.dlslime_ring_client_new(o, out), "RingClient")
        self._ptr = ffi.gc(out[0], lib.dlslime_ring_client_free)
        self._keep: list = []

    def add_endpoint(self, producer: str, endpoint: Endpoint) -> None:
        _check(lib.dlslime_ring_client_add_endpoint(self._ptr, producer.encode(), endpoint._handle()),
               "add_endpoint")
        self._keep.append(endpoint)

    def add_peer(self, producer: str, agent, alias: str, transport: str = "auto") -> None:
        _check(lib.dlslime_ring_client_add_peer(self._ptr, producer.encode(), agent._h(), alias.encode(),
                                                transport.encode()), "add_peer")
        self._keep.append(agent)

    @staticmethod
    def _payload_array(p, schema=None):
        n = lib.dlslime_ring_payload_len(p)
        data = lib.dlslime_ring_payload_data(p)
        arr = _array(data, n, owner_free=lambda p=p: lib.dlslime_ring_payload_free(p))
        return unpack(arr, schema) if schema else arr

    def fetch(self, producer: str, ref, schema=None) -> Any:
        """The payload: a numpy uint8 array over a pooled buffer (zero copy; the buffer
        goes back to the pool when the array is gone), or with ``schema`` a dict of views.
        Raises :class:`StaleSlotError` (the generation is gone), :class:`SlotError`, or
        the last attempt's error (``Timeout``, ``PeerDisconnected``, ...)."""
        r = _as_ref(ref)
        out = ffi.new("dlslime_ring_payload_t **")
        _check(lib.dlslime_ring_client_fetch(self._ptr, producer.encode(), _c_ref(r), out), "fetch")
        return self._payload_array(out[0], schema)

    def fetch_into(self, producer: str, ref, out: Any) -> int:
        """Fetches into ``out`` (a writable buffer); returns the payload length."""
        r = _as_ref(ref)
        b = _as_buffer(out, True, "out")
        n = ffi.new("size_t *")
        _check(lib.dlslime_ring_client_fetch_into(self._ptr, producer.encode(), _c_ref(r), b, len(b), n),
               "fetch_into")
        return n[0]

    def fetch_batch(self, producer: str, refs: Sequence[Any], schema=None) -> List[Any]:
        """Fetches many payloads concurrently in bounded rounds: one result per reference,
        an array (or dict) or the exception of its failure."""
        from ._errors import error_class

        rs = [_as_ref(r) for r in refs]
        arr = ffi.new("dlslime_slot_ref_t[]", max(1, len(rs)))
        for i, r in enumerate(rs):
            arr[i].slot = r.slot
            arr[i].generation = r.generation
        ps = ffi.new("dlslime_ring_payload_t *[]", max(1, len(rs)))
        sts = ffi.new("int32_t[]", max(1, len(rs)))
        _check(lib.dlslime_ring_client_fetch_batch(self._ptr, producer.encode(), arr, len(rs), ps, sts),
               "fetch_batch")
        out = []
        for i in range(len(rs)):
            if sts[i] == _OK:
                out.append(self._payload_array(ps[i], schema))
            else:
                st = sts[i]
                name = ffi.string(lib.dlslime_status_str(st)).decode()
                out.append(error_class(st)(f"fetch of {rs[i]}: {name}", st))
        return out

    def worst_case(self, n: int = 0) -> float:
        """The true worst-case wall time (seconds) of one fetch (n=0) or a batch of n."""
        return lib.dlslime_ring_client_worst_case_ms(self._ptr, n) / 1000.0

    def counters(self) -> dict:
        return _counters(lib.dlslime_ring_client_counters, self._ptr, "dlslime_ring_client_counters_t")

    def close(self) -> None:
        _check(lib.dlslime_ring_client_close(self._ptr), "close")
