"""SlimeRPC over PeerAgent connections (real NanoCtrl + redis-server on loopback), two
processes, over TCP and shared memory: proxy/serve by alias with RPC memory prepared
before connect_to, typed and raw calls, calls in both directions over one agent pair at
the same time, serve() with peer=None, and close ending the peer's serve()."""

import json
import os
import selectors
import subprocess
import sys
import threading
import uuid

import pytest

import dlslime
from dlslime import rpc
from dlslime.rpc import RemoteRpcError

from conftest import HERE, TRANSPORTS
from rpc_service import ClientSvc, Svc, pattern
from test_peer_agent import nanoctrl  # noqa: F401  (the module fixture)


class Bob:
    def __init__(self, url, scope, transport):
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "rpc_agent_peer.py"), url, scope, transport],
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)

    def read(self, timeout=60):
        if not self.sel.select(timeout):
            raise TimeoutError("bob said nothing")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"bob exited ({self.proc.poll()})")
        return json.loads(line)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_rpc_between_agents_both_directions(nanoctrl, transport):  # noqa: F811
    scope = "rpc-" + uuid.uuid4().hex[:8]
    bob = Bob(nanoctrl, scope, transport)
    alice = dlslime.PeerAgent(nanoctrl, alias="alice", scope=scope)
    try:
        alice._rpc_buffer_size = 1 << 20
        alice._rpc_max_inflight = 4
        rpc.prepare(alice, "bob")
        alice.connect_to("bob", transport).wait(30)
        assert bob.read() == {"connected": True}
        # serve with peer=None: alice has exactly one connection
        server = threading.Thread(target=rpc.serve, args=(alice, Svc()), kwargs={"max_workers": 2})
        server.start()
        p = rpc.proxy(alice, "bob", ClientSvc)
        for i in range(50):
            assert p.add(i, b=2).wait(30) == i + 2
            d = pattern(3000 + i * 50000, i)  # up to ~2.5 MB: slot and bulk paths
            assert p.echo(d).wait(30) == d
        assert p.none().wait(30) is None
        with pytest.raises(RemoteRpcError) as ei:
            p.boom("x").wait(30)
        assert ei.value.type_name == "ValueError"
        assert bob.read() == {"callbacks": 50}
        p._session.close()
        assert bob.read() == {"served": True}
        server.join(30)
        assert not server.is_alive()
    finally:
        alice.close()
        if bob.proc.poll() is None:
            bob.proc.kill()
        bob.proc.wait(10)
