"""Side "b" of a test in test_original_tcp.py, in its own process:

    python original_tcp_peer.py CASE

Prints its endpoint_info (a JSON line), reads side a's, connects, runs ``b_<CASE>``,
then prints {"ok": true, "buf": hex of its buffer} or {"error": ...}.
"""

import ctypes
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dlslime import TcpEndpoint  # noqa: E402

import original_tcp_cases as cases  # noqa: E402


def main():
    case = sys.argv[1]
    ep = TcpEndpoint(ip="127.0.0.1", port=0)
    buf, h = cases.setup(ep, "b")
    ctypes.memmove(ctypes.addressof(buf) + 100, b"hello_from_b", 12)
    print(json.dumps(ep.endpoint_info()), flush=True)
    info = json.loads(sys.stdin.readline())
    ep.connect(info)
    try:
        getattr(cases, "b_" + case)(ep, buf, h, info)
        out = {"ok": ep.is_connected()}
    except Exception as e:  # reported to the test
        out = {"error": f"{type(e).__name__}: {e}"}
    sys.stdin.readline()  # the test is done with us
    out["buf"] = bytes(buf).hex()
    print(json.dumps(out), flush=True)
    ep.shutdown()


if __name__ == "__main__":
    main()
