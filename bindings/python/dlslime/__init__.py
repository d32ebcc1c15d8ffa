"""dlslime: Python bindings of the dlslime communication runtime.

Thin cffi (ABI mode) layer over the C ABI of ``libdlslime.so`` (``include/dlslime.h``),
with the names of the original DLSlime Python API where one exists::

    import dlslime
    pool = dlslime.MemoryPool()
    buf = bytearray(4096)
    h = pool.register_memory_region(buf, name="kv")
    ep = dlslime.TcpEndpoint(pool, dlslime.TcpContext(bind="127.0.0.1:0"))
    info = ep.endpoint_info()           # give it to the peer, get the peer's
    ep.connect(peer_info)
    r = ep.remote_handle("kv")
    ep.read([(h, r, 0, 0, 4096)]).wait()   # (local, remote, remote_off, local_off, len)

See README.md next to this package's sources for every difference from the original.
"""

from ._core import (
    Assignment,
    Endpoint,
    Future,
    MemoryPool,
    ShmEndpoint,
    TcpContext,
    TcpEndpoint,
    alloc_shared,
    buffer_address,
    ffi,
    has_shm,
    lib,
    version,
)
from ._cuda import cuda_available, cuda_device_count
from ._rdma import RDMAContext, RDMAEndpoint, RDMAMemoryPool, available_nic
from ._peer import PeerAgent, PeerConnection, has_peer_agent, start_peer_agent
from ._original import TcpMemoryPool
from ._obs import obs_enabled, obs_set_enabled, obs_snapshot
from ._errors import *  # noqa: F401,F403 (one class per status of the header)
from ._errors import __all__ as _error_names

__version__ = "0.1.0"

# Capability flags in the style of the original's _BUILD_* attributes.
_BUILD_TCP = True
_BUILD_SHM = has_shm()
# The library is always built with RDMA; whether it can run here is available_nic().
_BUILD_RDMA = True
_BUILD_NVLINK = False

__all__ = [
    "Assignment", "Endpoint", "Future", "MemoryPool", "ShmEndpoint", "TcpContext",
    "TcpEndpoint", "TcpMemoryPool", "alloc_shared", "buffer_address", "has_shm", "version",
    "RDMAContext", "RDMAEndpoint", "RDMAMemoryPool", "available_nic",
    "PeerAgent", "PeerConnection", "has_peer_agent", "start_peer_agent",
    "obs_snapshot", "obs_set_enabled", "obs_enabled",
    "cuda_available", "cuda_device_count",
] + list(_error_names)
