#!/usr/bin/env bash
# The static gates `make test` (and so CI) runs first. Exits non-zero if any fails.
#
#   1. cargo fmt --all --check                                  formatting
#   2. cargo clippy --workspace --all-targets -- -D warnings    clippy + the [lints] table
#                                                               of the workspace Cargo.toml
#      cargo clippy --test rdma_endpoint ...                    the `test = false` targets
#                                                               (RDMA in the VM, GPU), which
#                                                               --all-targets leaves out
#   3. RUSTDOCFLAGS=-D warnings cargo doc -p dlslime --no-deps  the crate's docs build
#                                                               without a warning
#
# (The header drift check runs in scripts/test-ffi.sh and tests/header.rs.)
# rustfmt and clippy ship with the toolchain; scripts/install-deps.sh adds the components
# when a minimal profile left them out. Every gate runs even after one fails, so one run
# lists everything to fix.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PATH="$HOME/.cargo/bin:$PATH"

declare -a summary=()
failed=0
gate() {
  local label="$1"; shift
  echo
  echo "=== $label: $*"
  if "$@"; then
    summary+=("PASS     $label")
  else
    summary+=("FAIL     $label"); failed=1
  fi
}

gate "rustfmt" cargo fmt --all --check
gate "clippy" cargo clippy --workspace --all-targets -- -D warnings
gate "clippy (test = false targets)" cargo clippy -p dlslime --test rdma_endpoint --test rdma_peer \
  --test rdma_unavailable --test gpu -- -D warnings
gate "rustdoc" env RUSTDOCFLAGS="${RUSTDOCFLAGS:-} -D warnings" cargo doc -p dlslime --no-deps

echo
echo "=== summary (lint gates)"
printf '%s\n' "${summary[@]}"
exit $failed
