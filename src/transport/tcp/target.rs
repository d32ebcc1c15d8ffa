//! The target side: the state of an endpoint that the context's server threads fill
//! (imm notifications, messages and the receives they meet, sends waiting to be pulled),
//! and the context's registry of its endpoints and accepted connections.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};

use super::conn::Pending;
use super::pool::ConnPool;
use super::reply::Ack;
use super::wire::{Header, Opcode};
use crate::error::{Error, Status};
use crate::future::{InflightOps, OpState};
use crate::memory::MemoryPool;
use crate::transport::matching::{ImmQueue, MsgMatcher, PostedRecv};

/// Bytes of early (not yet received) eager messages an endpoint holds before it stops
/// buffering and makes senders wait for a pull instead.
const EARLY_BUDGET: usize = 64 << 20;

/// Where the connected peer is.
#[derive(Clone, Copy, Debug)]
pub struct PeerRef {
    pub addr: SocketAddr,
    pub endpoint: u32,
    pub context: u64,
}

/// A message that arrived before its receive.
pub enum Early {
    Data { buf: Vec<u8>, ack: Ack },
    Pull { msg_id: u64, len: u64, ack: Ack },
}

/// A message being sent, kept until the receiver has it so it can be pulled.
#[derive(Clone)]
pub struct PendingSend {
    pub ptr: usize,
    pub len: usize,
    pub op: Arc<OpState>,
}

/// Endpoint state shared with the context's server threads.
pub struct EpCore {
    pub id: u32,
    pub pool: Arc<MemoryPool>,
    pub imm: ImmQueue,
    pub msgs: MsgMatcher<Early>,
    /// The context's outgoing connections, to pull messages from the peer.
    pub conns: Weak<ConnPool>,
    pub early_bytes: AtomicUsize,
    pub peer: RwLock<Option<PeerRef>>,
    pub peer_lost: AtomicBool,
    pub closed: AtomicBool,
    pub inflight: InflightOps,
    pub sends: Mutex<HashMap<u64, PendingSend>>,
}

impl EpCore {
    pub fn new(id: u32, pool: Arc<MemoryPool>, conns: Weak<ConnPool>) -> EpCore {
        EpCore {
            id,
            pool,
            imm: ImmQueue::default(),
            msgs: MsgMatcher::default(),
            conns,
            early_bytes: AtomicUsize::new(0),
            peer: RwLock::new(None),
            peer_lost: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            inflight: InflightOps::default(),
            sends: Mutex::new(HashMap::new()),
        }
    }

