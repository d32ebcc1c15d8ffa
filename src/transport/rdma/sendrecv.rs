//! Two-sided messages (`send`/`recv`) over the endpoint's control QP.
//!
//! Protocol (each message is one control SEND into the peer's permanently posted
//! receive window, then one FIN back):
//!
//! * **Eager** (≤ [`EAGER_MAX`] bytes): the header and payload travel in one SEND from a
//!   registered bounce slot. The receiver copies the payload into the posted receive, or,
//!   when none is posted yet, into a held message (bounded: see below).
//! * **Rendezvous** (larger): the SEND carries only `{msg_id, len, addr, rkey}` of the
//!   sender's buffer (registered on the fly unless it lies in a registered region). When a
//!   receive is matched, the receiver RDMA-READs straight into it.
//! * **FIN** `{msg_id, status}` goes back when the message is matched: `Ok`, or
//!   `Truncated` when it is larger than the posted buffer (then nothing is copied and the
//!   receive fails too). The send completes with the FIN's status.
//!
//! Bounds and back-pressure: a sender has at most [`SEND_WINDOW`] messages without a FIN;
//! later sends wait in a FIFO inside the endpoint (the caller does not block). So the
//! peer holds at most `SEND_WINDOW` early messages (eager payloads ≤ 4 KiB each, or
//! rendezvous notes), its receive window (2 × `SEND_WINDOW` + spare, for messages and
//! FINs) is never exhausted, and every slot is reposted as soon as it is consumed.
//! Messages match receives in FIFO order (RC keeps the SENDs in order).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rdma_sys::*;

use super::endpoint::EpShared;
use super::imm::RECV_BIT;
use super::mr::{Mr, RegBuf};
use super::qp::Qp;
use super::sq::SendQueue;
use super::verbs;
use crate::error::{Error, Status};
use crate::future::{Future, OpState};
use crate::transport::matching::PostedRecv;

/// Messages a sender may have without a FIN.
pub const SEND_WINDOW: usize = 64;
/// Size of one control buffer (receive slot, bounce slot).
pub const BUF: usize = 4096;
pub const HEADER: usize = 40;
/// Largest payload sent eagerly.
pub const EAGER_MAX: usize = BUF - HEADER;
/// Receive slots of the control QP: the peer's messages and FINs, plus HELLO/BYE.
pub const CTRL_RQ: u32 = 2 * SEND_WINDOW as u32 + 8;
/// Send slots of the control QP (messages, FINs, reads); work beyond waits in a backlog.
pub const CTRL_SQ: u32 = 4 * SEND_WINDOW as u32;
/// Largest RDMA READ of a rendezvous (see `endpoint::MAX_READ_WR`); larger messages are
/// read in several, at most [`READ_CHAIN`] posted at a time.
const READ_CHUNK: u64 = 1 << 20;
const READ_CHAIN: usize = 8;

const MAGIC: u32 = 0x534c_0000; // "SL"
const KIND_HELLO: u32 = 1;
const KIND_BYE: u32 = 2;
const KIND_EAGER: u32 = 3;
const KIND_RTS: u32 = 4;
const KIND_FIN: u32 = 5;

/// The 40-byte little-endian control header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub kind: u32,
    pub status: i32,
    pub rkey: u32,
    pub msg_id: u64,
    pub len: u64,
    pub addr: u64,
}

impl Header {
    pub fn encode(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&(MAGIC | self.kind).to_le_bytes());
        out[4..8].copy_from_slice(&self.status.to_le_bytes());
        out[8..12].copy_from_slice(&self.rkey.to_le_bytes());
        out[12..16].copy_from_slice(&0u32.to_le_bytes());
        out[16..24].copy_from_slice(&self.msg_id.to_le_bytes());
        out[24..32].copy_from_slice(&self.len.to_le_bytes());
        out[32..40].copy_from_slice(&self.addr.to_le_bytes());
    }

    pub fn decode(b: &[u8]) -> Option<Header> {
        if b.len() < HEADER {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        let word = u32_at(0);
        if word & 0xffff_0000 != MAGIC {
            return None;
        }
        Some(Header {
            kind: word & 0xffff,
            status: u32_at(4) as i32,
            rkey: u32_at(8),
            msg_id: u64_at(16),
            len: u64_at(24),
            addr: u64_at(32),
        })
    }
}

