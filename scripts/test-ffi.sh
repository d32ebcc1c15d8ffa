#!/usr/bin/env bash
# Tests of the C ABI, driven end to end. Exits non-zero if any step fails or could not
# run.
#
#   1. scripts/gen-header.sh --verify   the committed include/dlslime.h is current
#   2. cargo build                      libdlslime.so in ${CARGO_TARGET_DIR:-target}/debug
#      readelf -d                      libdlslime.so needs neither libcuda nor libibverbs
#   3. ffi-tests/*.c                    compiled as C (gcc -std=c11) and as C++
#                                       (g++ -x c++ -std=c++17), -Wall -Wextra -Werror,
#                                       AddressSanitizer with leak detection on; each
#                                       binary is run (the two-process test forks, once per
#                                       transport: tcp, shm)
#      bindings/cpp/include/dlslime.hpp: ffi-tests/test_cpp_wrapper.cpp and
#                                       test_cpp_ring.cpp, C++17, ASan
#   4. examples-cpp, examples-c         built against the build tree, run
#   5. cargo-c                          cargo cinstall into a temporary prefix, soname
#                                       checked with readelf, a C program built with
#                                       `pkg-config --cflags --libs dlslime` and run,
#                                       and once more linked against the static library
#
# Options: --no-cargo-c skips step 5 (reported as NOT RUN, exit status 1).
# Environment: CARGO_TARGET_DIR, CC (default gcc), CXX (default g++).
set -uo pipefail

CARGO_C_VERSION=0.10.24
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

run_cargo_c=1
for a in "$@"; do
  case "$a" in
    --no-cargo-c) run_cargo_c=0 ;;
    *) echo "usage: $0 [--no-cargo-c]" >&2; exit 2 ;;
  esac
done

target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
libdir="$target_dir/debug"
out="$root/ffi-tests/out"
mkdir -p "$out"
CC="${CC:-gcc}"
CXX="${CXX:-g++}"

declare -a summary=()
failed=0
pass() { summary+=("PASS     $1"); }
fail() { summary+=("FAIL     $1"); failed=1; }
notrun() { summary+=("NOT RUN  $1${2:+ ($2)}"); failed=1; }
step() { echo; echo "=== $*"; }

# The version in Cargo.toml's [package] section.
version="$(awk '/^\[package\]/{p=1;next} /^\[/{p=0} p && /^version *=/{gsub(/.*= *"|".*/,""); print; exit}' Cargo.toml)"
[ -n "$version" ] || { echo "cannot read the package version from Cargo.toml" >&2; exit 2; }

step "header: scripts/gen-header.sh --verify"
if scripts/gen-header.sh --verify; then pass "header is up to date"; else fail "header drift (run scripts/gen-header.sh)"; fi

step "build: cargo build -p dlslime --lib"
if ! cargo build -p dlslime --lib; then
  fail "cargo build"
  printf '\n%s\n' "${summary[@]}"
  exit 1
fi
[ -f "$libdir/libdlslime.so" ] || { fail "no $libdir/libdlslime.so"; printf '%s\n' "${summary[@]}"; exit 1; }

# CUDA and RDMA are loaded at run time: the library must not need libcuda or libibverbs.
step "libdlslime.so links neither libcuda nor libibverbs (readelf -d)"
needed_libs="$(readelf -d "$libdir/libdlslime.so" | sed -n 's/.*Shared library: \[\(.*\)\].*/\1/p' | tr '\n' ' ')"
echo "NEEDED: $needed_libs"
if echo "$needed_libs" | grep -Eq 'libcuda|libcudart|libibverbs|librdmacm'; then
  fail "libdlslime.so links a CUDA/verbs library: $needed_libs"
else
  pass "libdlslime.so NEEDED has no libcuda/libibverbs ($needed_libs)"
fi

warn=(-Wall -Wextra -Werror)
asan=(-g -fsanitize=address -fno-omit-frame-pointer)
link=(-L"$libdir" -ldlslime -Wl,-rpath,"$libdir" -pthread)
defs=(-D_GNU_SOURCE "-DDLSLIME_EXPECT_VERSION=\"$version\"")
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}"

for src in ffi-tests/test_*.c; do
  name="$(basename "$src" .c)"
  for lang in c cxx; do
    bin="$out/${name}_$lang"
    step "compile $name as $lang"
    if [ "$lang" = c ]; then
      cmd=("$CC" -std=c11)
    else
      cmd=("$CXX" -x c++ -std=c++17)
    fi
    if ! "${cmd[@]}" "${warn[@]}" "${asan[@]}" "${defs[@]}" -I include "$src" -o "$bin" "${link[@]}"; then
      fail "$name ($lang): compile"
      continue
    fi
    if ! nm "$bin" | grep __asan_init >/dev/null; then
      fail "$name ($lang): not built with AddressSanitizer"
      continue
    fi
    # the two-process test runs once per transport
    if [ "$name" = test_two_process ]; then runs=(tcp shm); else runs=(""); fi
    for arg in "${runs[@]}"; do
      label="$name${arg:+ $arg} ($lang, ASan)"
      step "run $label"
      timeout 240 "$bin" $arg
      rc=$?
      case $rc in
        0) pass "$label" ;;
        77) notrun "$label" "transport unavailable" ;;
        124) fail "$label: timed out" ;;
        *) fail "$label: exit status $rc" ;;
      esac
    done
  done
