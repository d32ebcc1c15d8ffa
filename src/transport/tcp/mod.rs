//! TCP transport (any two hosts). See `docs/tcp-wire-format.md` for the bytes.
//!
//! A [`TcpContext`] owns a listener and a pool of outgoing connections keyed by peer;
//! [`TcpEndpoint`]s are created over a context and a [`MemoryPool`](crate::MemoryPool).
//!
//! Modules, each using only modules above it in this table (the dependency graph is a
//! DAG: the target side does not know the context or the endpoint that own it):
//!
//! | module | holds | uses |
//! |---|---|---|
//! | `config` | [`TcpConfig`], the knobs of a context | |
//! | `wire` | the hello and the frame header, encoded and decoded | |
//! | `sockio` | whole-frame writes from and reads into registered memory | |
//! | `conn` | one outgoing connection: requests, their replies, pending ones | `wire`, `sockio` |
//! | `pool` | a context's outgoing connections, per peer and lane | `conn` |
//! | `reply` | the way back: an accepted connection's write half, deferred `Ack`s | `wire`, `sockio` |
//! | `target` | target-side state: `EpCore` per endpoint (imm, messages, pulls) and the context's `Targets` (endpoints by id, accepted connections) | `wire`, `conn`, `pool`, `reply` |
//! | `server` | one thread per accepted connection: checks and applies requests | `wire`, `sockio`, `reply`, `target` |
//! | `context` | [`TcpContext`]: listener, connection pool, targets, janitor | `config`, `pool`, `target`, `server` |
//! | `endpoint` | [`TcpEndpoint`]: operations as requests on pooled connections | `config`, `wire`, `conn`, `target`, `context` |

mod config;
mod conn;
mod context;
mod endpoint;
mod pool;
mod reply;
mod server;
mod sockio;
mod target;
pub mod wire;

pub use config::{TcpConfig, MAX_LANES};
pub use context::TcpContext;
pub use endpoint::TcpEndpoint;
