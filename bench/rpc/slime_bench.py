"""SlimeRPC side of the comparison (the original's rpc_bench_slime_worker.py and
rpc_bench_slime_driver.py in one script): two PeerAgents registered with NanoCtrl, one
connection (``--transport shm`` or ``tcp``), the worker serves ``EchoService.echo``
(raw + inplace: memmove request to reply), the driver calls it with ``bytes(size)`` and
``.wait()`` per sample.

    python slime_bench.py worker --ctrl URL --scope S --buf-mb 256 [--transport shm]
    python slime_bench.py driver --ctrl URL --scope S --buf-mb 256 --max-size-mb 16 --out CSV
"""

import argparse
import ctypes
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

import dlslime  # noqa: E402
from dlslime.rpc import method, prepare, proxy, serve  # noqa: E402


def _echo(self, req_ptr, req_nbytes, resp_ptr, resp_cap):
    if req_nbytes > resp_cap:
        raise RuntimeError(f"reply of {req_nbytes} B does not fit {resp_cap} B")
    ctypes.memmove(resp_ptr, req_ptr, req_nbytes)
    return req_nbytes


class WorkerEcho:
    """The original worker: raw + inplace, memmove of the request into the reply."""

    echo = method(raw=True, inplace=True)(_echo)


class WorkerEchoInRequest:
    """The same handler with ``in_request=True``: the reply buffer is the request
    buffer, so the memmove is to itself (a no-op) and a bulk payload goes back from
    where it lies (one copy fewer per call)."""

    echo = method(raw=True, inplace=True, in_request=True)(_echo)


class DriverEcho:
    @method(raw=True)
    def echo(self, data):  # the driver's stub; raw/inplace are local choices
        raise NotImplementedError


def agent(args, alias):
    a = dlslime.PeerAgent(args.ctrl, alias=alias, scope=args.scope)
    a._rpc_buffer_size = args.buf_mb * common.MiB
    a._rpc_max_inflight = args.max_inflight
    return a


def main():
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["worker", "driver"])
    p.add_argument("--ctrl", default="http://127.0.0.1:3000")
    p.add_argument("--scope", default="rpc-bench")
    p.add_argument("--buf-mb", type=int, default=256)
    p.add_argument("--max-size-mb", type=int, default=16)
    p.add_argument("--max-inflight", type=int, default=1)
    p.add_argument("--transport", default="shm", choices=["shm", "tcp"])
    p.add_argument("--out", default=os.path.join(common.RESULTS, "slime_rpc.csv"))
    p.add_argument("--copy-reply", action="store_true",
                   help="worker copies the request into a separate reply buffer (the original handler) "
                        "instead of answering in place of the request")
    args = p.parse_args()
    me, peer = ("bench-worker", "bench-driver") if args.role == "worker" else ("bench-driver", "bench-worker")
    a = agent(args, me)
    try:
        prepare(a, peer)  # before connect: on shm the peer maps the session memory
        a.connect_to(peer, transport=args.transport).wait(120)
        if args.role == "worker":
            serve(a, WorkerEcho() if args.copy_reply else WorkerEchoInRequest(), peer)
            return
        px = proxy(a, peer, DriverEcho)
        rows = []
        common.print_header(f"SlimeRPC over {args.transport} (PeerAgent, {os.getpid()})")
        for size in common.sizes(args.max_size_mb, below_mb=args.buf_mb):
            data = bytes(size)
            echo = px.echo

            def call():
                r = echo(data).wait()
                if len(r) != size:
                    raise RuntimeError(f"echo returned {len(r)} of {size} bytes")

            r = common.measure(size, call)
            common.print_row(r)
            rows.append(r)
        common.write_csv(args.out, rows)
        px._session.close()  # ends the worker's serve()
    finally:
        a.shutdown()


if __name__ == "__main__":
    main()
