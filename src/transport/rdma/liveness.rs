//! Keepalives: how an endpoint learns that its peer is gone while nothing is in flight.
//!
//! RC reports a dead peer only through work requests that fail after the transport's
//! retries. So once the peer has proven it is connected (its HELLO arrived), the
//! completion thread writes zero bytes to it every [`KA_PERIOD`] on a dedicated QP with a
//! short ACK timeout (4.096 µs × 2^15 ≈ 134 ms per try, 6 retries): a peer that died or
//! shut down fails the keepalive within about 1 s (or, if the device keeps retrying, it
//! stays unanswered for `KA_STALL`), and the endpoint then fails every pending
//! operation with `PeerDisconnected` (within about 2.5 s of the death). Data and control
//! QPs keep a long timeout (≈ 0.5 s per try, ≈ 4 s in all), so a big transfer on
//! a slow link or a peer that calls `connect` a little later is never mistaken for a
//! dead one.

use std::time::{Duration, Instant};

use rdma_sys::*;

use super::endpoint::EpShared;
use super::qp::Qp;
use super::sq::SendQueue;
use crate::error::Status;

/// Time between keepalives.
pub const KA_PERIOD: Duration = Duration::from_millis(500);
/// ACK timeout exponent of the keepalive QP (134 ms per try).
pub const KA_TIMEOUT: u8 = 15;
/// A keepalive that neither completes nor fails for this long means the peer is gone
/// even if the device keeps retrying (soft-RoCE treats a retry count of 7 as infinite).
const KA_STALL: Duration = Duration::from_secs(2);

pub struct KaQp {
    pub qp: Qp,
    pub sq: SendQueue<()>,
}

#[derive(Default)]
pub struct Liveness {
    peer_ready: bool,
    outstanding_since: Option<Instant>,
    last: Option<Instant>,
}

impl EpShared {
    /// The peer's HELLO arrived: it is connected, keepalives may start.
    pub(super) fn peer_said_hello(&self) {
        self.live.lock().peer_ready = true;
    }

    /// Completion thread, every ≤ 100 ms.
    pub(super) fn tick_liveness(&self, now: Instant) {
        if !self.is_connected() || self.broken.get().is_some() {
            return;
        }
        let Some(peer) = self.peer.get() else { return };
        let mut l = self.live.lock();
        if !l.peer_ready {
            return;
        }
        if let Some(t) = l.outstanding_since {
            if now.duration_since(t) > KA_STALL {
                drop(l);
                self.break_with(
                    Status::PeerDisconnected,
                    format!("keepalive unanswered for {KA_STALL:?}"),
                );
            }
            return;
        }
        if l.last.is_some_and(|t| now.duration_since(t) < KA_PERIOD) || !self.ka.sq.try_reserve(1) {
            return;
        }
        // SAFETY: plain data.
        let mut wr: ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.opcode = ibv_wr_opcode::IBV_WR_RDMA_WRITE;
        wr.send_flags = ibv_send_flags::IBV_SEND_SIGNALED.0;
        wr.num_sge = 0;
        wr.wr.rdma = rdma_t {
            remote_addr: peer.addr,
            rkey: peer.rkey,
        };
        // SAFETY: live QP; a zero-length write names no local memory.
        let r = unsafe { self.ka.sq.post(self.ka.qp.raw(), &mut [wr], |_, _, _| ()) };
        if r.is_ok() {
            l.outstanding_since = Some(now);
            l.last = Some(now);
        }
    }

    /// A keepalive completed.
    pub(super) fn on_ka_retire(&self, status: Status, msg: Option<&str>) {
        if status.is_ok() {
            self.live.lock().outstanding_since = None;
        } else {
            self.break_with(
                Status::PeerDisconnected,
                format!(
                    "the peer stopped answering (keepalive: {})",
                    msg.unwrap_or(status.as_str())
                ),
            );
        }
    }
}
