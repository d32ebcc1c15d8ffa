//! The connection-slot state machine: one [`Slot`] per peer holds what `connect_to`
//! asked for, the current local endpoint, the freshest peer info and the
//! [`ConnState`]. Transitions happen under the agent's `peers` lock and only record
//! their side effects in [`Work`] (endpoints to shut down, `qp_ready` messages to send,
//! connects to start), which [`Inner::run_work`] performs after the lock is released.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::agent::{Inner, PeerAgent};
use super::connection::PeerConnection;
use super::endpoints::{ep_alive, LocalEp};
use super::handshake::original_peer_error;
use super::negotiate::{agree, Agreement, Side, Transport, TransportRequest};
use super::options::ConnectOptions;
use super::registry::check_alias;
use crate::error::{Error, Result, Status};
use crate::transport::Endpoint;
use crate::{info_log, warn_log};

/// Where a connection to a peer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// Known peer, nothing requested.
    Idle,
    /// Handshake in progress.
    Connecting,
    Connected,
    /// Gave up (transport mismatch, retries exhausted); `wait` returns the error.
    Failed,
    /// Was connected; the peer left, died or restarted. A connection `connect_to` asked
    /// for that a transport error took down is re-dialled on its own for
    /// `reconnect_timeout` (`wait` blocks meanwhile); `connect_to` again re-dials.
    Disconnected,
}

impl ConnState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::Idle => "idle",
            ConnState::Connecting => "connecting",
            ConnState::Connected => "connected",
            ConnState::Failed => "failed",
            ConnState::Disconnected => "disconnected",
        }
    }
}

/// The freshest `qp_ready` seen from a peer.
#[derive(Clone)]
pub(super) struct PeerView {
    pub instance: u64,
    pub nonce: u64,
    pub host_id: String,
    pub request: TransportRequest,
    pub transport: Option<Transport>,
    /// The peer has an active RDMA NIC port.
    pub rdma: bool,
    /// RDMA data QPs the peer asked for (0: no wish).
    pub qp_num: usize,
    pub info: Value,
}

impl PeerView {
    pub fn side(&self) -> Side<'_> {
        Side {
            request: self.request,
            host: &self.host_id,
            rdma: self.rdma,
            qp_num: self.qp_num,
        }
    }
}

/// Everything this agent knows about its connection to one peer.
pub(super) struct Slot {
    pub request: TransportRequest,
    /// RDMA data QPs `connect_to` asked for (0: no wish, e.g. a passive side).
    pub qp_num: usize,
    /// `connect_to` asked for a connection that is not established yet.
    pub pending: bool,
    pub ep: Option<LocalEp>,
    pub peer: Option<PeerView>,
    /// Highest peer instance seen; messages from older ones are stale.
    pub known_instance: u64,
    pub state: ConnState,
    pub error: Option<Error>,
    pub attempts: u32,
    pub retry_at: Option<Instant>,
    /// Re-dialling on its own after a transport error (see [`Inner::mark_lost`]) until
    /// then.
    pub reconnect_until: Option<Instant>,
    /// A cleanup notice came while re-dialling: the peer shut down, or a restarted
    /// incarnation took its alias over. The next retry tells the two apart.
    pub peer_left: bool,
    /// While dialling and unanswered: when our qp_ready goes out again, and how many
    /// times it went (see [`RESEND_FIRST`]).
    pub resend_at: Option<Instant>,
    pub resends: u32,
    /// `(my nonce, peer instance, peer nonce)` pairs a qp_ready was sent for.
    pub sent: HashSet<(u64, u64, u64)>,
    /// The same pairs, kept when `sent` forgets one to send it again (a repeat).
    pub answered: HashSet<(u64, u64, u64)>,
    pub connected_transport: Option<Transport>,
    /// Stream ids of the qp_ready messages this agent wrote to the peer's stream; the
    /// ones a never-registered peer did not consume are removed at shutdown.
    pub outbox: Vec<String>,
}

impl Slot {
    pub fn new() -> Slot {
        Slot {
            request: TransportRequest::Auto,
            qp_num: 0,
            pending: false,
            ep: None,
            peer: None,
            known_instance: 0,
            state: ConnState::Idle,
            error: None,
            attempts: 0,
            retry_at: None,
            reconnect_until: None,
            peer_left: false,
            resend_at: None,
            resends: 0,
            sent: HashSet::new(),
            answered: HashSet::new(),
            connected_transport: None,
            outbox: Vec::new(),
        }
    }

