//! Shared-memory transport (same host): the whole Endpoint contract over two processes.
//!
//! * Regions from [`crate::memory::alloc_shared`] are memfd mappings the peer maps at connect
//!   time: one-sided operations on them are one memcpy by the initiator, after checking
//!   the range and key against the table the target publishes.
//! * Other memory goes through cross-memory attach ([`cma`]), one copy, with the target
//!   checking the range itself; when the kernel refuses attach (EPERM at the connect-time
//!   probe) or `force_staged` is set, through bounce slots in the control segment.
//! * Descriptors, inline messages, immediate data and completions travel in two SPSC
//!   rings ([`ring`]); the Unix socket of the handshake ([`handshake`]) stays open for
//!   liveness.

pub mod cma;
pub mod endpoint;
pub mod handshake;
mod mappings;
pub mod ring;

pub use endpoint::{ShmConfig, ShmEndpoint, ShmStats};
