#!/usr/bin/env bash
# Builds the C example against the freshly built library and runs its two-process demo.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
make -s -C examples-c PROFILE=release CARGO_TARGET_DIR="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)" run
