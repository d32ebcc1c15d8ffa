//! Slot ring: a ring of fixed-size payload slots in one shared region, written by a
//! producer, read in place by local readers, and fetched by reference
//! `(producer, slot, generation)` by remote readers over any [`Endpoint`](crate::Endpoint).
//!
//! * [`slot`] — the slot state machine: one control word per slot (state, lap, owner
//!   token), every transition a CAS; finishing an attempt is a CAS on its token.
//! * [`layout`] — the shared-memory layout: ring header, slot headers, data area.
//! * [`region`] — the shared allocation and the [`RingHandle`] another process maps it by.
//! * [`reference`](mod@reference) — [`SlotRef`], `(slot, generation)`.
//! * [`buffer`] — [`Ring`]: producer writes, local reads, `ready_count`, metrics.
//! * [`metrics`] — [`RingMetrics`], counters shared by every process of the ring.
//! * `owner` — process liveness and the lease clock behind the reclaim rule.
//! * [`wire`] — FETCH / COMMIT / ABORT requests and the reply header, over SlimeRPC.
//! * [`server`] — [`RingServer`]: serves rings over endpoints (direct or PeerAgent).
//! * [`client`] — [`RingClient`]: fetch by reference, batch fetch, rotation.
//! * [`connector`] — where an endpoint comes from: a direct pair or a PeerAgent alias.
//! * [`health`] — quarantine and the round-robin choice of a route.
//! * [`retry`] — which failures rotate, retry or end a fetch; worst-case times.
//! * `sessions` — the client's session per route: made in the background, retired
//!   before the server's idle eviction.
//! * `buffers` — pooled receive buffers and [`Payload`].
//! * `snapshot` — `snapshot!`, the server's and client's counters read out.
//!
//! `docs/ring.md` describes the protocol, the retry layers and their worst-case times.

#[macro_use]
mod snapshot;

pub mod buffer;
mod buffers;
pub mod client;
pub mod connector;
pub mod health;
pub mod layout;
pub mod metrics;
mod owner;
pub mod reference;
pub mod region;
pub mod retry;
pub mod server;
mod sessions;
pub mod slot;
pub mod wire;

pub use buffer::{Ring, RingConfig, SlotView};
pub use buffers::Payload;
pub use client::{ClientCounters, FaultHook, RingClient, RingClientConfig, RouteStatus};
pub use connector::{Connector, FixedEndpoint, PeerRoute};
pub use metrics::RingMetrics;
pub use reference::SlotRef;
pub use region::RingHandle;
pub use server::{RingServer, RingServerConfig, ServerCounters};
pub use slot::SlotState;
