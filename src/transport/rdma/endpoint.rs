//! The RDMA endpoint: `num_qp` data QPs (one-sided operations striped across them), a
//! control QP (messages, see [`super::sendrecv`]) and a keepalive QP (see
//! [`super::liveness`]), all on the context's CQ.
//!
//! One-sided operations: every assignment becomes work requests on the data QPs — large
//! ones (≥ 64 KiB) split evenly across all QPs, small ones round-robin — posted in chains
//! of at most 16 with the last of each chain signalled. The operation completes when its
//! last request retires. A remote access error fails that operation with `RemoteAccess`;
//! it also puts the QP (and so the connection) in the error state, as RC does: the
//! endpoint is then broken and every later operation fails at once, on both sides.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdma_sys::*;
use serde_json::{json, Map, Value};

use super::context::{CompletionHandler, RdmaContext};
use super::imm::{post_imm_recvs, ImmAggregator, MAX_QP, RECV_BIT};
use super::info::{self, CtrlInfo};
use super::liveness::{KaQp, Liveness, KA_TIMEOUT};
use super::mr::RegBuf;
use super::qp::{Qp, QpParams};
use super::sendrecv::{
    self, CtrlQp, CtrlWork, Early, SendWindow, BUF, CTRL_RQ, CTRL_SQ, HEADER, SEND_WINDOW,
};
use super::sq::SendQueue;
use super::verbs::wc_status_str;
use crate::engine::Deadline;
use crate::error::{Error, Result, Status};
use crate::future::{bytes_of, observe, track, Future, InflightOps, OpState};
use crate::memory::{MemoryPool, RemotePool};
use crate::obs::{self, EndpointStats, OpKind};
use crate::transport::info as envelope;
use crate::transport::matching::{ImmQueue, MsgMatcher};
use crate::transport::{Assignment, Endpoint};

/// Endpoint knobs.
#[derive(Clone, Debug)]
pub struct RdmaEndpointConfig {
    /// Data QPs, 1..=16; large transfers are striped across them.
    pub num_qp: usize,
    /// Send-queue slots per data QP (posters wait for room beyond).
    pub sq_depth: u32,
    /// Receives kept posted per data QP for immediate data.
    pub imm_window: u32,
}

impl Default for RdmaEndpointConfig {
    fn default() -> Self {
        RdmaEndpointConfig {
            num_qp: 1,
            sq_depth: 256,
            imm_window: 128,
        }
    }
}

const TAG_CTRL: u32 = 1000;
const TAG_KA: u32 = 1001;
/// ACK timeout exponent of data and control QPs: 0.54 s per try, 7 tries.
const DATA_TIMEOUT: u8 = 17;
/// Transport retries after the first try. Not 7: soft-RoCE (rxe) takes 7 as "forever",
/// and a dead peer must fail work requests.
const RETRY_CNT: u8 = 6;
const KA_SQ: u32 = 4;
/// Assignments at least this long are split across all data QPs.
const STRIPE_MIN: u64 = 64 << 10;
/// Longest single work request.
const MAX_WR: u64 = 1 << 30;
/// Longest single RDMA READ: a long read response is one request for the responder to
/// stream; soft-RoCE drops connections on multi-MiB reads under load, and NICs gain
/// nothing from reads beyond this.
const MAX_READ_WR: u64 = 1 << 20;
/// Work requests per post call (and between two signalled ones).
const CHAIN: usize = 16;
/// How long shutdown waits for the device to flush its QPs.
const DRAIN: Duration = Duration::from_secs(3);

const NEW: u8 = 0;
const CONNECTING: u8 = 1;
const CONNECTED: u8 = 2;
const CLOSED: u8 = 3;

#[derive(Default)]
pub struct DataEntry {
    op: Option<Arc<OpState>>,
    /// The last request of a read chain: retiring it ends the chain's hold on the
    /// caller's memory.
    io: bool,
}

pub struct DataQp {
    pub qp: Qp,
    pub sq: SendQueue<DataEntry>,
    rq_posted: AtomicU32,
}

/// Where the peer's keepalive target is.
pub struct PeerCtrl {
    pub addr: u64,
    pub rkey: u32,
}

/// Endpoint state shared with the poller of the CQ.
pub struct EpShared {
    pub ctx: Arc<RdmaContext>,
    pub pool: Arc<MemoryPool>,
    pub data: Vec<DataQp>,
    pub ctrl: CtrlQp,
    ctrl_rq_posted: AtomicU32,
    pub ka: KaQp,
    imm_agg: ImmAggregator,
    pub imm: ImmQueue,
    pub msgs: MsgMatcher<Early>,
    pub sendwin: Mutex<SendWindow>,
    pub backlog: Mutex<VecDeque<CtrlWork>>,
    pub pumping: AtomicBool,
    pub inflight: InflightOps,
    state: AtomicU8,
    /// The first fatal error of the connection; set once.
    pub broken: OnceLock<Error>,
    pub peer: OnceLock<PeerCtrl>,
    pub live: Mutex<Liveness>,
    rr: AtomicUsize,
    /// Serialises the final (immediate-carrying) requests of `write_with_imm` across
    /// the data QPs (see [`super::imm`]).
    imm_lock: Mutex<()>,
    cqes: u32,
    /// The peer is the original DLSlime (see [`info::is_original`]): one-sided
    /// operations only, no control channel (no HELLO, BYE or keepalive).
    original_peer: AtomicBool,
}

