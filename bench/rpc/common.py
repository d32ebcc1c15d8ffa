"""Shared by the SlimeRPC comparison scripts: the original protocol (bench/python of
DLSlime @6e440d2): sizes 1 KiB .. 64 MiB, 20 warm-up calls,
``max(50, min(500, 50_000_000 // size))`` timed calls, samples sorted,
``p50 = s[n//2]``, ``p99 = s[int(n*0.99)]``, ``bw_gbps = 2*size/1e9/(avg_us/1e6)``;
CSV ``size,avg_us,p50_us,p99_us,bw_gbps``."""

import csv
import os
import platform
import time

KiB = 1024
MiB = 1024 * 1024
SIZES = [1 * KiB, 4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, 1 * MiB, 4 * MiB, 16 * MiB, 64 * MiB]
WARMUP = 20
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "results")


def iters(size):
    return max(50, min(500, 50_000_000 // size))


def sizes(max_size_mb, below_mb=None):
    out = [s for s in SIZES if s <= max_size_mb * MiB]
    if below_mb is not None:
        out = [s for s in out if s < below_mb * MiB]
    return out


def label(size):
    return f"{size // KiB}KB" if size < MiB else f"{size // MiB}MB"


def measure(size, call):
    """Runs the protocol for one size; ``call()`` does one round trip."""
    for _ in range(WARMUP):
        call()
    n = iters(size)
    samples = []
    pc = time.perf_counter
    for _ in range(n):
        t = pc()
        call()
        samples.append((pc() - t) * 1e6)
    samples.sort()
    avg = sum(samples) / n
    return {"size": size, "avg_us": avg, "p50_us": samples[n // 2], "p99_us": samples[int(n * 0.99)],
            "bw_gbps": 2 * size / 1e9 / (avg / 1e6)}


def print_header(title):
    print(title)
    print(f"{'Size':<10} | {'Avg (µs)':>12} | {'P50 (µs)':>12} | {'P99 (µs)':>12} | {'BW (GB/s)':>12}")
    print("-" * 70)


def print_row(r):
    print(f"{label(r['size']):<10} | {r['avg_us']:>12.1f} | {r['p50_us']:>12.1f} | {r['p99_us']:>12.1f} | "
          f"{r['bw_gbps']:>12.3f}", flush=True)


def write_csv(path, rows):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["size", "avg_us", "p50_us", "p99_us", "bw_gbps"])
        w.writeheader()
        for r in rows:
            w.writerow(r)
    print(f"wrote {path}")


def hardware_line():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (f"{os.cpu_count()} CPUs ({cpu}){mem}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")