done

for t in test_cpp_wrapper test_cpp_ring; do
  step "C++ wrapper: ffi-tests/$t.cpp (g++ -std=c++17, ASan)"
  if "$CXX" -std=c++17 "${warn[@]}" "${asan[@]}" -I include -I bindings/cpp/include "ffi-tests/$t.cpp" \
      -o "$out/$t" "${link[@]}"; then
    if timeout 120 "$out/$t"; then pass "$t (C++17, ASan)"; else fail "$t"; fi
  else
    fail "$t: compile"
  fi
done

step "examples-cpp: build (C++17, -Wall -Wextra -Werror) and run the two-process example over tcp and shm"
if "$CXX" -std=c++17 "${warn[@]}" -I include -I bindings/cpp/include examples-cpp/dlslime_example.cpp \
    -o "$out/dlslime_example_cpp" -L"$libdir" -ldlslime -Wl,-rpath,"$libdir"; then
  for t in tcp shm; do
    if timeout 120 "$out/dlslime_example_cpp" "$t"; then pass "examples-cpp ($t)"; else fail "examples-cpp ($t)"; fi
  done
else
  fail "examples-cpp: compile"
fi

step "examples-c: build against the build tree and run the two-process demo"
if "$CC" -std=c11 "${warn[@]}" -D_GNU_SOURCE -I include examples-c/dlslime_example.c -o "$out/dlslime_example" \
    -L"$libdir" -ldlslime -Wl,-rpath,"$libdir"; then
  if timeout 120 "$out/dlslime_example" demo; then pass "examples-c demo"; else fail "examples-c demo"; fi
else
  fail "examples-c: compile"
fi

if [ "$run_cargo_c" = 1 ]; then
  step "cargo-c: cargo cinstall into a temporary prefix"
  if ! cargo cinstall --version >/dev/null 2>&1 && ! cargo-cinstall --version >/dev/null 2>&1; then
    echo "installing cargo-c $CARGO_C_VERSION"
    cargo install cargo-c --version "$CARGO_C_VERSION" --locked || true
  fi
  if ! cargo cinstall --version >/dev/null 2>&1; then
    notrun "cargo-c install test" "cargo-c $CARGO_C_VERSION could not be installed"
  else
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    prefix="$tmp/prefix"
    if cargo cinstall -p dlslime --release --prefix "$prefix" --libdir "$prefix/lib"; then
      ok=1
      major="${version%%.*}"; rest="${version#*.}"; minor="${rest%%.*}"
      want_soname="libdlslime.so.$major.$minor"
      soname="$(readelf -d "$prefix/lib/libdlslime.so" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')"
      echo "soname: $soname (want $want_soname)"
      [ "$soname" = "$want_soname" ] || { echo "wrong soname" >&2; ok=0; }
      for f in "lib/$want_soname" lib/libdlslime.a lib/pkgconfig/dlslime.pc include/dlslime.h include/dlslime.hpp; do
        [ -e "$prefix/$f" ] || { echo "missing $prefix/$f" >&2; ok=0; }
      done
      cmp include/dlslime.h "$prefix/include/dlslime.h" || { echo "installed header differs" >&2; ok=0; }
      export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
      echo "pkg-config --cflags --libs dlslime: $(pkg-config --cflags --libs dlslime)"
      if "$CC" -std=c11 "${warn[@]}" ffi-tests/pkgconfig_smoke.c -o "$tmp/smoke" $(pkg-config --cflags --libs dlslime) \
          && LD_LIBRARY_PATH="$prefix/lib" "$tmp/smoke"; then
        needed="$(readelf -d "$tmp/smoke" | sed -n 's/.*Shared library: \[\(libdlslime[^]]*\)\].*/\1/p')"
        echo "smoke program needs: $needed"
        [ "$needed" = "$want_soname" ] || { echo "smoke program links $needed, want $want_soname" >&2; ok=0; }
      else
        echo "pkg-config smoke program failed" >&2; ok=0
      fi
      # Static: the archive plus the system libraries pkg-config lists as private.
      static_libs="$(pkg-config --static --libs-only-l dlslime | sed 's/-ldlslime//')"
      if "$CC" -std=c11 "${warn[@]}" ffi-tests/pkgconfig_smoke.c -o "$tmp/smoke_static" $(pkg-config --cflags dlslime) \
          "$prefix/lib/libdlslime.a" $static_libs && "$tmp/smoke_static" \
          && ! readelf -d "$tmp/smoke_static" | grep libdlslime >/dev/null; then
        echo "static smoke program ok"
      else
        echo "static smoke program failed" >&2; ok=0
      fi
      if [ "$ok" = 1 ]; then pass "cargo-c install: soname $want_soname, pkg-config build and run, static link"; else fail "cargo-c install test"; fi
    else
      fail "cargo cinstall"
    fi
  fi
else
  notrun "cargo-c install test" "--no-cargo-c"
fi

echo
echo "=== summary (C ABI tests)"
printf '%s\n' "${summary[@]}"
exit $failed
