"""CUDA device memory in the bindings: objects that expose ``__cuda_array_interface__``
(CuPy, Numba, PyTorch CUDA tensors, ...) or DLPack (``__dlpack__`` and
``__dlpack_device__``: PyTorch, JAX, CuPy, numpy >= 1.22, ...) are recognised; device
memory is registered as device pointers, host memory (DLPack CPU, CUDA-pinned and
managed) as host memory. The library loads the CUDA driver at run time; without one,
registering device memory raises :class:`DeviceUnavailable` (status
``DLSLIME_STATUS_DEVICE_UNAVAILABLE``). Streams (``stream=`` of the operations) are
ordered with :func:`stream_ordered`.
"""

from __future__ import annotations

import ctypes
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


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    """``DLTensor``, the first member of the legacy ``DLManagedTensor`` a ``"dltensor"``
    capsule points to (dlpack.h, ABI stable since DLPack 0.2)."""
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


_DL_CPU, _DL_CUDA, _DL_CUDA_HOST, _DL_CUDA_MANAGED = 1, 2, 3, 13
_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def dlpack_array(obj: Any) -> Optional[Tuple[int, int, bool, Any]]:
    """``(address, size in bytes, on_device, capsule)`` of a DLPack object (one with
    ``__dlpack__`` and ``__dlpack_device__``), ``None`` for any other object. The capsule
    is not consumed: keep it (and the object) alive while the address is in use. Raises
    ``ValueError`` for what this library cannot register (read-only, not C-contiguous,
    a device other than the CPU or CUDA, a malformed tensor)."""
    if not (hasattr(obj, "__dlpack__") and hasattr(obj, "__dlpack_device__")):
        return None
    try:
        dev_type, dev_id = obj.__dlpack_device__()
        capsule = obj.__dlpack__()
    except (BufferError, TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"DLPack export refused: {e} (regions must be writable and contiguous)") from None
    if int(dev_type) not in (_DL_CPU, _DL_CUDA, _DL_CUDA_HOST, _DL_CUDA_MANAGED):
        raise ValueError(f"DLPack device type {dev_type} is neither the CPU nor CUDA")
    try:
        p = _capsule_pointer(capsule, b"dltensor")
    except (ValueError, TypeError) as e:
        raise ValueError(f"__dlpack__ did not return a 'dltensor' capsule: {e}") from None
    t = _DLTensor.from_address(p)
    if t.ndim < 0 or t.dtype.lanes == 0 or t.dtype.bits % 8:
        raise ValueError("malformed DLPack tensor (ndim, dtype)")
    itemsize = t.dtype.bits // 8 * t.dtype.lanes
    shape = [t.shape[i] for i in range(t.ndim)]
    nbytes = itemsize
    for d in shape:
        nbytes *= d
    if t.strides and nbytes:
        expect = 1
        for i in reversed(range(t.ndim)):
            if shape[i] != 1 and t.strides[i] != expect:
                raise ValueError("the DLPack tensor is not C-contiguous")
            expect *= shape[i]
    addr = (t.data or 0) + t.byte_offset
    if addr == 0 and nbytes:
        raise ValueError("the DLPack tensor has no data pointer")
    return addr, nbytes, int(dev_type) == _DL_CUDA, capsule


def foreign_array(obj: Any) -> Optional[Tuple[int, int, bool, Any]]:
    """``(address, size, on_device, keep)`` of an object exposing
    ``__cuda_array_interface__`` (device memory) or DLPack; ``None`` otherwise. ``keep``
    must stay alive while the address is used."""
    cai = cuda_array(obj)
    if cai is not None:
        return cai[0], cai[1], True, obj
    dl = dlpack_array(obj)
    if dl is not None:
        return dl[0], dl[1], dl[2], (obj, dl[3])
    return None


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


def stream_handle(stream: Any) -> int:
    """The ``CUstream`` handle of ``stream``: an int (0 is the legacy default stream), an
    object with ``__cuda_stream__`` (the CUDA stream protocol: ``(version, handle)``),
    ``.cuda_stream`` (``torch.cuda.Stream``) or ``.ptr`` (``cupy.cuda.Stream``)."""
    if isinstance(stream, bool):
        raise TypeError("stream must be a CUDA stream, its int handle, or None")
    if isinstance(stream, int):
        h = stream
    elif hasattr(stream, "__cuda_stream__"):
        proto = stream.__cuda_stream__()
        h = proto[1] if isinstance(proto, tuple) and len(proto) == 2 else proto
    elif hasattr(stream, "cuda_stream"):
        h = stream.cuda_stream
    elif hasattr(stream, "ptr") and isinstance(getattr(stream, "ptr"), int):
        h = stream.ptr
    else:
        raise TypeError(f"stream must be a CUDA stream, its int handle, or None, not {type(stream).__name__}")
    if not isinstance(h, int) or isinstance(h, bool) or not 0 <= h < (1 << 64):
        raise TypeError(f"stream handle {h!r} is not an address")
    return h


def stream_ordered(stream: Any, submit):
    """Runs ``submit()`` (which returns a :class:`Future`) ordered on ``stream``: the
    data is read only after the work already queued on the stream (the host waits for
    it), and work queued on the stream afterwards waits for the operation's completion
    (on the device; the host does not block). Without a CUDA driver raises
    :class:`DeviceUnavailable`."""
    from ._core import _check  # (no import cycle at module load)

    h = stream_handle(stream)
    _check(lib.dlslime_cuda_stream_wait(h), "stream")
    fut = submit()
    _check(lib.dlslime_future_signal_stream(fut._f, h), "stream")
    return fut
