#!/usr/bin/env bash
# What recording costs a 1 KiB shared-memory write, in instructions per operation:
# `shm_bench --obs-one off|on N` under cachegrind, N = 100 000 and 300 000, the difference
# divided by 200 000 (so the setup cancels out). Unlike `shm_bench --obs-ab`, the count
# does not move with the load of a shared machine: a way to compare two builds of the
# hot path before timing them (a count is not a time: see docs/observability.md).
#
#   bash bench/obs_icount.sh [BINARY...]   (default: builds and counts this tree's shm_bench)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v valgrind >/dev/null 2>&1; then
  echo "bench/obs_icount.sh NOT RUN: valgrind is not installed (Debian: apt-get install valgrind)"
  exit 1
fi
if [ $# -eq 0 ]; then
  cargo build -q --release --example shm_bench
  set -- target/release/examples/shm_bench
fi
refs() { # BINARY MODE N: instructions of the whole run (the child peer is not traced)
  valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
    "$1" --obs-one "$2" "$3" 2>&1 | awk '/I +refs/ { gsub(",", "", $4); print $4 }'
}
printf '%-40s %10s %10s %10s\n' "1 KiB shm write, instructions/op" off on "on-off"
for bin in "$@"; do
  off=$(( ($(refs "$bin" off 300000) - $(refs "$bin" off 100000)) / 200000 ))
  on=$(( ($(refs "$bin" on 300000) - $(refs "$bin" on 100000)) / 200000 ))
  printf '%-40s %10d %10d %10d\n' "$bin" "$off" "$on" "$((on - off))"
done
