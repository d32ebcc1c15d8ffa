"""RDMA, with the original DLSlime's names: ``available_nic``, ``RDMAContext``,
``RDMAMemoryPool``, ``RDMAEndpoint``.

Where RDMA cannot work (libibverbs not installed, no device, port down) the calls raise
:class:`RdmaUnavailable` with a message naming what is missing; the rest of the package
is unaffected.
"""

from __future__ import annotations

import json
import threading
from typing import Dict, List, Optional, Tuple, Union

from ._errors import AlreadyConnected
from ._core import Endpoint, MemoryPool, _Owned, _check, _kept_str, _take_string, _timeout_ms, _uint, ffi, lib

__all__ = ["available_nic", "RDMAContext", "RDMAMemoryPool", "RDMAEndpoint"]


def available_nic() -> List[str]:
    """Names of the RDMA devices, in ``ibv_get_device_list`` order, filtered by
    ``SLIME_VISIBLE_DEVICES``; ``[]`` without a device. Raises :class:`RdmaUnavailable`
    when libibverbs is not installed."""
    out = ffi.new("char **")
    _check(lib.dlslime_rdma_available_nics(out), "available_nic")
    return json.loads(_take_string(out))


class RDMAContext(_Owned):
    """One port of one NIC opened for RDMA (protection domain, completion queue and its
    thread), shared by the endpoints and pools created over it. Thread-safe.

    ``RDMAContext()`` then ``init(dev_name, ib_port, link_type)`` as in the original, or
    ``RDMAContext(dev_name, ib_port, link_type)`` at once. An empty or ``None`` device
    name picks the first NIC; an unknown one raises (the original silently took device
    0). ``gid_index`` overrides ``SLIME_GID_INDEX`` (0 is honoured). A context that was
    never ``init``-ed opens the first NIC with the defaults when first used.
    """

    def __init__(self, dev_name: Optional[str] = None, ib_port: int = 1,
                 link_type: Optional[str] = None, *, gid_index: Optional[int] = None,
                 default_timeout: Optional[float] = None) -> None:
        self._free = lib.dlslime_rdma_context_free
        self._ptr = ffi.NULL
        self._gid_index = gid_index
        self._default_timeout = default_timeout
        self._lock = threading.Lock()
        if dev_name is not None or link_type is not None or ib_port != 1:
            self.init(dev_name or "", ib_port, link_type)

    def init(self, dev_name: str = "", ib_port: int = 1, link_type: Optional[str] = None) -> int:
        """Opens the device (``dev_name`` empty: the first NIC); returns 0. Raises
        :class:`RdmaUnavailable` (no libibverbs, no such device, port not active) or
        :class:`InvalidArgument` (bad port or link type) where the original aborts."""
        with self._lock:
            if self._ptr != ffi.NULL:
                raise AlreadyConnected("RDMAContext.init() was already called")
            o = ffi.new("dlslime_rdma_options_t *")
            lib.dlslime_rdma_options_init(o)
            keep = []
            if dev_name:
                o.device = _kept_str(keep, str(dev_name))
            o.ib_port = _uint(ib_port, "ib_port")
            if link_type:
                o.link_type = _kept_str(keep, str(link_type))
            if self._gid_index is not None:
                o.gid_index_set = True
                o.gid_index = _uint(self._gid_index, "gid_index")
            o.default_timeout_ms = _timeout_ms(self._default_timeout)
            out = ffi.new("dlslime_rdma_context_t **")
            _check(lib.dlslime_rdma_context_new(o, out), "RDMAContext")
            self._ptr = out[0]
        return 0

    def _handle(self):
        if self._ptr == ffi.NULL and not getattr(self, "_closed_once", False):
            try:
                self.init()
            except Exception:
                if self._ptr == ffi.NULL:
                    raise
        return super()._handle()

    def close(self) -> None:
        self._closed_once = True
        super().close()

    @property
    def device_name(self) -> str:
        """The opened device's name."""
        out = ffi.new("char **")
        _check(lib.dlslime_rdma_context_device(self._handle(), out), "device_name")
        return _take_string(out)

    def launch_future(self) -> None:
        """Kept for the original's API: the completion thread runs from ``init`` on."""

    def stop_future(self) -> None:
        """Kept for the original's API; the completion thread stops when the context and
        every endpoint over it are gone."""


