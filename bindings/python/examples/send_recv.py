"""Two-process send/recv with dlslime.

    python send_recv.py [--transport tcp|shm]

A second copy of this script (the *server*) posts receives, echoes each message back in
upper case, and stops at b"bye". Messages match posted receives in FIFO order; a receive
buffer smaller than the message fails with dlslime.Truncated.
"""

import argparse
import json
import subprocess
import sys

import dlslime


def make_endpoint(transport):
    if transport == "shm":
        return dlslime.ShmEndpoint()
    return dlslime.TcpEndpoint(context=dlslime.TcpContext(bind="127.0.0.1:0"))


def server(transport):
    with make_endpoint(transport) as ep:
        print(json.dumps(ep.endpoint_info()), flush=True)
        ep.connect(json.loads(sys.stdin.readline()))
        buf = bytearray(1024)
        while True:
            f = ep.recv(buf, timeout=30)
            f.wait()
            msg = bytes(buf[: f.nbytes()])
            ep.send(msg.upper()).wait()
            if msg == b"bye":
                return 0


def client(transport):
    child = subprocess.Popen([sys.executable, __file__, "--transport", transport, "--role", "server"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    with make_endpoint(transport) as ep:
        peer_info = json.loads(child.stdout.readline())
        child.stdin.write(json.dumps(ep.endpoint_info()) + "\n")
        child.stdin.flush()
        ep.connect(peer_info)
        reply = bytearray(1024)
        for msg in (b"hello", b"dlslime from python", b"bye"):
            r = ep.recv(reply)  # post the receive first, then send
            ep.send(msg).wait()
            r.wait()
            print(msg, "->", bytes(reply[: r.nbytes()]))
    return child.wait(timeout=30)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--transport", choices=["tcp", "shm"], default="tcp")
    ap.add_argument("--role", choices=["client", "server"], default="client")
    a = ap.parse_args()
    sys.exit(server(a.transport) if a.role == "server" else client(a.transport))
