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