    /// Re-dialling on its own (a lost connection, within `reconnect_timeout`).
    pub fn reconnecting(&self) -> bool {
        self.reconnect_until.is_some()
    }

    /// Drops the endpoint (it is shut down with the work).
    pub fn drop_ep(&mut self, work: &mut Work) {
        if let Some(ep) = self.ep.take() {
            work.dead.push(ep.ep);
        }
    }
}

/// A qp_ready to write: `(peer, stream fields, sent-key, whether it repeats one)`.
type PendingSend = (String, Vec<(String, String)>, (u64, u64, u64), bool);

/// Deferred side effects of a state change, run after the peers lock is released.
#[derive(Default)]
pub(super) struct Work {
    pub dead: Vec<Arc<dyn Endpoint>>,
    pub sends: Vec<PendingSend>,
    /// `(peer, my nonce, endpoint, peer info)`
    pub connects: Vec<(String, u64, Arc<dyn Endpoint>, Value)>,
}

impl Work {
    pub fn is_empty(&self) -> bool {
        self.dead.is_empty() && self.sends.is_empty() && self.connects.is_empty()
    }
}

/// Streams are capped at about this many messages (`XADD MAXLEN ~`).
const STREAM_MAX_LEN: usize = 1000;
/// Message ids remembered per peer for withdrawal at shutdown.
const OUTBOX_MAX: usize = 1024;
/// A dialling side whose qp_ready got no answer sends it again after this, then at
/// doubling intervals up to [`RESEND_MAX`]. A mailbox message can be lost for good: a
/// peer drops one whose sender is not registered (right after a Redis restart, before
/// the sender's heartbeat re-registered it), and a restart loses what the old Redis
/// held. Without a resend both sides would wait forever, each for the other.
const RESEND_FIRST: Duration = Duration::from_secs(2);
const RESEND_MAX: Duration = Duration::from_secs(8);
/// A lost connection is re-dialled this long after the loss is seen (the peer sees it
/// too within about this time, so both sides start from a clean slot).
pub(super) const RECONNECT_FIRST: Duration = Duration::from_millis(500);

impl PeerAgent {
    /// Starts (or re-uses) the connection to `peer`. Does not block: call
    /// [`PeerConnection::wait`]. `transport` is `"auto"` (shared memory on the same
    /// host, RDMA between hosts when both agents have an active NIC port, TCP
    /// otherwise), `"shm"`, `"tcp"` or `"rdma"`.
    pub fn connect_to(&self, peer: &str, transport: &str) -> Result<PeerConnection> {
        self.connect_with(
            peer,
            &ConnectOptions {
                transport: transport.into(),
                ..Default::default()
            },
        )
    }

    /// [`connect_to`](Self::connect_to) with the RDMA knobs: `qp_num` data QPs (the
    /// connection uses the larger of the two sides' values), and the local device and
    /// port, which must be the agent's NIC port when given (`InvalidArgument`
    /// otherwise). `"rdma"` on an agent without a NIC port is `RdmaUnavailable`.
    pub fn connect_with(&self, peer: &str, o: &ConnectOptions) -> Result<PeerConnection> {
        let req = TransportRequest::parse(&o.transport)?;
        if !(1..=crate::transport::rdma::imm::MAX_QP).contains(&o.qp_num) {
            return Err(Error::invalid(format!(
                "qp_num must be 1..={}, not {}",
                crate::transport::rdma::imm::MAX_QP,
                o.qp_num
            )));
        }
        let rdma_wanted = req == TransportRequest::Explicit(Transport::Rdma);
        match &self.inner.nic {
            Some(n) => n.check(o.local_device.as_deref(), o.ib_port)?,
            None if rdma_wanted || o.local_device.as_deref().is_some_and(|d| !d.is_empty()) => {
                return Err(Error::new(
                    Status::RdmaUnavailable,
                    "this agent has no RDMA NIC port (no libibverbs, no device, or no ACTIVE port; \
                     see available_nics and the agent's device option)",
                ))
            }
            None => {}
        }
        self.inner.connect_to(peer, req, o.qp_num)?;
        Ok(PeerConnection::new(self.inner.clone(), peer))
    }

