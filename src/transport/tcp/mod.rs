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
//! | `handshake` | the hello and authentication of a connection, both sides, within a deadline | `wire`, [`crate::transport::auth`] |
//! | `sockio` | whole-frame writes from and reads into registered memory | |
//! | `staging` | the same writes and reads, through the staging pool for staged (device) regions | `sockio` |
//! | `conn` | one outgoing connection: requests, their replies, pending ones | `wire`, `handshake`, `sockio`, `staging` |
//! | `pool` | a context's outgoing connections, per peer (address and key) and lane | `conn` |
//! | `reply` | the way back: an accepted connection's write half, deferred `Ack`s | `wire`, `staging` |
//! | `target` | target-side state: `EpCore` per endpoint (imm, messages, pulls, who may act on it) and the context's `Targets` (endpoints by id) | `wire`, `conn`, `pool`, `reply` |
//! | `accepted` | the accepted connections: caps in all and per IP, making room, closing unused idle ones | |
//! | `server` | one thread per accepted connection: handshake, then checks and applies requests | `wire`, `handshake`, `sockio`, `staging`, `reply`, `target`, `accepted` |
//! | `context` | [`TcpContext`]: identity, listener, connection pool, targets, accepted connections, janitor | `config`, `pool`, `target`, `accepted`, `server` |
//! | `endpoint` | [`TcpEndpoint`]: operations as requests on pooled connections | `config`, `wire`, `conn`, `target`, `context` |

mod accepted;
mod config;
mod conn;
mod context;
mod endpoint;
pub(crate) mod handshake;
mod pool;
mod reply;
mod server;
mod sockio;
mod staging;
mod target;
pub mod wire;

pub use config::{TcpConfig, MAX_LANES};
pub use context::TcpContext;
pub use endpoint::TcpEndpoint;