/// A message that arrived before its receive.
pub enum Early {
    Eager {
        msg_id: u64,
        data: Vec<u8>,
    },
    Rts {
        msg_id: u64,
        len: u64,
        addr: u64,
        rkey: u32,
    },
}

/// A receive being filled by RDMA READ.
pub struct ReadInFlight {
    recv: PostedRecv,
    /// Chunks posted so far.
    posted: u64,
    msg_id: u64,
    len: u64,
    addr: u64,
    rkey: u32,
    lkey: u32,
    _mr: Option<Mr>,
}

impl ReadInFlight {
    fn chunks(&self) -> u64 {
        self.len.div_ceil(READ_CHUNK).max(1)
    }
}

/// What a control send-queue entry does when it retires.
#[derive(Default)]
pub enum CtrlEntry {
    #[default]
    None,
    /// The last READ of a rendezvous.
    ReadDone(Box<ReadInFlight>),
}

/// Control work waiting for room in the control send queue, in order.
pub enum CtrlWork {
    Msg(usize),
    Fin { msg_id: u64, status: Status },
    Read(Box<ReadInFlight>),
    Hello,
    Bye,
}

impl CtrlWork {
    fn wrs(&self) -> u32 {
        match self {
            CtrlWork::Read(r) => r.chunks().saturating_sub(r.posted).min(READ_CHAIN as u64) as u32,
            _ => 1,
        }
    }
}

/// A message between `send` and its FIN.
struct SendSlot {
    op: Arc<OpState>,
    ptr: usize,
    len: usize,
    msg_id: u64,
    posted: bool,
    _mr: Option<Mr>,
}

struct PendingSend {
    op: Arc<OpState>,
    ptr: usize,
    len: usize,
}

/// The sender's window: slots in flight and the FIFO of sends waiting for one.
pub struct SendWindow {
    slots: Vec<Option<SendSlot>>,
    free: Vec<usize>,
    waiting: VecDeque<PendingSend>,
    next_id: u64,
}

impl Default for SendWindow {
    fn default() -> Self {
        SendWindow {
            slots: (0..SEND_WINDOW).map(|_| None).collect(),
            free: (0..SEND_WINDOW).rev().collect(),
            waiting: VecDeque::new(),
            next_id: 1,
        }
    }
}

impl SendWindow {
    /// Puts a message in a free slot; returns the slot.
    fn assign(&mut self, m: PendingSend) -> std::result::Result<usize, PendingSend> {
        let Some(j) = self.free.pop() else {
            return Err(m);
        };
        let msg_id = (self.next_id << 8) | j as u64;
        self.next_id += 1;
        self.slots[j] = Some(SendSlot {
            op: m.op,
            ptr: m.ptr,
            len: m.len,
            msg_id,
            posted: false,
            _mr: None,
        });
        Ok(j)
    }

    /// Frees slot `j`; the next waiting send takes it (returned for posting).
    fn release(&mut self, j: usize) -> Option<usize> {
        self.slots[j] = None;
        self.free.push(j);
        let m = self.waiting.pop_front()?;
        self.assign(m).ok()
    }

    /// Every message not yet finished, for failing them.
    fn drain(&mut self) -> Vec<Arc<OpState>> {
        let mut ops: Vec<_> = self.waiting.drain(..).map(|m| m.op).collect();
        for (j, s) in self.slots.iter_mut().enumerate() {
            if let Some(s) = s.take() {
                ops.push(s.op);
                self.free.push(j);
            }
        }
        ops
    }
}

/// The control QP: its send queue, its receive window and the registered buffers.
pub struct CtrlQp {
    pub qp: Qp,
    pub sq: SendQueue<CtrlEntry>,
    /// CTRL_RQ receive slots of BUF bytes.
    pub rq_bufs: RegBuf,
    /// SEND_WINDOW bounce slots of BUF bytes (eager messages).
    pub bounce: RegBuf,
    /// One HEADER-sized slot per send-queue slot (header-only messages).
    pub hdrs: RegBuf,
    /// The word peers' keepalive writes (zero-length) are aimed at.
    pub ka_target: RegBuf,
}

