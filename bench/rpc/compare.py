"""The comparison table and plot (the original's rpc_bench_compare.py, plus p50, the
SlimeRPC-over-TCP and raw-socket columns, and a hardware line).

S/Ray = Ray avg / Slime avg and S/Pul = Pulsing avg / Slime avg (above 1: SlimeRPC is
faster), with Slime = SlimeRPC over shared memory as documented (connect, then
serve/proxy, default settings). Rows are the sizes every present file has. Missing files
are reported and skipped (exit 0, as the original). Then two labelled tables: the tuned
path beside the documented one, and the documented usage with one core kept busy by
another process, against the socket floor measured under the same load."""

import argparse
import csv
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402


def load(path):
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        return {int(r["size"]): {k: float(v) for k, v in r.items() if k != "size"} for r in csv.DictReader(f)}


def side_table(title, cols):
    """avg and p50 of each present column, and each column's p50 over the socket floor's."""
    cols = [(n, d) for n, d in cols if d is not None]
    if len(cols) < 2:
        return
    sizes = sorted(set.intersection(*[set(d) for _, d in cols]))
    if not sizes:
        return
    sock = dict(cols).get("Sock")
    head = [f"{'Size':<10}"] + [f"{n + ' ' + m:>16}" for n, _ in cols for m in ("avg", "p50")]
    if sock:
        head += [f"{n + '/Sock p50':>16}" for n, _ in cols if n != "Sock"]
    line = " | ".join(head)
    print()
    print(f"┌─ {title} ")
    print(line)
    print("-" * len(line))
    for s in sizes:
        row = [f"{common.label(s):<10}"] + [f"{d[s][m]:>16.1f}" for _, d in cols for m in ("avg_us", "p50_us")]
        if sock:
            row += [f"{'%.2fx' % (d[s]['p50_us'] / sock[s]['p50_us']):>16}" for n, d in cols if n != "Sock"]
        print(" | ".join(row))
    print("-" * len(line))


