# The two commands a new user runs (see README.md):
#   make run    the main job: SlimeRPC vs Ray vs Pulsing (every contender cross-process)
#               against the raw Python socket echo floor, end to end (build, venv, redis +
#               nanoctrl on loopback, table, CSV, log-log plot)
#   make test   every test (installs what it needs first)
#
# Other jobs: make demo (two-process C example + TCP/shm endpoint benchmarks against their
# floors), bench (with bench-ucx when ucx_perftest is installed), bench-ucx, bench-nanoctrl,
# bench-python, header, lint (the static gates `make test` runs first), fuzz (every
# cargo-fuzz target for FUZZ_SECONDS each; nightly), soak (the bounded 10-minute mixed
# workload; RSS, fds and threads must stay flat).

SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: run demo test deps lint build fuzz soak test-netns example bench bench-ucx bench-nanoctrl test-rust test-loom test-loom-full test-ffi test-nanoctrl test-python test-rdma test-gpu bench-rdma bench-cuda bench-python bench-ring header

run: deps
	WITH_PULSING=1 bash bench/rpc/run.sh

demo: deps build example bench

deps:
	bash scripts/install-deps.sh

build:
	cargo build --release
	cargo build

example:
	bash scripts/run-example.sh

bench:
	cargo bench --bench endpoint -- --max-mib $${BENCH_MAX_MIB:-64}
	cargo run --release --example shm_bench
	if command -v ucx_perftest >/dev/null 2>&1; then bash bench/peers/ucx.sh; \
	else echo "bench/peers/ucx.sh NOT RUN: ucx_perftest not installed (make deps)"; fi

bench-ucx:
	bash bench/peers/ucx.sh

test: deps lint test-rust test-loom test-ffi test-nanoctrl test-python test-netns test-rdma

# rustfmt, clippy -D warnings (with the workspace [lints]), rustdoc -D warnings
lint:
	bash scripts/lint.sh

test-rust:
	cargo build -p nanoctrl --bins  # the PeerAgent tests (tests/peer_*.rs) run it
	cargo test -p dlslime

# The slot ring's state machine under the loom model checker (src/ring/slot.rs, `model`,
# built alone by crates/ring-model; its own target dir, because --cfg loom changes every
# crate's build). test-loom: up to 3 preemptions (part of `make test`, well under a
# minute); test-loom-full: every interleaving (a long run: docs/ring.md).
test-loom:
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release -p dlslime-ring-model

test-loom-full:
	DLSLIME_LOOM_EXHAUSTIVE=1 RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release -p dlslime-ring-model

test-ffi:
	bash scripts/test-ffi.sh

test-nanoctrl:
	bash scripts/test-nanoctrl.sh

test-python:
	bash scripts/test-python.sh

# RDMA: host checks (no libibverbs, no device) and the soft-RoCE VM suite
test-rdma:
	bash scripts/test-rdma.sh

# GPU memory on a CUDA machine (NOT part of `make test`: CI has no GPU). Without a GPU
# both print NOT RUN and fail.
test-gpu:
	bash scripts/test-gpu.sh

bench-cuda:
	bash bench/cuda/run.sh

header:
	bash scripts/gen-header.sh

# cargo-fuzz targets (fuzz/), FUZZ_SECONDS (default 60) each; `make test` runs only
# their stable smoke pass (tests/fuzz_smoke.rs, nanoctrl/tests/fuzz_bodies.rs).
fuzz:
	bash scripts/install-deps.sh --fuzz
	bash scripts/fuzz.sh

# Multi-host tests in network namespaces (root; NOT RUN, which fails CI, without it).
test-netns:
	bash scripts/test-netns.sh

# Not part of `make test` (10 minutes): SOAK_SECONDS bounds it.
soak: deps
	bash scripts/soak.sh

bench-nanoctrl:
	bash bench/nanoctrl/run.sh

bench-python:
	bash bench/python/run.sh

# RDMA endpoint vs perftest in the soft-RoCE VM (bench/rdma/run.sh --host DEV on a NIC)
bench-rdma:
	bash bench/rdma/run.sh

# The slot ring: fetch vs the one-sided read floor (bench/ring/README.md); RING_BENCH_ARGS
# e.g. "--max-mib 64" or "--chaos --secs 600".
bench-ring:
	cargo run --release --example ring_bench -- $${RING_BENCH_ARGS:-}