impl CtrlQp {
    /// Posts receive slot `slot`.
    pub fn post_recv(&self, slot: u32) -> i32 {
        let mut sge = ibv_sge {
            addr: self.rq_bufs.addr(slot as usize * BUF),
            length: BUF as u32,
            lkey: self.rq_bufs.lkey(),
        };
        let mut wr = ibv_recv_wr {
            wr_id: RECV_BIT | slot as u64,
            next: std::ptr::null_mut(),
            sg_list: &mut sge,
            num_sge: 1,
        };
        let mut bad = std::ptr::null_mut();
        // SAFETY: live QP; the slot lies in the registered receive buffer.
        unsafe { verbs::post_recv(self.qp.raw(), &mut wr, &mut bad) }
    }
}

fn header_wr(sge: &mut ibv_sge) -> ibv_send_wr {
    // SAFETY: plain data.
    let mut wr: ibv_send_wr = unsafe { std::mem::zeroed() };
    wr.opcode = ibv_wr_opcode::IBV_WR_SEND;
    wr.send_flags = ibv_send_flags::IBV_SEND_SIGNALED.0;
    wr.sg_list = sge;
    wr.num_sge = 1;
    wr
}

impl EpShared {
    /// `send`: takes a window slot or waits for one in FIFO order.
    pub(super) fn send(&self, ptr: *const u8, len: usize, op: &Arc<OpState>) -> Future {
        op.set_nbytes(len as u64);
        {
            let mut w = self.sendwin.lock();
            let m = PendingSend {
                op: op.clone(),
                ptr: ptr as usize,
                len,
            };
            if w.waiting.is_empty() {
                match w.assign(m) {
                    Ok(j) => self.backlog.lock().push_back(CtrlWork::Msg(j)),
                    Err(m) => w.waiting.push_back(m),
                }
            } else {
                w.waiting.push_back(m);
            }
        }
        self.pump();
        Future::new(op.clone())
    }

    /// `recv`: matches the oldest early message or waits for the next one.
    pub(super) fn recv(&self, ptr: *mut u8, cap: usize, op: &Arc<OpState>) -> Future {
        if let Some((r, e)) = self.msgs.post(PostedRecv {
            ptr: ptr as usize,
            cap,
            op: op.clone(),
        }) {
            self.deliver(r, e);
        }
        self.pump();
        Future::new(op.clone())
    }

    /// Fills receive `r` with message `e` (or queues the message again if the receive
    /// was cancelled meanwhile).
    fn deliver(&self, r: PostedRecv, e: Early) {
        match e {
            Early::Eager { msg_id, data } => {
                if let Err(data) = self.fill(&r, msg_id, &data) {
                    self.requeue(Early::Eager {
                        msg_id,
                        data: data.to_vec(),
                    });
                }
            }
            Early::Rts {
                msg_id,
                len,
                addr,
                rkey,
            } => self.start_read(r, msg_id, len, addr, rkey),
        }
    }

    fn requeue(&self, e: Early) {
        if let Some((r, e)) = self.msgs.requeue(e) {
            self.deliver(r, e);
        }
    }