    /// A handle on the connection to `peer`, if there is one (any state).
    pub fn connection(&self, peer: &str) -> Option<PeerConnection> {
        self.inner
            .peers
            .lock()
            .contains_key(peer)
            .then(|| PeerConnection::new(self.inner.clone(), peer))
    }

    /// `{peer: state}` for every peer this agent knows.
    pub fn connections(&self) -> BTreeMap<String, ConnState> {
        self.inner
            .peers
            .lock()
            .iter()
            .map(|(k, s)| (k.clone(), s.state))
            .collect()
    }
}

impl Inner {
    pub(super) fn connect_to(
        self: &Arc<Self>,
        peer: &str,
        req: TransportRequest,
        qp_num: usize,
    ) -> Result<()> {
        self.check_live()?;
        if peer.is_empty() {
            return Err(Error::invalid("peer alias is empty"));
        }
        if peer == self.alias {
            return Err(Error::invalid(format!(
                "connect_to: '{peer}' is this agent's own alias"
            )));
        }
        check_alias(peer)?;
        if let Some(tcp) = self.original_peer(peer) {
            // Registered by an original DLSlime agent: fail now (wait() returns at once).
            let mut work = Work::default();
            {
                let mut peers = self.peers.lock();
                let slot = peers.entry(peer.to_string()).or_insert_with(Slot::new);
                slot.request = req;
                self.fail(slot, original_peer_error(peer, tcp), &mut work);
            }
            self.run_work(work);
            return Ok(());
        }
        let mut work = Work::default();
        let mut already = false;
        {
            let mut peers = self.peers.lock();
            let slot = peers.entry(peer.to_string()).or_insert_with(Slot::new);
            slot.request = req;
            slot.qp_num = qp_num;
            let alive = match (&slot.state, &slot.ep) {
                (ConnState::Connected, Some(e)) => ep_alive(&*e.ep),
                _ => false,
            };
            let fits = |e: &LocalEp| req.admits(e.transport) && e.num_qp >= qp_num;
            if alive && slot.ep.as_ref().is_some_and(fits) {
                already = true;
            } else {
                // connected, but the peer is gone or the transport is one this
                // request excludes
                if slot.state == ConnState::Connected {
                    self.teardown(slot, Status::PeerDisconnected, "connection lost", &mut work);
                }
                // An endpoint that fits the request is kept, also one opened before this
                // call (this side answered the peer's dial first, as a passive "auto"
                // side) and already bound or connecting: replacing it would give it a new
                // nonce, and the peer, possibly connected already (its wait() returned),
                // would have to tear down and start over, i.e. crossing dials would
                // sometimes go "connected" -> "connecting" (tests/peer_agent.rs,
                // both_dial_at_once_repeatedly_*). Only an endpoint of a transport this
                // request excludes starts over.
                if slot.ep.as_ref().is_some_and(|e| !fits(e)) {
                    slot.drop_ep(&mut work);
                }
                slot.pending = true;
                slot.attempts = 0;
                slot.retry_at = None;
                slot.reconnect_until = None;
                slot.error = None;
                slot.state = ConnState::Connecting;
                self.dial(peer, slot, &mut work);
            }
        }
        self.run_work(work);
        if self.desired.lock().insert(peer.to_string()) || !already {
            self.post_topology();
        }
        Ok(())
    }

    /// Whether a registered peer's record was written by an original DLSlime agent (a
    /// resource record without this implementation's `transports`), and if so whether
    /// it offers TCP (no NICs) rather than RDMA; `None` for our agents, unregistered
    /// peers, or when Redis cannot tell.
    fn original_peer(&self, peer: &str) -> Option<bool> {
        let t = self.store.hget(&self.keys.agent(peer), "resource").ok()??;
        let v: Value = serde_json::from_str(&t).ok()?;
        if !v.is_object() || v.get("transports").is_some() {
            return None;
        }
        let rdma = v
            .get("nics")
            .and_then(Value::as_array)
            .is_some_and(|n| !n.is_empty());
        Some(!rdma)
    }

