#!/usr/bin/env bash
# Installs what the build, tests and benchmarks need on a fresh Debian/Ubuntu machine that
# has only the Rust toolchain, Python 3 and apt: system packages, the toolchain's rustfmt
# and clippy components, and the pinned cbindgen and cargo-c. Safe to run again: it skips
# what is already there.
set -euo pipefail

CBINDGEN_VERSION=0.29.0
CARGO_C_VERSION=0.10.24
CARGO_FUZZ_VERSION=0.13.2

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

# --rdma-apt-only: only the Debian packages of the RDMA build and of the soft-RoCE VM
# (scripts/rdma-vm-test.sh calls this).
rdma_only=0
[ "${1:-}" = --rdma-apt-only ] && rdma_only=1
# --fuzz: also cargo-fuzz, for `make fuzz` only (it builds with the nightly toolchain;
# everything else stays on stable).
fuzz=0
[ "${1:-}" = --fuzz ] && fuzz=1

need=()
if [ $rdma_only = 0 ]; then
  # ucx-utils: ucx_perftest, the UCX peer that bench/peers/ucx.sh measures against.
  for pkg_bin in redis-server:redis-server pkg-config:pkg-config gcc:gcc g++:g++ make:make \
      ucx-utils:ucx_perftest; do
    bin="${pkg_bin#*:}"; pkg="${pkg_bin%%:*}"
    command -v "$bin" >/dev/null 2>&1 || need+=("$pkg")
  done
  python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
  # The multi-host tests (scripts/test-netns.sh): faults on a namespace router.
  for pkg_bin in iptables:iptables ethtool:ethtool; do
    bin="${pkg_bin#*:}"; pkg="${pkg_bin%%:*}"
    command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need+=("$pkg")
  done
  # the NFQUEUE delayer's Python module (netfilterqueue) builds against it
  dpkg-query -W -f='${Status}' libnetfilter-queue-dev 2>/dev/null | grep -q 'install ok installed' \
    || need+=(libnetfilter-queue-dev)
  # libfaketime: the clock-jump test (tests/peer_clock.rs) steps a child agent's wall clock
  dpkg-query -W -f='${Status}' libfaketime 2>/dev/null | grep -q 'install ok installed' \
    || need+=(libfaketime)
fi
# RDMA: rdma-sys builds against the verbs headers with bindgen (which loads libclang at
# run time); libdlslime.so itself loads libibverbs.so.1 only when RDMA is used. The VM
# (scripts/rdma-vm-test.sh) boots a Debian kernel under QEMU with busybox and rdma_rxe,
# and runs the host's rdma/ip tools, the rxe provider and perftest inside.
# qemu-system-x86 goes in without recommends: they conflict with a preinstalled qemu-utils.
# libnuma1: the original DLSlime (PyPI wheel) of the interoperation test links it.
rdma_pkgs=(libibverbs-dev librdmacm-dev libclang1-14 libclang-common-14-dev pkg-config
  rdma-core ibverbs-providers ibverbs-utils perftest iproute2 libnuma1
  busybox-static cpio kmod gzip qemu-system-x86)
for pkg in "${rdma_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "==> apt-get install ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ $rdma_only = 1 ] && exit 0

export PATH="$HOME/.cargo/bin:$PATH"
# The lint gates (scripts/lint.sh) need rustfmt and clippy; a minimal rustup profile
# leaves them out.
if command -v rustup >/dev/null 2>&1; then
  for comp in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$comp"; then
      echo "==> rustup component add $comp"
      rustup component add "$comp"
    fi
  done
fi
if [ "$(cbindgen --version 2>/dev/null)" != "cbindgen $CBINDGEN_VERSION" ]; then
  echo "==> cargo install cbindgen $CBINDGEN_VERSION"
  cargo install cbindgen --version "$CBINDGEN_VERSION" --locked --force
fi
if ! cargo cinstall --version 2>/dev/null | grep -q "$CARGO_C_VERSION"; then
  echo "==> cargo install cargo-c $CARGO_C_VERSION (a few minutes)"
  cargo install cargo-c --version "$CARGO_C_VERSION" --locked --force
fi
if [ $fuzz = 1 ] && ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> cargo install cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
echo "==> dependencies ready"
