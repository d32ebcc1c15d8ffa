"""CUDA device memory without a GPU (every CI run): the package loads, CUDA is reported
missing with a typed error, and objects with ``__cuda_array_interface__`` are taken as
device pointers and refused with ``DeviceUnavailable`` (nothing is registered). With a
CUDA driver present the same fake pointer is refused as not device memory. The real
device tests are ``make test-gpu`` (bench/cuda, tests/gpu), never run here.
"""

import os
import subprocess
import sys

import pytest

import dlslime


class FakeCudaArray:
    """An object that says it is CUDA memory (the way CuPy and torch tensors do)."""

    def __init__(self, ptr=0x7F00_0000_0000, shape=(256,), typestr="<f4", strides=None, readonly=False):
        self.__cuda_array_interface__ = {
            "data": (ptr, readonly),
            "shape": shape,
            "typestr": typestr,
            "strides": strides,
            "version": 3,
        }


def test_cuda_probe_is_typed():
    avail = dlslime.cuda_available()
    assert isinstance(avail, bool)
    if not avail:
        with pytest.raises(dlslime.DeviceUnavailable) as e:
            dlslime.cuda_device_count()
        assert e.value.status == dlslime.lib.DLSLIME_STATUS_DEVICE_UNAVAILABLE == 504
        assert "libcuda" in str(e.value) or "cuInit" in str(e.value) or "DISABLE" in str(e.value)
    else:
        assert dlslime.cuda_device_count() > 0


def test_cuda_array_is_registered_as_device_memory_and_refused_without_cuda():
    pool = dlslime.MemoryPool()
    fake = FakeCudaArray()
    if dlslime.cuda_available():
        # A made-up address is not device memory to a real driver.
        with pytest.raises(dlslime.InvalidArgument):
            pool.register_memory_region(fake, name="gpu")
    else:
        with pytest.raises(dlslime.DeviceUnavailable) as e:
            pool.register_memory_region(fake, name="gpu")
        assert "register_memory_region" in str(e.value)
    assert pool.mr_info() == {}
    # host memory still registers
    h = pool.register_memory_region(bytearray(64), name="host")
    assert pool.mr_info()["host"]["handle"] == h


