"""SlimeRPC from Python, two processes (tests/rpc_peer.py serves ``Svc``) over TCP and
shared memory: typed calls with kwargs, None results, remote exceptions with type,
message and traceback, unknown method, bad arguments, unpicklable results, raw and
inplace methods across the bulk threshold, timeouts, concurrent calls from threads,
64 MiB both ways, close ending the peer's serve(), and the peer killed mid-call."""

import json
import os
import signal
import sys
import threading
import time

import pytest

import dlslime
from dlslime import rpc
from dlslime.rpc import RemoteRpcError, RpcError, RpcTimeoutError, method, proxy, wait_all

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from conftest import make_endpoint  # noqa: E402
from rpc_service import ClientSvc, ServerProcess, Svc, pattern  # noqa: E402

TRANSPORTS = ["tcp", "shm"] if dlslime.has_shm() else ["tcp"]


class Server(ServerProcess):
    def __init__(self, transport, workers=1):
        super().__init__(transport, workers,
                         dict(RPC_BUF=str(1 << 20), RPC_INFLIGHT="8", SLIME_RPC_SERVER_WORKERS="2"))

    def connect(self, ep):
        """Connects the client endpoint ``ep`` to this server (prepared for RPC: 1 MiB
        buffers, 8 calls in flight, as the server's) and returns its ``ClientSvc`` proxy."""
        info = self.read()["info"]
        ep._rpc_buffer_size = 1 << 20
        ep._rpc_max_inflight = 8
        rpc.prepare(ep)
        self.proc.stdin.write(json.dumps(ep.endpoint_info()) + "\n")
        self.proc.stdin.flush()
        ep.connect(info)
        return proxy(ep, ClientSvc)


@pytest.fixture(params=TRANSPORTS)
def pair(request):
    transport = request.param
    srv = Server(transport, workers="env")  # 2 handler threads, from SLIME_RPC_SERVER_WORKERS
    try:
        ep = make_endpoint(transport, dlslime.MemoryPool())
        p = srv.connect(ep)
        yield p, srv, ep
    finally:
        srv.close()


def test_typed_calls_kwargs_none_and_errors(pair):
    p, _, _ = pair
    assert p.add(1, 2).wait(10) == 3
    assert p.add(1, b=5).wait(10) == 6
    assert p.add("a", b="b").wait(10) == "ab"
    assert p.none().wait(10) is None  # the original raised EOFError here
    with pytest.raises(RemoteRpcError) as ei:
        p.boom("bad thing").wait(10)
    e = ei.value
    assert e.type_name == "ValueError"
    assert e.message == "bad thing"
    assert "raise ValueError(msg)" in e.remote_traceback
    assert str(e).startswith("ValueError: bad thing\n--- remote traceback ---\n")
    # wrong argument count: a clear remote TypeError
    with pytest.raises(RemoteRpcError) as ei:
        p.add(1, 2, 3).wait(10)
    assert ei.value.type_name == "TypeError"
    # a result that cannot be pickled
    with pytest.raises(RemoteRpcError) as ei:
        p.unpicklable().wait(10)
    assert "pickle" in ei.value.message
    # a method the server does not have
    with pytest.raises(RemoteRpcError) as ei:
        p.zzz_missing().wait(10)
    assert ei.value.message.startswith("Unknown RPC tag")
    # unknown attribute on the proxy
    with pytest.raises(AttributeError, match="No RPC method 'nope'"):
        p.nope
    # the session still works after all of that
    assert wait_all([p.add(i, i) for i in range(8)], 10) == [2 * i for i in range(8)]


