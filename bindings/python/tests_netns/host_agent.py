"""A PeerAgent on one simulated host of the multi-host tests, driven by JSON lines.

    python host_agent.py NANOCTRL_URL SCOPE ALIAS PEER REGION_BYTES

Registers as ALIAS with a region "kv" of REGION_BYTES (filled with a pattern seeded by
the alias), prepares RPC memory for PEER, serves ``Svc`` to PEER once connected, prints
``{"alias": ALIAS}`` and answers one command per line (see ``handle``). Every wait has a
deadline.
"""

import hashlib
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import dlslime  # noqa: E402
from dlslime import rpc  # noqa: E402
from json_lines import reply, serve  # noqa: E402
from rpc_service import Svc, pattern  # noqa: E402


class Host:
    def __init__(self, url, scope, alias, peer, size):
        self.peer = peer
        self.agent = dlslime.PeerAgent(url, alias=alias, scope=scope)
        self.kv = bytearray(pattern(size, seed=len(alias)))
        self.agent.register_memory_region("kv", self.kv)
        self.agent._rpc_buffer_size = 1 << 20
        self.agent._rpc_max_inflight = 4
        rpc.prepare(self.agent, peer)
        self.pending = None  # (futures, start time) of start_reads
        self.server = None

    def handle(self, cmd):
        c = cmd["cmd"]
        a, peer = self.agent, self.peer
        if c == "connect":
            conn = a.connect_to(peer, cmd.get("transport", "auto")).wait(cmd.get("timeout", 30))
            if self.server is None:
                self.server = threading.Thread(target=rpc.serve, args=(a, Svc(), peer), daemon=True)
                self.server.start()
            return {"transport": conn.transport, "state": conn.state}
        if c == "wait":  # waits on the existing connection handle: no connect_to
            conn = a.query_connection(peer)
            if conn is None:
                return {"state": "none"}
            t0 = time.monotonic()
            conn.wait(cmd.get("timeout", 30))
            return {"transport": conn.transport, "state": conn.state, "seconds": time.monotonic() - t0}
        if c == "state":
            conn = a.query_connection(peer)
            return {"state": conn.state if conn else "none", "transport": conn.transport if conn else None}
        if c == "digest":
            off, n = cmd["off"], cmd["len"]
            return {"sha": hashlib.sha256(self.kv[off:off + n]).hexdigest()}
        if c == "expect":  # the bytes the peer's region holds at [off, off+len)
            return {"sha": hashlib.sha256(pattern(cmd["off"] + cmd["len"], seed=len(peer))[cmd["off"]:]).hexdigest()}
        if c in ("read", "write"):
            # n ops of `len` bytes at [off, off+len) of both regions; timed
            t0 = time.monotonic()
            fn = a.read if c == "read" else a.write
            fs = [fn(peer, [("kv", cmd["off"], cmd["off"], cmd["len"])], timeout=cmd.get("timeout", 60))
                  for _ in range(cmd.get("count", 1))]
            for f in fs:
                f.wait()
            dt = time.monotonic() - t0
            return {"seconds": dt, "bytes": cmd["len"] * len(fs)}
        if c == "start_reads":  # pending operations for the link-down test
            fs = [a.read(peer, [("kv", 0, 0, cmd["len"])], timeout=cmd.get("timeout", 60))
                  for _ in range(cmd["count"])]
            self.pending = fs
            return {"started": len(fs)}
        if c == "finish_reads":  # waits for every pending op; when each ended, relative to now
            t0 = time.monotonic()
            out = []
            for f in self.pending:
                try:
                    f.wait()
                    out.append(["ok", time.monotonic() - t0])
                except dlslime.DLSlimeError as e:
                    out.append([type(e).__name__, time.monotonic() - t0])
            self.pending = None
            return {"results": out}
        if c == "rpc":
            p = rpc.proxy(a, peer, Svc)
            t0 = time.monotonic()
            bad = 0
            for i in range(cmd["count"]):
                d = pattern(cmd["size"], seed=i)
                if p.add(d, b"").wait(cmd.get("timeout", 60)) != d:
                    bad += 1
            return {"bad": bad, "seconds": time.monotonic() - t0}
        if c == "quit":
            a.shutdown()
            return {"ok": True}
        raise ValueError(f"unknown command {c!r}")


def main():
    url, scope, alias, peer, size = sys.argv[1:6]
    h = Host(url, scope, alias, peer, int(size))
    reply({"alias": alias})
    serve(h.handle, (dlslime.DLSlimeError, rpc.RpcError))
    h.agent.close()


if __name__ == "__main__":
    main()
