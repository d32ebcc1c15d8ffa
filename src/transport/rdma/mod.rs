//! RDMA transport: RC verbs over any NIC that libibverbs drives (InfiniBand, RoCE,
//! soft-RoCE). See `docs/rdma-transport.md` for the QP layout, the protocols and the
//! failure semantics.
//!
//! * [`verbs`] — the verbs entry points, `dlopen`ed at run time (no link-time
//!   dependency on libibverbs), and the inline data-path calls.
//! * [`device`] — discovery: [`available_nics`], opening a device, port, GID choice.
//! * [`domain`] — a protection domain on one port, with its addressing.
//! * [`mr`] — memory registration, and the registrar that binds a memory pool to a domain.
//! * [`context`] — [`RdmaContext`]: one per NIC port; the CQ and its completion thread.
//! * [`progress`] — who polls the CQ: the threads waiting on operations (inline), or
//!   the completion thread while none does.
//! * [`qp`] — RC QPs and their state transitions.
//! * [`sq`] — send-queue bookkeeping: bounded, selectively signalled.
//! * [`info`] — the connection JSON.
//! * [`imm`] — immediate data over several QPs: one notification per operation.
//! * [`sendrecv`] — two-sided messages: eager and rendezvous over a control QP.
//! * [`liveness`] — keepalives: a dead peer fails pending operations in bounded time.
//! * [`endpoint`] — [`RdmaEndpoint`], the Endpoint contract.

pub mod context;
pub mod device;
pub mod domain;
pub mod endpoint;
pub mod imm;
pub mod info;
pub mod liveness;
pub mod mr;
pub mod progress;
pub mod qp;
pub mod sendrecv;
pub mod sq;
pub mod verbs;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

pub use context::RdmaContext;
pub use device::available_nics;
pub use endpoint::{RdmaEndpoint, RdmaEndpointConfig};

use crate::engine;
use crate::error::{Error, Result};

/// The link layer of a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// InfiniBand: QPs are addressed by LID.
    Ib,
    /// RoCE (Ethernet): QPs are addressed by GID.
    RoCE,
}

impl fmt::Display for LinkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkType::Ib => "IB",
            LinkType::RoCE => "RoCE",
        })
    }
}

impl FromStr for LinkType {
    type Err = Error;

    /// `"RoCE"`/`"Ethernet"` or `"IB"`/`"InfiniBand"` (any case), as the original takes.
    fn from_str(s: &str) -> Result<LinkType> {
        match s.to_ascii_lowercase().as_str() {
            "roce" | "ethernet" | "eth" => Ok(LinkType::RoCE),
            "ib" | "infiniband" => Ok(LinkType::Ib),
            _ => Err(Error::invalid(format!(
                "unknown link type {s:?} (want \"RoCE\" or \"IB\")"
            ))),
        }
    }
}

/// How to open a context.
#[derive(Clone, Debug)]
pub struct RdmaConfig {
    /// Device name; `None` or empty: the first of [`available_nics`].
    pub device: Option<String>,
    /// Port number, from 1.
    pub ib_port: u8,
    /// Refuse the port unless it has this link layer; `None`: whatever it has.
    pub link_type: Option<LinkType>,
    /// GID index on RoCE ports; `None`: `SLIME_GID_INDEX` if set (0 included), else
    /// automatic (the first RoCE v2 IPv4-mapped GID).
    pub gid_index: Option<u32>,
    /// Completion-queue entries (clamped to the device).
    pub cq_depth: u32,
    /// The longest a thread waiting on an operation polls the CQ before it sleeps
    /// (inline progress; adaptive below this, see [`progress`]).
    /// Longer than `engine.spin`: an RDMA round trip takes tens of µs on soft-RoCE.
    /// `DLSLIME_RDMA_POLL_US` overrides it.
    pub poll_spin: Duration,
    /// How long the completion thread leaves the CQ to the waiters after the last one
    /// finished (see [`progress`]): a completion that nobody waits for is handled at most
    /// this late; one that a waiter sleeps on is handled at once. Long enough to span the
    /// gaps of a ping-pong or a pipeline, so that their completions never wake the
    /// completion thread (each wake-up takes a core from the threads doing the work).
    /// `DLSLIME_RDMA_GRACE_US` overrides it.
    pub idle_grace: Duration,
    pub engine: engine::Config,
}

impl Default for RdmaConfig {
    fn default() -> Self {
        RdmaConfig {
            device: None,
            ib_port: 1,
            link_type: None,
            gid_index: None,
            cq_depth: 32768,
            poll_spin: engine::config::env_micros("DLSLIME_RDMA_POLL_US")
                .unwrap_or(Duration::from_micros(1000)),
            idle_grace: engine::config::env_micros("DLSLIME_RDMA_GRACE_US")
                .unwrap_or(Duration::from_millis(100)),
            engine: engine::Config::from_env(),
        }
    }
}
