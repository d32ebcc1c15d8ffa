//! Shared-memory transport (same host): the whole Endpoint contract over two processes.
//!
//! * Regions from [`crate::memory::alloc_shared`] are memfd mappings the peer maps (at
//!   connect time, or when they are registered later: `publish`): one-sided operations
//!   on them are one memcpy by the initiator, after checking the range and key against
//!   the table the target publishes.
//! * Other memory goes through cross-memory attach ([`cma`]), one copy, with the target
//!   checking the range itself; when the kernel refuses attach (EPERM at the connect-time
//!   probe) or `force_staged` is set, through bounce slots in the control segment.
//! * Descriptors, inline messages, immediate data and completions travel in two SPSC
//!   rings ([`ring`]); the Unix socket of the handshake ([`handshake`]) stays open for
//!   liveness.
//!
//! The endpoint, by concept (see `docs/shm-transport.md` for the behaviour):
//!
//! | file | holds |
//! |---|---|
//! | `endpoint` | [`ShmEndpoint`], the user's handle, and its `Endpoint` impl |
//! | `config`, `stats` | [`ShmConfig`] (knobs and their environment variables), [`ShmStats`] (counters) |
//! | `state` | `Inner`, the endpoint's state shared with the progress thread and waiters |
//! | `connect` | `connect`: the handshake, mapping the peer's allocations, the attach probe |
//! | `accept` | the authenticated handshake: the dialer's side, and the acceptor's, serving every connection at once with its own deadline |
//! | `conn` | `Conn`, the live connection: segment, rings, mappings, tables, bounce slots |
//! | `submit` | the initiator's side: `read`/`write`/`write_with_imm` and `send` |
//! | `pending` | our requests awaiting the peer's `DONE`, aggregated per operation, and their completion |
//! | `slots` | taking and freeing our bounce slots (the staged path) |
//! | `target` | the target's side: acting on each entry from the peer, checking every range first |
//! | `recv` | the receive side of send/recv: inline, pulled and early messages |
//! | `reassembly` | staged messages arriving in chunks |
//! | `window` | the bound on messages the peer has not received yet: the sender waits for room, the receiver enforces it |
//! | `progress` | pushing into our ring, polling the peer's, inline progress (the waiting thread drives), the background thread |
//! | `device` | staged (CUDA) regions: announced with their IPC handles, opened by the peer, copied device to device or through bounce slots |
//! | `publish` | our region table and the shared allocations we announce after connect; mapping what the peer announces |
//! | `close` | peer death and `shutdown` |
//! | `mappings` | the peer's shared allocations mapped here |
//! | `ring`, `handshake`, `cma` | the segment layout and rings, the Unix socket (0700 directory, frames, fds), cross-memory attach |

mod accept;
mod close;
pub mod cma;
mod config;
mod conn;
mod connect;
mod device;
mod endpoint;
pub mod handshake;
mod mappings;
mod pending;
mod progress;
mod publish;
mod reassembly;
mod recv;
pub mod ring;
mod slots;
mod state;
mod stats;
mod submit;
mod target;
mod window;

pub use config::ShmConfig;
pub use endpoint::ShmEndpoint;
pub use stats::ShmStats;
