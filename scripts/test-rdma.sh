#!/usr/bin/env bash
# The RDMA suite (`make test-rdma`). Exits non-zero if any step failed or could not run;
# the last line counts the tests: "rdma: N passed, M failed".
#
#   1. build              the release library and test binaries (rdma-sys needs libibverbs-dev,
#                         librdmacm-dev and libclang: scripts/install-deps.sh)
#   2. no link to verbs   readelf: libdlslime.so (release and debug) has no NEEDED entry on
#                         libibverbs or librdmacm
#   3. no device          on this host (libibverbs installed, no RDMA in the kernel): RDMA
#                         calls fail with RDMA_UNAVAILABLE naming the missing device
#   4. no libibverbs      in a mount namespace where libibverbs.so.1 does not exist: RDMA
#                         calls fail naming the library; the TCP and shared-memory two-process
#                         tests and the C example (against libdlslime.so) pass there
#   5. soft-RoCE VM       scripts/rdma-vm-test.sh boots the guest once and runs
#                         tests/rdma_endpoint.rs twice: both processes on rxe0, then across
#                         rxe0/rxe1 (two "hosts" joined by a veth pair)
#
# Environment: RDMA_VM_TIMEOUT (default 480 s for the guest), CARGO_TARGET_DIR.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PATH="$HOME/.cargo/bin:$PATH"
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
log_dir="$target_dir/rdma-vm"
mkdir -p "$log_dir"

passed=0
failed=0
declare -a summary=()
pass() { summary+=("PASS     $1"); passed=$((passed + 1)); }
fail() { summary+=("FAIL     $1"); failed=$((failed + 1)); }
step() { echo; echo "=== $*"; }
finish() {
  echo
  printf '%s\n' "${summary[@]}"
  echo "rdma: $passed passed, $failed failed"
  [ "$failed" = 0 ]
  exit
}

# The executable cargo builds for test target $2 (profile flag $1: "" or --release).
test_exe() {
  cargo test $1 -p dlslime --test "$2" --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$2" | tail -1
}

step "build (release library, test binaries)"
if ! bash scripts/install-deps.sh --rdma-apt-only; then
  fail "install the RDMA packages (scripts/install-deps.sh --rdma-apt-only)"
  finish
fi
if ! cargo build --release -p dlslime --lib || ! cargo build -p dlslime --lib; then
  fail "cargo build"
  finish
fi
vm_exe="$(test_exe --release rdma_endpoint)"
absent_exe="$(test_exe "" rdma_unavailable)"
tcp_exe="$(test_exe "" tcp_endpoint)"
shm_exe="$(test_exe "" shm_endpoint)"
for v in vm_exe absent_exe tcp_exe shm_exe; do
  if [ -z "${!v}" ] || [ ! -x "${!v}" ]; then
    fail "build the test binaries ($v)"
    finish
  fi
done
example="$log_dir/dlslime_example"
if ! gcc -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE -I include examples-c/dlslime_example.c \
    -o "$example" -L"$target_dir/release" -ldlslime -Wl,-rpath,"$target_dir/release"; then
  fail "build examples-c against the release libdlslime.so"
  finish
fi

step "libdlslime.so has no link-time dependency on libibverbs"
for lib in "$target_dir/release/libdlslime.so" "$target_dir/debug/libdlslime.so"; do
  needed="$(readelf -d "$lib" | grep NEEDED)"
  echo "$lib:"; echo "$needed"
  if [ -z "$needed" ]; then
    fail "readelf -d $lib (no dynamic section?)"
  elif echo "$needed" | grep -Eq 'libibverbs|librdmacm'; then
    fail "$lib has a NEEDED entry on libibverbs/librdmacm"
  else
    pass "readelf: $(basename "$(dirname "$lib")")/libdlslime.so has no NEEDED libibverbs"
  fi
done

step "no RDMA device on this host: RDMA_UNAVAILABLE names the device"
if DLSLIME_TEST_RDMA_EXPECT=no-device "$absent_exe" --test-threads=1; then
  pass "no device: typed status"
