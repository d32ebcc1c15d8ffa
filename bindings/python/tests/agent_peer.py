"""The other process of the PeerAgent tests ("bob"), driven by JSON lines.

    python agent_peer.py NANOCTRL_URL SCOPE

Registers as "bob", publishes a 64 KiB region "kv" filled with ``i % 251``, prints
``{"alias": "bob"}`` and answers commands (see ``handle``).
"""

import sys

import dlslime

from json_lines import reply, serve


def main():
    url, scope = sys.argv[1], sys.argv[2]
    agent = dlslime.PeerAgent(url, alias="bob", scope=scope)
    kv = bytearray(bytes(i % 251 for i in range(1 << 16)))
    agent.register_memory_region("kv", kv)
    reply({"alias": agent.alias})
    serve(lambda cmd: handle(agent, kv, cmd))
    agent.close()


def handle(agent, kv, cmd):
    c = cmd["cmd"]
    if c == "connect":
        conn = agent.connect_to(cmd["peer"], cmd.get("transport")).wait(20)
        return {"transport": conn.transport}
    if c == "dump":
        return {"hex": bytes(kv[cmd["off"] : cmd["off"] + cmd["len"]]).hex()}
    if c == "imm":
        f = agent.imm_recv(cmd["peer"], timeout=20)
        f.wait()
        return {"imm": f.imm_data()}
    if c == "recv":
        buf = bytearray(cmd["len"])
        f = agent.recv(cmd["peer"], buf, timeout=20)
        f.wait()
        return {"hex": bytes(buf[: f.nbytes()]).hex()}
    if c == "quit":
        agent.shutdown()
        return {"ok": True}
    raise ValueError(c)


if __name__ == "__main__":
    main()