    pub fn peer_context(&self) -> Option<u64> {
        self.peer.read().map(|p| p.context)
    }

    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer.read().map(|p| p.addr)
    }

    pub fn pending_send(&self, msg_id: u64) -> Option<PendingSend> {
        self.sends.lock().get(&msg_id).cloned()
    }

    pub fn reserve_early(&self, len: u64) -> bool {
        let len = len as usize;
        let mut cur = self.early_bytes.load(Ordering::Acquire);
        loop {
            if cur + len > EARLY_BUDGET {
                return false;
            }
            match self.early_bytes.compare_exchange(
                cur,
                cur + len,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(c) => cur = c,
            }
        }
    }

    /// Hands an early message to the receive it was matched with.
    ///
    /// Here and wherever a message completes a receive, the sender is acked first: the
    /// receiver's thread may shut down (or exit) as soon as it sees its data, and the
    /// ack must not be lost with it.
    pub fn deliver_early(self: &Arc<Self>, r: PostedRecv, e: Early) {
        match e {
            Early::Data { buf, ack } => {
                if buf.len() > r.cap {
                    self.early_bytes.fetch_sub(buf.len(), Ordering::AcqRel);
                    ack.send(Status::Truncated);
                    r.op.finish(
                        Status::Truncated,
                        Some(format!(
                            "message of {} bytes does not fit the {}-byte receive buffer",
                            buf.len(),
                            r.cap
                        )),
                    );
                } else if r.op.begin_io() {
                    self.early_bytes.fetch_sub(buf.len(), Ordering::AcqRel);
                    // SAFETY: the posted receive buffer holds cap >= buf.len() bytes (the
                    // receiver's promise) and stays the receiver's while begin_io holds.
                    unsafe {
                        std::ptr::copy_nonoverlapping(buf.as_ptr(), r.ptr as *mut u8, buf.len())
                    };
                    r.op.end_io();
                    r.op.set_nbytes(buf.len() as u64);
                    ack.send(Status::Ok);
                    r.op.part_done(Status::Ok, None);
                } else {
                    // the receive was cancelled after it was matched: the message waits
                    // for the next one instead of being lost
                    self.requeue_early(Early::Data { buf, ack });
                }
            }
            Early::Pull { msg_id, len, ack } => self.pull(r, msg_id, len, ack),
        }
    }

    fn requeue_early(self: &Arc<Self>, e: Early) {
        if let Some((r, e)) = self.msgs.requeue(e) {
            self.deliver_early(r, e);
        }
    }

    /// Fetches message `msg_id` from the sender straight into the receive buffer; the
    /// sender's `send` completes when this is done.
    pub fn pull(self: &Arc<Self>, r: PostedRecv, msg_id: u64, len: u64, ack: Ack) {
        if len > r.cap as u64 {
            ack.send(Status::Truncated);
            r.op.finish(
                Status::Truncated,
                Some(format!(
                    "message of {len} bytes does not fit the {}-byte receive buffer",
                    r.cap
                )),
            );
            return;
        }
        let conn = match (self.conns.upgrade(), *self.peer.read()) {
            (Some(conns), Some(peer)) => conns.lane(peer.addr, 0).map(|c| (c, peer)),
            _ => Err(Error::new(
                Status::NotConnected,
                "endpoint has no peer to pull from",
            )),
        };
        match conn {
            Ok((conn, peer)) => {
                r.op.set_nbytes(len);
                let h = Header {
                    size: len,
                    addr: msg_id,
                    endpoint: peer.endpoint,
                    ..Header::new(Opcode::Pull)
                };
                let pending = Pending {
                    op: r.op,
                    sink: r.ptr,
                    expect: len,
                    then: Some(Box::new(move |st| ack.send(st))),
                };
                conn.request(h, (0, 0), None, pending);
            }
            Err(e) => {
                ack.send(e.status());
                r.op.finish(e.status(), Some(e.message().to_string()));
            }
        }
    }

    /// The peer's connection died: every pending operation fails, later ones too.
    pub fn on_peer_lost(&self) {
        if self.peer_lost.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inflight
            .fail_all(Status::PeerDisconnected, "peer disconnected");
    }
}

/// The target side of a context: its endpoints by id (how a request finds its target)
/// and the connections it accepted (closed with the context).
pub struct Targets {
    endpoints: RwLock<HashMap<u32, Weak<EpCore>>>,
    next_ep: AtomicU32,
    server_conns: Mutex<Vec<TcpStream>>,
}

impl Default for Targets {
    fn default() -> Self {
        Targets {
            endpoints: RwLock::new(HashMap::new()),
            next_ep: AtomicU32::new(1),
            server_conns: Mutex::new(Vec::new()),
        }
    }
}

impl Targets {
    pub fn next_endpoint_id(&self) -> u32 {
        self.next_ep.fetch_add(1, Ordering::Relaxed)
    }

    pub fn add_endpoint(&self, ep: &Arc<EpCore>) {
        self.endpoints.write().insert(ep.id, Arc::downgrade(ep));
    }

    pub fn remove_endpoint(&self, id: u32) {
        self.endpoints.write().remove(&id);
    }

    pub fn endpoint(&self, id: u32) -> Option<Arc<EpCore>> {
        self.endpoints.read().get(&id).and_then(Weak::upgrade)
    }

    pub fn track_server_conn(&self, s: &TcpStream) {
        if let Ok(c) = s.try_clone() {
            let mut v = self.server_conns.lock();
            v.retain(|s| s.peer_addr().is_ok());
            v.push(c);
        }
    }

    pub fn close_server_conns(&self) {
        for s in self.server_conns.lock().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Lane 0 to `addr` closed: every endpoint connected to that peer has lost it.
    pub fn peer_lost(&self, addr: SocketAddr) {
        let eps: Vec<_> = self
            .endpoints
            .read()
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for ep in eps {
            if ep.peer_addr() == Some(addr) {
                ep.on_peer_lost();
            }
        }
    }
}
