"""Serving process of the slot ring tests: ``python ring_proc.py TRANSPORT [HANDLE]``.

Creates the ring "rollouts" (8 slots of 1 MiB), or attaches the one of HANDLE (JSON),
serves it on a new endpoint: prints ``{"info": ...}``, reads the client's endpoint_info
line, connects, prints ``{"connected": true}``; then answers JSON commands:
``{"cmd": "write", "count", "len", "seed"}`` -> ``{"refs": [[slot, gen], ...]}``,
``{"cmd": "handle"}``, ``{"cmd": "metrics"}``, ``{"cmd": "quit"}`` -> ``{"stopped": true}``.
"""

import json
import sys

import dlslime
from dlslime.ring import RingServer, SharedRingBuffer


def pattern(n, seed):
    return bytes((i * 7 + seed) % 251 for i in range(n))


def main():
    transport = sys.argv[1]
    if len(sys.argv) > 2:
        ring = SharedRingBuffer.from_handle(sys.argv[2])
    else:
        ring = SharedRingBuffer(max_entries=8, entry_size=1 << 20, buffer_name="rollouts")
    if transport == "tcp":
        ep = dlslime.TcpEndpoint(dlslime.MemoryPool(), dlslime.TcpContext(bind="127.0.0.1:0"))
    else:
        ep = dlslime.ShmEndpoint(dlslime.MemoryPool())
    server = RingServer()
    server.add_ring(ring)
    print(json.dumps({"info": ep.endpoint_info()}), flush=True)
    ep.connect(json.loads(sys.stdin.readline()))
    server.serve(ep)
    print(json.dumps({"connected": True}), flush=True)
    for line in sys.stdin:
        c = json.loads(line)
        if c["cmd"] == "write":
            refs = [list(ring.write_raw(pattern(c["len"], c["seed"] + i))) for i in range(c["count"])]
            print(json.dumps({"refs": refs}), flush=True)
        elif c["cmd"] == "handle":
            print(json.dumps({"handle": ring.get_handle()}), flush=True)
        elif c["cmd"] == "metrics":
            print(json.dumps(ring.get_metrics().__dict__), flush=True)
        else:  # quit
            break
    server.stop()
    print(json.dumps({"stopped": True}), flush=True)


if __name__ == "__main__":
    main()
