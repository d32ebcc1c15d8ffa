#!/usr/bin/env bash
# GPU tests (tests/gpu.rs): real CUDA device memory, device<->device over TCP staging
# between two processes (1 KiB .. DLSLIME_GPU_TEST_MAX, default 1 GiB), a peer killed
# mid-transfer, stream ordering of the CUDA copier, CUDA IPC between two processes,
# shm/RDMA refusing device regions. NOT part of `make test` (CI has no GPU).
#
# Without a GPU: prints NOT RUN and exits 1 (a skipped GPU test never counts as passed).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "test-gpu NOT RUN: no NVIDIA GPU here (nvidia-smi -L failed)"
  exit 1
fi
nvidia-smi -L
# The two-process tests each hold up to DLSLIME_GPU_TEST_MAX of device memory per side.
exec cargo test --release -p dlslime --test gpu -- --test-threads=1 "$@"
