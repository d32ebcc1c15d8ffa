"""Runs a Python block of the repository README unchanged, as one of two processes.

    python readme_peer.py endpoint SEED     the endpoint block: its lines up to
        ``ep.connect(...)`` run, this side's ``ep.endpoint_info()`` is printed as one JSON
        line, the peer's is read from stdin as ``peer_info``, ``ep.connect`` runs
        ("connected"), and on a line from stdin the rest; then the bytes ``buf`` holds
        are printed (hex). ``buf`` is SEED's pattern before.
    python readme_peer.py rpc-server URL    the alias + SlimeRPC block as written.
    python readme_peer.py rpc-client URL    its commented client lines, uncommented.

The only text replaced is the NanoCtrl URL of the block (the test's own NanoCtrl)."""

import json
import os
import re
import sys

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "README.md")


def python_blocks():
    text = open(README).read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def block(marker):
    found = [b for b in python_blocks() if marker in b]
    if len(found) != 1:
        raise SystemExit(f"README.md: expected one python block with {marker!r}, found {len(found)}")
    return found[0]


def endpoint(seed):
    code = block("dlslime.TcpEndpoint(pool")
    lines = code.splitlines(keepends=True)
    cut = next(i for i, l in enumerate(lines) if l.startswith("ep.connect("))
    g = {"buf": bytearray(bytes((seed * 31 + i) % 251 for i in range(4096)))}
    exec(compile("".join(lines[:cut]), "README.md", "exec"), g)
    print(json.dumps(g["ep"].endpoint_info()), flush=True)
    g["peer_info"] = json.loads(sys.stdin.readline())
    exec(compile(lines[cut], "README.md", "exec"), g)  # ep.connect(peer_info)
    print("connected", flush=True)
    sys.stdin.readline()  # the test says when this side reads (the peer's buf changes)
    exec(compile("".join(lines[cut + 1:]), "README.md", "exec"), g)
    print(bytes(g["buf"]).hex(), flush=True)
    sys.stdin.readline()  # the peer is done reading from us too


def rpc(role, url):
    code = block("from dlslime.rpc import").replace('"http://127.0.0.1:3000"', repr(url))
    if role == "rpc-server":
        exec(compile(code, "README.md", "exec"), {})
        print("served", flush=True)
        return
    # the client: the class definitions, then the commented client lines
    head = code[:code.index("agent = dlslime.PeerAgent")]
    client = [re.sub(r"^#\s*(in the client process:)?\s*", "", l)
              for l in code.splitlines() if l.startswith("#")]
    g = {"url": url}
    exec(compile(head, "README.md", "exec"), g)
    result = None
    for line in client:
        expr = line.split("  #")[0].strip()
        if expr.startswith("proxy("):
            result = eval(compile(expr, "README.md", "eval"), g)
        else:
            exec(compile(expr, "README.md", "exec"), g)
    print(f"result {result!r}", flush=True)
    g["agent"].shutdown()


if __name__ == "__main__":
    if sys.argv[1] == "endpoint":
        endpoint(int(sys.argv[2]))
    else:
        rpc(sys.argv[1], sys.argv[2])
