"""SlimeRPC side of the comparison (the original's rpc_bench_slime_worker.py and
rpc_bench_slime_driver.py in one script): two PeerAgents registered with NanoCtrl, one
connection (``--transport shm`` or ``tcp``), the worker serves ``EchoService.echo``
(raw + inplace: memmove request to reply), the driver calls it with ``bytes(size)`` and
``.wait()`` per sample.

By default this is the documented usage, as the original's bench and the SlimeRPC guide
write it: ``connect_to(...).wait()``, then ``serve`` / ``proxy``, default settings, no
environment variables. ``--tuned`` (both sides) adds the optional steps no guide needs:
``prepare(agent, peer)`` before ``connect_to`` (the session memory travels in the
handshake instead of being published after it) and an ``in_request=True`` handler (the
reply is written over the request: one copy fewer for bulk payloads).

    python slime_bench.py worker --ctrl URL --scope S --buf-mb 256 [--transport shm] [--tuned]
    python slime_bench.py driver --ctrl URL --scope S --buf-mb 256 --max-size-mb 16 --out CSV [--tuned]
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
    p.add_argument("--tuned", action="store_true",
                   help="prepare() before connect_to and an in_request handler (the labelled tuned row)")
    args = p.parse_args()
    me, peer = ("bench-worker", "bench-driver") if args.role == "worker" else ("bench-driver", "bench-worker")
    a = agent(args, me)
    try:
        if args.tuned:
            prepare(a, peer)  # optional: the session memory travels in the handshake
        a.connect_to(peer, transport=args.transport).wait(120)
        if args.role == "worker":
            serve(a, WorkerEchoInRequest() if args.tuned else WorkerEcho(), peer)
            return
        px = proxy(a, peer, DriverEcho)
        rows = []
        how = "tuned: prepare + in_request" if args.tuned else "documented usage"
        common.print_header(f"SlimeRPC over {args.transport}, {how} (PeerAgent, {os.getpid()})")
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
