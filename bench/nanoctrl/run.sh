#!/usr/bin/env bash
# NanoCtrl load benchmark: builds release binaries, starts its own redis-server and
# nanoctrl on loopback, runs 1/4/16/64 concurrent clients per scenario, prints a table
# and writes bench/results/nanoctrl.csv. Extra arguments go to nanoctrl-bench
# (e.g. --clients 1,8 --duration 5 --scenarios heartbeat).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
TARGET="${CARGO_TARGET_DIR:-target}"

if ! command -v redis-server >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi

cargo build --release -p nanoctrl --bins
mkdir -p bench/results
"$TARGET/release/nanoctrl-bench" --csv bench/results/nanoctrl.csv "$@"
