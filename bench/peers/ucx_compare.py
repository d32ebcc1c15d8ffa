#!/usr/bin/env python3
"""dlslime against UCX (`ucx_perftest`) on loopback, in the same run.

Each of N runs measures, back to back so that both see the same machine load:

* UCX over shared memory (`UCX_TLS=posix,cma,self`) and over TCP (`UCX_TLS=tcp`,
  `UCX_NET_DEVICES=lo`): tag_lat, tag_bw, ucp_put_lat, ucp_put_bw at 64 B, 1 KiB, 4 KiB,
  64 KiB, 1 MiB and 16 MiB; one server/client pair of processes per test;
* dlslime: `cargo run --release --example shm_bench`, `cargo bench --bench endpoint`,
  `cargo run --release --example rpc_native_bench` (their CSV outputs are read back).

Then it prints the ratio table (Path | dlslime | UCX | dlslime / UCX) of medians over
the runs, and writes it as markdown and CSV under bench/results/, with every raw value.
`--variant NAME=DIR` (repeatable) measures prebuilt binaries instead of this checkout,
one column each, in the same runs: before/after comparisons of a change.

ucx_perftest reports one-way latency (half the ping-pong round trip) as its 50th
percentile ("typical"); the round trip compared with ours is twice that. Its bandwidth
is MiB/s; it is converted to GB/s (1e9 bytes/s) here, as ours is.
"""

import argparse
import csv
import datetime
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KIB, MIB = 1 << 10, 1 << 20
SIZES = [64, KIB, 4 * KIB, 64 * KIB, MIB, 16 * MIB]
UCX_ENV = {
    "posix": {"UCX_TLS": "posix,cma,self"},
    "tcp": {"UCX_TLS": "tcp", "UCX_NET_DEVICES": "lo"},
}
UCX_TESTS = ["tag_lat", "tag_bw", "ucp_put_lat", "ucp_put_bw"]

# The table, then more rows of the same kind. Each side names where its number
# comes from; "rtt" is twice UCX's one-way latency, "bw" is GB/s (higher is better).
# (label, dlslime (source, key, size, kind), UCX (transport, test, size, kind), target)
ROWS = [
    ("shm 64 B round trip (spin)", ("shm", "shm endpoint send/recv RTT (spin)", 64, "us"),
     ("posix", "tag_lat", 64, "rtt"), "<= 1.2"),
    ("shm one-sided write 1 MiB", ("shm", "shm endpoint write (shared region)", MIB, "bw"),
     ("posix", "ucp_put_bw", MIB, "bw"), ">= 1.0"),
    ("shm one-sided write 16 MiB", ("shm", "shm endpoint write (shared region)", 16 * MIB, "bw"),
     ("posix", "ucp_put_bw", 16 * MIB, "bw"), ">= 1.0"),
    ("TCP write 4 KiB round trip", ("tcp", "write", 4 * KIB, "us"),
     ("tcp", "tag_lat", 4 * KIB, "rtt"), "<= 1.3"),
    ("TCP send/recv 4 KiB", ("tcp", "send/recv", 4 * KIB, "us"),
     ("tcp", "tag_lat", 4 * KIB, "rtt"), "<= 1.5"),
    ("TCP write 1 MiB bandwidth", ("tcp", "write", MIB, "bw"),
     ("tcp", "tag_bw", MIB, "bw"), ">= 1.0"),
    ("TCP write 16 MiB bandwidth", ("tcp", "write", 16 * MIB, "bw"),
     ("tcp", "tag_bw", 16 * MIB, "bw"), ">= 1.0"),
    ("SlimeRPC native 1 KiB, shm", ("rpc", "shm-spin", KIB, "us"),
     ("posix", "tag_lat", KIB, "rtt"), ""),
    ("SlimeRPC native 1 KiB, TCP", ("rpc", "tcp", KIB, "us"),
     ("tcp", "tag_lat", KIB, "rtt"), "<= 2.0"),
    ("SlimeRPC native 64 KiB, shm", ("rpc", "shm-spin", 64 * KIB, "us"),
     ("posix", "tag_lat", 64 * KIB, "rtt"), ""),
]
MORE_ROWS = [
    ("TCP write 1 KiB round trip", ("tcp", "write", KIB, "us"),
     ("tcp", "tag_lat", KIB, "rtt"), ""),
    ("TCP write 64 KiB round trip", ("tcp", "write", 64 * KIB, "us"),
     ("tcp", "tag_lat", 64 * KIB, "rtt"), ""),
    ("SlimeRPC native 4 KiB, shm", ("rpc", "shm-spin", 4 * KIB, "us"),
     ("posix", "tag_lat", 4 * KIB, "rtt"), ""),
    ("SlimeRPC native 1 MiB, shm", ("rpc", "shm-spin", MIB, "us"),
     ("posix", "tag_lat", MIB, "rtt"), ""),
    ("SlimeRPC native 16 MiB, shm", ("rpc", "shm-spin", 16 * MIB, "us"),
     ("posix", "tag_lat", 16 * MIB, "rtt"), ""),
    ("SlimeRPC native 4 KiB, TCP", ("rpc", "tcp", 4 * KIB, "us"),
     ("tcp", "tag_lat", 4 * KIB, "rtt"), ""),
    ("SlimeRPC native 64 KiB, TCP", ("rpc", "tcp", 64 * KIB, "us"),
     ("tcp", "tag_lat", 64 * KIB, "rtt"), ""),
    ("SlimeRPC native 1 MiB, TCP", ("rpc", "tcp", MIB, "us"),
     ("tcp", "tag_lat", MIB, "rtt"), ""),
]