    /// This side of the negotiation for `slot`.
    pub(super) fn side<'a>(&'a self, slot: &Slot) -> Side<'a> {
        Side {
            request: slot.request,
            host: &self.host_id,
            rdma: self.nic.is_some(),
            qp_num: slot.qp_num,
        }
    }

    /// What to open towards a peer before it has answered: what an explicit request
    /// names, else the agreement with the peer's last `qp_ready`, else with its agent
    /// record (host identity, NICs) as an `auto` side, else TCP (works everywhere).
    fn guess(&self, slot: &Slot, peer: &str) -> Result<Agreement> {
        // An explicit request opens its transport: the peer learns of it from our
        // qp_ready (and fails the same way on a mismatch).
        if let Some(t) = slot.request.explicit() {
            return Ok(Agreement {
                transport: t,
                qp_num: slot
                    .qp_num
                    .max(slot.peer.as_ref().map_or(0, |v| v.qp_num))
                    .max(1),
            });
        }
        if let Some(v) = &slot.peer {
            return agree(&self.side(slot), &v.side());
        }
        let rec = self
            .store
            .hget(&self.keys.agent(peer), "resource")
            .unwrap_or(None)
            .and_then(|r| serde_json::from_str::<Value>(&r).ok())
            .unwrap_or(Value::Null);
        let host = rec["host"]["host_id"].as_str().unwrap_or("");
        let rdma = rec["transports"]
            .as_array()
            .is_some_and(|a| a.iter().any(|t| t == "rdma"));
        let peer_side = Side {
            request: TransportRequest::Auto,
            host: if host.is_empty() { "?" } else { host },
            rdma,
            qp_num: 0,
        };
        match agree(&self.side(slot), &peer_side) {
            Ok(a) => Ok(a),
            // the peer's answer decides (or fails the connection)
            Err(_) => Ok(Agreement {
                transport: slot.request.explicit().unwrap_or(Transport::Tcp),
                qp_num: slot.qp_num.max(1),
            }),
        }
    }

    /// Opens an endpoint if needed and sends our qp_ready unless already sent for it.
    pub(super) fn dial(&self, peer: &str, slot: &mut Slot, work: &mut Work) {
        if slot.ep.as_ref().is_some_and(|e| e.bound.is_some()) {
            return;
        }
        if slot.ep.is_none() {
            let t = match self.guess(slot, peer) {
                Ok(t) => t,
                Err(e) => return self.fail(slot, e, work),
            };
            match self.new_endpoint(peer, t) {
                Ok(e) => slot.ep = Some(e),
                Err(e) => return self.fail(slot, e, work),
            }
        }
        self.queue_send(peer, slot, work);
        if slot.pending && slot.resend_at.is_none() {
            slot.resends = 0;
            slot.resend_at = Some(Instant::now() + RESEND_FIRST);
        }
    }

    /// Sends our qp_ready for the current endpoint again: still dialling, not answered
    /// yet (the endpoint is not bound to a peer endpoint), and its resend time came.
    fn resend_unanswered(&self, peer: &str, slot: &mut Slot, now: Instant, work: &mut Work) {
        let Some(at) = slot.resend_at else { return };
        let dialling = slot.state == ConnState::Connecting
            || (slot.state == ConnState::Disconnected && slot.reconnecting());
        let waiting =
            slot.pending && dialling && slot.ep.as_ref().is_some_and(|e| e.bound.is_none());
        if !waiting {
            slot.resend_at = None;
            return;
        }
        if at > now {
            return;
        }
        slot.resends += 1;
        crate::obs::retried(crate::obs::Retry::QpReadyResend);
        let nonce = slot.ep.as_ref().map_or(0, |e| e.nonce);
        let (di, dn) = slot.peer.as_ref().map_or((0, 0), |v| (v.instance, v.nonce));
        slot.sent.remove(&(nonce, di, dn));
        info_log!(
            "PeerAgent {}: no answer from {peer} yet; qp_ready sent again ({})",
            self.alias,
            slot.resends
        );
        self.queue_send(peer, slot, work);
        let next = RESEND_FIRST
            .saturating_mul(1u32 << slot.resends.min(4))
            .min(RESEND_MAX);
        slot.resend_at = Some(now + next);
    }

    /// Queues our `qp_ready` for the current endpoint, naming the peer endpoint we
    /// know (if any), unless it was sent already.
    pub(super) fn queue_send(&self, peer: &str, slot: &mut Slot, work: &mut Work) {
        // Without an endpoint (this side refused the connection before making one) the
        // message carries only what the negotiation needs (nonce 0, no transport), so
        // the peer reaches the same verdict instead of waiting.
        let (nonce, transport, info) = match &slot.ep {
            Some(ep) => (ep.nonce, Some(ep.transport), ep.ep.endpoint_info()),
            None => (0, None, json!({})),
        };
        let (di, dn) = slot
            .peer
            .as_ref()
            .map_or((None, None), |v| (Some(v.instance), Some(v.nonce)));
        let key = (nonce, di.unwrap_or(0), dn.unwrap_or(0));
        if slot.sent.contains(&key) {
            return;
        }
        slot.sent.insert(key);
        let repeat = !slot.answered.insert(key);
        let tname = transport.map_or("none", Transport::as_str);
        let conn_id = format!("{}:{tname}:n{nonce}->{peer}", self.alias);
        // the original's fields carry the NIC port on RDMA connections
        let (device, port, link) = match (&self.nic, transport) {
            (Some(n), Some(Transport::Rdma)) => {
                (n.device().to_string(), n.ib_port(), n.link_type())
            }
            _ => (tname.to_string(), 1, String::new()),
        };
        let meta = json!({
            "conn_id": conn_id, "src": self.alias, "dst": peer,
            "src_device": device, "dst_device": "", "ib_port": port, "qp_num": slot.qp_num,
            "link_type": link, "profile": "default", "transport": tname,
            "transport_request": slot.request.as_str(), "host_id": self.host_id,
            "rdma": self.nic.is_some(),
            "src_instance": self.instance, "src_nonce": nonce,
            "dst_instance": di, "dst_nonce": dn,
        });
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        work.sends.push((
            peer.to_string(),
            vec![
                ("type".into(), "qp_ready".into()),
                ("peer".into(), self.alias.clone()),
                ("qp_info".into(), info.to_string()),
                ("conn_meta".into(), meta.to_string()),
                ("timestamp".into(), format!("{ts:.6}")),
            ],
            key,
            repeat,
        ));
    }

    /// Gives up on the connection: `wait` returns `e`.
    pub(super) fn fail(&self, slot: &mut Slot, e: Error, work: &mut Work) {
        warn_log!("PeerAgent {}: connection failed: {e}", self.alias);
        slot.drop_ep(work);
        slot.state = ConnState::Failed;
        slot.error = Some(e);
        slot.pending = false;
        slot.retry_at = None;
        slot.reconnect_until = None;
        slot.resend_at = None;
        self.cv.notify_all();
    }

    /// Drops the current endpoint (pending operations fail) and forgets what was sent.
    pub(super) fn teardown(&self, slot: &mut Slot, status: Status, why: &str, work: &mut Work) {
        slot.drop_ep(work);
        slot.sent.clear();
        slot.answered.clear();
        slot.connected_transport = None;
        if slot.state == ConnState::Connected {
            slot.state = ConnState::Disconnected;
            slot.error = Some(Error::new(status, why.to_string()));
        }
        self.cv.notify_all();
    }

    /// Performs the side effects of a transition (the peers lock is not held).
    pub(super) fn run_work(self: &Arc<Self>, work: Work) {
        for ep in work.dead {
            ep.shutdown();
        }
        for (peer, fields, key, repeat) in work.sends {
            let stream = self.keys.stream(&peer);
            match self.store.xadd(&stream, STREAM_MAX_LEN, &fields) {
                Ok(id) => {
                    let n = if repeat {
                        &self.stats.qp_ready_resent
                    } else {
                        &self.stats.qp_ready_sent
                    };
                    n.fetch_add(1, Ordering::Relaxed);
                    if let Some(s) = self.peers.lock().get_mut(&peer) {
                        if s.outbox.len() < OUTBOX_MAX {
                            s.outbox.push(id);
                        }
                    }
                }
                Err(e) => {
                    warn_log!(
                        "PeerAgent {}: qp_ready to {peer} not sent ({e}); will retry",
                        self.alias
                    );
                    let mut peers = self.peers.lock();
                    if let Some(s) = peers.get_mut(&peer) {
                        s.sent.remove(&key);
                        if !repeat {
                            s.answered.remove(&key);
                        }
                        if s.retry_at.is_none() {
                            s.retry_at = Some(Instant::now() + Duration::from_millis(200));
                        }
                    }
                }
            }
        }
        for (peer, nonce, ep, info) in work.connects {
            let me = self.clone();
            let spawned = std::thread::Builder::new()
                .name("dlslime-peer-connect".into())
                .spawn(move || {
                    let r = ep.connect(&info);
                    me.on_connect_done(&peer, nonce, r);
                });
            if let Err(e) = spawned {
                warn_log!("PeerAgent: cannot spawn a connect worker: {e}");
            }
        }
    }

    /// A connect worker finished: connected, or retry with a new endpoint after a
    /// backoff, or failed after `connect_attempts`.
    fn on_connect_done(self: &Arc<Self>, peer: &str, nonce: u64, r: Result<()>) {
        let mut work = Work::default();
        {
            let mut peers = self.peers.lock();
            let Some(slot) = peers.get_mut(peer) else {
                return;
            };
            if slot.ep.as_ref().map(|e| e.nonce) != Some(nonce) {
                return; // superseded
            }
            match r {
                Ok(()) => {
                    slot.state = ConnState::Connected;
                    slot.connected_transport = slot.ep.as_ref().map(|e| e.transport);
                    slot.pending = false;
                    slot.error = None;
                    slot.attempts = 0;
                    slot.retry_at = None;
                    if slot.reconnect_until.take().is_some() {
                        self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    info_log!("PeerAgent {}: connected to {peer}", self.alias);
                    self.cv.notify_all();
                }
                Err(e) => {
                    self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                    slot.attempts += 1;
                    warn_log!(
                        "PeerAgent {}: connect to {peer} failed (attempt {}): {e}",
                        self.alias,
                        slot.attempts
                    );
                    slot.drop_ep(&mut work);
                    slot.sent.clear();
                    slot.answered.clear();
                    // an automatic re-dial keeps trying until its deadline
                    if slot.attempts >= self.opts.connect_attempts.max(1) && !slot.reconnecting() {
                        self.fail(slot, e, &mut work);
                    } else {
                        if !slot.reconnecting() {
                            slot.state = ConnState::Connecting;
                        }
                        slot.error = Some(e);
                        let backoff = Duration::from_millis(50 << slot.attempts.min(6));
                        slot.retry_at = Some(Instant::now() + backoff);
                    }
                }
            }
        }
        self.run_work(work);
    }

    /// Marks the connection over `ep` lost (a transport error: the link or the peer's
    /// process is gone). Pending operations have failed; a connection `connect_to` asked
    /// for is re-dialled from [`RECONNECT_FIRST`] on, until `reconnect_timeout`
    /// passes, the peer shuts down (cleanup notice) or this agent does.
    pub(super) fn mark_lost(&self, peer: &str, ep: &Arc<dyn Endpoint>) {
        let window = self.opts.reconnect_timeout;
        let redial = !window.is_zero()
            && !self.shutdown.load(Ordering::Acquire)
            && self.desired.lock().contains(peer);
        let mut work = Work::default();
        {
            let mut peers = self.peers.lock();
            if let Some(slot) = peers.get_mut(peer) {
                if slot.ep.as_ref().is_some_and(|e| Arc::ptr_eq(&e.ep, ep)) {
                    self.teardown(
                        slot,
                        Status::PeerDisconnected,
                        "the peer's process is gone",
                        &mut work,
                    );
                    // a re-dial must reach the peer's next incarnation too
                    slot.peer = None;
                    if redial {
                        let now = Instant::now();
                        info_log!(
                            "PeerAgent {}: re-dialling {peer} for up to {window:?}",
                            self.alias
                        );
                        slot.pending = true;
                        slot.attempts = 0;
                        slot.reconnect_until = Some(now + window);
                        slot.peer_left = false;
                        slot.retry_at = Some(now + RECONNECT_FIRST);
                        slot.resend_at = None;
                    }
                }
            }
        }
        for ep in work.dead {
            ep.shutdown();
        }
    }

    /// Re-dials connections whose retry time came (after a failed connect or XADD).
    pub(super) fn retry_due(self: &Arc<Self>) {
        let now = Instant::now();
        let mut work = Work::default();
        {
            let mut peers = self.peers.lock();
            for (peer, slot) in peers.iter_mut() {
                if slot.reconnect_until.is_some_and(|t| t <= now) {
                    let why = format!(
                        "no answer after re-dialling for {:?}",
                        self.opts.reconnect_timeout
                    );
                    self.give_up_reconnect(peer, slot, &why, &mut work);
                    continue;
                }
                self.resend_unanswered(peer, slot, now, &mut work);
                let Some(at) = slot.retry_at else { continue };
                if at > now {
                    continue;
                }
                slot.retry_at = None;
                if matches!(slot.state, ConnState::Connected | ConnState::Failed) {
                    continue;
                }
                if slot.reconnecting() && std::mem::take(&mut slot.peer_left) {
                    // a successor re-registers the alias right after its clean-up; a
                    // peer that shut down leaves no record
                    let registered = self.store.exists(&self.keys.agent(peer)).unwrap_or(true);
                    if !registered {
                        self.give_up_reconnect(peer, slot, "the peer shut down", &mut work);
                        continue;
                    }
                }
                // an automatic re-dial stays `Disconnected` until the peer answers
                if !slot.reconnecting() {
                    slot.state = ConnState::Connecting;
                }
                self.dial(peer, slot, &mut work);
            }
        }
        if !work.is_empty() {
            self.run_work(work);
        }
    }

    /// The re-dial of a lost connection ends (`why`): it stays `Disconnected`.
    fn give_up_reconnect(&self, peer: &str, slot: &mut Slot, why: &str, work: &mut Work) {
        let last = slot
            .error
            .as_ref()
            .map(|e| format!(" (lost: {})", e.message()))
            .unwrap_or_default();
        warn_log!(
            "PeerAgent {}: stopped re-dialling {peer}: {why}",
            self.alias
        );
        slot.drop_ep(work);
        slot.sent.clear();
        slot.answered.clear();
        slot.reconnect_until = None;
        slot.pending = false;
        slot.retry_at = None;
        slot.resend_at = None;
        slot.state = ConnState::Disconnected;
        slot.error = Some(Error::new(
            Status::PeerDisconnected,
            format!("connection to '{peer}' lost and not re-dialled: {why}{last}"),
        ));
        self.cv.notify_all();
    }

    /// Connected endpoints whose peer the transport saw go are marked disconnected
    /// (their pending operations already failed), so `connect_to` re-dials.
    pub(super) fn probe_connected(&self) {
        let eps: Vec<(String, Arc<dyn Endpoint>)> = self
            .peers
            .lock()
            .iter()
            .filter(|(_, s)| s.state == ConnState::Connected)
            .filter_map(|(k, s)| s.ep.as_ref().map(|e| (k.clone(), e.ep.clone())))
            .collect();
        for (peer, ep) in eps {
            if !ep_alive(&*ep) {
                info_log!("PeerAgent {}: connection to {peer} lost", self.alias);
                self.mark_lost(&peer, &ep);
            }
        }
    }

    /// Shutdown: every connection is closed (pending operations fail) and `wait`
    /// returns `ShutDown`. Returns the outboxes (peer -> ids of our messages in its
    /// stream) for withdrawal.
    pub(super) fn close_all(&self) -> Vec<(String, Vec<String>)> {
        let eps: Vec<Arc<dyn Endpoint>> = {
            let mut peers = self.peers.lock();
            let v = peers
                .values_mut()
                .filter_map(|s| {
                    s.state = match s.state {
                        ConnState::Connected => ConnState::Disconnected,
                        other => other,
                    };
                    s.error = Some(Error::new(Status::ShutDown, "PeerAgent is shut down"));
                    s.reconnect_until = None;
                    s.ep.take().map(|e| e.ep)
                })
                .collect();
            self.cv.notify_all();
            v
        };
        for ep in eps {
            ep.shutdown();
        }
        self.peers
            .lock()
            .iter_mut()
            .filter(|(_, s)| !s.outbox.is_empty())
            .map(|(p, s)| (p.clone(), std::mem::take(&mut s.outbox)))
            .collect()
    }
}
