"""Argument checks and calls whose answer is not defined yet (issue 13): they raise,
with a clear type, instead of starting hundreds of threads, overflowing or returning 0."""

import math

import pytest

import dlslime

def test_lanes_are_capped():
    # 1000 lanes started 781 threads and 1,558 fds for one 1 MiB read.
    with pytest.raises(ValueError) as ei:
        dlslime.TcpContext(bind="127.0.0.1:0", lanes=1000)
    assert isinstance(ei.value, dlslime.InvalidArgument) and "lanes" in str(ei.value)
    with pytest.raises(ValueError):
        dlslime.TcpContext(bind="127.0.0.1:0", lanes=65)
    dlslime.TcpContext(bind="127.0.0.1:0", lanes=64)


def test_infinite_timeout(rig):
    # An operation deadline must be finite: ValueError, not OverflowError.
    with pytest.raises(ValueError) as ei:
        rig.ep.read([(rig.local, rig.remote, 0, 0, 8)], timeout=math.inf)
    assert not isinstance(ei.value, OverflowError) and "finite" in str(ei.value)
    with pytest.raises(ValueError):
        rig.ep.imm_recv(timeout=math.inf)
    # A huge finite one is clamped to the C range (u64 milliseconds).
    rig.ep.read([(rig.local, rig.remote, 0, 0, 8)], timeout=1e300).wait()
    # Waiting on a future: inf waits as wait() does (until the operation's deadline).
    f = rig.ep.read([(rig.local, rig.remote, 0, 0, 8)])
    assert f.wait_for(math.inf) is True
    assert f.wait_for(1e300) is True


def test_imm_data_of_a_read_future_raises(rig):
    f = rig.ep.read([(rig.local, rig.remote, 0, 0, 64)])
    f.wait()
    with pytest.raises(ValueError, match="imm_recv"):
        f.imm_data()
    # defined once completed: the bytes of every assignment (recv: the message length)
    assert f.nbytes() == 64
    w = rig.ep.write([(rig.local, rig.remote, 0, 0, 100), (rig.local, rig.remote, 200, 300, 28)])
    w.wait()
    assert w.nbytes() == 128
    wi = rig.ep.write_with_imm([(rig.local, rig.remote, 0, 0, 10)], 5)
    wi.wait()
    assert wi.nbytes() == 10


def test_results_before_completion_raise(rig):
    # Nothing is sent: the receive and the imm_recv stay pending.
    buf = bytearray(64)
    r = rig.ep.recv(buf)
    i = rig.ep.imm_recv()
    with pytest.raises(dlslime.StateError, match="wait"):
        r.nbytes()
    with pytest.raises(dlslime.StateError, match="wait"):
        i.imm_data()
    assert not r.done() and not i.done()
    # A failed operation: its own error, not 0.
    rig.ep.cancel_all()
    with pytest.raises(dlslime.Cancelled):
        r.nbytes()
    with pytest.raises(dlslime.Cancelled):
        i.imm_data()

