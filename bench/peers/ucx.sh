#!/usr/bin/env bash
# dlslime against UCX's ucx_perftest on loopback, in the same run: builds the release
# benchmarks first (so no compile lands inside a measurement), then runs
# bench/peers/ucx_compare.py (options: --runs N, --quick, --pin, --out DIR,
# --variant NAME=DIR). `ucx.sh --save DIR` only builds and copies the three benchmark
# binaries into DIR, for a later `--variant NAME=DIR` (before/after a change).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v ucx_perftest >/dev/null 2>&1; then
  echo "NOT RUN: ucx_perftest is not installed (Debian: apt-get install ucx-utils; scripts/install-deps.sh installs it)"
  exit 1
fi
cargo build -q --release --example shm_bench --example rpc_native_bench
cargo bench -q --bench endpoint --no-run
if [ "${1:-}" = "--save" ]; then
  dir="${2:?--save DIR}"
  mkdir -p "$dir"
  cp target/release/examples/shm_bench target/release/examples/rpc_native_bench "$dir/"
  exe=$(cargo bench --bench endpoint --no-run 2>&1 | grep -o 'target/release/deps/endpoint-[0-9a-f]*' | head -1)
  cp "$exe" "$dir/endpoint"
  echo "saved shm_bench, rpc_native_bench, endpoint in $dir"
  exit 0
fi
exec python3 bench/peers/ucx_compare.py "$@"