class RDMAMemoryPool(MemoryPool):
    """A :class:`MemoryPool` bound to an RDMA context's device: every region, registered
    before or after endpoints connect, is registered with the NIC (``ibv_reg_mr``) and
    published with its rkey. ``register_memory_region(data_ptr, length, name=None)``
    takes an int address or a writable buffer, as :class:`MemoryPool` does; a name
    conflict raises :class:`NameConflict` (the original returned -1)."""

    def __init__(self, context: Optional[RDMAContext] = None) -> None:
        super().__init__()
        self.context = RDMAContext() if context is None else context
        if not isinstance(self.context, RDMAContext):
            raise TypeError("RDMAMemoryPool(context: RDMAContext)")
        _check(lib.dlslime_rdma_context_bind_pool(self.context._handle(), self._handle()),
               "RDMAMemoryPool")


# The original caches one context per device name for the device-name constructor.
_CONTEXTS: Dict[Tuple[str, int, Optional[str]], RDMAContext] = {}
_CONTEXTS_LOCK = threading.Lock()


def _shared_context(device_name: str, ib_port: int, link_type: Optional[str]) -> RDMAContext:
    key = (device_name or "", int(ib_port), link_type)
    with _CONTEXTS_LOCK:
        ctx = _CONTEXTS.get(key)
        if ctx is None or ctx._ptr == ffi.NULL:
            ctx = RDMAContext()
            ctx.init(device_name or "", ib_port, link_type)
            _CONTEXTS[key] = ctx
        return ctx


class RDMAEndpoint(Endpoint):
    """An endpoint over RDMA (RC verbs), with ``num_qp`` data QPs (1..16) that large
    transfers are striped across. The original's three forms:

    * ``RDMAEndpoint(pool, num_qp=1)``: share an :class:`RDMAMemoryPool` (and its
      context); the PeerAgent's form;
    * ``RDMAEndpoint(context, num_qp=1)``: a new pool on that context;
    * ``RDMAEndpoint(device_name="", ib_port=1, link_type="RoCE", num_qp=1)``: a
      process-wide context per ``(device_name, ib_port, link_type)`` (empty name: the
      first NIC).

    ``worker`` is accepted for compatibility and must be ``None`` (progress is the
    context's completion thread). Everything else is :class:`Endpoint`: ``connect``,
    ``endpoint_info``, ``read``/``write``/``write_with_imm``/``imm_recv``,
    ``send``/``recv``, ``cancel_all``, ``shutdown``.
    """

    def __init__(self, pool_or_context: Union[RDMAMemoryPool, MemoryPool, RDMAContext, str, None] = None,
                 num_qp: int = 1, worker=None, *, device_name: Optional[str] = None,
                 ib_port: int = 1, link_type: Optional[str] = "RoCE",
                 pool: Optional[MemoryPool] = None, context: Optional[RDMAContext] = None) -> None:
        if worker is not None:
            raise TypeError("RDMAEndpoint: worker must be None (progress runs in the context)")
        first = pool_or_context
        if isinstance(first, str):
            device_name, first = first, None
        if isinstance(first, RDMAContext):
            context = first
        elif isinstance(first, MemoryPool):
            pool = first
        elif first is not None:
            raise TypeError("RDMAEndpoint(pool | context | device_name, num_qp=1)")
        if context is None:
            context = getattr(pool, "context", None)
        if context is None:
            context = _shared_context(device_name or "", ib_port, link_type)
        if pool is None:
            pool = RDMAMemoryPool(context)
        if not isinstance(context, RDMAContext) or not isinstance(pool, MemoryPool):
            raise TypeError("RDMAEndpoint(pool: MemoryPool, context: RDMAContext)")
        out = ffi.new("dlslime_endpoint_t **")
        _check(lib.dlslime_rdma_endpoint_new(context._handle(), pool._handle(),
                                             _uint(num_qp, "num_qp"), out), "RDMAEndpoint")
        self._init_endpoint(out[0], pool, (context,))
        self.context = context
        self.num_qp = int(num_qp)
