#!/usr/bin/env bash
# Generates include/dlslime.h from src/ffi with the pinned cbindgen, grouped into one
# section per C object by scripts/header_sections.py.
#   scripts/gen-header.sh            write include/dlslime.h
#   scripts/gen-header.sh --verify   fail (exit 1) if the committed header differs
# Installs the pinned cbindgen with `cargo install --locked` when it is missing.
set -euo pipefail

CBINDGEN_VERSION=0.29.0
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

verify=0
case "${1:-}" in
  --verify) verify=1 ;;
  "") ;;
  *) echo "usage: $0 [--verify]" >&2; exit 2 ;;
esac

cbindgen_bin() {
  for c in "${CBINDGEN:-}" cbindgen "$HOME/.cargo/bin/cbindgen"; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 && [ "$("$c" --version 2>/dev/null)" = "cbindgen $CBINDGEN_VERSION" ]; then
      echo "$c"; return 0
    fi
  done
  return 1
}

if ! bin="$(cbindgen_bin)"; then
  echo "gen-header: installing cbindgen $CBINDGEN_VERSION" >&2
  cargo install cbindgen --version "$CBINDGEN_VERSION" --locked >&2
  bin="$(cbindgen_bin)" || { echo "gen-header: cbindgen $CBINDGEN_VERSION not found after install" >&2; exit 1; }
fi

out=include/dlslime.h
raw="$(mktemp)"
tmp="$(mktemp)"
trap 'rm -f "$raw" "$tmp"' EXIT
"$bin" --quiet --config cbindgen.toml --crate dlslime --lockfile Cargo.lock --output "$raw" .
# One section per C object (cbindgen alone orders by kind: enums, structs, functions).
python3 scripts/header_sections.py "$raw" "$root" > "$tmp"

if [ "$verify" = 1 ]; then
  if ! diff -u "$out" "$tmp" >&2; then
    echo "gen-header: $out is out of date; run scripts/gen-header.sh and commit it" >&2
    exit 1
  fi
  echo "gen-header: $out is up to date"
else
  if ! cmp -s "$tmp" "$out" 2>/dev/null; then
    cp "$tmp" "$out"
    echo "gen-header: wrote $out"
  else
    echo "gen-header: $out unchanged"
  fi
fi
