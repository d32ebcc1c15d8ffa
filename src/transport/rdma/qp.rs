//! RC queue pairs: creation, and the RESET → INIT → RTR → RTS walk with attributes that
//! work on InfiniBand and routed RoCE (the original's spec §7 L-F bugs fixed: the IB
//! destination LID is the peer's, `min_rnr_timer` is a valid 5-bit code, the RoCE hop
//! limit allows routing, the GID is the configured port's).

use std::sync::Arc;

use rdma_sys::*;

use super::domain::Domain;
use super::verbs::{os_error, verbs};
use super::LinkType;
use crate::error::{Error, Result, Status};

/// What the peer needs to reach a QP (one QPINFO of the connection JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QpAddr {
    pub gid: [u8; 16],
    /// −1 on InfiniBand (no GRH, addressed by LID).
    pub gidx: i32,
    pub lid: u16,
    pub qpn: u32,
    /// 24-bit initial packet sequence number.
    pub psn: u32,
    pub mtu: ibv_mtu::Type,
}

/// Sizes and transport timers of one QP.
#[derive(Clone, Copy, Debug)]
pub struct QpParams {
    pub sq_depth: u32,
    pub rq_depth: u32,
    /// Local ACK timeout exponent: 4.096 µs × 2^timeout per try.
    pub timeout: u8,
    pub retry_cnt: u8,
}

/// RNR NAK delay code 12 = 0.64 ms (the original's 0x20 is outside the 5-bit code).
const MIN_RNR_TIMER: u8 = 12;
/// 7 = retry forever on RNR: a receive window that is briefly empty stalls, never fails.
const RNR_RETRY: u8 = 7;
/// Outstanding RDMA reads per QP, clamped to the device.
const RD_ATOMIC: i32 = 16;
/// Enough for routed RoCEv2 (the original's 1 stops at the first router).
const HOP_LIMIT: u8 = 64;

pub struct Qp {
    raw: *mut ibv_qp,
    domain: Arc<Domain>,
    psn: u32,
    params: QpParams,
}

// SAFETY: verbs on one QP are thread-safe in libibverbs; the endpoint serialises posting
// per QP anyway.
unsafe impl Send for Qp {}
// SAFETY: as above.
unsafe impl Sync for Qp {}

fn mask(bits: &[ibv_qp_attr_mask]) -> i32 {
    bits.iter().fold(0u32, |m, b| m | b.0) as i32
}

impl Qp {
    /// An RC QP on `cq` (send and receive), moved to INIT.
    pub fn create(domain: &Arc<Domain>, cq: *mut ibv_cq, params: QpParams) -> Result<Qp> {
        let v = verbs()?;
        let max_wr = domain.device.attr.max_qp_wr.max(1) as u32;
        if params.sq_depth > max_wr || params.rq_depth > max_wr {
            return Err(Error::invalid(format!(
                "QP depth {}/{} exceeds the device's max_qp_wr {max_wr}",
                params.sq_depth, params.rq_depth
            )));
        }
        // SAFETY: plain data, zero is valid for every field.
        let mut init: ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        init.send_cq = cq;
        init.recv_cq = cq;
        init.qp_type = ibv_qp_type::IBV_QPT_RC;
        init.sq_sig_all = 0;
        init.cap.max_send_wr = params.sq_depth.max(1);
        init.cap.max_recv_wr = params.rq_depth.max(1);
        init.cap.max_send_sge = 1;
        init.cap.max_recv_sge = 1;
        // SAFETY: live PD and CQ; valid attributes.
        let raw = unsafe { (v.ibv_create_qp)(domain.pd, &mut init) };
        if raw.is_null() {
            return Err(os_error(
                Status::ResourceExhausted,
                &format!("ibv_create_qp on {}", domain.label()),
            ));
        }
        let qp = Qp {
            raw,
            domain: domain.clone(),
            psn: rand::random::<u32>() & 0xff_ffff,
            params,
        };
        // SAFETY: plain data.
        let mut a: ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ibv_qp_state::IBV_QPS_INIT;
        a.pkey_index = 0;
        a.port_num = domain.port;
        a.qp_access_flags = ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0
            | ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0
            | ibv_access_flags::IBV_ACCESS_REMOTE_READ.0;
        qp.modify(
            &mut a,
            &[
                ibv_qp_attr_mask::IBV_QP_STATE,
                ibv_qp_attr_mask::IBV_QP_PKEY_INDEX,
                ibv_qp_attr_mask::IBV_QP_PORT,
                ibv_qp_attr_mask::IBV_QP_ACCESS_FLAGS,
            ],
            "INIT",
        )?;
        Ok(qp)
    }

    pub fn raw(&self) -> *mut ibv_qp {
        self.raw
    }

