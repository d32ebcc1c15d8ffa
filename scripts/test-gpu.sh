#!/usr/bin/env bash
# GPU tests, one command for a GPU machine. NOT part of `make test` (CI has no GPU).
#
# 1. tests/gpu.rs (cargo, release): device<->device over TCP staging and over shared
#    memory through CUDA IPC between two processes (1 KiB .. DLSLIME_GPU_TEST_MAX,
#    default 1 GiB), a host region against a device one over shm, a peer killed
#    mid-transfer (TCP, shm), stream ordering (copier; wait_stream before and
#    signal_stream after an operation), raw CUDA IPC, dma-buf export and the agent's
#    device allocation, RDMA registration of device memory (GPUDirect; NOT RUN without
#    an RDMA device, failing under CI=true).
# 2. The Python bindings' CUDA tests with the driver present (test_cuda.py: device
#    pointers, DLPack, stream=; the PeerAgent's allocate_memory_region): the same tests
#    CI runs without a driver take their GPU branch here.
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
fail=0
# The two-process tests each hold up to DLSLIME_GPU_TEST_MAX of device memory per side.
echo "==> tests/gpu.rs"
cargo test --release -p dlslime --test gpu -- --test-threads=1 "$@" || fail=1
echo "==> Python CUDA tests (driver present)"
bash scripts/test-python.sh -k "cuda or dlpack or stream or device_memory" || fail=1
[ "$fail" = 0 ] && echo "test-gpu: all passed" || echo "test-gpu: FAILED"
exit $fail
