#!/usr/bin/env bash
# make fuzz: runs every cargo-fuzz target of fuzz/ for FUZZ_SECONDS (default 60) each on
# its corpus (fuzz/corpus/<target>: the committed seeds plus what earlier runs found) and
# prints executions, executions per second and crashes per target. A crash leaves its
# input in fuzz/artifacts/<target>/ and makes the script fail; reproduce it with
# `cargo +nightly fuzz run <target> <file>`, fix, and commit the input as
# fuzz/corpus/<target>/seed-regress-<name> (the stable smoke test then replays it).
#
# Needs cargo-fuzz and a nightly toolchain (`bash scripts/install-deps.sh --fuzz`
# installs cargo-fuzz; without nightly the stable toolchain is used with
# RUSTC_BOOTSTRAP=1). FUZZ_TARGETS limits the run to some targets; FUZZ_JOBS runs that
# many libFuzzer processes per target (default 1).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/fuzz"
export PATH="$HOME/.cargo/bin:$PATH"
secs="${FUZZ_SECONDS:-60}"
jobs="${FUZZ_JOBS:-1}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is not installed: bash scripts/install-deps.sh --fuzz" >&2
  exit 1
fi
if rustup run nightly rustc --version >/dev/null 2>&1; then
  fuzz=(cargo +nightly fuzz)
else
  echo "==> no nightly toolchain: using stable with RUSTC_BOOTSTRAP=1"
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi
targets="${FUZZ_TARGETS:-$("${fuzz[@]}" list)}"
"${fuzz[@]}" build -O
mkdir -p "$root/target/fuzz-logs"
summary=()
failed=0
for t in $targets; do
  mkdir -p "corpus/$t"
  log="$root/target/fuzz-logs/$t.log"
  echo "==> $t for ${secs}s"
  rc=0
  par=()
  [ "$jobs" -gt 1 ] && par=(-jobs="$jobs" -workers="$jobs")
  "${fuzz[@]}" run -O "$t" "corpus/$t" -- -max_total_time="$secs" -print_final_stats=1 \
    "${par[@]}" >"$log" 2>&1 || rc=$?
  # with -jobs, libFuzzer writes each worker's output to fuzz-N.log here
  cat fuzz-*.log >>"$log" 2>/dev/null || true
  rm -f fuzz-*.log
  execs=$(grep -h 'stat::number_of_executed_units' "$log" | awk '{s += $2} END {print s + 0}')
  rate=$(grep -h 'stat::average_exec_per_sec' "$log" | awk '{s += $2} END {print s + 0}')
  crashes=$(ls "artifacts/$t" 2>/dev/null | wc -l)
  [ "$rc" = 0 ] || failed=1
  summary+=("$(printf '%-16s %14s %10s %8s  rc=%s' "$t" "$execs" "$rate" "$crashes" "$rc")")
done
echo
printf '%-16s %14s %10s %8s\n' target executions exec/s crashes
printf '%s\n' "${summary[@]}"
echo "logs: $root/target/fuzz-logs/"
exit $failed
