"""The README's Python blocks run unchanged (readme_peer.py), each side in its own
process: the endpoint block over TCP, both sides reading each other's "kv" region; the
alias + SlimeRPC block, the server as written and the client from its comment lines."""

import json
import os
import subprocess
import sys

from conftest import HERE
from test_peer_agent import nanoctrl  # noqa: F401  (the module fixture)

PEER = os.path.join(HERE, "readme_peer.py")


def _pattern(seed):
    return bytes((seed * 31 + i) % 251 for i in range(4096))


def test_readme_endpoint_block():
    procs = [subprocess.Popen([sys.executable, PEER, "endpoint", str(seed)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    try:
        infos = [json.loads(p.stdout.readline()) for p in procs]
        for p, info in zip(procs, reversed(infos)):
            p.stdin.write(json.dumps(info) + "\n")
            p.stdin.flush()
        assert [p.stdout.readline().strip() for p in procs] == ["connected", "connected"]
        got = []
        for p in procs:  # one after the other: the first read changes the first side's buf
            p.stdin.write("\n")
            p.stdin.flush()
            got.append(p.stdout.readline().strip())
        for p in procs:
            p.stdin.write("\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    # side 1 read side 2's bytes; side 2 then read side 1's buf, which held them by then
    assert got == [_pattern(2).hex(), _pattern(2).hex()]


def test_readme_rpc_block(nanoctrl):  # noqa: F811
    server = subprocess.Popen([sys.executable, PEER, "rpc-server", nanoctrl], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        client = subprocess.run([sys.executable, PEER, "rpc-client", nanoctrl], capture_output=True, text=True,
                                timeout=90)
        s_out, s_err = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert client.returncode == 0, client.stdout + client.stderr
    assert "result 3" in client.stdout
    assert server.returncode == 0, s_out + s_err
    assert "served" in s_out
