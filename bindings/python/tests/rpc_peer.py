"""Server process of the SlimeRPC tests: ``python rpc_peer.py TRANSPORT [WORKERS]``.

Creates an endpoint (on shm, with the RPC memory prepared before connect), prints its
endpoint_info as a JSON line, reads the client's, connects, then serves ``Svc`` until
the client closes its session or dies, and prints ``{"served": true}``.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import dlslime  # noqa: E402
from dlslime import rpc  # noqa: E402
from rpc_service import Svc  # noqa: E402


def main():
    transport = sys.argv[1]
    # "env": leave it to SLIME_RPC_SERVER_WORKERS
    workers = None if len(sys.argv) > 2 and sys.argv[2] == "env" else int(sys.argv[2]) if len(sys.argv) > 2 else 1
    if transport == "tcp":
        ep = dlslime.TcpEndpoint(dlslime.MemoryPool(), dlslime.TcpContext(bind="127.0.0.1:0"))
    else:
        ep = dlslime.ShmEndpoint(dlslime.MemoryPool())
    ep._rpc_buffer_size = int(os.environ.get("RPC_BUF", str(1 << 20)))
    ep._rpc_max_inflight = int(os.environ.get("RPC_INFLIGHT", "8"))
    rpc.prepare(ep)
    print(json.dumps({"info": ep.endpoint_info()}), flush=True)
    ep.connect(json.loads(sys.stdin.readline()))
    rpc.serve(ep, Svc(), max_workers=workers, serializer=os.environ.get("RPC_SERIALIZER") or None)
    print(json.dumps({"served": True}), flush=True)


if __name__ == "__main__":
    main()
