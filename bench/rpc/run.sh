#!/usr/bin/env bash
# SlimeRPC vs Ray (and Pulsing) echo benchmark, end to end, with the original
# run_rpc_bench.sh interface:
#
#   bench/rpc/run.sh [--ctrl URL] [--buf-mb N] [--max-size-mb N] [--scope S] [--with-pulsing]
#
# (env fallbacks CTRL, BUF_MB, MAX_SIZE_MB, SCOPE, WITH_PULSING=1; BUSY_MAX_SIZE_MB, default
# 1, bounds the sizes of the run under load). Steps: build the
# library and install the dlslime Python package, ray and matplotlib (pulsing with
# --with-pulsing) into a virtual environment (BENCH_VENV, default target/rpc-bench-venv);
# start redis-server + nanoctrl on loopback unless --ctrl answers; run, every contender
# cross-process: the raw Python socket echo floor (+ memcpy); SlimeRPC over shared memory
# and over TCP (two PeerAgents) as documented (connect, serve/proxy, default settings:
# the first rows), then tuned (prepare + in_request: labelled rows); the floor and the
# documented usage again with one core kept busy by another process; Pulsing, Ray; print
# the comparison tables and write the log-log plot. Results: bench/results/<name>_rpc.csv, memcpy.csv, rpc_latency.png.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/bench/rpc"
results="$root/bench/results"
CTRL="${CTRL:-}"
BUF_MB="${BUF_MB:-256}"
MAX_SIZE_MB="${MAX_SIZE_MB:-16}"
SCOPE="${SCOPE:-rpc-bench-$(date +%s)-$$}"
WITH_PULSING="${WITH_PULSING:-0}"
BUSY_MAX_SIZE_MB="${BUSY_MAX_SIZE_MB:-1}"
while [ $# -gt 0 ]; do
  case "$1" in
    --ctrl) CTRL="$2"; shift 2 ;;
    --buf-mb) BUF_MB="$2"; shift 2 ;;
    --max-size-mb) MAX_SIZE_MB="$2"; shift 2 ;;
    --scope) SCOPE="$2"; shift 2 ;;
    --with-pulsing) WITH_PULSING=1; shift ;;
    *) echo "Unknown argument: $1" >&2; exit 1 ;;
  esac
done
mkdir -p "$results"
export PATH="$HOME/.cargo/bin:$PATH"
venv="${BENCH_VENV:-$root/target/rpc-bench-venv}"
py="$venv/bin/python"
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

steps=8; [ "$WITH_PULSING" = 1 ] && steps=9
echo "==> [0/$steps] build + virtual environment ($venv)"
[ -x "$py" ] || python3 -m venv "$venv"
pip=("$venv/bin/pip" install --disable-pip-version-check -q)
"${pip[@]}" --upgrade pip >/dev/null 2>&1 || true
"${pip[@]}" cffi matplotlib
# (re)build and install the package from this tree (its build runs cargo build --release)
"${pip[@]}" --force-reinstall --no-deps "$root/bindings/python"
if ! "$py" -c 'import ray' 2>/dev/null; then
  "${pip[@]}" ray || echo "!! ray could not be installed: the Ray column will be missing" >&2
fi
if [ "$WITH_PULSING" = 1 ] && ! "$py" -c 'import pulsing' 2>/dev/null; then
  "${pip[@]}" pulsing || echo "!! pulsing could not be installed: the Pulsing column will be missing" >&2
fi

