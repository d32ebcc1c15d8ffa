"""The other agent ("bob") of the SlimeRPC PeerAgent tests:

    python rpc_agent_peer.py NANOCTRL_URL SCOPE TRANSPORT

Prepares its RPC memory for "alice", connects, serves ``Svc`` in a thread while its main
thread calls alice's ``Svc`` 50 times (calls in both directions over one pair), prints
``{"callbacks": n}``, then ``{"served": true}`` once alice closed the session.
"""

import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import dlslime  # noqa: E402
from dlslime import rpc  # noqa: E402
from rpc_service import Svc, pattern  # noqa: E402


def main():
    url, scope, transport = sys.argv[1:4]
    agent = dlslime.PeerAgent(url, alias="bob", scope=scope)
    agent._rpc_buffer_size = 1 << 20
    agent._rpc_max_inflight = 4
    rpc.prepare(agent, "alice")
    agent.connect_to("alice", transport).wait(30)
    print(json.dumps({"connected": True}), flush=True)
    t = threading.Thread(target=rpc.serve, args=(agent, Svc(), "alice"), kwargs={"max_workers": 2})
    t.start()
    p = rpc.proxy(agent, "alice", Svc)
    ok = 0
    for i in range(50):
        d = pattern(100 + i * 997, i)
        if p.echo(d).wait(30) == d and p.add(i, b=1).wait(30) == i + 1:
            ok += 1
    print(json.dumps({"callbacks": ok}), flush=True)
    t.join(120)
    print(json.dumps({"served": not t.is_alive()}), flush=True)
    agent.close()


if __name__ == "__main__":
    main()
