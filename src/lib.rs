//! dlslime: a communication runtime for distributed AI systems.
//!
//! Data flow, bottom to top:
//!
//! * [`memory`] — local regions (registered ranges with access keys), remote regions
//!   (what a peer published) and shared allocations (memfd memory a same-host peer maps).
//!   Every byte moved starts and ends in one of them.
//! * [`obs`] — counters and latency histograms per endpoint, peer and RPC method; the
//!   JSON snapshot.
//! * [`future`] — one [`future::OpState`] per operation; [`Future`] is the user's handle.
//! * [`engine`] — how threads wait (spin-then-park, deadlines) and the knobs for it.
//! * [`host`] — this host's identity (which peers can share memory).
//! * [`runtime_lib`] — system libraries loaded at run time (CUDA, libibverbs).
//! * [`transport`] — the [`Endpoint`] contract (read, write, write_with_imm, imm_recv,
//!   send, recv) and its transports: [`transport::tcp`] (any two hosts) and
//!   [`transport::shm`] (same host: memfd regions, cross-memory attach, shared rings).
//! * [`rpc`] — SlimeRPC: request/reply sessions over any endpoint.
//! * [`ring`] — the slot ring: payload slots in shared memory, fetched by reference.
//! * [`peer`] — the PeerAgent: NanoCtrl registration, the Redis stream mailbox and
//!   named transfers between agents.
//! * `ffi` — the C ABI over all of the above; nothing else knows about C.

#[macro_use]
mod named_enum;

pub mod engine;
pub mod error;
pub mod ffi;
pub mod future;
#[doc(hidden)]
pub mod fuzz;
pub mod host;
pub mod log;
pub mod memory;
pub mod obs;
pub mod peer;
pub mod ring;
pub mod rpc;
pub mod runtime_lib;
pub mod transport;

pub use error::{Error, Result, Status};
pub use future::Future;
pub use memory::{MemoryPool, MrHandle, RemoteHandle, RemotePool};
pub use transport::{Assignment, Endpoint};

/// The crate version, as the C ABI reports it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
