"""Pulsing side of the comparison, cross-process (DLSlime's original Pulsing baseline
measured an in-process actor): a server process runs an ActorSystem on loopback with a
public ``echo`` actor; this process joins it as a second ActorSystem and ``ask``s it.
pulsing 0.1.2's typed proxy cannot decode cross-process replies, so this uses raw
``ask`` (the reply payload is the pickled bytes, unpickled per sample)."""

import argparse
import asyncio
import os
import pickle
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

try:
    import pulsing as pul
except ImportError:
    print("pulsing is not installed: pip install pulsing (bench/rpc/run.sh --with-pulsing does it)",
          file=sys.stderr)
    sys.exit(3)


class EchoActor:
    async def receive(self, msg):
        return msg


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def server(port):
    system = await pul.actor_system(addr=f"127.0.0.1:{port}")
    await system.spawn(EchoActor(), name="echo", public=True)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    # Serve until the client closes our stdin (read off the event loop, which must stay
    # free to run the actor).
    while await loop.run_in_executor(None, sys.stdin.readline):
        pass


async def client(args, port):
    system = await pul.actor_system(addr=f"127.0.0.1:{free_port()}", seeds=[f"127.0.0.1:{port}"])
    deadline = time.monotonic() + 30
    while True:
        try:
            ref = await system.resolve("echo")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
    rows = []
    common.print_header(f"Pulsing actor, cross-process (server pid {args.server_pid}, client pid {os.getpid()})")
    loop_sizes = common.sizes(args.max_size_mb)
    for size in loop_sizes:
        data = bytes(size)
        samples = []
        for _ in range(common.WARMUP):
            await ref.ask(data)
        n = common.iters(size)
        pc = time.perf_counter
        for _ in range(n):
            t = pc()
            r = await ref.ask(data)
            out = pickle.loads(r.payload)
            samples.append((pc() - t) * 1e6)
            if len(out) != size:
                raise RuntimeError("short echo")
        samples.sort()
        avg = sum(samples) / n
        row = {"size": size, "avg_us": avg, "p50_us": samples[n // 2], "p99_us": samples[int(n * 0.99)],
               "bw_gbps": 2 * size / 1e9 / (avg / 1e6)}
        common.print_row(row)
        rows.append(row)
    common.write_csv(args.out, rows)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--max-size-mb", type=int, default=64)
    p.add_argument("--out", default=os.path.join(common.RESULTS, "pulsing_rpc.csv"))
    p.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        asyncio.run(server(args.serve))
        return
    port = free_port()
    srv = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", str(port)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        if srv.stdout.readline().strip() != "ready":
            raise RuntimeError("pulsing server did not start")
        args.server_pid = srv.pid
        asyncio.run(client(args, port))
    finally:
        srv.kill()
        srv.wait()


if __name__ == "__main__":
    main()
