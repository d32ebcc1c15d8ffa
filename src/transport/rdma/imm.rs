//! Immediate data over several data QPs.
//!
//! A `write_with_imm` ends with one RDMA WRITE_WITH_IMM on **every** data QP (the last
//! data request of that QP carries it, or a zero-length one does), and the endpoint posts
//! these final requests of all QPs under one lock, so the k-th immediate of every QP
//! belongs to the k-th `write_with_imm`. Each arrives after that QP's data (RC order); the
//! receiver turns the k-th immediate of every QP into the k-th notification, so exactly
//! one notification is delivered per operation, after all of its data is visible.
//!
//! Each data QP keeps a window of receive requests permanently posted (reposted by the
//! poller of the CQ as they are consumed), so an immediate that arrives before any
//! `imm_recv` is queued, not refused; a sender that outruns the window stalls on RNR
//! (retried forever), never fails. The value is taken raw from the completion, as the
//! original does (no byte swap), so the same number travels between them.

use std::collections::VecDeque;

use parking_lot::Mutex;
use rdma_sys::*;

use super::verbs;

/// Most data QPs per endpoint.
pub const MAX_QP: usize = 16;

/// Per-QP counts of immediates received, turned into whole notifications.
pub struct ImmAggregator {
    nq: usize,
    inner: Mutex<Agg>,
}

struct Agg {
    counts: [u64; MAX_QP],
    delivered: u64,
    /// Values from QP 0 not yet delivered, oldest first.
    values: VecDeque<i32>,
}

impl ImmAggregator {
    pub fn new(nq: usize) -> ImmAggregator {
        assert!((1..=MAX_QP).contains(&nq));
        ImmAggregator {
            nq,
            inner: Mutex::new(Agg {
                counts: [0; MAX_QP],
                delivered: 0,
                values: VecDeque::new(),
            }),
        }
    }

    /// An immediate arrived on data QP `qp`; `deliver` is called for every notification
    /// this completes, in order.
    pub fn arrived(&self, qp: usize, imm: i32, mut deliver: impl FnMut(i32)) {
        let mut g = self.inner.lock();
        g.counts[qp] += 1;
        if qp == 0 {
            g.values.push_back(imm);
        }
        let ready = g.counts[..self.nq].iter().copied().min().unwrap_or(0);
        while g.delivered < ready {
            g.delivered += 1;
            let v = g.values.pop_front().unwrap_or(imm);
            deliver(v);
        }
    }
}

/// `wr_id` bit that marks receive requests (send requests carry their sequence number).
pub const RECV_BIT: u64 = 1 << 63;

/// Posts `n` zero-length receives (a write-with-immediate consumes one and carries no
/// payload into it).
///
/// # Safety
/// `qp` is a live QP in INIT or a later state.
pub unsafe fn post_imm_recvs(qp: *mut ibv_qp, n: u32) -> i32 {
    let mut left = n;
    while left > 0 {
        const CHAIN: usize = 32;
        let k = (left as usize).min(CHAIN);
        // SAFETY: plain data.
        let mut wrs: [ibv_recv_wr; CHAIN] = unsafe { std::mem::zeroed() };
        let base = wrs.as_mut_ptr();
        for (i, wr) in wrs.iter_mut().take(k).enumerate() {
            wr.wr_id = RECV_BIT;
            wr.num_sge = 0;
            wr.next = if i + 1 < k {
                // SAFETY: i + 1 < k ≤ CHAIN, so the pointer stays inside `wrs`.
                unsafe { base.add(i + 1) }
            } else {
                std::ptr::null_mut()
            };
        }
        let mut bad = std::ptr::null_mut();
        // SAFETY: a valid chain on a live QP (caller).
        let rc = unsafe { verbs::post_recv(qp, base, &mut bad) };
        if rc != 0 {
            return rc;
        }
        left -= k as u32;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_notification_per_complete_set() {
        let agg = ImmAggregator::new(3);
        let mut got = Vec::new();
        agg.arrived(1, 10, |v| got.push(v));
        agg.arrived(0, 10, |v| got.push(v));
        agg.arrived(0, 11, |v| got.push(v));
        assert!(got.is_empty());
        agg.arrived(2, 10, |v| got.push(v));
        assert_eq!(got, [10]);
        agg.arrived(2, 11, |v| got.push(v));
        agg.arrived(1, 11, |v| got.push(v));
        assert_eq!(got, [10, 11]);
        let single = ImmAggregator::new(1);
        single.arrived(0, -5, |v| got.push(v));
        assert_eq!(got, [10, 11, -5]);
    }
}
