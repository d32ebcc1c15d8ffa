"""The raw floor, measured in the same run: a plain Python length-prefixed socket echo
between two processes over loopback (TCP_NODELAY), same sizes and protocol; also the
time of one memcpy of each size (``ctypes.memmove``, written to memcpy.csv)."""

import argparse
import ctypes
import os
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402


def recv_exact(s, view, n):
    got = 0
    while got < n:
        k = s.recv_into(view[got:n], n - got)
        if k == 0:
            raise EOFError
        got += k


def serve(port):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(1)
    print("ready", flush=True)
    s, _ = ls.accept()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray(64 * common.MiB + 8)
    view = memoryview(buf)
    hdr = bytearray(8)
    try:
        while True:
            recv_exact(s, memoryview(hdr), 8)
            (n,) = struct.unpack("<Q", hdr)
            recv_exact(s, view, n)
            s.sendall(hdr)
            s.sendall(view[:n])
    except (EOFError, ConnectionError):
        pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--max-size-mb", type=int, default=64)
    p.add_argument("--out", default=os.path.join(common.RESULTS, "socket_rpc.csv"))
    p.add_argument("--memcpy-out", default=None, help="memcpy floor CSV (default: memcpy.csv beside --out; "
                                                      "'' skips it)")
    p.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args.serve)
        return
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    port = ls.getsockname()[1]
    ls.close()
    srv = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", str(port)], stdout=subprocess.PIPE,
                           text=True)
    try:
        assert srv.stdout.readline().strip() == "ready"
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        back = bytearray(64 * common.MiB)
        bview = memoryview(back)
        hdr = bytearray(8)
        rows = []
        common.print_header(f"raw Python socket echo (floor), server pid {srv.pid}")
        for size in common.sizes(args.max_size_mb):
            data = bytes(size)
            head = struct.pack("<Q", size)

            def call():
                s.sendall(head)
                s.sendall(data)
                recv_exact(s, memoryview(hdr), 8)
                recv_exact(s, bview, size)

            r = common.measure(size, call)
            common.print_row(r)
            rows.append(r)
        s.close()
        common.write_csv(args.out, rows)
        memcpy_out = args.memcpy_out
        if memcpy_out is None:
            memcpy_out = os.path.join(os.path.dirname(args.out), "memcpy.csv")
        if not memcpy_out:
            return
        # memcpy floor: one copy of each size between two warm buffers
        mrows = []
        for size in common.sizes(args.max_size_mb):
            a = bytearray(size)
            b = bytearray(size)
            ca = (ctypes.c_char * size).from_buffer(a)
            cb = (ctypes.c_char * size).from_buffer(b)
            ctypes.memmove(ca, cb, size)

            def call():
                ctypes.memmove(ca, cb, size)

            mrows.append(common.measure(size, call))
            del ca, cb
        common.write_csv(memcpy_out, mrows)
    finally:
        srv.kill()
        srv.wait()


if __name__ == "__main__":
    main()
