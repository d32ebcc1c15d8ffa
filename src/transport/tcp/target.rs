//! The target side: the state of an endpoint that the context's server threads fill
//! (imm notifications, messages and the receives they meet, sends waiting to be pulled),
//! who may act on it (its connected peer's key), and the context's registry of its
//! endpoints.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use super::conn::Pending;
use super::pool::{ConnPool, PeerKey};
use super::reply::Ack;
use super::wire::{Header, Opcode};
use crate::error::{Error, Status};
use crate::future::{InflightOps, OpState};
use crate::memory::MemoryPool;
use crate::transport::auth::PublicKey;
use crate::transport::matching::{ImmQueue, MsgMatcher, PostedRecv, EARLY_BUDGET};

/// Where the connected peer is, and the key its connections must be authenticated as.
#[derive(Clone, Copy, Debug)]
pub struct PeerRef {
    pub addr: SocketAddr,
    pub key: PublicKey,
    pub endpoint: u32,
}

impl PeerRef {
    pub fn pool_key(&self) -> PeerKey {
        (self.addr, self.key)
    }
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
    /// Signalled when `peer` is set or the endpoint closes (frames that came first wait).
    connected: (Mutex<()>, Condvar),
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
            connected: (Mutex::new(()), Condvar::new()),
            peer_lost: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            inflight: InflightOps::default(),
            sends: Mutex::new(HashMap::new()),
        }
    }

    pub fn peer_key(&self) -> Option<PeerKey> {
        self.peer.read().map(|p| p.pool_key())
    }

    /// Sets (or clears, when `connect` failed) the peer and wakes frames waiting for it.
    pub fn set_peer(&self, p: Option<PeerRef>) {
        *self.peer.write() = p;
        self.wake_waiters();
    }

    /// Wakes frames waiting for `connect()` (they re-check the peer and `closed`).
    pub fn wake_waiters(&self) {
        let _g = self.connected.0.lock();
        self.connected.1.notify_all();
    }

    /// Whether a frame on a connection authenticated as `key` may act on this endpoint:
    /// only when the endpoint is connected to exactly that key. A frame that arrives
    /// before `connect()` waits for it, at most `grace` (as RDMA retries until the
    /// remote QP is ready); it is then checked like any other.
    pub fn authorize(&self, key: &PublicKey, grace: Duration) -> std::result::Result<(), Status> {
        let check = |p: &PeerRef| {
            if p.key == *key {
                Ok(())
            } else {
                Err(Status::RemoteAccess)
            }
        };
        // The fast path of every request: a read lock and a compare.
        if let Some(p) = *self.peer.read() {
            return check(&p);
        }
        let deadline = Instant::now() + grace;
        let mut g = self.connected.0.lock();
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(Status::RemoteAccess);
            }
            if let Some(p) = *self.peer.read() {
                return check(&p);
            }
            if self.connected.1.wait_until(&mut g, deadline).timed_out() {
                return Err(Status::NotConnected);
            }
        }
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
            (Some(conns), Some(peer)) => conns.lane(peer.pool_key(), 0).map(|c| (c, peer)),
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

/// The target side of a context: its endpoints by id (how a request finds its target).
pub struct Targets {
    endpoints: RwLock<HashMap<u32, Weak<EpCore>>>,
    next_ep: AtomicU32,
}

impl Default for Targets {
    fn default() -> Self {
        Targets {
            endpoints: RwLock::new(HashMap::new()),
            next_ep: AtomicU32::new(1),
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

    fn live(&self) -> Vec<Arc<EpCore>> {
        self.endpoints
            .read()
            .values()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Lane 0 to `peer` closed: every endpoint connected to that peer has lost it.
    pub fn peer_lost(&self, peer: PeerKey) {
        for ep in self.live() {
            if ep.peer_key() == Some(peer) {
                ep.on_peer_lost();
            }
        }
    }

    /// Whether some live endpoint is connected to `key` (its connections are in use).
    pub fn serves(&self, key: &PublicKey) -> bool {
        self.live()
            .iter()
            .any(|ep| ep.peer.read().is_some_and(|p| p.key == *key))
    }
}
