"""Bad input gives exceptions, never a crash, and touches no memory."""

import pytest

import dlslime
from conftest import REGION, Rig, pattern


def peer_bytes(rig, off, n):
    return bytes.fromhex(rig.peer.call("dump", off=off, len=n)["hex"])


@pytest.mark.parametrize("assign, exc", [
    ([("a", 0, 0, 0, 8)], TypeError),
    ([(0, 0, 0.5, 0, 8)], TypeError),
    ([(0, 0, None, 0, 8)], TypeError),
    ([(0, 0, -1, 0, 8)], ValueError),
    ([(0, 0, 0, 0, 1 << 64)], ValueError),
    ([(1 << 32, 0, 0, 0, 8)], ValueError),
    ([(0, 0, 0, 8)], TypeError),          # four fields
    ([(0, 0, 0, 0, 8, 9)], TypeError),    # six fields
    ([0], TypeError),
    (5, TypeError),
    (None, TypeError),
    ("abcde", TypeError),
])
def test_malformed_assignments(rig, assign, exc):
    with pytest.raises(exc):
        rig.ep.write(assign)
    with pytest.raises(exc):
        rig.ep.read(assign)


def test_unknown_handles(rig):
    with pytest.raises(dlslime.UnknownHandle):
        rig.ep.write([(rig.local + 100, rig.remote, 0, 0, 8)])
    f = None
    try:
        f = rig.ep.write([(rig.local, rig.remote + 100, 0, 0, 8)])
    except dlslime.UnknownHandle:
        pass  # refused synchronously
    else:
        with pytest.raises((dlslime.UnknownHandle, dlslime.RemoteAccess)):
            f.wait()
    with pytest.raises(dlslime.UnknownHandle):
        rig.ep.remote_handle("nope")
    with pytest.raises(dlslime.UnknownHandle) as ei:
        rig.pool.get_handle("nope")
    assert "nope" in str(ei.value) and ei.value.status == 102


def test_out_of_range_offsets(rig):
    before = peer_bytes(rig, REGION - 16, 16)
    # local range past the local buffer: refused synchronously
    with pytest.raises(dlslime.OutOfRange):
        rig.ep.write([(rig.local, rig.remote, 0, REGION - 4, 8)])
    with pytest.raises(dlslime.OutOfRange):
        rig.ep.read([(rig.local, rig.remote, 0, 1 << 62, 8)])
    # remote range past the peer's region: the target refuses, nothing is written
    for assign in ([(rig.local, rig.remote, REGION - 4, 0, 8)], [(rig.local, rig.remote, 1 << 63, 0, 8)]):
        try:
            f = rig.ep.write(assign)
        except (dlslime.OutOfRange, dlslime.RemoteAccess):
            continue
        with pytest.raises((dlslime.OutOfRange, dlslime.RemoteAccess)) as ei:
            f.wait()
        assert isinstance(ei.value, dlslime.DLSlimeError)
    assert peer_bytes(rig, REGION - 16, 16) == before
    # and the endpoint still works
    rig.ep.write([(rig.local, rig.remote, 0, 0, 8)]).wait()


def test_wrong_buffer_types(rig):
    for bad in ("text", 3.5, None, object(), [1, 2, 3]):
        with pytest.raises(TypeError):
            rig.ep.send(bad)
        with pytest.raises(TypeError):
            rig.ep.recv(bad)
    with pytest.raises(TypeError):
        rig.ep.recv(b"immutable")  # recv needs a writable buffer
    with pytest.raises(TypeError):
        rig.pool.register_memory_region(b"immutable")  # a peer may write into regions
    with pytest.raises(TypeError):
        rig.pool.register_memory_region(12345)  # address without a length
    with pytest.raises(TypeError):
        rig.pool.register_memory_region(bytearray(8), name=7)
    with pytest.raises(ValueError):
        rig.pool.register_memory_region(bytearray(8), 16)  # longer than the buffer
    with pytest.raises(ValueError):
        rig.pool.register_memory_region(bytearray(8), offset=9)
    with pytest.raises(dlslime.InvalidArgument):
        rig.pool.register_memory_region(bytearray(8), 0)  # zero length
    with pytest.raises(TypeError):
        rig.ep.write_with_imm([(rig.local, rig.remote, 0, 0, 1)], "imm")
    with pytest.raises(ValueError):
        rig.ep.write_with_imm([(rig.local, rig.remote, 0, 0, 1)], 1 << 40)
    with pytest.raises(TypeError):
        rig.ep.imm_recv(timeout="soon")
    with pytest.raises(ValueError):
        rig.ep.imm_recv(timeout=-1)
    with pytest.raises(TypeError):
        rig.ep.read([(rig.local, rig.remote, 0, 0, 1)], stream=object())


