"""Python overhead per small operation: submit + wait of a 64-byte write over shared
memory, from Python (the dlslime package) and from C (c_loop.c, same endpoint, same
library, called through function pointers), interleaved in one run.

    python bench/python/small_op.py [--iters N] [--rounds R] [--csv FILE]

Run it with the interpreter that has the package installed (bench/python/run.sh does
that). The target is a second process holding a shared allocation.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import dlslime
from dlslime import ffi, lib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
SIZE = 64


def peer_main(mode: str) -> None:
    pool = dlslime.MemoryPool()
    region = dlslime.alloc_shared(1 << 20)
    pool.register_memory_region(region, name="buf")
    ep = make_ep(pool, mode)
    print(json.dumps(ep.endpoint_info()), flush=True)
    ep.connect(json.loads(sys.stdin.readline()))
    print("ok", flush=True)
    sys.stdin.readline()  # "quit" or EOF
    ep.close()


def make_ep(pool, mode):
    if mode == "inline":
        return dlslime.ShmEndpoint(pool, inline_progress=True)
    return dlslime.ShmEndpoint(pool)  # background progress, spin-then-park waits


def build_c_loop(tmp: str):
    so = os.path.join(tmp, "c_loop.so")
    cc = os.environ.get("CC", "cc")
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-I", os.path.join(ROOT, "include"),
                    os.path.join(HERE, "c_loop.c"), "-o", so], check=True)
    import cffi

    cffi_c = cffi.FFI()
    cffi_c.cdef("""
        int32_t c_write_loop(void *ep, void *a, uint64_t iters, void *w, void *wt, void *fr, uint64_t *out_ns);
    """)
    return cffi_c, cffi_c.dlopen(so)


def run(mode: str, iters: int, rounds: int):
    peer = subprocess.Popen([sys.executable, __file__, "--peer", mode], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        pool = dlslime.MemoryPool()
        local = dlslime.alloc_shared(1 << 20)
        h = pool.register_memory_region(local)
        ep = make_ep(pool, mode)
        info = json.loads(peer.stdout.readline())
        peer.stdin.write(json.dumps(ep.endpoint_info()) + "\n")
        peer.stdin.flush()
        ep.connect(info)
        assert peer.stdout.readline().strip() == "ok"
        r = ep.remote_handle("buf")
        assign = [(h, r, 0, 0, SIZE)]

        with tempfile.TemporaryDirectory() as tmp:
            cffi_c, clib = build_c_loop(tmp)
            a = ffi.new("dlslime_assignment_t *", {"local": h, "remote": r, "length": SIZE})
            out_ns = cffi_c.new("uint64_t[2]")

            # Each round returns (wall us/op, thread-CPU us/op). CPU time leaves out the
            # time this thread was preempted, which dominates on a loaded 2-core box.
            def c_round():
                st = clib.c_write_loop(ep._ptr, a, iters, lib.dlslime_endpoint_write, lib.dlslime_future_wait,
                                       lib.dlslime_future_free, out_ns)
                if st != 0:
                    raise RuntimeError(f"C loop failed with status {st}")
                return out_ns[0] / iters / 1000, out_ns[1] / iters / 1000

            def py_round():
                write = ep.write
                t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
                for _ in range(iters):
                    write(assign).wait()
                return (time.perf_counter_ns() - t0) / iters / 1000, (time.thread_time_ns() - c0) / iters / 1000

            def raw_round():
                # The same three C calls made straight through cffi, without the
                # package's Python layer: the floor of any cffi ABI-mode binding.
                w, wt, fr = lib.dlslime_endpoint_write, lib.dlslime_future_wait, lib.dlslime_future_free
                p, out = ep._ptr, ffi.new("dlslime_future_t **")
                t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
                for _ in range(iters):
                    w(p, a, 1, 0, out)
                    wt(out[0])
                    fr(out[0])
                return (time.perf_counter_ns() - t0) / iters / 1000, (time.thread_time_ns() - c0) / iters / 1000

            for _ in range(2):  # warm-up
                c_round(), raw_round(), py_round()
            c_us, raw_us, py_us = [], [], []
            for _ in range(rounds):
                c_us.append(c_round())
                raw_us.append(raw_round())
                py_us.append(py_round())
        ep.close()
        return c_us, raw_us, py_us
    finally:
        try:
            peer.stdin.write("quit\n")
            peer.stdin.flush()
            peer.wait(timeout=10)
        except Exception:
            peer.kill()
            peer.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer", help=argparse.SUPPRESS)
    ap.add_argument("--iters", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--modes", default="background,inline")
    ap.add_argument("--csv")
    args = ap.parse_args()
    if args.peer:
        return peer_main(args.peer)
    rows = []
    print(f"dlslime {dlslime.version()}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; "
          f"{SIZE} B shm write, submit + wait, {args.iters} ops x {args.rounds} rounds (median of rounds)")
    print(f"load average before: {' '.join('%.2f' % x for x in os.getloadavg())}")
    hdr = f"{'mode':<11} {'clock':<5} {'C us/op':>8} {'raw cffi':>9} {'dlslime py':>11} {'py - C us':>10} {'ratio':>6}"
    print(hdr)
    for mode in args.modes.split(","):
        c_us, raw_us, py_us = run(mode, args.iters, args.rounds)
        for k, clock in ((0, "wall"), (1, "cpu")):
            c = statistics.median(x[k] for x in c_us)
            raw = statistics.median(x[k] for x in raw_us)
            p = statistics.median(x[k] for x in py_us)
            d = statistics.median(b[k] - a[k] for a, b in zip(c_us, py_us))  # per-round difference
            rows.append((mode, clock, c, raw, p, d))
            print(f"{mode:<11} {clock:<5} {c:>8.2f} {raw:>9.2f} {p:>11.2f} {d:>10.2f} {p / c:>6.2f}")
    print(f"load average after: {' '.join('%.2f' % x for x in os.getloadavg())}")
    print("columns: C = c_loop.c; raw cffi = the same 3 C calls through cffi with no wrapper; "
          "dlslime py = ep.write([(h, r, 0, 0, 64)]).wait(); py - C = median over rounds of the "
          "per-round difference (target <= 3 us); wall = elapsed time, cpu = the loop thread's CPU time")
    if args.csv:
        with open(args.csv, "w") as f:
            f.write("mode,clock,c_us_per_op,raw_cffi_us_per_op,python_us_per_op,python_minus_c_us\n")
            for r in rows:
                f.write("%s,%s,%.3f,%.3f,%.3f,%.3f\n" % r)


if __name__ == "__main__":
    main()