/// An RDMA endpoint. Thread-safe: operations may be issued from any number of threads.
pub struct RdmaEndpoint {
    sh: Arc<EpShared>,
    remote: RemotePool,
    obs: Arc<EndpointStats>,
}

/// A local/remote pair of one assignment, checked.
#[derive(Clone, Copy, Default)]
struct Resolved {
    laddr: u64,
    lkey: u32,
    raddr: u64,
    rkey: u32,
    len: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    WriteImm(i32),
}

impl Kind {
    fn max_wr(self) -> u64 {
        if self == Kind::Read {
            MAX_READ_WR
        } else {
            MAX_WR
        }
    }
}

impl RdmaEndpoint {
    /// An endpoint on `ctx` whose local regions are `pool`'s. The pool is bound to the
    /// context's protection domain: its regions (present and future) are registered
    /// with the device, and their keys become rkeys.
    pub fn new(
        ctx: &Arc<RdmaContext>,
        pool: Arc<MemoryPool>,
        cfg: RdmaEndpointConfig,
    ) -> Result<Arc<RdmaEndpoint>> {
        if !(1..=MAX_QP).contains(&cfg.num_qp) {
            return Err(Error::invalid(format!(
                "num_qp must be 1..={MAX_QP}, not {}",
                cfg.num_qp
            )));
        }
        if cfg.sq_depth < CHAIN as u32 || cfg.imm_window == 0 {
            return Err(Error::invalid(format!(
                "sq_depth must be ≥ {CHAIN} and imm_window ≥ 1"
            )));
        }
        pool.attach_registrar(ctx.registrar())?;
        let domain = ctx.domain();
        let nq = cfg.num_qp as u32;
        let cqes = nq * (cfg.sq_depth + cfg.imm_window) + CTRL_SQ + CTRL_RQ + KA_SQ;
        ctx.reserve_cqes(cqes)?;
        let built = (|| -> Result<EpShared> {
            let data = (0..cfg.num_qp)
                .map(|_| {
                    Ok(DataQp {
                        qp: Qp::create(
                            domain,
                            ctx.cq(),
                            QpParams {
                                sq_depth: cfg.sq_depth,
                                rq_depth: cfg.imm_window,
                                timeout: DATA_TIMEOUT,
                                retry_cnt: RETRY_CNT,
                            },
                        )?,
                        sq: SendQueue::new(cfg.sq_depth),
                        rq_posted: AtomicU32::new(0),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let ctrl = CtrlQp {
                qp: Qp::create(
                    domain,
                    ctx.cq(),
                    QpParams {
                        sq_depth: CTRL_SQ,
                        rq_depth: CTRL_RQ,
                        timeout: DATA_TIMEOUT,
                        retry_cnt: RETRY_CNT,
                    },
                )?,
                sq: SendQueue::new(CTRL_SQ),
                rq_bufs: RegBuf::new(domain, CTRL_RQ as usize * BUF)?,
                bounce: RegBuf::new(domain, SEND_WINDOW * BUF)?,
                hdrs: RegBuf::new(domain, CTRL_SQ as usize * HEADER)?,
                ka_target: RegBuf::new(domain, 64)?,
            };
            let ka = KaQp {
                qp: Qp::create(
                    domain,
                    ctx.cq(),
                    QpParams {
                        sq_depth: KA_SQ,
                        rq_depth: 1,
                        timeout: KA_TIMEOUT,
                        retry_cnt: RETRY_CNT,
                    },
                )?,
                sq: SendQueue::new(KA_SQ),
            };
            Ok(EpShared {
                ctx: ctx.clone(),
                pool,
                data,
                ctrl,
                ctrl_rq_posted: AtomicU32::new(0),
                ka,
                imm_agg: ImmAggregator::new(cfg.num_qp),
                imm: ImmQueue::default(),
                msgs: MsgMatcher::default(),
                sendwin: Mutex::new(SendWindow::default()),
                backlog: Mutex::new(VecDeque::new()),
                pumping: AtomicBool::new(false),
                inflight: InflightOps::default(),
                state: AtomicU8::new(NEW),
                broken: OnceLock::new(),
                peer: OnceLock::new(),
                live: Mutex::new(Liveness::default()),
                rr: AtomicUsize::new(0),
                imm_lock: Mutex::new(()),
                cqes,
                original_peer: AtomicBool::new(false),
            })
        })();
        let sh = match built {
            Ok(s) => Arc::new(s),
            Err(e) => {
                ctx.release_cqes(cqes);
                return Err(e);
            }
        };
        let weak: Weak<dyn CompletionHandler> = Arc::downgrade(&sh) as Weak<dyn CompletionHandler>;
        for (i, q) in sh.data.iter().enumerate() {
            ctx.add_route(q.qp.qpn(), weak.clone(), i as u32);
        }
        ctx.add_route(sh.ctrl.qp.qpn(), weak.clone(), TAG_CTRL);
        ctx.add_route(sh.ka.qp.qpn(), weak.clone(), TAG_KA);
        ctx.add_ticker(weak);
        let ep = Arc::new(RdmaEndpoint {
            sh,
            remote: RemotePool::default(),
            obs: obs::register_endpoint("rdma"),
        });
        // Receive windows go up before the peer can know our QP numbers.
        ep.sh.post_windows(cfg.imm_window)?;
        Ok(ep)
    }

    /// An endpoint with its own context on `device` (`None`: the first NIC) and a fresh
    /// memory pool; the original's `RDMAEndpoint(device_name, ib_port, link_type, num_qp)`.
    pub fn open(
        device: Option<&str>,
        ib_port: u8,
        link_type: Option<super::LinkType>,
        num_qp: usize,
    ) -> Result<Arc<RdmaEndpoint>> {
        let ctx = RdmaContext::open(super::RdmaConfig {
            device: device.map(String::from),
            ib_port,
            link_type,
            ..Default::default()
        })?;
        RdmaEndpoint::new(
            &ctx,
            MemoryPool::new(),
            RdmaEndpointConfig {
                num_qp,
                ..Default::default()
            },
        )
    }

    pub fn context(&self) -> &Arc<RdmaContext> {
        &self.sh.ctx
    }

    pub fn num_qp(&self) -> usize {
        self.sh.data.len()
    }

    fn resolve(&self, a: &Assignment) -> Result<Resolved> {
        let (region, ptr) = self
            .sh
            .pool
            // Device regions too: a pool with a registrar holds only regions the NIC
            // reaches (device memory through GPUDirect), each with its lkey.
            .local_range_or_staged(a.local, a.local_offset, a.length)?;
        let lkey = region.device.as_ref().map(|d| d.lkey).ok_or_else(|| {
            Error::new(
                Status::Internal,
                format!(
                    "local region {} is not registered with the RDMA device",
                    a.local
                ),
            )
        })?;
        let (raddr, rkey) = self
            .remote
            .remote_range(a.remote, a.remote_offset, a.length)?;
        // Remote keys are 64-bit in the Endpoint contract; an RDMA peer publishes 32-bit
        // rkeys, so a wider one was not published by an RDMA pool.
        let rkey = u32::try_from(rkey).map_err(|_| {
            Error::new(
                Status::InvalidArgument,
                format!(
                    "remote region {} has a key wider than an RDMA rkey",
                    a.remote
                ),
            )
        })?;
        Ok(Resolved {
            laddr: ptr as u64,
            lkey,
            raddr,
            rkey,
            len: a.length,
        })
    }

    fn one_sided(
        &self,
        kind: Kind,
        assignments: &[Assignment],
        timeout: Option<Duration>,
    ) -> Result<Future> {
        self.sh.ready()?;
        // Resolve (and refuse bad input) before anything is posted; no allocation for
        // the common small lists.
        let mut stack = [Resolved::default(); 8];
        let heap: Vec<Resolved>;
        let res: &[Resolved] = if assignments.len() <= stack.len() {
            for (s, a) in stack.iter_mut().zip(assignments) {
                *s = self.resolve(a)?;
            }
            &stack[..assignments.len()]
        } else {
            heap = assignments
                .iter()
                .map(|a| self.resolve(a))
                .collect::<Result<_>>()?;
            &heap
        };
        let nq = self.sh.data.len();
        let rr = self.sh.rr.fetch_add(res.len().max(1), Ordering::Relaxed);
        let mut counts = [0u32; MAX_QP];
        for (j, r) in res.iter().enumerate() {
            pieces(r, j, rr, nq, kind.max_wr(), |q, _, _| counts[q] += 1);
        }
        if matches!(kind, Kind::WriteImm(_)) {
            for c in counts.iter_mut().take(nq) {
                *c = (*c).max(1);
            }
        }
        let total: u64 = counts.iter().map(|c| *c as u64).sum();
        let total = u32::try_from(total)
            .map_err(|_| Error::invalid("too many work requests in one operation"))?;
        let op = self.sh.new_op(total, timeout);
        op.set_nbytes(res.iter().map(|r| r.len).sum());
        if total == 0 {
            return Ok(Future::new(op));
        }
        let _order = matches!(kind, Kind::WriteImm(_)).then(|| self.sh.imm_lock.lock());
        for (qi, &count) in counts.iter().enumerate().take(nq) {
            if count > 0 {
                self.sh.post_data(qi, res, rr, kind, &op, count);
            }
        }
        Ok(Future::new(op))
    }
}

/// Calls `f(qp, offset, len)` for each work request of assignment `j`.
fn pieces(
    r: &Resolved,
    j: usize,
    rr: usize,
    nq: usize,
    max_wr: u64,
    mut f: impl FnMut(usize, u64, u64),
) {
    let mut split = |q: usize, start: u64, len: u64| {
        let mut o = 0;
        while o < len {
            let l = max_wr.min(len - o);
            f(q, start + o, l);
            o += l;
        }
    };
    if r.len == 0 {
        return;
    }
    if nq == 1 || r.len < STRIPE_MIN {
        split((rr + j) % nq, 0, r.len);
        return;
    }
    let per = r.len.div_ceil(nq as u64).next_multiple_of(4096);
    for q in 0..nq {
        let s = q as u64 * per;
        if s >= r.len {
            break;
        }
        split(q, s, per.min(r.len - s));
    }
}

/// Work requests being gathered for one post call.
struct Chain {
    wrs: [ibv_send_wr; CHAIN],
    sges: [ibv_sge; CHAIN],
    n: usize,
}

/// The requests of one operation on one data QP, posted a chain at a time.
struct Gather<'a> {
    ep: &'a EpShared,
    qi: usize,
    kind: Kind,
    op: &'a Arc<OpState>,
    count: u32,
    chain: Chain,
    emitted: u32,
    failed: Option<(Status, String)>,
}

impl Gather<'_> {
    fn add(&mut self, laddr: u64, lkey: u32, raddr: u64, rkey: u32, len: u64) {
        if self.failed.is_some() {
            return;
        }
        let c = &mut self.chain;
        let i = c.n;
        let last = self.emitted + 1 == self.count;
        c.sges[i] = ibv_sge {
            addr: laddr,
            length: len as u32,
            lkey,
        };
        // SAFETY: plain data.
        let mut wr: ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.sg_list = &mut c.sges[i];
        wr.num_sge = if len == 0 { 0 } else { 1 };
        wr.wr.rdma = rdma_t {
            remote_addr: raddr,
            rkey,
        };
        wr.opcode = match self.kind {
            Kind::Read => ibv_wr_opcode::IBV_WR_RDMA_READ,
            Kind::Write => ibv_wr_opcode::IBV_WR_RDMA_WRITE,
            Kind::WriteImm(imm) if last => {
                // Raw, as the original: the peer reads wc.imm_data as is.
                wr.imm_data_invalidated_rkey_union.imm_data = imm as u32;
                ibv_wr_opcode::IBV_WR_RDMA_WRITE_WITH_IMM
            }
            Kind::WriteImm(_) => ibv_wr_opcode::IBV_WR_RDMA_WRITE,
        };
        c.wrs[i] = wr;
        c.n += 1;
        self.emitted += 1;
        if c.n == CHAIN || last {
            if let Err(e) =
                self.ep
                    .flush_chain(self.qi, &mut self.chain, self.op, self.kind == Kind::Read)
            {
                self.failed = Some(e);
            }
        }
    }
}

impl EpShared {
    pub(super) fn is_connected(&self) -> bool {
        self.state.load(Ordering::Acquire) == CONNECTED
    }

    fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) == CLOSED
    }