def label(size):
    if size >= MIB:
        return f"{size // MIB} MiB"
    if size >= KIB:
        return f"{size // KIB} KiB"
    return f"{size} B"


def ucx_iters(test, size, quick):
    if test.endswith("lat"):
        n = 20000 if size <= 64 * KIB else max(100, 500 * MIB // size)
    else:
        n = max(100, min(20000, 2 * 1024 * MIB // size))
    return max(30, n // 5) if quick else n


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ucx(transport, test, size, quick, pin, timeout):
    """One server/client pair; returns the client's final CSV fields, or None."""
    env = dict(os.environ, **UCX_ENV[transport])
    n = ucx_iters(test, size, quick)
    port = str(free_port())
    srv = subprocess.Popen(
        ["ucx_perftest", "-p", port] + (["-c", "1"] if pin else []),
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        cmd = ["ucx_perftest", "127.0.0.1", "-p", port, "-t", test, "-s", str(size),
               "-n", str(n), "-w", str(max(10, n // 10)), "-f", "-v"]
        cmd += ["-c", "0"] if pin else []
        # The server takes the first TCP connection as its client, so it is not probed:
        # the client retries until the server listens.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.1)
            try:
                r = subprocess.run(cmd, env=env, capture_output=True, text=True,
                                   timeout=max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                break
            if r.returncode == 0:
                for line in reversed(r.stdout.splitlines()):
                    f = line.strip().split(",")
                    if len(f) == 8 and f[0].strip().isdigit():
                        return [float(x) for x in f]
                break
            if "connect" not in (r.stdout + r.stderr).lower() or srv.poll() is not None:
                sys.stderr.write(f"ucx_perftest {transport} {test} {size}: {r.stderr[-400:]}\n")
                break
        return None
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait()


def ucx_value(test, fields):
    # fields: iters, typical lat, avg lat, overall lat (us), avg bw, overall bw (MiB/s), ...
    if test.endswith("lat"):
        return fields[1]
    return fields[5] * MIB / 1e9


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def bench(bin_dir, what, args, timeout):
    """Runs one of our benchmarks: through cargo, or the prebuilt binary in `bin_dir`."""
    if bin_dir is None:
        cmd = ["cargo", "bench", "-q", "--bench", what, "--"] if what == "endpoint" else \
            ["cargo", "run", "-q", "--release", "--example", what, "--"]
    else:
        cmd = [os.path.join(bin_dir, what)]
    cmd += args
    print("+ " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-2000:] + r.stderr[-2000:])
        return False
    return True


def run_ours(bin_dir, tmp, quick, pin, timeout):
    """Our three benchmarks; returns {(source, key, size, kind): value}."""
    out = {}
    shm_csv = os.path.join(tmp, "shm_bench.csv")
    if bench(bin_dir, "shm_bench", ["--max-mib", "16", "--csv", shm_csv]
             + (["--quick"] if quick else []), timeout):
        for r in read_csv(shm_csv):
            size, p50 = int(r["size_bytes"]), float(r["p50_us"])
            out[("shm", r["metric"], size, "us")] = p50
            out[("shm", r["metric"], size, "p99")] = float(r["p99_us"])
            out[("shm", r["metric"], size, "bw")] = size / p50 / 1e3
    ep_csv = os.path.join(tmp, "endpoint_tcp.csv")
    if bench(bin_dir, "endpoint", ["--max-mib", "16", "--csv", ep_csv], timeout):
        for r in read_csv(ep_csv):
            if r["op"] == "raw_stream":
                continue
            size, p50 = int(r["size"]), float(r["p50_us"])
            out[("tcp", r["op"], size, "us")] = p50
            out[("tcp", r["op"], size, "p99")] = float(r["p99_us"])
            out[("tcp", r["op"], size, "bw")] = size / p50 / 1e3
    rpc_csv = os.path.join(tmp, "rpc_native.csv")
    if bench(bin_dir, "rpc_native_bench", ["--max-size-mb", "16", "--csv", rpc_csv]
             + (["--quick"] if quick else []) + (["--pin"] if pin else []), timeout):
        for r in read_csv(rpc_csv):
            out[("rpc", r["transport"], int(r["size"]), "us")] = float(r["p50_us"])
            out[("rpc", r["transport"], int(r["size"]), "p99")] = float(r["p99_us"])
    return out


def median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, kind):
    if v is None:
        return "n/a"
    return f"{v:.2f} GB/s" if kind == "bw" else f"{v:.2f} µs"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs; medians are reported (3)")
    ap.add_argument("--quick", action="store_true", help="fewer iterations everywhere")
    ap.add_argument("--ucx-runs", type=int, default=None, metavar="K",
                    help="measure UCX in the first K runs only (default: every run); "
                         "ours runs every time. UCX's large sizes take minutes per run on "
                         "a loaded machine; before/after comparisons need more of ours")
    ap.add_argument("--pin", action="store_true",
                    help="pin each pair's two processes to CPUs 0 and 1 (UCX -c, rpc --pin)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=DIR",
                    help="measure prebuilt binaries (DIR/shm_bench, DIR/endpoint, "
                         "DIR/rpc_native_bench) as column NAME; repeat to compare builds "
                         "(before/after) in the same runs. Default: this checkout via cargo")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"),
                    help="directory for ucx_compare.{md,csv} and ucx_compare_runs.csv")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per process pair")
    a = ap.parse_args()

    if shutil.which("ucx_perftest") is None:
        print("NOT RUN: ucx_perftest is not installed (Debian: apt-get install ucx-utils; "
              "scripts/install-deps.sh installs it)")
        return 1
    variants = [tuple(v.split("=", 1)) for v in a.variant] or [("dlslime", None)]
    os.makedirs(a.out, exist_ok=True)
    tmp = os.path.join(a.out, "ucx_compare_tmp")
    os.makedirs(tmp, exist_ok=True)
    ucx_version = subprocess.run(["ucx_info", "-v"], capture_output=True, text=True).stdout
    ucx_version = next((l.split()[-1] for l in ucx_version.splitlines() if "Version" in l), "?")

    raw = []  # (run, side, a, b, size, kind, value); side "ucx" or a variant name
    loads = []
    for run in range(a.runs):
        load0 = os.getloadavg()
        t0 = time.monotonic()
        print(f"== run {run + 1}/{a.runs} (load average {load0[0]:.2f})", flush=True)
        for transport in ("posix", "tcp") if a.ucx_runs is None or run < a.ucx_runs else ():
            for test in UCX_TESTS:
                for size in SIZES:
                    f = run_ucx(transport, test, size, a.quick, a.pin, a.timeout)
                    v = ucx_value(test, f) if f else None
                    kind = "us" if test.endswith("lat") else "bw"
                    raw.append((run, "ucx", transport, test, size, kind, v))
                    print(f"  ucx {transport:<5} {test:<11} {label(size):>7}: "
                          f"{fmt(v, kind)}{' (one-way)' if kind == 'us' else ''}", flush=True)
        # Variants in turn, rotating the order between runs.
        for name, bin_dir in variants[run % len(variants):] + variants[:run % len(variants)]:
            got = run_ours(bin_dir, tmp, a.quick, a.pin, a.timeout * 4)
            for (src, key, size, kind), v in sorted(got.items()):
                raw.append((run, name, src, key, size, kind, v))
        load1 = os.getloadavg()
        loads.append((load0[0], load1[0], time.monotonic() - t0))

    def med(side, x, y, size, kind):
        return median([r[6] for r in raw if r[1:6] == (side, x, y, size, kind)])

    def row_values(rows):
        out = []
        for lbl, ours, theirs, target in rows:
            src, key, size, kind = ours
            t_tr, t_test, t_size, t_kind = theirs
            u = med("ucx", t_tr, t_test, t_size, "us" if t_kind == "rtt" else "bw")
            if u is not None and t_kind == "rtt":
                u *= 2
            per = []
            for name, _ in variants:
                d = med(name, src, key, size, kind)
                per.append((d, d / u if d is not None and u else None))
            ucx_name = f"{t_tr} {t_test}" + (" (2 × one-way)" if t_kind == "rtt" else "")
            out.append((lbl, per, u, kind, ucx_name, target))
        return out

    main_rows, more_rows = row_values(ROWS), row_values(MORE_ROWS)
    host = subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "?")
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    names = [n for n, _ in variants]
    ncol = 3 + 2 * len(names)
    md = [f"# dlslime vs UCX {ucx_version} ({when})", "",
          f"Host: {os.cpu_count()} CPUs ({cpu}), Linux {host}; loopback; medians of "
          f"{a.runs} run(s)"
          + ("" if a.ucx_runs is None or a.ucx_runs >= a.runs else
             f" (UCX: the first {a.ucx_runs})")
          + f"{', quick' if a.quick else ''}; "
          f"{'pinned' if a.pin else 'not pinned'}.",
          "Load average (1 min) at start → end of each run: "
          + "; ".join(f"{l0:.2f} → {l1:.2f} ({s:.0f} s)" for l0, l1, s in loads) + ".",
          f"UCX shared memory: `UCX_TLS={UCX_ENV['posix']['UCX_TLS']}`; TCP: "
          f"`UCX_TLS=tcp UCX_NET_DEVICES=lo`.", "",
          "Latency rows: p50 µs, ratio > 1 means dlslime is slower. Bandwidth rows: GB/s, "
          "ratio < 1 means dlslime is slower.", "",
          "| Path | " + " | ".join(names) + " | UCX | "
          + " | ".join(f"{n} ÷ UCX" for n in names) + " | UCX test | target |",
          "|" + "---|" * (ncol + 1)]
    for rows in (main_rows, [None], more_rows):
        for r in rows:
            if r is None:
                md.append("| *more rows* |" + " |" * ncol)
                continue
            lbl, per, u, kind, name, target = r
            md.append(f"| {lbl} | " + " | ".join(fmt(d, kind) for d, _ in per)
                      + f" | {fmt(u, kind)} | "
                      + " | ".join("n/a" if q is None else f"{q:.2f}×" for _, q in per)
                      + f" | {name} | {target} |")
    md += ["", "## UCX alone (medians; latency one-way p50 µs, bandwidth GB/s)", "",
           "| transport | test | " + " | ".join(label(s) for s in SIZES) + " |",
           "|---|---|" + "---|" * len(SIZES)]
    for transport in ("posix", "tcp"):
        for test in UCX_TESTS:
            kind = "us" if test.endswith("lat") else "bw"
            vals = [med("ucx", transport, test, s, kind) for s in SIZES]
            md.append(f"| {transport} | {test} | "
                      + " | ".join("n/a" if v is None else f"{v:.2f}" for v in vals) + " |")
    # With several variants: every row of our benchmarks, p50 and p99 side by side.
    var_rows = []
    if len(names) > 1:
        keys = sorted({(r[2], r[3], r[4]) for r in raw if r[1] in names and r[5] == "us"})
        first, last = names[0], names[-1]
        md += ["", f"## Every row of our benchmarks, per variant (medians over {a.runs} "
               f"run(s); latency µs; {last} ÷ {first}: below 1 is faster)", "",
               "| benchmark | row | size | "
               + " | ".join(f"{n} p50" for n in names) + " | "
               + " | ".join(f"{n} p99" for n in names)
               + f" | p50 {last} ÷ {first} | p99 {last} ÷ {first} |",
               "|---|---|---|" + "---|" * (2 * len(names) + 2)]
        for src, key, size in keys:
            p50 = [med(n, src, key, size, "us") for n in names]
            p99 = [med(n, src, key, size, "p99") for n in names]
            q50 = p50[-1] / p50[0] if p50[0] and p50[-1] is not None else None
            q99 = p99[-1] / p99[0] if p99[0] and p99[-1] is not None else None
            var_rows.append((src, key, size, p50, p99, q50, q99))
            md.append(f"| {src} | {key} | {label(size)} | "
                      + " | ".join("n/a" if v is None else f"{v:.2f}" for v in p50 + p99)
                      + " | " + " | ".join("n/a" if q is None else f"{q:.2f}×"
                                           for q in (q50, q99)) + " |")
    text = "\n".join(md) + "\n"
    print()
    print(text)
    with open(os.path.join(a.out, "ucx_compare.md"), "w") as f:
        f.write(text)
    with open(os.path.join(a.out, "ucx_compare.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "variant", "dlslime", "ucx", "unit", "ratio", "ucx_test", "target"])
        for lbl, per, u, kind, name, target in main_rows + more_rows:
            for (vname, _), (d, q) in zip(variants, per):
                w.writerow([lbl, vname, d, u, "GB/s" if kind == "bw" else "us", q, name, target])
    with open(os.path.join(a.out, "ucx_compare_runs.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "side", "transport_or_source", "test_or_metric", "size", "unit",
                    "value"])
        for r in raw:
            unit = {"bw": "GB/s", "p99": "us p99"}.get(r[5], "us")
            w.writerow(list(r[:5]) + [unit, r[6]])
    if var_rows:
        with open(os.path.join(a.out, "ucx_compare_variants.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["benchmark", "row", "size"] + [f"{n}_p50_us" for n in names]
                       + [f"{n}_p99_us" for n in names] + ["p50_ratio", "p99_ratio"])
            for src, key, size, p50, p99, q50, q99 in var_rows:
                w.writerow([src, key, size] + p50 + p99 + [q50, q99])
    print(f"wrote {os.path.join(a.out, 'ucx_compare.md')}, ucx_compare.csv, "
          f"ucx_compare_runs.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