def test_client_method_names_in_obs_snapshot(pair):
    """A typed proxy names its calls in obs_snapshot() by itself (no tag:N rows)."""
    p, _, _ = pair
    was = dlslime.obs_enabled()
    dlslime.obs_set_enabled(True)
    try:
        def client_rows():
            return {r["method"]: r for r in dlslime.obs_snapshot()["rpc"] if r["side"] == "client"}

        before = client_rows()
        assert p.add(1, 2).wait(10) == 3
        assert p.add(3, 4).wait(10) == 7
        with pytest.raises(RemoteRpcError):
            p.boom("x").wait(10)
        after = client_rows()
    finally:
        dlslime.obs_set_enabled(was)

    def delta(name, key):
        return after.get(name, {}).get(key, 0) - before.get(name, {}).get(key, 0)

    assert (delta("add", "calls"), delta("add", "errors")) == (2, 0)
    assert (delta("boom", "calls"), delta("boom", "errors")) == (1, 1)
    assert after["add"]["latency_ns"]["count"] >= 2
    assert not [n for n in after if n.startswith("tag:") and delta(n, "calls")], after.keys()


def test_raw_and_inplace_across_the_bulk_threshold(pair):
    p, _, _ = pair
    cap = p._session.payload_capacity
    for n in [0, 1, 1000, cap, cap + 1, 3 * cap + 5, 1 << 20, (1 << 20) + 3]:
        data = pattern(n, n % 7)
        assert p.echo(data).wait(10) == data, n
        assert p.echo(bytearray(data)).wait(10) == data
        assert p.echo(memoryview(data)).wait(10) == data

        def writer(ptr, cap_, data=data):
            import ctypes
            assert cap_ >= len(data)
            ctypes.memmove(ptr, data, len(data))
            return len(data)

        assert p.echo_inplace(writer, max_len=max(n, 1)).wait(10) == data, n
    # the reply built in place of the request (zero-copy for bulk payloads)
    for n in [3, cap, cap + 1, 300_000]:
        data = bytes(97 + i % 26 for i in range(n))
        assert p.upper_in_request(lambda ptr, c, d=data: (__import__("ctypes").memmove(ptr, d, len(d)), len(d))[1],
                                  max_len=n).wait(10) == data.upper()
    # a writer that fails raises here and sends nothing
    with pytest.raises(ZeroDivisionError):
        p.echo_inplace(lambda ptr, cap_: 1 // 0)
    with pytest.raises(RpcError, match="negative"):
        p.echo_inplace(lambda ptr, cap_: -1)
    assert p.add(2, 2).wait(10) == 4


def test_timeouts(pair):
    p, _, _ = pair
    f = p.sleep(0.6)
    t = time.monotonic()
    with pytest.raises(RpcTimeoutError):
        f.wait(0.1)
    assert 0.08 <= time.monotonic() - t < 0.5
    assert isinstance(RpcTimeoutError("x"), TimeoutError)
    assert f.wait(10) == "slept"
    # dropped timed-out calls do not leak slots (8 slots, 12 rounds)
    for _ in range(12):
        f = p.sleep(0.02)
        with pytest.raises(RpcTimeoutError):
            f.wait(0.001)
        del f
    assert p.add(1, 1).wait(10) == 2


def test_futures_held_beyond_the_window(pair):
    """More futures held than slots (8 here): each call beyond the window waits for a
    slot while earlier replies arrive, and every future keeps its own reply (the issue:
    17 futures on 16 slots stalled 60 s and raised RpcTimeoutError)."""
    p, _, _ = pair
    for n in (17, 100):
        t = time.monotonic()
        assert wait_all([p.add(i, 0) for i in range(n)], 10) == list(range(n))
        assert time.monotonic() - t < 10, n
    # The wait for a slot has its own deadline: 8 slow calls hold every slot.
    fs = [p.psleep(0.4) for _ in range(8)]
    t = time.monotonic()
    with pytest.raises(RpcTimeoutError):
        p._session.call(0, b"", timeout=0.05)
    assert time.monotonic() - t < 0.35
    assert wait_all(fs, 10) == ["p"] * 8
    assert p.add(1, 1).wait(10) == 2


def test_concurrent_threads(pair):
    p, _, _ = pair
    errors = []

    def worker(t):
        try:
            for i in range(40):
                if i % 4 == 0:
                    d = pattern(70000 + i, t)
                    assert p.echo(d).wait(20) == d
                else:
                    assert p.add(t, b=i).wait(20) == t + i
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors, errors


def test_service_lock_and_parallel_methods(pair):
    p, _, _ = pair
    # two handler threads (SLIME_RPC_SERVER_WORKERS=2): parallel=True methods overlap,
    # the others run one at a time under the service lock
    t = time.monotonic()
    assert wait_all([p.psleep(0.4), p.psleep(0.4)], 10) == ["p", "p"]
    overlapped = time.monotonic() - t
    t = time.monotonic()
    assert wait_all([p.sleep(0.4), p.sleep(0.4)], 10) == ["slept", "slept"]
    serial = time.monotonic() - t
    assert overlapped < 0.75, overlapped
    assert serial >= 0.8, serial


def test_64mib_both_ways(pair):
    p, _, _ = pair
    n = 64 << 20
    data = os.urandom(1 << 16) * (n >> 16)
    import hashlib
    assert p.digest(data).wait(60) == (n, hashlib.sha256(data).hexdigest())
    got = p.big(n, 3).wait(60)
    assert len(got) == n and got == pattern(n, 3)
    assert p.echo(data).wait(60) == data


def test_close_ends_peer_serve(pair):
    p, srv, _ = pair
    assert p.add(1, 1).wait(10) == 2
    pending = p.sleep(0.3)
    p._session.close()
    with pytest.raises(RpcError):
        pending.wait(10)
    with pytest.raises(RpcError):
        p.add(1, 1)
    assert srv.read(30) == {"served": True}
    assert srv.proc.wait(30) == 0


def test_peer_killed_mid_call(pair):
    p, srv, _ = pair
    f = p.sleep(30)
    time.sleep(0.2)
    t = time.monotonic()
    srv.proc.send_signal(signal.SIGKILL)
    with pytest.raises(RpcError) as ei:
        f.wait(20)
    assert not isinstance(ei.value, RpcTimeoutError)
    assert time.monotonic() - t < 3.0
    with pytest.raises(RpcError):
        p.add(1, 1).wait(5)


def test_registry_and_method_flags():
    reg = rpc.MethodRegistry(Svc)
    assert reg.names == sorted(reg.names)
    assert reg.by_name["add"][0] == 0
    with pytest.raises(ValueError):
        method(inplace=True)
    assert Svc.echo._slime_rpc == {"streaming": False, "raw": True, "parallel": False, "inplace": False}


def test_soft_rnr_monitor_without_devices(tmp_path):
    m = rpc.SoftRnrMonitor(devices=[])
    assert m.delta() == {} and m.total_delta() == 0
    m = rpc.SoftRnrMonitor(devices=["nosuchdev"])
    assert m.delta() == {"nosuchdev:1": 0}
    assert rpc.read_rnr_counter("nosuchdev") == -1


def test_serve_once_and_tag_level_session():
    # a TCP pair inside this process: both sessions are created at once (the handshake
    # waits for the peer), then serve_once answers exactly one request
    a = dlslime.TcpEndpoint(dlslime.MemoryPool(), dlslime.TcpContext(bind="127.0.0.1:0"))
    b = dlslime.TcpEndpoint(dlslime.MemoryPool(), dlslime.TcpContext(bind="127.0.0.1:0"))
    a.connect(b.endpoint_info())
    b.connect(a.endpoint_info())
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("b", rpc.Session(b, max_inflight=2)))
    t.start()
    sa = rpc.Session(a, max_inflight=2)
    t.join(30)
    sb = out["b"]
    p = proxy(sa, Svc)
    assert rpc.serve_once(None, Svc(), channel=sb, timeout=0.05) is False  # nothing yet
    f = p.add(20, b=22)
    assert rpc.serve_once(None, Svc(), channel=sb, timeout=10) is True
    assert f.wait(10) == 42
    # tag level: raw bytes, reply built by hand
    f = sa.call(12345, b"raw")
    req = sb.poll_request(10)
    assert req.tag == 12345 and req.request_id > 0
    addr, n = req.payload()
    assert n == 3
    req.reply(b"back")
    req.free()
    assert f.wait(10) == b"back"
    sa.close()
    with pytest.raises(RpcError):
        sb.poll_request(10)
