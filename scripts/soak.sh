#!/usr/bin/env bash
# make soak: the bounded mixed workload of bindings/python/soak/soak.py (transfers, RPC,
# connects/disconnects, peer restarts and kills, over TCP and shared memory) whose RSS,
# fds and threads must stay flat after warm-up. SOAK_SECONDS (default 600) bounds it;
# extra arguments go to soak.py.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PATH="$HOME/.cargo/bin:$PATH"
source "$root/scripts/py-venv.sh"
exec "$venv/bin/python" bindings/python/soak/soak.py --csv "$root/target/soak/samples.csv" "$@"