def test_released_memoryview(rig):
    buf = bytearray(64)
    mv = memoryview(buf)
    mv.release()
    with pytest.raises(ValueError):
        rig.ep.send(mv)
    with pytest.raises(ValueError):
        rig.ep.recv(mv)
    with pytest.raises(ValueError):
        rig.pool.register_memory_region(mv)


def test_non_contiguous_numpy(rig):
    np = pytest.importorskip("numpy")
    a = np.zeros((8, 8), dtype=np.uint8)[:, ::2]
    with pytest.raises(ValueError):
        rig.pool.register_memory_region(a)
    with pytest.raises(ValueError):
        rig.ep.recv(a)
    with pytest.raises(ValueError):
        rig.ep.send(memoryview(bytearray(16))[::2])
    ro = np.zeros(8, dtype=np.uint8)
    ro.flags.writeable = False
    with pytest.raises(TypeError):
        rig.ep.recv(ro)
    rig.peer.write({"cmd": "recv", "len": 8})
    rig.ep.send(ro).wait()  # read-only is fine as a source
    assert rig.peer.read() == {"nbytes": 8, "hex": bytes(8).hex()}


def test_name_conflict(rig):
    rig.pool.register_memory_region(bytearray(8), name="dup")
    with pytest.raises(dlslime.NameConflict):
        rig.pool.register_memory_region(bytearray(8), name="dup")


def test_connect_garbage(transport):
    pool = dlslime.MemoryPool()
    ep = dlslime.TcpEndpoint(pool, dlslime.TcpContext(bind="127.0.0.1:0")) if transport == "tcp" \
        else dlslime.ShmEndpoint(pool)
    with ep:
        for bad in ("{not json", "{}", '{"transport": "carrier-pigeon"}', "null", "[]"):
            with pytest.raises(dlslime.InvalidEndpointInfo):
                ep.connect(bad)
        with pytest.raises(TypeError):
            ep.connect(42)
        with pytest.raises(dlslime.NotConnected):
            ep.send(b"x")
        with pytest.raises(dlslime.InvalidEndpointInfo):
            ep.register_remote_memory_region("r", {"addr": "x"})


def test_use_after_close_raises(rig):
    pool = dlslime.MemoryPool()
    pool.close()
    with pytest.raises(ValueError):
        pool.mr_info()
    f = rig.ep.write([(rig.local, rig.remote, 0, 0, 1)])
    f.wait()
    f.__del__()  # releases the handle
    with pytest.raises(ValueError):
        f.wait()


def test_tcp_context_bad_bind():
    with pytest.raises(dlslime.InvalidArgument):
        dlslime.TcpContext(bind="not an address")


_BAD_POINTERS = r"""
import sys
sys.path.insert(0, sys.argv[2])
import dlslime
from conftest import Rig

rig = Rig(sys.argv[1])
cases = [("send", (0x10, 0, 64)), ("send", (0x10, 0, 100000)), ("send", (0, 0x20, 8)),
         ("recv", (0x10, 0, 64)), ("recv", (0x10, 0, 100000)), ("recv", (0, 0x20, 8))]
for name, bad in cases:
    if True:
        try:
            f = getattr(rig.ep, name)(bad)
        except (ValueError, dlslime.DLSlimeError) as e:
            print(name, "refused:", type(e).__name__, e)
            continue
        try:
            f.wait_for(2)
            print(name, "accepted", bad)
        except Exception as e:
            print(name, "failed:", type(e).__name__, e)
# Refused before anything was sent: the endpoint and its connection are still fine.
rig.peer.write({"cmd": "recv", "len": 64})
rig.ep.send(b"still alive").wait()
assert bytes.fromhex(rig.peer.read()["hex"]) == b"still alive"
rig.close()
print("DONE")
"""


def test_bad_pointers_raise_not_crash(transport):
    """``send``/``recv`` of a raw ``(ptr, offset, length)`` that is no memory of ours
    raise (or fail their future) instead of crashing the process: it runs in a child,
    so a segmentation fault fails this test rather than killing the test runner."""
    import os
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    r = subprocess.run([sys.executable, "-c", _BAD_POINTERS, transport, here],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "DONE" in r.stdout, (r.returncode, r.stdout, r.stderr)
    # every raw pointer is checked at the call (dlslime_check_buffer), on every transport
    assert "send refused: " in r.stdout and "recv refused: " in r.stdout, r.stdout
    assert "accepted" not in r.stdout and "failed:" not in r.stdout, r.stdout
