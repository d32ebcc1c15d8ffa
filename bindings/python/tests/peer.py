"""The other process of the two-process tests, driven by JSON lines on stdin/stdout.

    python peer.py TRANSPORT REGION_BYTES [shared]

It registers REGION_BYTES bytes named "buf" (filled with ``i % 251``; from
``dlslime.alloc_shared`` with ``shared``), prints ``{"info": <endpoint_info>}``, reads
the initiator's endpoint_info, connects, prints ``{"ok": true}`` and then answers one
command per line (see ``handle``). Every wait has a deadline.
"""

import json
import sys

import dlslime

from json_lines import reply, serve


def pattern(n, seed=0):
    return bytes((i + seed) % 251 for i in range(n))


def main():
    transport, size = sys.argv[1], int(sys.argv[2])
    shared = len(sys.argv) > 3 and sys.argv[3] == "shared"
    pool = dlslime.MemoryPool()
    region = dlslime.alloc_shared(size) if shared else bytearray(size)
    region[:] = pattern(size)
    pool.register_memory_region(region, name="buf")
    if transport == "tcp":
        ep = dlslime.TcpEndpoint(pool, dlslime.TcpContext(bind="127.0.0.1:0"))
    else:
        ep = dlslime.ShmEndpoint(pool)
    reply({"info": ep.endpoint_info()})
    ep.connect(json.loads(sys.stdin.readline()))
    reply({"ok": True})
    serve(lambda cmd: handle(ep, region, cmd))
    ep.close()


def handle(ep, region, cmd):
    c = cmd["cmd"]
    t = cmd.get("timeout", 10)
    if c == "dump":
        return {"hex": bytes(region[cmd["off"] : cmd["off"] + cmd["len"]]).hex()}
    if c == "fill":
        data = bytes.fromhex(cmd["hex"])
        region[cmd["off"] : cmd["off"] + len(data)] = data
        return {"ok": True}
    if c == "recv":
        buf = bytearray(cmd["len"])
        f = ep.recv(buf, timeout=t)
        f.wait()
        return {"nbytes": f.nbytes(), "hex": bytes(buf[: f.nbytes()]).hex()}
    if c == "send":
        ep.send(bytes.fromhex(cmd["hex"]), timeout=t).wait()
        return {"ok": True}
    if c == "imm":
        f = ep.imm_recv(timeout=t)
        f.wait()
        return {"imm": f.imm_data()}
    if c == "write":  # the peer writes its own region into ours
        r = ep.remote_handle(cmd["remote"])
        local = ep.get_pool().get_handle("buf")
        ep.write([(local, r, cmd["remote_off"], cmd["local_off"], cmd["len"])], timeout=t).wait()
        return {"ok": True}
    if c == "quit":
        ep.shutdown()
        return {"ok": True}
    raise ValueError(f"unknown command {c!r}")


if __name__ == "__main__":
    main()