def main():
    R = common.RESULTS
    p = argparse.ArgumentParser()
    p.add_argument("--slime", default=os.path.join(R, "slime_rpc.csv"))
    p.add_argument("--slime-tcp", default=os.path.join(R, "slime_tcp_rpc.csv"))
    p.add_argument("--ray", default=os.path.join(R, "ray_rpc.csv"))
    p.add_argument("--pulsing", default=None)
    p.add_argument("--socket", default=os.path.join(R, "socket_rpc.csv"))
    p.add_argument("--memcpy", default=os.path.join(R, "memcpy.csv"))
    p.add_argument("--slime-tuned", default=None)
    p.add_argument("--slime-tcp-tuned", default=None)
    p.add_argument("--busy-slime", default=None)
    p.add_argument("--busy-slime-tcp", default=None)
    p.add_argument("--busy-socket", default=None)
    p.add_argument("--plot", default=os.path.join(R, "rpc_latency.png"))
    args = p.parse_args()
    slime = load(args.slime)
    if slime is None:
        print(f"Missing results file: {args.slime} (run bench/rpc/run.sh)")
        return 0
    cols = [("Slime", slime), ("SlimeTCP", load(args.slime_tcp)), ("Puls", load(args.pulsing)),
            ("Ray", load(args.ray)), ("Sock", load(args.socket))]
    for name, path in (("SlimeTCP", args.slime_tcp), ("Ray", args.ray), ("Puls", args.pulsing), ("Sock", args.socket)):
        if path and load(path) is None:
            print(f"Missing results file: {path} ({name} column left out)")
    cols = [(n, d) for n, d in cols if d is not None]
    sizes = sorted(set.intersection(*[set(d) for _, d in cols]))
    if not sizes:
        print("No overlapping sizes between the result files.")
        return 0
    have = {n for n, _ in cols}
    print(f"hardware: {common.hardware_line()}")
    head = [f"{'Size':<10}"]
    for n, _ in cols:
        head += [f"{n + ' avg':>12}", f"{n + ' p50':>12}"]
        if n in ("Slime", "Ray", "Puls"):
            head += [f"{n + ' p99':>12}", f"{n + ' BW':>12}"]
    # Ratio columns: (title, width, numerator (column, stat), denominator (column, stat)).
    ratios = [r for r in (("S/Pul", 10, ("Puls", "avg_us"), ("Slime", "avg_us")),
                          ("S/Ray", 10, ("Ray", "avg_us"), ("Slime", "avg_us")),
                          ("Sl/Sock p50", 12, ("Slime", "p50_us"), ("Sock", "p50_us")),
                          ("TCP/Sock p50", 12, ("SlimeTCP", "p50_us"), ("Sock", "p50_us")))
              if r[2][0] in have and r[3][0] in have]
    head += [f"{title:>{w}}" for title, w, _, _ in ratios]
    line = " | ".join(head)
    width = len(line)
    title = "┌─ Avg / P50 Latency (µs) "
    print(title + "─" * max(0, width - len(title) - 1) + "┐")
    print(line)
    print("-" * width)
    for s in sizes:
        row = [f"{common.label(s):<10}"]
        for n, d in cols:
            row += [f"{d[s]['avg_us']:>12.1f}", f"{d[s]['p50_us']:>12.1f}"]
            if n in ("Slime", "Ray", "Puls"):
                row += [f"{d[s]['p99_us']:>12.1f}", f"{d[s]['bw_gbps']:>12.3f}"]
        dd = dict(cols)
        row += [f"{'%.2fx' % (dd[a][s][x] / dd[b][s][y]):>{w}}" for _, w, (a, x), (b, y) in ratios]
        print(" | ".join(row))
    print("-" * width)
    print("Slime = SlimeRPC over shared memory, SlimeTCP = SlimeRPC over TCP (both Python, PeerAgent),")
    print("Sock = raw Python length-prefixed socket echo (floor); every contender cross-process.")
    print("Slime and SlimeTCP are the documented usage: connect_to().wait(), serve()/proxy(), the original's")
    print("handler (@method(raw=True, inplace=True) copying the request into the reply), no environment variable.")
    if "Ray" in have:
        print("S/Ray = Ray avg / Slime avg (>1 means SlimeRPC is faster)")
    if "Puls" in have:
        print("S/Pul = Pulsing avg / Slime avg (>1 means SlimeRPC is faster)")
    side_table("Tuned (labelled): prepare() before connect_to + @method(in_request=True); documented beside it",
               [("Slime", slime), ("Slime tuned", load(args.slime_tuned)), ("SlimeTCP", load(args.slime_tcp)),
                ("TCP tuned", load(args.slime_tcp_tuned)), ("Sock", load(args.socket))])
    side_table("One core busy (a spinning process): documented usage and the socket floor under the same load",
               [("Slime", load(args.busy_slime)), ("SlimeTCP", load(args.busy_slime_tcp)),
                ("Sock", load(args.busy_socket))])
    mem = load(args.memcpy)
    big = 16 * common.MiB
    if mem and big in mem and big in slime:
        print(f"16MB: SlimeRPC shm round trip {slime[big]['avg_us']:.0f} µs avg = "
              f"{slime[big]['avg_us'] / mem[big]['avg_us']:.2f}x one 16 MiB memcpy ({mem[big]['avg_us']:.0f} µs, same run)")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return 0
    fig, ax = plt.subplots(figsize=(8, 5.5))
    names = {"Slime": "SlimeRPC shm", "SlimeTCP": "SlimeRPC tcp", "Puls": "Pulsing", "Ray": "Ray",
             "Sock": "raw socket echo (floor)"}
    for n, d in cols:
        xs = sorted(d)
        ax.plot(xs, [d[x]["p50_us"] for x in xs], marker="o", label=names[n],
                linestyle="--" if n == "Sock" else "-")
    if mem:
        xs = sorted(mem)
        ax.plot(xs, [mem[x]["p50_us"] for x in xs], linestyle=":", color="gray", label="one memcpy")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("payload size (bytes)")
    ax.set_ylabel("echo round trip p50 (µs)")
    ax.set_title("Echo RPC latency vs size (cross-process)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.text(0.01, 0.01, common.hardware_line(), fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(args.plot, dpi=120)
    print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
