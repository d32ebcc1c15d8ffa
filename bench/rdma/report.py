"""Table of dlslime against perftest (same device, same run) from bench/results/rdma.csv,
and a plot (matplotlib, if installed). Usage: report.py rdma.csv --where TEXT --plot out.png"""

import argparse
import csv
import sys


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--where", default="")
    ap.add_argument("--plot")
    a = ap.parse_args()
    rows = list(csv.DictReader(open(a.csv)))
    # latency: the median (perftest's t_typical), robust to the outliers of a shared machine;
    # bandwidth: the average
    val = {(r["impl"], r["op"], int(r["bytes"]), int(r["num_qp"])): float(r["p50"]) for r in rows}
    print(f"RDMA endpoint vs perftest, {a.where}")
    print(f"{'op':<16}{'bytes':>10}{'QPs':>5}{'dlslime':>12}{'perftest':>12}{'ratio':>8}")
    for (impl, op, n, q), v in sorted(val.items(), key=lambda kv: (kv[0][1], kv[0][3], kv[0][2])):
        if impl != "dlslime":
            continue
        floor_op = "write_lat" if op in ("write_done_lat", "write_imm_lat") else op
        f = val.get(("perftest", floor_op, n, q))
        unit = "MiB/s" if op.endswith("bw") else "µs"
        ratio = f"{v / f:.2f}" if f else "-"
        fs = f"{f:.1f}" if f else "-"
        print(f"{op:<16}{n:>10}{q:>5}{v:>10.1f}{unit[:2]:>2}{fs:>10}{unit[:2]:>2}{ratio:>8}")
    print("ratio = dlslime / perftest (latency: lower is better; bandwidth: higher is better)."
          " write_done_lat is a full round trip, against ib_write_lat's one-way value;"
          " write_imm_lat is the write_with_imm + imm_recv ping-pong (one-way).")
    if not a.plot:
        return 0
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return 0
    fig, (lat, bw) = plt.subplots(1, 2, figsize=(11, 4.5))
    for impl, op, style in [("dlslime", "write_lat", "-"), ("perftest", "write_lat", "--"),
                            ("dlslime", "read_lat", "-"), ("perftest", "read_lat", "--")]:
        xs = sorted(n for (i, o, n, q) in val if i == impl and o == op)
        lat.plot(xs, [val[(impl, op, x, 1)] for x in xs], style, marker="o", label=f"{impl} {op}")
    for impl, q, style in [("dlslime", 1, "-"), ("dlslime", 4, "-"), ("perftest", 1, "--"), ("perftest", 4, "--")]:
        xs = sorted(n for (i, o, n, qq) in val if i == impl and o == "write_bw" and qq == q)
        bw.plot(xs, [val[(impl, "write_bw", x, q)] for x in xs], style, marker="o", label=f"{impl} write, {q} QP")
    for ax, yl in ((lat, "latency p50 (µs)"), (bw, "bandwidth (MiB/s)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("message size (bytes)")
        ax.set_ylabel(yl)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"RDMA endpoint vs perftest, same device, same run: {a.where}", fontsize=10)
    fig.tight_layout()
    fig.savefig(a.plot, dpi=110)
    print(f"wrote {a.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