    pub(super) fn ready(&self) -> Result<()> {
        match self.state.load(Ordering::Acquire) {
            CLOSED => return Err(Error::new(Status::ShutDown, "endpoint is shut down")),
            CONNECTED => {}
            _ => {
                return Err(Error::new(
                    Status::NotConnected,
                    "connect() this endpoint first",
                ))
            }
        }
        if let Some(e) = self.broken.get() {
            return Err(Error::new(
                e.status(),
                format!("the connection failed earlier: {}", e.message()),
            ));
        }
        Ok(())
    }

    pub(super) fn new_op(&self, parts: u32, timeout: Option<Duration>) -> Arc<OpState> {
        let cfg = self.ctx.config();
        let driver = self.ctx.driver();
        // Inline, the waiter polls the CQ for up to `poll_spin`; in the background mode
        // it spins on the operation only.
        let spin = if driver.is_some() {
            cfg.poll_spin
        } else {
            cfg.engine.spin
        };
        let op = OpState::new(
            parts,
            Deadline::after(timeout.unwrap_or(cfg.engine.default_timeout)),
            spin,
            driver,
        );
        self.inflight.track(&op);
        op
    }

    fn post_windows(&self, imm_window: u32) -> Result<()> {
        for q in &self.data {
            // SAFETY: a live QP in INIT.
            let rc = unsafe { post_imm_recvs(q.qp.raw(), imm_window) };
            if rc != 0 {
                return Err(Error::new(
                    Status::ResourceExhausted,
                    format!("posting the immediate-data window failed: errno {rc}"),
                ));
            }
            q.rq_posted.store(imm_window, Ordering::Release);
        }
        for slot in 0..CTRL_RQ {
            let rc = self.ctrl.post_recv(slot);
            if rc != 0 {
                return Err(Error::new(
                    Status::ResourceExhausted,
                    format!("posting the message window failed: errno {rc}"),
                ));
            }
            self.ctrl_rq_posted.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Posts the `count` work requests of `op` that go to data QP `qi`.
    fn post_data(
        &self,
        qi: usize,
        res: &[Resolved],
        rr: usize,
        kind: Kind,
        op: &Arc<OpState>,
        count: u32,
    ) {
        let nq = self.data.len();
        let mut g = Gather {
            ep: self,
            qi,
            kind,
            op,
            count,
            // SAFETY: plain data.
            chain: unsafe { std::mem::zeroed() },
            emitted: 0,
            failed: None,
        };
        for (j, r) in res.iter().enumerate() {
            pieces(r, j, rr, nq, kind.max_wr(), |q, off, len| {
                if q == qi {
                    g.add(r.laddr + off, r.lkey, r.raddr + off, r.rkey, len);
                }
            });
        }
        if g.emitted < count {
            // write_with_imm with no data on this QP: a zero-length final request, aimed
            // at a valid registered word of the peer.
            let (addr, rkey) = self.peer.get().map_or((0, 0), |p| (p.addr, p.rkey));
            g.add(0, 0, addr, rkey, 0);
        }
        if let Some((status, msg)) = g.failed {
            for _ in g.emitted..count {
                op.part_done(status, Some(&msg));
            }
        }
    }

    /// Reserves room and posts the gathered chain; on failure every request of the
    /// chain has been accounted (failed) and the caller stops.
    fn flush_chain(
        &self,
        qi: usize,
        chain: &mut Chain,
        op: &Arc<OpState>,
        io: bool,
    ) -> std::result::Result<(), (Status, String)> {
        let k = chain.n;
        chain.n = 0;
        let q = &self.data[qi];
        let fail_k = |status: Status, msg: &str| {
            for _ in 0..k {
                op.part_done(status, Some(msg));
            }
        };
        let spin = self.ctx.config().engine.spin;
        if let Err(e) =
            q.sq.reserve(k as u32, op.deadline(), spin, || self.ctx.poll())
        {
            fail_k(e.status(), e.message());
            return Err((e.status(), e.message().to_string()));
        }
        if io && !op.begin_io() {
            // The operation ended (deadline, cancel) before this chain went out.
            q.sq.unreserve(k as u32);
            fail_k(Status::Cancelled, "operation ended before it was posted");
            return Err((
                Status::Cancelled,
                "operation ended before it was posted".into(),
            ));
        }
        chain.wrs[k - 1].send_flags |= ibv_send_flags::IBV_SEND_SIGNALED.0;
        // SAFETY: live QP; SGEs name registered local memory (checked in resolve) that
        // the caller keeps valid until the operation completes.
        let r = unsafe {
            q.sq.post(q.qp.raw(), &mut chain.wrs[..k], |i, _, _| DataEntry {
                op: Some(op.clone()),
                io: io && i == k - 1,
            })
        };
        match r {
            Ok(()) => Ok(()),
            Err(e) => {
                let msg = format!(
                    "ibv_post_send failed: {}",
                    std::io::Error::from_raw_os_error(e.rc)
                );
                // The requests before the refused one are posted and will retire.
                for ent in e.refused {
                    if ent.io {
                        op.end_io();
                    }
                    op.part_done(Status::Failed, Some(&msg));
                }
                self.break_with(Status::Failed, msg.clone());
                Err((Status::Failed, msg))
            }
        }
    }

    /// How a completion status maps to the contract's statuses.
    fn outcome(&self, wc: &ibv_wc) -> (Status, Option<String>) {
        use ibv_wc_status::*;
        let st = wc.status;
        if st == IBV_WC_SUCCESS {
            return (Status::Ok, None);
        }
        let text = wc_status_str(st);
        match st {
            IBV_WC_WR_FLUSH_ERR => {
                if self.is_closed() {
                    (Status::Cancelled, Some("endpoint shut down".into()))
                } else if let Some(e) = self.broken.get() {
                    let s = match e.status() {
                        Status::PeerDisconnected | Status::Cancelled => e.status(),
                        _ => Status::Failed,
                    };
                    (s, Some(format!("flushed: the connection failed: {}", e.message())))
                } else {
                    (
                        Status::Failed,
                        Some("flushed: the QP entered the error state (a request was refused, by the peer or the device)".into()),
                    )
                }
            }
            IBV_WC_REM_ACCESS_ERR | IBV_WC_REM_INV_REQ_ERR => (
                Status::RemoteAccess,
                Some(format!(
                    "the target refused the access (wrong key, or outside its registered regions): {text}"
                )),
            ),
            IBV_WC_RETRY_EXC_ERR | IBV_WC_RNR_RETRY_EXC_ERR => (
                Status::PeerDisconnected,
                Some(format!("the peer does not answer: {text}")),
            ),
            _ => (Status::Failed, Some(format!("work request failed: {text}"))),
        }
    }

    /// Fails the connection: every QP to ERR (their requests flush and fail), and every
    /// operation that waits on the peer fails now with `status`. The first cause wins.
    pub(super) fn break_with(&self, status: Status, msg: impl Into<String>) {
        let msg = msg.into();
        if self.broken.set(Error::new(status, msg.clone())).is_err() {
            return;
        }
        if !self.is_closed() {
            crate::info_log!(
                "RDMA endpoint on {}: connection failed: {msg}",
                self.ctx.device_name()
            );
        }
        self.set_error_all();
        self.imm.fail_waiters(status, &msg);
        self.fail_messages(status, &msg);
    }

    fn set_error_all(&self) {
        for q in &self.data {
            q.qp.set_error();
        }
        self.ctrl.qp.set_error();
        self.ka.qp.set_error();
    }

    fn reposting(&self) -> bool {
        !self.is_closed() && self.broken.get().is_none()
    }

    /// Refuses send/recv towards the original DLSlime: its messages are a rendezvous
    /// through a meta channel whose slots are its C++ structs' memory layout, which
    /// this library does not reproduce (docs/rdma-transport.md, "Interoperating with
    /// the original").
    fn two_sided(&self) -> Result<()> {
        if self.original_peer.load(Ordering::Acquire) {
            return Err(Error::new(
                Status::Unsupported,
                "send/recv with a peer built from the original DLSlime is not supported \
                 (only read, write, write_with_imm and imm_recv interoperate; its \
                 messages go through a meta channel laid out as its C++ structs)",
            ));
        }
        Ok(())
    }

    /// The operation state of a `send` or `recv` (`what`) of `len` bytes whose buffer
    /// pointer `is_null`, once the checks both make have passed.
    fn two_sided_op(
        &self,
        what: &str,
        is_null: bool,
        len: usize,
        timeout: Option<Duration>,
    ) -> Result<Arc<OpState>> {
        if is_null && len > 0 {
            return Err(sendrecv::null_buffer(what));
        }
        self.ready()?;
        self.two_sided()?;
        Ok(self.new_op(1, timeout))
    }

    /// A receive completion: repost the slot (or count it gone).
    fn recv_done(&self, ok: bool, counter: &AtomicU32, repost: impl FnOnce() -> i32) {
        if ok && self.reposting() && repost() == 0 {
            return;
        }
        counter.fetch_sub(1, Ordering::AcqRel);
    }

    fn shutdown(&self) {
        let prev = self.state.swap(CLOSED, Ordering::AcqRel);
        if prev == CLOSED {
            return;
        }
        if prev == CONNECTED
            && self.broken.get().is_none()
            && !self.original_peer.load(Ordering::Acquire)
        {
            // Tell the peer at once rather than let its keepalive find out.
            self.push_ctrl(CtrlWork::Bye);
            let t = Instant::now();
            while self.ctrl.sq.outstanding() > 0 && t.elapsed() < Duration::from_millis(200) {
                self.poll_or_nap();
            }
        }
        self.set_error_all();
        self.inflight
            .fail_all(Status::Cancelled, "endpoint shut down");
        self.imm
            .fail_waiters(Status::Cancelled, "endpoint shut down");
        self.fail_messages(Status::Cancelled, "endpoint shut down");
        // Let the device flush everything, so no completion of these QPs is left in the
        // CQ when they are destroyed (their numbers can be reused at once).
        let t = Instant::now();
        while !self.drained() && t.elapsed() < DRAIN {
            self.poll_or_nap();
        }
        if !self.drained() {
            crate::warn_log!(
                "RDMA endpoint on {}: the device did not flush its QPs within {DRAIN:?}",
                self.ctx.device_name()
            );
        }
        for q in &self.data {
            self.ctx.remove_route(q.qp.qpn());
        }
        self.ctx.remove_route(self.ctrl.qp.qpn());
        self.ctx.remove_route(self.ka.qp.qpn());
    }

    /// Shutdown's wait for the device: polls the CQ (the completion thread may be
    /// leaving it to waiters), or naps when there was nothing.
    fn poll_or_nap(&self) {
        if !self.ctx.poll() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn drained(&self) -> bool {
        self.data
            .iter()
            .all(|q| q.sq.outstanding() == 0 && q.rq_posted.load(Ordering::Acquire) == 0)
            && self.ctrl.sq.outstanding() == 0
            && self.ctrl_rq_posted.load(Ordering::Acquire) == 0
            && self.ka.sq.outstanding() == 0
    }
}

impl CompletionHandler for EpShared {
    fn on_completion(&self, tag: u32, wc: &ibv_wc) {
        let ok = wc.status == ibv_wc_status::IBV_WC_SUCCESS;
        // A failed request breaks the connection before its operation completes, so
        // whoever sees that failure finds the endpoint broken already.
        if !ok {
            let flushed = wc.status == ibv_wc_status::IBV_WC_WR_FLUSH_ERR;
            if !flushed || (self.broken.get().is_none() && !self.is_closed()) {
                crate::info_log!(
                    "RDMA {} QP tag {tag}: {} completion failed: {} (vendor error {})",
                    self.ctx.device_name(),
                    if wc.wr_id & RECV_BIT != 0 {
                        "receive"
                    } else {
                        "send"
                    },
                    wc_status_str(wc.status),
                    wc.vendor_err
                );
            }
            if !(flushed && (self.is_closed() || self.broken.get().is_some())) {
                let (status, msg) = self.outcome(wc);
                self.break_with(status, msg.unwrap_or_default());
            }
        }
        if wc.wr_id & RECV_BIT != 0 {
            if tag == TAG_CTRL {
                let slot = (wc.wr_id & !RECV_BIT) as u32;
                if ok {
                    self.on_ctrl_recv(slot, wc.byte_len as usize);
                }
                self.recv_done(ok, &self.ctrl_rq_posted, || self.ctrl.post_recv(slot));
            } else if let Some(q) = self.data.get(tag as usize) {
                // SAFETY: reading the union as the imm field, which a WITH_IMM
                // completion (the only receives on data QPs) fills.
                let imm = unsafe { wc.imm_data_invalidated_rkey_union.imm_data } as i32;
                // SAFETY: live QP.
                self.recv_done(ok, &q.rq_posted, || unsafe {
                    post_imm_recvs(q.qp.raw(), 1)
                });
                if ok {
                    self.imm_agg
                        .arrived(tag as usize, imm, |v| self.imm.deliver(v));
                }
            }
        } else {
            let (status, msg) = self.outcome(wc);
            let msg = msg.as_deref();
            match tag {
                TAG_CTRL => self.ctrl.sq.retire(wc.wr_id, |e, last| {
                    let (s, m) = if last {
                        (status, msg)
                    } else {
                        (Status::Ok, None)
                    };
                    self.on_ctrl_retire(e, s, m);
                }),
                TAG_KA => self.ka.sq.retire(wc.wr_id, |_, last| {
                    if last {
                        self.on_ka_retire(status, msg);
                    }
                }),
                i => {
                    if let Some(q) = self.data.get(i as usize) {
                        q.sq.retire(wc.wr_id, |e, last| {
                            let (s, m) = if last {
                                (status, msg)
                            } else {
                                (Status::Ok, None)
                            };
                            if let Some(op) = e.op {
                                if e.io {
                                    op.end_io();
                                }
                                op.part_done(s, m);
                            }
                        });
                    }
                }
            }
            if tag == TAG_CTRL {
                self.pump();
            }
        }
    }

    fn on_fatal(&self, tag: Option<u32>, what: &str) {
        if self.is_closed() {
            return;
        }
        crate::info_log!("RDMA {} QP tag {tag:?}: {what}", self.ctx.device_name());
        self.break_with(Status::Failed, format!("the device reported {what}"));
    }

    fn tick(&self, now: Instant) {
        self.tick_liveness(now);
    }
}

impl Drop for EpShared {
    fn drop(&mut self) {
        self.ctx.release_cqes(self.cqes);
    }
}

impl Endpoint for RdmaEndpoint {
    fn transport(&self) -> &'static str {
        "rdma"
    }

    fn endpoint_info(&self) -> Value {
        let sh = &self.sh;
        let mut f = Map::new();
        f.insert(
            "io_info".into(),
            json!({"data_channel_info": sh.data.iter().map(|q| info::qp_to_json(&q.qp.addr())).collect::<Vec<_>>()}),
        );
        f.insert(
            "ctrl_info".into(),
            info::ctrl_to_json(&CtrlInfo {
                qp: sh.ctrl.qp.addr(),
                ka_qp: sh.ka.qp.addr(),
                addr: sh.ctrl.ka_target.addr(0),
                rkey: sh.ctrl.ka_target.rkey(),
            }),
        );
        f.insert("device".into(), sh.ctx.device_name().into());
        f.insert("link_type".into(), sh.ctx.domain().link.to_string().into());
        envelope::envelope("rdma", sh.pool.mr_info(), f)
    }

    fn connect(&self, peer_info: &Value) -> Result<()> {
        let sh = &self.sh;
        let obj = match peer_info.as_object() {
            Some(o) if info::is_original(o) => o,
            _ => envelope::check_envelope(peer_info, "rdma")?,
        };
        let (data, ctrl) = info::parse_peer(obj)?;
        if data.len() != sh.data.len() {
            return Err(envelope::bad(format!(
                "the peer has {} data QPs, this endpoint {} (num_qp must match)",
                data.len(),
                sh.data.len()
            )));
        }
        let ours_ib = sh.ctx.domain().gid_index < 0;
        if data
            .iter()
            .chain(ctrl.iter().flat_map(|c| [&c.qp, &c.ka_qp]))
            .any(|q| (q.gidx < 0) != ours_ib)
        {
            return Err(envelope::bad(
                "the peer's link layer (IB or RoCE) differs from this endpoint's",
            ));
        }
        match sh
            .state
            .compare_exchange(NEW, CONNECTING, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {}
            Err(CLOSED) => return Err(Error::new(Status::ShutDown, "endpoint is shut down")),
            Err(_) => {
                return Err(Error::new(
                    Status::AlreadyConnected,
                    "endpoint is already connected",
                ))
            }
        }
        let r = (|| -> Result<()> {
            envelope::register_peer_regions(&self.remote, obj)?;
            for (q, remote) in sh.data.iter().zip(&data) {
                q.qp.connect(remote)?;
            }
            if let Some(c) = &ctrl {
                sh.ctrl.qp.connect(&c.qp)?;
                sh.ka.qp.connect(&c.ka_qp)?;
            }
            Ok(())
        })();
        if let Err(e) = r {
            let _ = sh
                .state
                .compare_exchange(CONNECTING, NEW, Ordering::AcqRel, Ordering::Acquire);
            return Err(e);
        }
        match &ctrl {
            Some(c) => {
                let _ = sh.peer.set(PeerCtrl {
                    addr: c.addr,
                    rkey: c.rkey,
                });
            }
            None => sh.original_peer.store(true, Ordering::Release),
        }
        if sh
            .state
            .compare_exchange(CONNECTING, CONNECTED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(Error::new(Status::ShutDown, "endpoint is shut down"));
        }
        if ctrl.is_some() {
            sh.push_ctrl(CtrlWork::Hello);
        }
        self.obs.set_peer_default(&envelope::peer_label(peer_info));
        Ok(())
    }

    fn memory_pool(&self) -> &Arc<MemoryPool> {
        &self.sh.pool
    }

    fn remote_pool(&self) -> &RemotePool {
        &self.remote
    }

    fn obs(&self) -> Option<&Arc<EndpointStats>> {
        Some(&self.obs)
    }

    fn read(&self, assignments: &[Assignment], timeout: Option<Duration>) -> Result<Future> {
        observe(
            &self.obs,
            OpKind::Read,
            || bytes_of(assignments),
            || self.one_sided(Kind::Read, assignments, timeout),
        )
    }

    fn write(&self, assignments: &[Assignment], timeout: Option<Duration>) -> Result<Future> {
        observe(
            &self.obs,
            OpKind::Write,
            || bytes_of(assignments),
            || self.one_sided(Kind::Write, assignments, timeout),
        )
    }

    fn write_with_imm(
        &self,
        assignments: &[Assignment],
        imm: i32,
        timeout: Option<Duration>,
    ) -> Result<Future> {
        observe(
            &self.obs,
            OpKind::WriteImm,
            || bytes_of(assignments),
            || self.one_sided(Kind::WriteImm(imm), assignments, timeout),
        )
    }

    fn imm_recv(&self, timeout: Option<Duration>) -> Result<Future> {
        observe(
            &self.obs,
            OpKind::ImmRecv,
            || 0,
            || {
                self.sh.ready()?;
                let op = self.sh.new_op(1, timeout);
                self.sh.imm.post(op.clone());
                Ok(Future::for_imm_recv(op))
            },
        )
    }

    unsafe fn send(&self, ptr: *const u8, len: usize, timeout: Option<Duration>) -> Result<Future> {
        let op = self.sh.two_sided_op("send", ptr.is_null(), len, timeout)?;
        Ok(track(
            &self.obs,
            OpKind::Send,
            len as u64,
            self.sh.send(ptr, len, &op),
        ))
    }

    unsafe fn recv(&self, ptr: *mut u8, len: usize, timeout: Option<Duration>) -> Result<Future> {
        let op = self.sh.two_sided_op("recv", ptr.is_null(), len, timeout)?;
        Ok(track(
            &self.obs,
            OpKind::Recv,
            0,
            self.sh.recv(ptr, len, &op),
        ))
    }

    fn cancel_all(&self) -> usize {
        self.sh
            .inflight
            .fail_all(Status::Cancelled, "cancelled by cancel_all")
    }

    fn shutdown(&self) {
        self.sh.shutdown();
    }
}

impl Drop for RdmaEndpoint {
    fn drop(&mut self) {
        self.sh.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(len: u64) -> Resolved {
        Resolved {
            len,
            ..Default::default()
        }
    }

    #[test]
    fn striping_covers_every_byte_once() {
        for nq in [1usize, 2, 3, 4, 16] {
            for len in [
                0u64,
                1,
                100,
                STRIPE_MIN - 1,
                STRIPE_MIN,
                1 << 20,
                (1 << 20) + 7,
                64 << 20,
            ] {
                let mut seen = Vec::new();
                pieces(&r(len), 5, 3, nq, MAX_WR, |q, off, l| {
                    assert!(q < nq);
                    assert!(l > 0 && l <= MAX_WR);
                    seen.push((off, l, q));
                });
                seen.sort();
                let mut at = 0;
                for (off, l, _) in &seen {
                    assert_eq!(*off, at);
                    at += l;
                }
                assert_eq!(at, len, "nq {nq} len {len}");
                if len >= STRIPE_MIN && nq > 1 {
                    let qs: std::collections::BTreeSet<_> = seen.iter().map(|s| s.2).collect();
                    assert_eq!(qs.len(), nq, "a large transfer uses every QP");
                }
            }
        }
        // small assignments rotate over the QPs
        let mut qs = Vec::new();
        for j in 0..4 {
            pieces(&r(64), j, 0, 4, MAX_WR, |q, _, _| qs.push(q));
        }
        assert_eq!(qs, [0, 1, 2, 3]);
    }
}
