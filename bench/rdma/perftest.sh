#!/usr/bin/env bash
# The floor: perftest on the same device, same run. Writes CSV rows
# `perftest,<op>,<bytes>,<num_qp>,<avg>,<typical>` to stdout:
#   write_lat  ib_write_lat (one-way: half a ping-pong), µs
#   read_lat   ib_read_lat (read completion), µs
#   write_bw   ib_write_bw, MiB/s (perftest's MB = 2^20 bytes)
# Usage: perftest.sh DEVICE [GID_INDEX]  (server and client on DEVICE, over 127.0.0.1)
set -uo pipefail
dev="$1"
gid=(${2:+-x "$2"})
port=18600
# run_pair TOOL ARGS...: the server in the background, the client, its result line
run_pair() {
  local tool="$1"
  shift
  port=$((port + 1))
  timeout 60 "$tool" -d "$dev" "${gid[@]}" -p "$port" "$@" >/dev/null 2>&1 &
  local spid=$!
  sleep 0.5
  timeout 60 "$tool" -d "$dev" "${gid[@]}" -p "$port" "$@" 127.0.0.1 2>/dev/null |
    awk '$1 ~ /^[0-9]+$/ && $2 ~ /^[0-9]+$/ {print; exit}'
  wait "$spid" 2>/dev/null
}
for s in 64 256 1024 4096 16384 65536; do
  run_pair ib_write_lat -s "$s" -n 300 | awk -v s="$s" '{printf "perftest,write_lat,%s,1,%s,%s\n", s, $6, $5}'
  run_pair ib_read_lat -s "$s" -n 300 | awk -v s="$s" '{printf "perftest,read_lat,%s,1,%s,%s\n", s, $6, $5}'
done
for q in 1 4; do
  for s in 1048576 4194304 16777216; do
    n=$(((64 << 20) / s)); [ "$n" -lt 5 ] && n=5  # ib_write_bw refuses fewer than 5
    run_pair ib_write_bw -q "$q" -s "$s" -n "$n" | awk -v s="$s" -v q="$q" '{printf "perftest,write_bw,%s,%s,%s,%s\n", s, q, $4, $4}'
  done
done
# A perftest run that fails or hangs leaves its row out (the report shows "-").
exit 0
