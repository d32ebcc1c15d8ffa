"""make soak: a bounded mixed workload whose memory, fds and threads must stay flat.

    python soak.py [--seconds 600] [--warmup 0.2] [--tolerance 0.05] [--csv PATH]

This process is the long-lived side. It cycles, alternating TCP and shared memory, over:

* transfers: a fresh peer process (tests/peer.py: a peer restart every cycle), connect,
  writes and reads at varying offsets checked byte for byte, send/recv both ways, then
  disconnect (close the endpoint, the peer quits);
* faults: every fourth transfer cycle the peer is SIGKILLed in the middle of a large
  read, whose future must fail (not hang);
* RPC: a fresh server process (tests/rpc_peer.py), typed calls below and above the bulk
  threshold checked for equality, then the session and endpoint closed.

After each cycle (everything of it closed, gc run) it samples its own RSS, open fds and
threads. The level after warm-up is the median of the first quarter of the samples
taken after the warm-up fraction of the time; the end level is the median of the last
quarter. Flat: each end level within ``tolerance`` of its level after warm-up (fds and
threads, being small counts, must not grow at all). Prints a table, writes every sample
to a CSV, exits 1 when not flat or when any check of the workload failed. Every wait
has a deadline; the run ends by itself after ``--seconds``.
"""

import argparse
import csv
import gc
import os
import random
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.join(HERE, "..", "tests")
sys.path.insert(0, TESTS)

import dlslime  # noqa: E402
from conftest import Peer, make_endpoint, pattern  # noqa: E402
from test_rpc import Server  # noqa: E402

REGION = 1 << 20
TRANSPORTS = ["tcp", "shm"] if dlslime.has_shm() else ["tcp"]


def sample():
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            status[k] = v.strip()
    return {
        "rss_kib": int(status["VmRSS"].split()[0]),
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": int(status["Threads"]),
    }


def transfer_cycle(transport, rng, kill_mid_transfer):
    peer = Peer(transport, region=REGION)
    pool = dlslime.MemoryPool()
    buf = bytearray(REGION)
    local = pool.register_memory_region(buf, name="local")
    ep = make_endpoint(transport, pool)
    try:
        info = peer.read()["info"]
        peer.write(ep.endpoint_info())
        ep.connect(info)
        assert peer.read() == {"ok": True}
        remote = ep.remote_handle("buf")
        if kill_mid_transfer:
            f = ep.read([(local, remote, 0, 0, REGION)] * 64, timeout=30)
            peer.kill()
            t0 = time.monotonic()
            try:
                f.wait()
            except dlslime.DLSlimeError:
                pass  # failed, as it must when the peer died first; or it completed
            assert time.monotonic() - t0 < 10, "a read to a killed peer took 10 s to end"
            return 1
        ops = 0
        for i in range(40):
            off, n = rng.randrange(0, REGION // 2), rng.randrange(1, REGION // 2)
            data = pattern(n, seed=i)
            buf[:n] = data
            ep.write([(local, remote, off, 0, n)], timeout=30).wait()
            buf[:n] = bytes(n)
            ep.read([(local, remote, off, 0, n)], timeout=30).wait()
            assert bytes(buf[:n]) == data, "read back differs from what was written"
            ops += 2
        for i in range(10):
            msg = pattern(100 + 997 * i, seed=i)
            peer.write({"cmd": "recv", "len": len(msg)})
            ep.send(msg, timeout=30).wait()
            got = peer.read()
            assert bytes.fromhex(got["hex"]) == msg, "message differs"
            into = bytearray(len(msg))
            f = ep.recv(into, timeout=30)
            peer.call("send", hex=msg.hex())
            f.wait()
            assert f.nbytes() == len(msg) and bytes(into) == msg
            ops += 2
        return ops
    finally:
        ep.close()
        peer.close()


def rpc_cycle(transport, rng):
    srv = Server(transport, workers=1)
    ep = make_endpoint(transport, dlslime.MemoryPool())
    try:
        p = srv.connect(ep)
        calls = 0
        for i in range(100):
            assert p.add(i, 1).wait(30) == i + 1
            calls += 1
        for n in (10, 100_000, 3_000_000):  # inline, around and over the bulk threshold
            data = pattern(n + rng.randrange(100), seed=n)
            assert p.add(data, b"").wait(30) == data, "RPC result differs"
            calls += 1
        return calls
    finally:
        ep.close()
        srv.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 600)))
    ap.add_argument("--warmup", type=float, default=0.2)
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--csv", default=os.path.join(HERE, "..", "..", "..", "target", "soak", "samples.csv"))
    a = ap.parse_args()

    rng = random.Random(13)
    start = time.monotonic()
    end = start + a.seconds
    samples, totals, failures, cycle = [], {"ops": 0, "calls": 0, "kills": 0}, [], 0
    while time.monotonic() < end:
        transport = TRANSPORTS[cycle % len(TRANSPORTS)]
        kind = ("transfer", "rpc", "transfer", "kill")[(cycle // len(TRANSPORTS)) % 4]
        try:
            if kind == "rpc":
                totals["calls"] += rpc_cycle(transport, rng)
            else:
                n = transfer_cycle(transport, rng, kill_mid_transfer=(kind == "kill"))
                totals["kills" if kind == "kill" else "ops"] += n
        except Exception as e:  # noqa: BLE001 - every failure is reported, the run goes on
            failures.append(f"cycle {cycle} ({kind} over {transport}): {type(e).__name__}: {e}")
            print(failures[-1], file=sys.stderr, flush=True)
        cycle += 1
        gc.collect()
        s = sample()
        s.update(t=round(time.monotonic() - start, 2), cycle=cycle)
        samples.append(s)

    os.makedirs(os.path.dirname(os.path.abspath(a.csv)), exist_ok=True)
    with open(a.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["t", "cycle", "rss_kib", "fds", "threads"])
        w.writeheader()
        w.writerows(samples)

    after = [s for s in samples if s["t"] >= a.warmup * a.seconds]
    q = max(1, len(after) // 4)
    flat = len(after) >= 8
    print(f"soak: {a.seconds:.0f} s, {cycle} cycles over {'+'.join(TRANSPORTS)}: "
          f"{totals['ops']} checked transfers/messages, {totals['calls']} RPC calls, "
          f"{totals['kills']} peers killed mid-transfer; {len(failures)} failed cycles")
    print(f"{'metric':<10}{'after warm-up':>16}{'end':>12}{'change':>10}  flat")
    for k, tol in (("rss_kib", a.tolerance), ("fds", 0.0), ("threads", 0.0)):
        if len(after) < 8:
            print(f"{k:<10} too few samples after warm-up ({len(after)})")
            continue
        base = statistics.median(s[k] for s in after[:q])
        last = statistics.median(s[k] for s in after[-q:])
        change = (last - base) / base if base else 0.0
        ok = last <= base * (1 + tol)
        flat &= ok
        print(f"{k:<10}{base:>16.0f}{last:>12.0f}{change:>+10.1%}  {'yes' if ok else 'NO'}")
    print(f"samples: {os.path.abspath(a.csv)}")
    if failures:
        print("FAILED cycles:\n  " + "\n  ".join(failures[:20]))
    sys.exit(0 if flat and not failures else 1)


if __name__ == "__main__":
    main()
