//! The slot ring's state machine (`src/ring/slot.rs` of dlslime, the same file) under
//! the loom model checker. It is its own crate so that `make test-loom`, which must build
//! with `--cfg loom`, compiles loom and this one file instead of the whole library and
//! its dependencies (rdma-sys with bindgen among them) a second time.

#[path = "../../../src/ring/slot.rs"]
pub mod slot;