    /// Copies an eager payload into a posted receive and acknowledges it. `Err` hands the
    /// payload back when the receive was cancelled before it could be filled.
    fn fill<'a>(
        &self,
        r: &PostedRecv,
        msg_id: u64,
        data: &'a [u8],
    ) -> std::result::Result<(), &'a [u8]> {
        if data.len() > r.cap {
            self.push_fin(msg_id, Status::Truncated);
            r.op.finish(
                Status::Truncated,
                Some(truncation(data.len() as u64, r.cap)),
            );
            return Ok(());
        }
        if !r.op.begin_io() {
            return Err(data);
        }
        // SAFETY: a posted receive buffer of at least data.len() bytes, not touched by
        // its owner until the operation completes (recv's contract).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), r.ptr as *mut u8, data.len()) };
        r.op.end_io();
        r.op.set_nbytes(data.len() as u64);
        // The sender hears first: the receiver may exit as soon as it sees its data.
        self.push_fin(msg_id, Status::Ok);
        self.pump();
        r.op.part_done(Status::Ok, None);
        Ok(())
    }

    fn start_read(&self, r: PostedRecv, msg_id: u64, len: u64, addr: u64, rkey: u32) {
        if len > r.cap as u64 {
            self.push_fin(msg_id, Status::Truncated);
            r.op.finish(Status::Truncated, Some(truncation(len, r.cap)));
            return;
        }
        let again = || Early::Rts {
            msg_id,
            len,
            addr,
            rkey,
        };
        // SAFETY: the receive buffer stays valid until the operation completes (recv's
        // contract); a registration made here ends when the read retires.
        let (lkey, _, mr) = match unsafe { self.buffer_keys(r.ptr, len as usize) } {
            Ok(k) => k,
            Err(e) => {
                // Not the message's fault: it waits for the next receive.
                r.op.finish(e.status(), Some(e.message().to_string()));
                self.requeue(again());
                return;
            }
        };
        if !r.op.begin_io() {
            self.requeue(again());
            return;
        }
        r.op.set_nbytes(len);
        self.backlog
            .lock()
            .push_back(CtrlWork::Read(Box::new(ReadInFlight {
                recv: r,
                posted: 0,
                msg_id,
                len,
                addr,
                rkey,
                lkey,
                _mr: mr,
            })));
        self.pump();
    }

    /// Keys of a caller's buffer: those of the registered region it lies in, or of a
    /// registration made for this message (held by the caller until the device is done).
    ///
    /// # Safety
    /// `[ptr, ptr+len)` stays valid while the returned registration lives.
    unsafe fn buffer_keys(&self, ptr: usize, len: usize) -> crate::Result<(u32, u32, Option<Mr>)> {
        if let Some(reg) = self.pool.region_containing(ptr, len) {
            if let Some(d) = &reg.device {
                return Ok((d.lkey, d.rkey, None));
            }
        }
        // SAFETY: the caller's promise.
        let mr = unsafe { Mr::register(self.ctx.domain(), ptr, len.max(1))? };
        Ok((mr.lkey(), mr.rkey(), Some(mr)))
    }

    /// Message slot `j` will not be posted (its slots in the control send queue were
    /// reserved): free both; the next waiting send takes the message slot.
    fn abandon_msg(&self, j: usize) {
        self.ctrl.sq.unreserve(1);
        let next = self.sendwin.lock().release(j);
        if let Some(n) = next {
            self.backlog.lock().push_back(CtrlWork::Msg(n));
        }
    }

    fn push_fin(&self, msg_id: u64, status: Status) {
        self.backlog
            .lock()
            .push_back(CtrlWork::Fin { msg_id, status });
    }

    pub(super) fn push_ctrl(&self, w: CtrlWork) {
        self.backlog.lock().push_back(w);
        self.pump();
    }

    /// Posts queued control work while the control send queue has room. One thread
    /// pumps at a time (so messages keep their order); the others leave their work to it.
    pub(super) fn pump(&self) {
        loop {
            if self.pumping.swap(true, Ordering::SeqCst) {
                return;
            }
            loop {
                let work = {
                    let mut b = self.backlog.lock();
                    match b.front() {
                        Some(w) if self.ctrl.sq.try_reserve(w.wrs()) => b.pop_front(),
                        _ => None,
                    }
                };
                let Some(work) = work else { break };
                self.post_ctrl(work);
            }
            self.pumping.store(false, Ordering::SeqCst);
            let more = {
                let b = self.backlog.lock();
                b.front()
                    .is_some_and(|w| self.ctrl.sq.outstanding() + w.wrs() <= self.ctrl.sq.depth())
            };
            if !more {
                return;
            }
        }
    }

    /// Posts one unit of control work; its slots are reserved.
    fn post_ctrl(&self, work: CtrlWork) {
        let peer_gone = self.broken.get().is_some();
        match work {
            CtrlWork::Hello | CtrlWork::Bye | CtrlWork::Fin { .. } => {
                let h = match work {
                    CtrlWork::Hello => Header {
                        kind: KIND_HELLO,
                        ..Default::default()
                    },
                    CtrlWork::Bye => Header {
                        kind: KIND_BYE,
                        ..Default::default()
                    },
                    CtrlWork::Fin { msg_id, status } => Header {
                        kind: KIND_FIN,
                        status: status.code(),
                        msg_id,
                        ..Default::default()
                    },
                    _ => unreachable!(),
                };
                self.post_header(h);
            }
            CtrlWork::Msg(j) => self.post_msg(j, peer_gone),
            CtrlWork::Read(r) => self.post_read(r),
        }
    }

    /// A header-only SEND from the header slot of its sequence number.
    fn post_header(&self, h: Header) {
        let mut sge = ibv_sge {
            addr: 0,
            length: HEADER as u32,
            lkey: self.ctrl.hdrs.lkey(),
        };
        let mut wrs = [header_wr(&mut sge)];
        let hdrs = &self.ctrl.hdrs;
        let depth = self.ctrl.sq.depth() as u64;
        // SAFETY: live QP; the header slot is ours until this WR retires.
        let r = unsafe {
            self.ctrl
                .sq
                .post(self.ctrl.qp.raw(), &mut wrs, |_, seq, wr| {
                    let off = (seq % depth) as usize * HEADER;
                    h.encode(std::slice::from_raw_parts_mut(hdrs.ptr(off), HEADER));
                    (*wr.sg_list).addr = hdrs.addr(off);
                    CtrlEntry::None
                })
        };
        if let Err(e) = r {
            self.break_with(
                Status::Failed,
                format!("posting a control message failed: errno {}", e.rc),
            );
        }
    }

    /// Posts message slot `j`: eager (header and payload from the bounce slot) or RTS.
    fn post_msg(&self, j: usize, peer_gone: bool) {
        let (op, ptr, len, msg_id) = {
            let w = self.sendwin.lock();
            match &w.slots[j] {
                Some(s) => (s.op.clone(), s.ptr, s.len, s.msg_id),
                None => {
                    self.ctrl.sq.unreserve(1);
                    return;
                }
            }
        };
        if peer_gone || op.is_done() {
            // Cancelled or failed before it went out: it never will.
            self.abandon_msg(j);
            return;
        }
        let mut h = Header {
            msg_id,
            len: len as u64,
            ..Default::default()
        };
        let mut sge = ibv_sge {
            addr: 0,
            length: HEADER as u32,
            lkey: 0,
        };
        if len <= EAGER_MAX {
            h.kind = KIND_EAGER;
            let slot = self.ctrl.bounce.ptr(j * BUF);
            // SAFETY: bounce slot j belongs to message slot j.
            h.encode(unsafe { std::slice::from_raw_parts_mut(slot, HEADER) });
            if len > 0 {
                if !op.begin_io() {
                    self.abandon_msg(j);
                    return;
                }
                // SAFETY: the caller's buffer is valid until the send completes (send's
                // contract; begin_io holds it against a concurrent abort).
                unsafe { std::ptr::copy_nonoverlapping(ptr as *const u8, slot.add(HEADER), len) };
                op.end_io();
            }
            sge.addr = self.ctrl.bounce.addr(j * BUF);
            sge.length = (HEADER + len) as u32;
            sge.lkey = self.ctrl.bounce.lkey();
        } else {
            h.kind = KIND_RTS;
            h.addr = ptr as u64;
            // SAFETY: the caller's buffer stays valid until the send completes (send's
            // contract); a registration made here lives in the slot until the FIN.
            match unsafe { self.buffer_keys(ptr, len) } {
                Ok((_, rkey, mr)) => {
                    h.rkey = rkey;
                    if let Some(s) = self.sendwin.lock().slots[j].as_mut() {
                        s._mr = mr;
                    }
                }
                Err(e) => {
                    op.finish(e.status(), Some(e.message().to_string()));
                    self.abandon_msg(j);
                    return;
                }
            }
            self.post_header(h);
            if let Some(s) = self.sendwin.lock().slots[j].as_mut() {
                s.posted = true;
            }
            return;
        }
        let mut wrs = [header_wr(&mut sge)];
        // SAFETY: live QP; the bounce slot stays ours until the FIN frees the slot,
        // which comes after this SEND completed.
        let r = unsafe {
            self.ctrl
                .sq
                .post(self.ctrl.qp.raw(), &mut wrs, |_, _, _| CtrlEntry::None)
        };
        match r {
            Ok(()) => {
                if let Some(s) = self.sendwin.lock().slots[j].as_mut() {
                    s.posted = true;
                }
            }
            Err(e) => self.break_with(
                Status::Failed,
                format!("posting a message failed: errno {}", e.rc),
            ),
        }
    }

    /// Posts the next chunks of a rendezvous read (their slots are reserved); the work
    /// goes back to the head of the backlog while chunks remain. The last chunk's entry
    /// carries the read, which completes the receive when it retires.
    fn post_read(&self, mut r: Box<ReadInFlight>) {
        let n = r.chunks();
        let k = (n - r.posted).min(READ_CHAIN as u64) as usize;
        // SAFETY: plain data.
        let mut sges: [ibv_sge; READ_CHAIN] = unsafe { std::mem::zeroed() };
        // SAFETY: plain data.
        let mut wrs: [ibv_send_wr; READ_CHAIN] = unsafe { std::mem::zeroed() };
        for i in 0..k {
            let off = (r.posted + i as u64) * READ_CHUNK;
            let len = READ_CHUNK.min(r.len - off);
            sges[i] = ibv_sge {
                addr: r.recv.ptr as u64 + off,
                length: len as u32,
                lkey: r.lkey,
            };
            wrs[i].opcode = ibv_wr_opcode::IBV_WR_RDMA_READ;
            wrs[i].sg_list = &mut sges[i];
            wrs[i].num_sge = if len == 0 { 0 } else { 1 };
            wrs[i].wr.rdma = rdma_t {
                remote_addr: r.addr + off,
                rkey: r.rkey,
            };
        }
        wrs[k - 1].send_flags = ibv_send_flags::IBV_SEND_SIGNALED.0;
        let last = r.posted + k as u64 == n;
        r.posted += k as u64;
        let mut carry = Some(r);
        // SAFETY: live QP; the receive buffer is registered (lkey) and held by the
        // ReadInFlight until the last chunk retires.
        let res = unsafe {
            self.ctrl
                .sq
                .post(self.ctrl.qp.raw(), &mut wrs[..k], |i, _, _| {
                    if last && i == k - 1 {
                        carry.take().map_or(CtrlEntry::None, CtrlEntry::ReadDone)
                    } else {
                        CtrlEntry::None
                    }
                })
        };
        if let Err(e) = res {
            let msg = format!("posting an RDMA read failed: errno {}", e.rc);
            let refused = e.refused.into_iter().filter_map(|ent| match ent {
                CtrlEntry::ReadDone(rf) => Some(rf),
                CtrlEntry::None => None,
            });
            for rf in refused.chain(carry) {
                rf.recv.op.end_io();
                rf.recv.op.part_done(Status::Failed, Some(&msg));
            }
            self.break_with(Status::Failed, msg);
            return;
        }
        if !last {
            // not yet posted entirely: it keeps its place at the head
            let rest = match carry {
                Some(r) => r,
                None => unreachable!("a read with chunks left is not carried"),
            };
            self.backlog.lock().push_front(CtrlWork::Read(rest));
        }
    }

    /// A control send retired (the poller of the CQ).
    pub(super) fn on_ctrl_retire(&self, e: CtrlEntry, status: Status, msg: Option<&str>) {
        if let CtrlEntry::ReadDone(rf) = e {
            let op = &rf.recv.op;
            op.end_io();
            if !status.is_ok() {
                op.part_done(status, msg);
            } else if op.is_done() {
                // The receive ended (timeout, cancel) while its read was in flight: the
                // message waits for the next receive, the sender is not told yet.
                self.requeue(Early::Rts {
                    msg_id: rf.msg_id,
                    len: rf.len,
                    addr: rf.addr,
                    rkey: rf.rkey,
                });
            } else {
                self.push_fin(rf.msg_id, Status::Ok);
                self.pump();
                op.part_done(Status::Ok, None);
            }
        }
    }

    /// A control receive completed with `bytes` in slot `slot` (the poller).
    pub(super) fn on_ctrl_recv(&self, slot: u32, bytes: usize) {
        let base = self.ctrl.rq_bufs.ptr(slot as usize * BUF);
        // SAFETY: the device wrote `bytes` (≤ BUF) into this slot, which is not reposted
        // until we are done with it.
        let buf = unsafe { std::slice::from_raw_parts(base, bytes.min(BUF)) };
        match Header::decode(buf) {
            Some(h) => self.on_message(h, &buf[HEADER..]),
            None => self.break_with(
                Status::Protocol,
                "the peer sent a malformed control message",
            ),
        }
        self.pump();
    }

    fn on_message(&self, h: Header, payload: &[u8]) {
        match h.kind {
            KIND_HELLO => self.peer_said_hello(),
            KIND_BYE => {
                self.break_with(Status::PeerDisconnected, "the peer shut its endpoint down")
            }
            KIND_FIN => self.on_fin(h.msg_id, Status::from_code(h.status)),
            KIND_EAGER if (h.len as usize) <= payload.len() => {
                let data = &payload[..h.len as usize];
                match self.msgs.take_posted() {
                    Some(r) => {
                        if let Err(d) = self.fill(&r, h.msg_id, data) {
                            self.requeue(Early::Eager {
                                msg_id: h.msg_id,
                                data: d.to_vec(),
                            });
                        }
                    }
                    None => {
                        let e = Early::Eager {
                            msg_id: h.msg_id,
                            data: data.to_vec(),
                        };
                        if let Some((r, e)) = self.msgs.arrive(e) {
                            self.deliver(r, e);
                        }
                    }
                }
            }
            KIND_RTS => match self.msgs.take_posted() {
                Some(r) => self.start_read(r, h.msg_id, h.len, h.addr, h.rkey),
                None => {
                    let e = Early::Rts {
                        msg_id: h.msg_id,
                        len: h.len,
                        addr: h.addr,
                        rkey: h.rkey,
                    };
                    if let Some((r, e)) = self.msgs.arrive(e) {
                        self.deliver(r, e);
                    }
                }
            },
            _ => self.break_with(
                Status::Protocol,
                format!("the peer sent an unknown control message kind {}", h.kind),
            ),
        }
    }

    /// The receiver matched message `msg_id`: its send completes with `status`.
    fn on_fin(&self, msg_id: u64, status: Status) {
        let j = (msg_id & 0xff) as usize;
        let (op, next) = {
            let mut w = self.sendwin.lock();
            match w.slots.get(j) {
                Some(Some(s)) if s.msg_id == msg_id => {
                    let op = s.op.clone();
                    (Some(op), w.release(j))
                }
                _ => (None, None),
            }
        };
        if let Some(n) = next {
            self.backlog.lock().push_back(CtrlWork::Msg(n));
        }
        if let Some(op) = op {
            if status.is_ok() {
                op.part_done(Status::Ok, None);
            } else {
                let m = if status == Status::Truncated {
                    "the receiver's buffer was smaller than the message".to_string()
                } else {
                    format!("the receiver refused the message: {status}")
                };
                op.finish(status, Some(m));
            }
        }
    }

    /// Fails every message operation that waits on the peer (the connection broke).
    pub(super) fn fail_messages(&self, status: Status, msg: &str) {
        let ops = self.sendwin.lock().drain();
        for op in ops {
            op.finish(status, Some(msg.to_string()));
        }
        self.backlog
            .lock()
            .retain(|w| matches!(w, CtrlWork::Read(_)));
        self.msgs.fail_posted(status, msg);
    }
}

