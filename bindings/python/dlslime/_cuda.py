"""CUDA device memory in the bindings: objects that expose ``__cuda_array_interface__``
(CuPy, Numba, PyTorch CUDA tensors, ...) are recognised and registered as device
pointers. The library loads the CUDA driver at run time; without one, registering device
memory raises :class:`DeviceUnavailable` (status ``DLSLIME_STATUS_DEVICE_UNAVAILABLE``).

DLPack capsules (``__dlpack__``) are not taken: use ``__cuda_array_interface__``.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from ._lib import ffi, lib


def cuda_array(obj: Any) -> Optional[Tuple[int, int]]:
    """``(device pointer, size in bytes)`` of an object with ``__cuda_array_interface__``,
    ``None`` for any other object. Raises ``ValueError`` for an interface this library
    cannot register (not C-contiguous, read-only, malformed)."""
    try:
        cai = obj.__cuda_array_interface__
    except AttributeError:
        return None
    except Exception as e:  # a property that raises (e.g. a tensor on the CPU)
        raise ValueError(f"__cuda_array_interface__ raised: {e}") from None
    if not isinstance(cai, dict):
        raise ValueError("__cuda_array_interface__ is not a dict")
    try:
        ptr, readonly = cai["data"]
        shape = tuple(int(d) for d in cai["shape"])
        typestr = str(cai["typestr"])
        itemsize = int(typestr[2:])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"malformed __cuda_array_interface__: {e!r}") from None
    if readonly:
        raise ValueError("the CUDA array is read-only (regions must be writable)")
    nbytes = itemsize
    for d in shape:
        nbytes *= d
    strides = cai.get("strides")
    if strides is not None:
        # C-contiguous strides are allowed explicitly; anything else is refused.
        expect, want = itemsize, []
        for d in reversed(shape):
            want.append(expect)
            expect *= d
        if tuple(int(s) for s in strides) != tuple(reversed(want)) and nbytes != 0:
            raise ValueError("the CUDA array is not C-contiguous")
    if not isinstance(ptr, int) or ptr < 0:
        raise ValueError(f"__cuda_array_interface__ data pointer {ptr!r} is not an address")
    return ptr, nbytes


def cuda_device_count() -> int:
    """Number of CUDA devices; raises :class:`DeviceUnavailable` (naming what is
    missing: the driver, ``cuInit``) when this process cannot use CUDA."""
    from ._core import _check  # (no import cycle at module load)

    out = ffi.new("int32_t *")
    _check(lib.dlslime_cuda_device_count(out), "cuda_device_count")
    return int(out[0])


def cuda_available() -> bool:
    """Whether a CUDA driver and at least one device are usable here (never raises)."""
    out = ffi.new("int32_t *")
    return lib.dlslime_cuda_device_count(out) == lib.DLSLIME_STATUS_OK and out[0] > 0