health() { "$py" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "$1" 2>/dev/null; }
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
if [ -z "$CTRL" ] || ! health "$CTRL"; then
  [ -n "$CTRL" ] && echo "==> $CTRL does not answer: starting redis-server + nanoctrl on loopback"
  command -v redis-server >/dev/null || { echo "redis-server not found (apt-get install redis-server, or pass --ctrl)" >&2; exit 1; }
  rport="$(free_port)"; nport="$(free_port)"
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no >"$results/rpc_bench_redis.log" 2>&1 &
  pids+=($!)
  (cd "$root" && cargo build -q --release -p nanoctrl --bins)
  tdir="${CARGO_TARGET_DIR:-$root/target}"; case "$tdir" in /*) ;; *) tdir="$root/$tdir" ;; esac
  for i in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
  NANOCTRL_REDIS_URL="redis://127.0.0.1:$rport" "$tdir/release/nanoctrl" server --host 127.0.0.1 --port "$nport" \
    --redis-url "redis://127.0.0.1:$rport" >"$results/rpc_bench_nanoctrl.log" 2>&1 &
  pids+=($!)
  CTRL="http://127.0.0.1:$nport"
  for i in $(seq 100); do health "$CTRL" && break; sleep 0.1; done
  health "$CTRL" || { echo "nanoctrl did not start (see $results/rpc_bench_nanoctrl.log)" >&2; exit 1; }
fi
echo "==> control plane $CTRL, scope $SCOPE, buf $BUF_MB MiB, sizes up to $MAX_SIZE_MB MiB"

# The documented usage first: no environment variable, no prepare(), the original's
# handler (bench/rpc/slime_bench.py). A DLSLIME_PROGRESS left in the caller's environment
# would make it something else.
unset DLSLIME_PROGRESS
run_slime() { # transport out step label [--tuned]
  local t="$1" out="$2" step="$3" label="$4"; shift 4
  local log="$results/slime_worker_${SCOPE}_${t}_${label// /_}.log"
  echo "==> [$step/$steps] SlimeRPC over $t, $label"
  PYTHONUNBUFFERED=1 "$py" "$here/slime_bench.py" worker --ctrl "$CTRL" --scope "$SCOPE-$t-${label// /_}" \
    --buf-mb "$BUF_MB" --transport "$t" "$@" >"$log" 2>&1 &
  local w=$!
  pids+=($w)
  if ! "$py" "$here/slime_bench.py" driver --ctrl "$CTRL" --scope "$SCOPE-$t-${label// /_}" --buf-mb "$BUF_MB" \
      --max-size-mb "$MAX_SIZE_MB" --transport "$t" --out "$out" "$@"; then
    echo "SlimeRPC driver failed; worker log:" >&2; tail -n 200 "$log" >&2; kill "$w" 2>/dev/null; exit 1
  fi
  wait "$w" || true
}
echo "==> [1/$steps] raw Python socket echo (floor) + memcpy"
"$py" "$here/socket_floor.py" --max-size-mb "$MAX_SIZE_MB" --out "$results/socket_rpc.csv"
run_slime shm "$results/slime_rpc.csv" 2 "documented usage"
run_slime tcp "$results/slime_tcp_rpc.csv" 3 "documented usage"
run_slime shm "$results/slime_tuned_rpc.csv" 4 "tuned" --tuned
run_slime tcp "$results/slime_tcp_tuned_rpc.csv" 5 "tuned" --tuned
# Under contention: one core kept busy by another process (a spinning Python loop), the
# socket floor measured under the same load; sizes up to BUSY_MAX_SIZE_MB.
echo "==> [6/$steps] one core busy: socket floor and the documented usage over shm and tcp"
"$py" -c 'while True: pass' &
busy=$!
pids+=($busy)
MAX_SIZE_MB_ALL="$MAX_SIZE_MB"
MAX_SIZE_MB="$BUSY_MAX_SIZE_MB"
"$py" "$here/socket_floor.py" --max-size-mb "$MAX_SIZE_MB" --out "$results/socket_busy_rpc.csv" --memcpy-out ''
run_slime shm "$results/slime_busy_rpc.csv" 6 "documented usage, one core busy"
run_slime tcp "$results/slime_tcp_busy_rpc.csv" 6 "documented usage, one core busy"
kill "$busy" 2>/dev/null || true
wait "$busy" 2>/dev/null || true
MAX_SIZE_MB="$MAX_SIZE_MB_ALL"
n=7
pul_arg=()
if [ "$WITH_PULSING" = 1 ]; then
  echo "==> [$n/$steps] Pulsing (cross-process)"
  if "$py" "$here/pulsing_bench.py" --max-size-mb "$MAX_SIZE_MB" --out "$results/pulsing_rpc.csv"; then
    pul_arg=(--pulsing "$results/pulsing_rpc.csv")
  else
    echo "!! Pulsing run failed or pulsing is not installed" >&2
  fi
  n=$((n + 1))
fi
echo "==> [$n/$steps] Ray actor"
"$py" "$here/ray_bench.py" --max-size-mb "$MAX_SIZE_MB" --out "$results/ray_rpc.csv" || echo "!! Ray run failed or ray is not installed" >&2
n=$((n + 1))
echo "==> [$n/$steps] comparison"
"$py" "$here/compare.py" --slime "$results/slime_rpc.csv" --slime-tcp "$results/slime_tcp_rpc.csv" \
  --slime-tuned "$results/slime_tuned_rpc.csv" --slime-tcp-tuned "$results/slime_tcp_tuned_rpc.csv" \
  --busy-slime "$results/slime_busy_rpc.csv" --busy-slime-tcp "$results/slime_tcp_busy_rpc.csv" \
  --busy-socket "$results/socket_busy_rpc.csv" \
  --ray "$results/ray_rpc.csv" "${pul_arg[@]}" --socket "$results/socket_rpc.csv" --memcpy "$results/memcpy.csv" \
  --plot "$results/rpc_latency.png"