def test_no_driver_path_forced_in_a_child():
    """DLSLIME_DISABLE_CUDA=1 takes the no-driver path even on a GPU machine."""
    code = (
        "import dlslime, sys\n"
        "from test_cuda import FakeCudaArray\n"
        "assert not dlslime.cuda_available()\n"
        "try:\n"
        "    dlslime.MemoryPool().register_memory_region(FakeCudaArray(), name='g')\n"
        "except dlslime.DeviceUnavailable as e:\n"
        "    print('refused', e.status, e)\n"
        "    sys.exit(0)\n"
        "sys.exit('not refused')\n"
    )
    env = dict(os.environ, DLSLIME_DISABLE_CUDA="1",
               PYTHONPATH=os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "refused 504" in out.stdout
    assert "DLSLIME_DISABLE_CUDA" in out.stdout


@pytest.mark.parametrize("bad", [
    FakeCudaArray(readonly=True),
    FakeCudaArray(shape=(4, 4), strides=(4, 16)),  # column-major
    FakeCudaArray(typestr="junk"),
    FakeCudaArray(ptr="nope"),
])
def test_malformed_cuda_arrays_are_value_errors(bad):
    with pytest.raises(ValueError):
        dlslime.MemoryPool().register_memory_region(bad)


def test_cuda_array_ranges_are_checked_before_the_library():
    fake = FakeCudaArray(shape=(16,), typestr="<u1")
    with pytest.raises(ValueError):
        dlslime.MemoryPool().register_memory_region(fake, 8, offset=9)


def test_explicit_c_contiguous_strides_are_accepted_as_cuda():
    fake = FakeCudaArray(shape=(4, 4), typestr="<f4", strides=(16, 4))
    err = dlslime.InvalidArgument if dlslime.cuda_available() else dlslime.DeviceUnavailable
    with pytest.raises(err):
        dlslime.MemoryPool().register_memory_region(fake)


# -- DLPack (numpy >= 1.22 exports host arrays through it) ---------------------------

np = pytest.importorskip("numpy")  # installed by scripts/py-venv.sh; never absent in CI


class DLPackOnly:
    """An object that speaks only DLPack (no buffer protocol, no CUDA array interface),
    the way a JAX or a CPU array of another framework does; ``device`` overrides what
    ``__dlpack_device__`` reports."""

    def __init__(self, arr, device=None):
        self.arr = arr
        self.device = device

    def __dlpack__(self, stream=None):
        return self.arr.__dlpack__()

    def __dlpack_device__(self):
        return self.device or self.arr.__dlpack_device__()


def test_dlpack_host_arrays_give_their_address_and_size():
    from dlslime._cuda import dlpack_array

    arr = np.arange(4096, dtype=np.uint32)
    addr, size, on_device, capsule = dlpack_array(arr)
    assert (addr, size, on_device) == (arr.ctypes.data, arr.nbytes, False)
    view = arr[10:]
    assert dlpack_array(view)[:3] == (view.ctypes.data, view.nbytes, False)
    grid = np.zeros((8, 16), dtype=np.float64)
    assert dlpack_array(grid)[:2] == (grid.ctypes.data, 8 * 16 * 8)
    assert dlpack_array(bytearray(8)) is None  # not DLPack: the buffer path takes it


@pytest.mark.parametrize("make", [
    lambda: np.zeros((8, 8), dtype=np.uint8)[:, ::2],  # not C-contiguous
    lambda: np.zeros((8, 8), dtype=np.uint8).T,  # column-major
    lambda: DLPackOnly(np.zeros(8, np.uint8), device=(4, 0)),  # OpenCL: neither CPU nor CUDA
])
def test_dlpack_arrays_this_library_cannot_register_are_value_errors(make):
    pool = dlslime.MemoryPool()
    with pytest.raises(ValueError):
        pool.register_memory_region(make())
    assert pool.mr_info() == {}


def test_read_only_dlpack_array_is_refused():
    arr = np.zeros(64, np.uint8)
    arr.flags.writeable = False
    with pytest.raises((ValueError, TypeError)):
        dlslime.MemoryPool().register_memory_region(DLPackOnly(arr))


def test_dlpack_cuda_object_is_device_memory():
    """A DLPack object on a CUDA device is registered as device memory: refused without
    a CUDA driver (DeviceUnavailable), and a host address is not device memory to a
    real driver (InvalidArgument)."""
    fake = DLPackOnly(np.zeros(256, np.uint8), device=(2, 0))
    pool = dlslime.MemoryPool()
    err = dlslime.InvalidArgument if dlslime.cuda_available() else dlslime.DeviceUnavailable
    with pytest.raises(err):
        pool.register_memory_region(fake, name="gpu")
    assert pool.mr_info() == {}


def test_dlpack_host_object_registers_and_moves_bytes(transport):
    """Two processes: the initiator's region is a DLPack-only object over numpy memory;
    bytes written from it and read into it are the numpy array's."""
    from conftest import REGION, Rig, pattern

    arr = np.zeros(REGION, np.uint8)
    r = Rig(transport, local=DLPackOnly(arr))
    try:
        assert r.pool.mr_info()["local"]["addr"] == arr.ctypes.data
        arr[:5000] = np.frombuffer(pattern(5000, seed=11), np.uint8)
        r.ep.write([(r.local, r.remote, 100, 0, 5000)]).wait()
        got = bytes.fromhex(r.peer.call("dump", off=100, len=5000)["hex"])
        assert got == pattern(5000, seed=11)
        arr[:] = 0
        r.ep.read([(r.local, r.remote, 8192, 64, 4096)]).wait()  # untouched by the write
        assert arr[64:64 + 4096].tobytes() == pattern(8192 + 4096)[8192:]
        assert not arr[:64].any() and not arr[64 + 4096:].any()
    finally:
        r.close()


# -- stream ordering (stream=) --------------------------------------------------------


class FakeTorchStream:
    """Shaped like ``torch.cuda.Stream``: the handle in ``.cuda_stream``."""

    def __init__(self, handle):
        self.cuda_stream = handle


class ProtocolStream:
    """The CUDA stream protocol: ``__cuda_stream__() -> (version, handle)``."""

    def __cuda_stream__(self):
        return (0, 0x1234)


def test_stream_handles_are_taken_from_ints_and_stream_objects():
    from dlslime._cuda import stream_handle

    assert stream_handle(0) == 0
    assert stream_handle(0xABC) == 0xABC
    assert stream_handle(FakeTorchStream(77)) == 77
    assert stream_handle(ProtocolStream()) == 0x1234
    for bad in (object(), "s", True, -1, FakeTorchStream(None)):
        with pytest.raises(TypeError):
            stream_handle(bad)


def test_stream_ordered_operations_without_a_driver_are_typed(rig):
    """Without CUDA, ``stream=`` fails with DeviceUnavailable before anything moves; with
    CUDA, the legacy default stream (0) orders a real operation."""
    rig.buf[0:16] = b"\x5a" * 16
    if dlslime.cuda_available():
        rig.ep.write([(rig.local, rig.remote, 0, 0, 16)], stream=0).wait()
        return
    for stream in (0, FakeTorchStream(0x1234), ProtocolStream()):
        with pytest.raises(dlslime.DeviceUnavailable) as e:
            rig.ep.write([(rig.local, rig.remote, 0, 0, 16)], stream=stream)
        assert "libcuda" in str(e.value) or "DISABLE" in str(e.value)
        with pytest.raises(dlslime.DeviceUnavailable):
            rig.ep.read([(rig.local, rig.remote, 0, 0, 16)], stream=stream)
        with pytest.raises(dlslime.DeviceUnavailable):
            rig.ep.send(b"x" * 8, stream=stream)
    # the stream-less path is untouched
    assert rig.ep.write([(rig.local, rig.remote, 0, 0, 16)]).wait() == 0
