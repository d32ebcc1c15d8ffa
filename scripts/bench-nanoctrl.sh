#!/usr/bin/env bash
# Convenience wrapper: see bench/nanoctrl/README.md.
exec "$(dirname "${BASH_SOURCE[0]}")/../bench/nanoctrl/run.sh" "$@"
