#!/usr/bin/env bash
# `make bench-rdma`: the RDMA endpoint (bench/rdma/rdma_bench.rs, two processes) against
# perftest (ib_write_lat, ib_read_lat, ib_write_bw) on the same device in the same run;
# bench/results/rdma.csv, a table of ratios, and bench/results/rdma.png.
#
#   bench/rdma/run.sh                  in the soft-RoCE VM (scripts/rdma-vm-test.sh), rxe0
#   bench/rdma/run.sh --host DEVICE [GID_INDEX]   on this host's NIC (real hardware)
#
# Under soft-RoCE only the ratios mean anything (TCG emulation, a shared 2-core machine).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
export PATH="$HOME/.cargo/bin:$PATH"
out="$root/bench/results"
mkdir -p "$out"
cargo build --release --example rdma_bench
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
exe="$target_dir/release/examples/rdma_bench"
max_mib="${BENCH_MAX_MIB:-256}"
inner="bash bench/rdma/perftest.sh \"\$0\" \"\$1\" >\"$out/rdma_perftest.csv\"; \
  \"$exe\" --device \"\$0\" --max-mib $max_mib --csv \"$out/rdma_dlslime.csv\""
if [ "${1:-}" = --host ]; then
  dev="${2:?usage: $0 --host DEVICE [GID_INDEX]}"
  bash -c "$inner" "$dev" "${3:-}"
  where="$dev on $(hostname)"
else
  RDMA_VM_RW="$out" RDMA_VM_TIMEOUT="${RDMA_VM_TIMEOUT:-900}" \
    bash scripts/rdma-vm-test.sh bash -c "$inner" rxe0 1
  where="rxe0 (soft-RoCE, QEMU TCG guest)"
fi
{ head -1 "$out/rdma_dlslime.csv"; tail -n +2 "$out/rdma_dlslime.csv"; cat "$out/rdma_perftest.csv"; } >"$out/rdma.csv"
python3 bench/rdma/report.py "$out/rdma.csv" --where "$where" --plot "$out/rdma.png"
