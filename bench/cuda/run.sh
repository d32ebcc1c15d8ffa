#!/usr/bin/env bash
# GPU benchmark: TCP device<->device (staging) against cuMemcpyDtoD, pinned D2H+H2D and
# host-memory TCP of the same run (bench/cuda/cuda_bench.rs). Needs a CUDA device:
# prints NOT RUN and exits 1 without one. Extra arguments go to the benchmark
# (e.g. --max-mib 1024).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "bench/cuda NOT RUN: no NVIDIA GPU here (nvidia-smi -L failed)"
  exit 1
fi
cargo run --release --example cuda_bench -- "$@"
rc=$?
[ "$rc" = 2 ] && { echo "bench/cuda NOT RUN"; exit 1; }
exit $rc
