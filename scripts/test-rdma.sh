#!/usr/bin/env bash
# The RDMA suite (`make test-rdma`). Exits non-zero if any step failed or could not run;
# the last line counts the tests: "rdma: N passed, M failed".
#
#   1. build              the release library and test binaries (rdma-sys needs libibverbs-dev,
#                         librdmacm-dev and libclang: scripts/install-deps.sh)
#   2. no link to verbs   readelf: libdlslime.so (release and debug) has no NEEDED entry on
#                         libibverbs or librdmacm
#   3. no device          on this host (libibverbs installed, no RDMA in the kernel): RDMA
#                         calls fail with RDMA_UNAVAILABLE naming the missing device (Rust,
#                         C ffi-tests/test_api.c, C++ ffi-tests/test_cpp_rdma.cpp, Python)
#   4. no libibverbs      in a mount namespace where libibverbs.so.1 does not exist: the same,
#                         naming the library; the TCP and shared-memory two-process tests and
#                         the C example (against libdlslime.so) pass there
#   5. soft-RoCE VM       scripts/rdma-vm-test.sh boots the guest once and runs, both
#                         processes on rxe0, then across rxe0/rxe1 (two "hosts" joined by a
#                         veth pair): tests/rdma_endpoint.rs, the slot ring's `_rdma` tests
#                         of tests/ring_remote.rs, ffi-tests/test_two_process.c rdma,
#                         ffi-tests/test_cpp_rdma.cpp, bindings/python/tests_rdma, the C
#                         and C++ examples over rdma; once ffi-tests/test_api.c; and across
#                         rxe0/rxe1 tests/rdma_peer.rs (PeerAgent with redis-server and
#                         NanoCtrl, SlimeRPC over RDMA)
#
# Environment: RDMA_VM_TIMEOUT (default 900 s for the guest), CARGO_TARGET_DIR.
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
t0=$(date +%s)
step() { echo; echo "=== [$(($(date +%s) - t0)) s] $*"; }
finish() {
  echo
  printf '%s\n' "${summary[@]}"
  echo "rdma: $passed passed, $failed failed ($(($(date +%s) - t0)) s)"
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
ring_exe="$(test_exe --release ring_remote)"
peer_exe="$(test_exe --release rdma_peer)"
absent_exe="$(test_exe "" rdma_unavailable)"
tcp_exe="$(test_exe "" tcp_endpoint)"
shm_exe="$(test_exe "" shm_endpoint)"
for v in vm_exe ring_exe peer_exe absent_exe tcp_exe shm_exe; do
  if [ -z "${!v}" ] || [ ! -x "${!v}" ]; then
    fail "build the test binaries ($v)"
    finish
  fi
done
# C and C++ programs against the release libdlslime.so (public headers only)
version="$(awk '/^\[package\]/{p=1;next} /^\[/{p=0} p && /^version *=/{gsub(/.*= *"|".*/,""); print; exit}' Cargo.toml)"
link=(-L"$target_dir/release" -ldlslime -Wl,-rpath,"$target_dir/release" -pthread)
cflags=(-Wall -Wextra -Werror -D_GNU_SOURCE "-DDLSLIME_EXPECT_VERSION=\"$version\"" -I include)
example="$log_dir/dlslime_example"
c_api="$log_dir/test_api"
c_two="$log_dir/test_two_process"
cpp_rdma="$log_dir/test_cpp_rdma"
cpp_example="$log_dir/dlslime_example_cpp"
if ! gcc -std=c11 "${cflags[@]}" examples-c/dlslime_example.c -o "$example" "${link[@]}" ||
   ! gcc -std=c11 "${cflags[@]}" ffi-tests/test_api.c -o "$c_api" "${link[@]}" ||
   ! gcc -std=c11 "${cflags[@]}" ffi-tests/test_two_process.c -o "$c_two" "${link[@]}" ||
   ! g++ -std=c++17 "${cflags[@]}" -I bindings/cpp/include ffi-tests/test_cpp_rdma.cpp -o "$cpp_rdma" "${link[@]}" ||
   ! g++ -std=c++17 "${cflags[@]}" -I bindings/cpp/include examples-cpp/dlslime_example.cpp -o "$cpp_example" "${link[@]}"; then
  fail "build the C/C++ test programs against the release libdlslime.so"
  finish
fi
# The Python package, installed into its own virtual environment.
py_venv="$log_dir/py-venv"
if ! DLSLIME_PY_VENV="$py_venv" bash scripts/test-python.sh --collect-only -q >/dev/null; then
  fail "install the Python package (scripts/test-python.sh)"
  finish
fi
py=("$py_venv/bin/python" -m pytest -p no:cacheprovider -q)
# The original DLSlime 0.1.23 (PyPI; a CPython 3.11 wheel) in its own environment, for
# bindings/python/tests_rdma/test_original_interop.py in the VM.
orig_venv="$log_dir/orig-venv"
if ! "$orig_venv/bin/python" -c 'import importlib.metadata as m; assert m.version("dlslime") == "0.1.23"' 2>/dev/null; then
  rm -rf "$orig_venv"
  if ! python3 -m venv "$orig_venv" ||
     ! "$orig_venv/bin/pip" install --disable-pip-version-check -q dlslime==0.1.23; then
    fail "install the original DLSlime 0.1.23 from PyPI (the interoperation test needs it)"
  fi
fi

# Runs "$@" as one named test: PASS when it exits 0.
one() {
  local name="$1"
  shift
  if "$@"; then pass "$name"; else fail "$name (exit $?)"; fi
}

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
export DLSLIME_TEST_RDMA_EXPECT=no-device
one "no device: Rust typed status" "$absent_exe" --test-threads=1
one "no device: C test_api" timeout 120 "$c_api"
one "no device: C++ test_cpp_rdma" timeout 60 "$cpp_rdma"
one "no device: Python RdmaUnavailable" "${py[@]}" bindings/python/tests_rdma/test_rdma_unavailable.py
unset DLSLIME_TEST_RDMA_EXPECT

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
  export DLSLIME_TEST_RDMA_EXPECT=no-library
  one "no libibverbs: Rust typed status naming libibverbs.so.1" without_verbs "$absent_exe" --test-threads=1
  one "no libibverbs: C test_api" without_verbs timeout 120 "$c_api"
  one "no libibverbs: C++ test_cpp_rdma" without_verbs timeout 60 "$cpp_rdma"
  one "no libibverbs: Python RdmaUnavailable" without_verbs "${py[@]}" bindings/python/tests_rdma/test_rdma_unavailable.py
  unset DLSLIME_TEST_RDMA_EXPECT
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

step "soft-RoCE VM: the RDMA suites on one device and across two"
vm_log="$log_dir/suite.log"
start=$(date +%s)
# Each program prints "@@RESULT <name> <exit status>"; libtest and pytest print their counts.
RDMA_VM_TIMEOUT="${RDMA_VM_TIMEOUT:-900}" PYTHONDONTWRITEBYTECODE=1 NANOCTRL_BIN="$target_dir/debug/nanoctrl" \
  DLSLIME_ORIGINAL_PYTHON="$orig_venv/bin/python" RDMA_VM_ENV="PYTHONDONTWRITEBYTECODE NANOCTRL_BIN" bash scripts/rdma-vm-test.sh bash -c '
  vm="$1" two="$2" api="$3" cpp="$4" py="$5" peer="$6" cex="$7" cppex="$8" ring="$9"
  res() { echo "@@RESULT $1 $2"; }
  timeout 120 "$api"; res test_api $?
  for d in rxe0,rxe0 rxe0,rxe1; do
    export DLSLIME_TEST_RDMA_DEVICES=$d
    echo "@@SUITE rust-$d"
    "$vm" --test-threads=1 --color never
    echo "@@SUITE ring-$d"
    "$ring" --ignored --test-threads=1 --color never _rdma
    timeout 120 "$two" rdma; res "test_two_process-rdma-$d" $?
    timeout 120 "$cpp"; res "test_cpp_rdma-$d" $?
    DLSLIME_EXAMPLE_RDMA=$d timeout 120 "$cex" demo; res "examples-c-rdma-$d" $?
    timeout 120 "$cppex" rdma $d; res "examples-cpp-rdma-$d" $?
    echo "@@SUITE python-$d"
    # the interop and RNR tests once, between two devices (two "hosts")
    if [ "$d" = rxe0,rxe1 ]; then
      "$py" -m pytest -p no:cacheprovider -q bindings/python/tests_rdma/test_rdma.py \
        bindings/python/tests_rdma/test_original_interop.py
    else
      "$py" -m pytest -p no:cacheprovider -q bindings/python/tests_rdma/test_rdma.py -k "not soft_rnr"
    fi
  done
  # two hosts with a NIC each: rxe0 and rxe1
  echo "@@SUITE rust-peer"
  DLSLIME_TEST_RDMA_DEVICES=rxe0,rxe1 "$peer" --test-threads=1 --color never
  true' suite "$vm_exe" "$c_two" "$c_api" "$cpp_rdma" "$py_venv/bin/python" "$peer_exe" "$example" "$cpp_example" \
  "$ring_exe" 2>&1 | tee "$vm_log"
vm_rc=${PIPESTATUS[0]}
echo "VM suite: exit $vm_rc, $(($(date +%s) - start)) s including boot"
if [ "$vm_rc" != 0 ]; then
  fail "the VM did not run the suite to the end (exit $vm_rc; see $vm_log)"
fi
vm_clean="$(tr -d '\r' <"$vm_log")"
progs=(test_api)
for d in rxe0,rxe0 rxe0,rxe1; do
  progs+=("test_two_process-rdma-$d" "test_cpp_rdma-$d" "examples-c-rdma-$d" "examples-cpp-rdma-$d")
done
for prog in "${progs[@]}"; do
  rc="$(echo "$vm_clean" | sed -n "s/^@@RESULT $prog \([0-9]*\)$/\1/p" | tail -1)"
  if [ "$rc" = 0 ]; then pass "VM: $prog"; else fail "VM: $prog (${rc:-did not run})"; fi
done
# libtest's counts of the suite marked "@@SUITE $1" ("test result: ok. 10 passed; 0
# failed; ..."), named $2 in the summary; with $3 = nonzero, a suite where nothing
# passed did not run either (the ring's _rdma tests are filtered by name).
rust_counts() {
  local line p f
  line="$(echo "$vm_clean" | awk -v s="$1" '/^@@SUITE /{cur=$2} cur==s && /^test result:/{print; exit}')"
  p="$(echo "$line" | sed -n 's/.* \([0-9]*\) passed.*/\1/p')"
  f="$(echo "$line" | sed -n 's/.* \([0-9]*\) failed.*/\1/p')"
  if [ -z "$line" ] || { [ "${3:-}" = nonzero ] && [ "${p:-0}" = 0 ]; }; then
    fail "VM: $2 did not run"
  else
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0}))
    summary+=("VM       $2: ${p:-?} passed, ${f:-?} failed")
  fi
}
rust_counts rust-peer "tests/rdma_peer.rs (rxe0,rxe1)"
for d in rxe0,rxe0 rxe0,rxe1; do
  rust_counts "rust-$d" "tests/rdma_endpoint.rs ($d)"
  rust_counts "ring-$d" "tests/ring_remote.rs _rdma ($d)" nonzero
  # pytest -q: "3 passed in 12.3s" or "1 failed, 2 passed in ..."
  line="$(echo "$vm_clean" | awk -v s="python-$d" '/^@@SUITE /{cur=$2} cur==s && / in [0-9.]+s/{print; exit}')"
  if [ -z "$line" ]; then
    fail "VM: bindings/python/tests_rdma ($d) did not run"
  else
    p="$(echo "$line" | grep -o '[0-9]* passed' | grep -o '[0-9]*')"
    f="$(echo "$line" | grep -Eo '[0-9]+ (failed|error)' | awk '{s += $1} END {print s + 0}')"
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0}))
    summary+=("VM       bindings/python/tests_rdma ($d): ${p:-0} passed, ${f:-0} failed")
    [ -n "$p" ] || [ -n "$f" ] || fail "VM: bindings/python/tests_rdma ($d): no counts in \"$line\""
  fi
done
finish
