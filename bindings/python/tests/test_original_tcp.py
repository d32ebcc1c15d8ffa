"""The original DLSlime's Python TCP endpoint API, called as its users call it (the
shapes of the original's tests/python/test_tcp.py, PR #99, and the 0.1.23 wheel's
names), one side per process: ``TcpEndpoint(ip=, port=)``, ``register_memory_region(name,
ptr, offset, length)``, ``async_send/async_recv/async_read/async_write`` with
``timeout_ms=`` and the same without ``async_``, integer statuses from ``wait()``,
``wait_for(seconds)`` returning None while pending, ``exact_size=``, ``is_connected()``,
``connect()`` to an unreachable peer, ``connect()`` again, ``TcpMemoryPool``. Where this
library is deliberately stricter (a truncating receive fails), the test says so."""

import ctypes
import json
import os
import socket
import subprocess
import sys
import warnings

import pytest

import dlslime
from dlslime import TcpEndpoint, TcpMemoryPool

import original_tcp_cases as cases
from conftest import HERE


def _run(case):
    b = subprocess.Popen([sys.executable, os.path.join(HERE, "original_tcp_peer.py"), case],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    try:
        info_b = json.loads(b.stdout.readline())
        ep = TcpEndpoint(ip="127.0.0.1", port=0)
        assert isinstance(ep, TcpEndpoint) and not ep.is_connected()
        buf, h = cases.setup(ep, "a")
        b.stdin.write(json.dumps(ep.endpoint_info()) + "\n")
        b.stdin.flush()
        ep.connect(info_b)
        assert ep.is_connected()
        getattr(cases, "a_" + case)(ep, buf, h, info_b)
        b.stdin.write("done\n")
        b.stdin.flush()
        out = json.loads(b.stdout.readline())
        assert "error" not in out, out["error"]
        assert out["ok"] is True
        ep.shutdown()
        assert b.wait(30) == 0
        return bytes.fromhex(out["buf"])
    finally:
        if b.poll() is None:
            b.kill()
            b.wait(10)


@pytest.mark.parametrize("case", [c for c in cases.CASES if c != "write_read"])
def test_original_tcp_api(case):
    _run(case)


def test_original_tcp_write_read():
    b_buf = _run("write_read")
    assert b_buf[:12] == b"hello_from_a"


def test_register_memory_region_names():
    ep = TcpEndpoint(port=0)
    buf = ctypes.create_string_buffer(32)
    h = ep.register_memory_region("valid", ctypes.addressof(buf), 0, 32)
    assert h >= 0
    assert ep.register_memory_region("", ctypes.addressof(buf), 0, 32) == -1
    assert ep.register_memory_region("valid", ctypes.addressof(buf), 0, 32) == -1
    ep.shutdown()


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connect_unreachable_and_again():
    ep = TcpEndpoint(ip="127.0.0.1", port=0)
    # the original's own info shape, and this build's info for a port nobody listens on
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        ep.connect({"host": "127.0.0.1", "port": 65535, "mr_info": {}})
        assert not ep.is_connected()
        other = TcpEndpoint(ip="127.0.0.1", port=0)
        dead = other.endpoint_info()
        dead["port"] = _closed_port()
        ep.connect(dead)
        assert not ep.is_connected()
    # a real peer: connect, then connect again with the same info (accepted) and with
    # another peer's (AlreadyConnected)
    peer = TcpEndpoint(ip="127.0.0.1", port=0)
    info = peer.endpoint_info()
    ep.connect(info)
    assert ep.is_connected()
    ep.connect(info)
    assert ep.is_connected()
    with pytest.raises(dlslime.AlreadyConnected):
        ep.connect(other.endpoint_info())
    for e in (ep, peer, other):
        e.shutdown()


def test_native_endpoints_have_the_async_names_too():
    ep = TcpEndpoint(dlslime.MemoryPool(), dlslime.TcpContext(bind="127.0.0.1:0"))
    assert type(ep) is TcpEndpoint
    assert callable(ep.async_send) and callable(ep.async_recv)
    with pytest.raises(dlslime.NameConflict):  # ours raise; the original's -1 is for TcpEndpoint(ip=, port=)
        buf = bytearray(8)
        ep.register_memory_region("x", buf)
        ep.register_memory_region("x", bytearray(8))
    ep.close()


def test_tcp_memory_pool():
    pool = TcpMemoryPool()
    buf = ctypes.create_string_buffer(64)
    h = pool.register_memory_region(ctypes.addressof(buf), 0, 64, "x")
    assert h >= 0 and pool.get_mr_handle("x") == h
    assert pool.register_memory_region(ctypes.addressof(buf) + 8, 0, 8, "x") == -1
    assert pool.get_mr_handle("nope") == -1
    r = pool.register_remote_memory_region({"addr": 4096, "length": 64, "rkey": 7}, "peer-x")
    assert pool.get_remote_mr_handle("peer-x") == r and pool.remote_mr_info()["peer-x"]["length"] == 64
    assert pool.unregister_remote_memory_region(r) == 0 and pool.get_remote_mr_handle("peer-x") == -1
    assert pool.unregister_memory_region(h) == 0
    assert pool.unregister_memory_region(h) == -1
    assert "x" not in pool.mr_info()