fn truncation(len: u64, cap: usize) -> String {
    format!("message of {len} bytes does not fit the {cap}-byte receive buffer")
}

/// An error for `send`/`recv` on a null buffer.
pub fn null_buffer(what: &str) -> Error {
    Error::new(Status::NullParameter, format!("{what}: null buffer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_garbage() {
        let h = Header {
            kind: KIND_RTS,
            status: -3,
            rkey: 0xdead_beef,
            msg_id: 0x1234_5678_9abc,
            len: 1 << 40,
            addr: 0x7fff_0000_1000,
        };
        let mut b = [0u8; HEADER];
        h.encode(&mut b);
        assert_eq!(Header::decode(&b), Some(h));
        assert_eq!(Header::decode(&b[..10]), None);
        b[3] ^= 0x40;
        assert_eq!(Header::decode(&b), None);
    }

    #[test]
    fn window_is_fifo_and_bounded() {
        let mut w = SendWindow::default();
        let op = || {
            OpState::new(
                1,
                crate::engine::Deadline::never(),
                std::time::Duration::ZERO,
                None,
            )
        };
        let mut slots = Vec::new();
        for _ in 0..SEND_WINDOW {
            slots.push(
                w.assign(PendingSend {
                    op: op(),
                    ptr: 0,
                    len: 1,
                })
                .ok()
                .unwrap(),
            );
        }
        assert!(w
            .assign(PendingSend {
                op: op(),
                ptr: 0,
                len: 1
            })
            .is_err());
        w.waiting.push_back(PendingSend {
            op: op(),
            ptr: 7,
            len: 1,
        });
        let j = w.release(slots[3]).unwrap();
        assert_eq!(j, slots[3]);
        assert_eq!(w.slots[j].as_ref().unwrap().ptr, 7);
        assert_eq!(w.drain().len(), SEND_WINDOW);
    }
}