else
  fail "no device: typed status"
fi

step "libibverbs.so.1 hidden (mount namespace): RDMA fails cleanly, TCP and shm work"
verbs_lib="$(ldconfig -p | awk '/libibverbs\.so\.1 /{print $NF; exit}')"
if [ -z "$verbs_lib" ]; then
  fail "libibverbs.so.1 is not installed here, so there is nothing to hide"
  finish
fi
libdir="$(dirname "$(readlink -f "$verbs_lib")")"
# Runs "$@" where libibverbs.so.1 does not exist: the library directory is overlaid
# with whiteouts for it (private mount namespace; nothing changes outside).
without_verbs() {
  unshare -m --propagation private bash -c '
    set -e
    d="$1"; shift
    s="$(mktemp -d)"
    mount -t tmpfs hide "$s"
    mkdir "$s/u" "$s/w"
    mount -t overlay hide -o "lowerdir=$d,upperdir=$s/u,workdir=$s/w" "$d"
    rm -f "$d"/libibverbs.so*
    exec "$@"' hide "$libdir" "$@"
}
if ! without_verbs true; then
  fail "cannot hide libibverbs (unshare -m and overlayfs need root)"
else
  if without_verbs env DLSLIME_TEST_RDMA_EXPECT=no-library "$absent_exe" --test-threads=1; then
    pass "no libibverbs: typed status naming libibverbs.so.1"
  else
    fail "no libibverbs: typed status"
  fi
  if without_verbs "$tcp_exe" --test-threads=1 every_opcode_moves_the_right_bytes immediate_data; then
    pass "no libibverbs: TCP two-process tests"
  else
    fail "no libibverbs: TCP two-process tests"
  fi
  if without_verbs "$shm_exe" --test-threads=1 one_sided_shared_regions send_recv_cma; then
    pass "no libibverbs: shared-memory two-process tests"
  else
    fail "no libibverbs: shared-memory two-process tests"
  fi
  if without_verbs timeout 120 "$example" demo; then
    pass "no libibverbs: examples-c demo against libdlslime.so"
  else
    fail "no libibverbs: examples-c demo against libdlslime.so"
  fi
fi

step "soft-RoCE VM: tests/rdma_endpoint.rs on one device and across two"
vm_log="$log_dir/suite.log"
start=$(date +%s)
RDMA_VM_TIMEOUT="${RDMA_VM_TIMEOUT:-480}" bash scripts/rdma-vm-test.sh bash -c '
  echo "@@SUITE one-device"
  DLSLIME_TEST_RDMA_DEVICES=rxe0,rxe0 "$1" --test-threads=1 --color never
  a=$?
  echo "@@SUITE two-devices"
  DLSLIME_TEST_RDMA_DEVICES=rxe0,rxe1 "$1" --test-threads=1 --color never
  b=$?
  [ $a = 0 ] && [ $b = 0 ]' suite "$vm_exe" 2>&1 | tee "$vm_log"
vm_rc=${PIPESTATUS[0]}
echo "VM suite: exit $vm_rc, $(($(date +%s) - start)) s including boot"
for run in one-device two-devices; do
  line="$(awk -v run="$run" '
    /^@@SUITE / { cur = $2 }
    cur == run && /^test result:/ { print; exit }' "$vm_log")"
  if [ -z "$line" ]; then
    fail "VM suite ($run) did not run (exit $vm_rc; see $vm_log)"
    continue
  fi
  p="$(echo "$line" | sed -n 's/.* \([0-9]*\) passed.*/\1/p')"
  f="$(echo "$line" | sed -n 's/.* \([0-9]*\) failed.*/\1/p')"
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-0}))
  summary+=("VM       rdma_endpoint ($run): ${p:-?} passed, ${f:-?} failed")
done
if [ "$vm_rc" != 0 ] && [ "$failed" = 0 ]; then
  fail "VM suite exited with status $vm_rc"
fi
finish
