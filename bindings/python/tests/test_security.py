"""SlimeRPC and pickle (issue 11): the RPC pickle-injection attack from a third process
(tests/rpc_attacker.py) is refused three ways and the server unpickles nothing; the
non-executing serializers (json, msgpack) work end to end; pickle can be refused
entirely, and a pickle sent to a server that refuses it is not decoded."""

import json
import os
import subprocess
import sys
import time

import pytest

import dlslime
from dlslime import rpc
from dlslime.rpc import RemoteRpcError, RpcError, proxy

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from rpc_service import ClientSvc, Evil, ServerProcess  # noqa: E402


class Server(ServerProcess):
    """tests/rpc_peer.py over TCP with ``env`` added; ``client(**kw)`` connects a proxy."""

    def __init__(self, **env):
        super().__init__("tcp", 1, dict(RPC_BUF=str(1 << 20), RPC_INFLIGHT="4", **env))
        self.info = self.read(60.0)["info"]

    def client(self, **kw):
        ep = dlslime.TcpEndpoint(dlslime.MemoryPool(), dlslime.TcpContext(bind="127.0.0.1:0"))
        ep._rpc_buffer_size = 1 << 20
        ep._rpc_max_inflight = 4
        rpc.prepare(ep)
        self.proc.stdin.write(json.dumps(ep.endpoint_info()) + "\n")
        self.proc.stdin.flush()
        ep.connect(self.info)
        return ep, proxy(ep, ClientSvc, **kw)


def test_pickle_injection_by_a_third_party_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    with Server() as srv:  # the original's default: a pickle server
        ep, p = srv.client()
        assert p.add(1, b=2).wait(30) == 3
        out = subprocess.run([sys.executable, os.path.join(HERE, "rpc_attacker.py"), json.dumps(srv.info),
                              json.dumps(ep.endpoint_info()), str(marker)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        got = json.loads(out.stdout.strip().splitlines()[-1])
        # protocol 1 with the client's context id: refused at the version, no reply
        assert got["v1"] == {"status": 409, "more": 0}, got
        # the client's key without its secret: the server answered the challenge, then
        # closed without serving a frame
        assert got["impostor"] == {"response": 120, "replies": 0}, got
        # its own keys: a valid connection, but not the server endpoint's peer
        assert got["stranger"] == "RemoteAccess", got
        time.sleep(0.5)
        assert not marker.exists(), "the server unpickled the attacker's payload"
        # the legitimate session is unaffected
        assert p.add(20, b=22).wait(30) == 42
        assert p.echo(b"x" * 100_000).wait(30) == b"x" * 100_000
    assert not marker.exists()


def test_json_serializer_end_to_end_and_pickle_is_not_decoded(tmp_path):
    marker = tmp_path / "pwned"
    with Server(RPC_SERIALIZER="json") as srv:
        _, p = srv.client(serializer="json")
        assert p.add(1, b=2).wait(30) == 3
        assert p.add("a", b="b").wait(30) == "ab"
        assert p.none().wait(30) is None
        with pytest.raises(RemoteRpcError) as ei:
            p.boom("bad").wait(30)
        assert ei.value.type_name == "ValueError" and ei.value.message == "bad"
    # the connected client itself sends a pickle to a json server: not decoded
    with Server(RPC_SERIALIZER="json") as srv:
        _, p = srv.client(serializer="pickle")
        with pytest.raises(RemoteRpcError) as ei:
            p.add(Evil(str(marker)), b=1).wait(30)
        assert "cannot decode the request as json" in ei.value.message
        time.sleep(0.2)
        assert not marker.exists(), "a json server unpickled a request"


def test_msgpack_serializer():
    try:
        import msgpack  # noqa: F401
    except ImportError:
        with pytest.raises(RpcError, match="pip install dlslime\\[msgpack\\]"):
            rpc._serializer("msgpack", None)
        if os.environ.get("CI"):
            pytest.fail("NOT RUN: msgpack is not installed (scripts/test-python.sh installs it)")
        return
    with Server(RPC_SERIALIZER="msgpack") as srv:
        _, p = srv.client(serializer="msgpack")
        assert p.add(1, b=2).wait(30) == 3
        assert p.add(b"x", b=b"y").wait(30) == b"xy"
        assert p.none().wait(30) is None


def test_pickle_can_be_refused_entirely(monkeypatch):
    with pytest.raises(RpcError, match="pickle is refused"):
        rpc._serializer("pickle", False)
    monkeypatch.setenv("DLSLIME_RPC_ALLOW_PICKLE", "0")
    assert rpc._serializer(None, None).name == "json"
    with pytest.raises(RpcError, match="pickle is refused"):
        rpc._serializer("pickle", None)
    # an explicit allow_pickle=True overrides the environment
    assert rpc._serializer("pickle", True).name == "pickle"
    monkeypatch.delenv("DLSLIME_RPC_ALLOW_PICKLE")
    assert rpc._serializer(None, None).name == "pickle"
    with pytest.raises(ValueError, match="unknown serializer"):
        rpc._serializer("yaml", None)
    # serve()/proxy() refuse before touching the session
    with pytest.raises(RpcError, match="pickle is refused"):
        rpc.serve(object(), object(), allow_pickle=False, serializer="pickle")
    with pytest.raises(RpcError, match="pickle is refused"):
        proxy(object(), ClientSvc, allow_pickle=False, serializer="pickle")


def test_server_refusing_pickle_by_environment_serves_json(tmp_path):
    marker = tmp_path / "pwned"
    with Server(DLSLIME_RPC_ALLOW_PICKLE="0") as srv:
        _, p = srv.client(serializer="json")
        assert p.add(2, b=3).wait(30) == 5
    assert not marker.exists()
