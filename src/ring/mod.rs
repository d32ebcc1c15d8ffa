//! Slot ring: a ring of fixed-size payload slots in one shared region, written by a
//! producer, read in place by local readers, and fetched by reference
//! `(producer, slot, generation)` by remote readers over any [`Endpoint`](crate::Endpoint).
//!
//! * [`slot`] — the slot state machine: one control word per slot (state, lap, owner
//!   token), every transition a CAS; finishing an attempt is a CAS on its token.
//! * [`layout`] — the shared-memory layout: ring header, slot headers, data area.
//! * [`region`] — the shared allocation and the [`RingHandle`] another process maps it by.
//! * [`reference`] — [`SlotRef`], `(slot, generation)`.
//! * [`buffer`] — [`Ring`]: producer writes, local reads, `ready_count`, metrics.
//! * [`metrics`] — [`RingMetrics`], counters shared by every process of the ring.
//! * `owner` — process liveness and the lease clock behind the reclaim rule.
//!
//! `docs/ring.md` describes the protocol, the retry layers and their worst-case times.

pub mod buffer;
pub mod layout;
pub mod metrics;
mod owner;
pub mod reference;
pub mod region;
pub mod slot;

pub use buffer::{Ring, RingConfig, SlotView};
pub use metrics::RingMetrics;
pub use reference::SlotRef;
pub use region::RingHandle;
pub use slot::SlotState;