    pub fn qpn(&self) -> u32 {
        // SAFETY: live QP.
        unsafe { (*self.raw).qp_num }
    }

    pub fn params(&self) -> &QpParams {
        &self.params
    }

    pub fn addr(&self) -> QpAddr {
        let d = &self.domain;
        QpAddr {
            gid: d.gid,
            gidx: d.gid_index,
            lid: d.lid,
            qpn: self.qpn(),
            psn: self.psn,
            mtu: d.active_mtu,
        }
    }

    fn modify(&self, a: &mut ibv_qp_attr, bits: &[ibv_qp_attr_mask], to: &str) -> Result<()> {
        let v = verbs()?;
        // SAFETY: live QP; attributes valid for the transition named by `bits`.
        let rc = unsafe { (v.ibv_modify_qp)(self.raw, a, mask(bits)) };
        if rc != 0 {
            let err = std::io::Error::from_raw_os_error(rc.abs());
            return Err(Error::new(
                Status::Failed,
                format!(
                    "QP {} to {to} on {}: {err}",
                    self.qpn(),
                    self.domain.label()
                ),
            ));
        }
        Ok(())
    }

    /// INIT → RTR → RTS towards `remote`.
    pub fn connect(&self, remote: &QpAddr) -> Result<()> {
        let d = &self.domain;
        let caps = &d.device.attr;
        // SAFETY: plain data.
        let mut a: ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ibv_qp_state::IBV_QPS_RTR;
        a.path_mtu = d.active_mtu.min(remote.mtu);
        a.dest_qp_num = remote.qpn;
        a.rq_psn = remote.psn & 0xff_ffff;
        a.max_dest_rd_atomic = RD_ATOMIC.min(caps.max_qp_rd_atom.max(1)) as u8;
        a.min_rnr_timer = MIN_RNR_TIMER;
        a.ah_attr.port_num = d.port;
        a.ah_attr.sl = service_level();
        match d.link {
            LinkType::RoCE => {
                a.ah_attr.is_global = 1;
                a.ah_attr.grh.dgid.raw = remote.gid;
                a.ah_attr.grh.sgid_index = d.gid_index as u8;
                a.ah_attr.grh.hop_limit = HOP_LIMIT;
            }
            LinkType::Ib => {
                a.ah_attr.is_global = 0;
                a.ah_attr.dlid = remote.lid;
            }
        }
        self.modify(
            &mut a,
            &[
                ibv_qp_attr_mask::IBV_QP_STATE,
                ibv_qp_attr_mask::IBV_QP_AV,
                ibv_qp_attr_mask::IBV_QP_PATH_MTU,
                ibv_qp_attr_mask::IBV_QP_DEST_QPN,
                ibv_qp_attr_mask::IBV_QP_RQ_PSN,
                ibv_qp_attr_mask::IBV_QP_MAX_DEST_RD_ATOMIC,
                ibv_qp_attr_mask::IBV_QP_MIN_RNR_TIMER,
            ],
            "RTR",
        )?;
        // SAFETY: plain data.
        let mut a: ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ibv_qp_state::IBV_QPS_RTS;
        a.timeout = self.params.timeout;
        a.retry_cnt = self.params.retry_cnt;
        a.rnr_retry = RNR_RETRY;
        a.sq_psn = self.psn;
        a.max_rd_atomic = RD_ATOMIC.min(caps.max_qp_init_rd_atom.max(1)) as u8;
        self.modify(
            &mut a,
            &[
                ibv_qp_attr_mask::IBV_QP_STATE,
                ibv_qp_attr_mask::IBV_QP_TIMEOUT,
                ibv_qp_attr_mask::IBV_QP_RETRY_CNT,
                ibv_qp_attr_mask::IBV_QP_RNR_RETRY,
                ibv_qp_attr_mask::IBV_QP_SQ_PSN,
                ibv_qp_attr_mask::IBV_QP_MAX_QP_RD_ATOMIC,
            ],
            "RTS",
        )
    }

    /// Moves the QP to ERR: every outstanding work request completes as flushed.
    pub fn set_error(&self) {
        // SAFETY: plain data.
        let mut a: ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ibv_qp_state::IBV_QPS_ERR;
        let _ = self.modify(&mut a, &[ibv_qp_attr_mask::IBV_QP_STATE], "ERR");
    }
}

impl Drop for Qp {
    fn drop(&mut self) {
        if let Ok(v) = verbs() {
            // SAFETY: created in `create`, destroyed once; the owner drained it first.
            unsafe { (v.ibv_destroy_qp)(self.raw) };
        }
    }
}

/// `SLIME_SERVICE_LEVEL` (0 by default).
fn service_level() -> u8 {
    std::env::var("SLIME_SERVICE_LEVEL")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}
