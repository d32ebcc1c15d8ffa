//! The handshake: how a connection slot reacts to what arrives in the mailbox
//! (`connect_peer` from NanoCtrl, `qp_ready` from peers, cleanup notices). See
//! `docs/peer-agent.md`, "Handshake", for the rules.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::agent::Inner;
use super::links::{ConnState, PeerView, Slot, Work, RECONNECT_FIRST};
use super::negotiate::{agree, Transport};
use crate::error::{Error, Status};

impl Inner {
    /// NanoCtrl relayed our own `desired_topology`: dial `peer` if a `connect_to` for
    /// it is still pending (otherwise this is a repeat, or a replay from an earlier
    /// incarnation).
    pub(super) fn on_connect_peer(self: &Arc<Self>, peer: &str) {
        let mut work = Work::default();
        {
            let mut peers = self.peers.lock();
            let Some(slot) = peers.get_mut(peer) else {
                return;
            };
            if !slot.pending || slot.state == ConnState::Connected {
                return;
            }
            self.dial(peer, slot, &mut work);
        }
        self.run_work(work);
    }

    fn stale(&self, peer: &str, why: &str) {
        self.stats.stale_messages.fetch_add(1, Ordering::Relaxed);
        crate::log_at!(
            3,
            "debug",
            "PeerAgent {}: stale qp_ready from {peer} ignored: {why}",
            self.alias
        );
    }

    /// A `qp_ready`. Each side connects its endpoint to the peer's only on a message
    /// that names its *current* endpoint (`dst_nonce`), i.e. once the peer holds its
    /// info too; a message carrying peer info this endpoint has not answered yet is
    /// answered once. Endpoints connect once, so a peer that restarted (higher
    /// instance) or re-created its endpoint (higher nonce) makes this side start over
    /// with a new endpoint; messages from older incarnations are ignored.
    pub(super) fn on_qp_ready(
        self: &Arc<Self>,
        peer: &str,
        m: PeerView,
        dst_instance: Option<u64>,
        dst_nonce: Option<u64>,
    ) {
        if let Some(di) = dst_instance {
            if di != self.instance {
                return self.stale(peer, "addressed to another incarnation of this agent");
            }
        }
        // Replies only go to registered agents, so replays of dead peers' messages do
        // not leave streams behind in Redis.
        let registered = self.store.exists(&self.keys.agent(peer)).unwrap_or(true);
        if !registered {
            return self.stale(peer, "the sender is not registered (gone)");
        }
        let mut work = Work::default();
        {
            let mut peers = self.peers.lock();
            let slot = peers.entry(peer.to_string()).or_insert_with(Slot::new);
            if m.instance < slot.known_instance {
                drop(peers);
                return self.stale(peer, "from an older incarnation of the peer");
            }
            if m.instance > slot.known_instance {
                if slot.known_instance != 0 && slot.ep.is_some() {
                    self.teardown(
                        slot,
                        Status::PeerDisconnected,
                        "the peer restarted",
                        &mut work,
                    );
                }
                slot.known_instance = m.instance;
                slot.peer = None;
            }
            if let Some(v) = &slot.peer {
                if m.nonce < v.nonce {
                    drop(peers);
                    return self.stale(peer, "for an older endpoint of the peer");
                }
            }
            let agreed = agree(&self.side(slot), &m.side());
            let (mi, mn, mt) = (m.instance, m.nonce, m.transport);
            let info = m.info.clone();
            slot.peer = Some(m);
            let agreed = match agreed {
                Ok(t) => t,
                Err(e) => {
                    // tell the peer what this side wants, so it fails the same way
                    self.queue_send(peer, slot, &mut work);
                    self.fail(slot, e, &mut work);
                    drop(peers);
                    self.run_work(work);
                    return;
                }
            };
            if let Some((bi, bn)) = slot.ep.as_ref().and_then(|e| e.bound) {
                if (bi, bn) != (mi, mn) {
                    self.teardown(
                        slot,
                        Status::PeerDisconnected,
                        "the peer re-created its endpoint",
                        &mut work,
                    );
                }
            }
            if slot.ep.as_ref().is_some_and(|e| {
                e.transport != agreed.transport
                    || (agreed.transport == Transport::Rdma && e.num_qp != agreed.qp_num)
            }) {
                slot.drop_ep(&mut work);
            }
            if slot.ep.is_none() {
                match self.new_endpoint(peer, agreed) {
                    Ok(e) => slot.ep = Some(e),
                    Err(e) => {
                        self.fail(slot, e, &mut work);
                        drop(peers);
                        self.run_work(work);
                        return;
                    }
                }
            }
            if slot.state != ConnState::Connected {
                slot.state = ConnState::Connecting;
                slot.error = None;
            }
            // A message that does not name our current endpoint means the peer has not
            // got our qp_ready for it (lost, or dropped as from an unregistered sender):
            // answer again (the peer resends while unanswered, so this converges).
            let mine = slot.ep.as_ref().map_or(0, |e| e.nonce);
            if dst_nonce != Some(mine) {
                slot.sent.remove(&(mine, mi, mn));
            }
            self.queue_send(peer, slot, &mut work);
            let ep = slot.ep.as_mut().unwrap();
            if dst_nonce == Some(ep.nonce) && mt == Some(ep.transport) && ep.bound.is_none() {
                ep.bound = Some((mi, mn));
                work.connects
                    .push((peer.to_string(), ep.nonce, ep.ep.clone(), info));
            }
        }
        self.run_work(work);
    }

    /// A `qp_ready` from an original DLSlime agent (no `src_instance`/`src_nonce`): the
    /// connection to it cannot work, so it fails now (`wait()` returns at once) with an
    /// error that says why, instead of timing out.
    pub(super) fn on_original_peer(self: &Arc<Self>, peer: &str, tcp: bool) {
        self.stats.original_peers.fetch_add(1, Ordering::Relaxed);
        let mut work = Work::default();
        {
            let mut peers = self.peers.lock();
            let slot = peers.entry(peer.to_string()).or_insert_with(Slot::new);
            if slot.state == ConnState::Failed {
                return;
            }
            self.fail(slot, original_peer_error(peer, tcp), &mut work);
        }
        self.run_work(work);
    }

    /// A cleanup notice: `peer` shut down. Its connection is torn down; a `connect_to`
    /// still pending is re-armed (the message waits in the peer's stream for its next
    /// incarnation), otherwise the peer leaves the desired topology.
    pub(super) fn on_cleanup_notice(self: &Arc<Self>, peer: &str) {
        let mut work = Work::default();
        {
            let mut peers = self.peers.lock();
            if let Some(slot) = peers.get_mut(peer) {
                let was_pending = slot.pending && slot.state != ConnState::Connected;
                self.teardown(
                    slot,
                    Status::PeerDisconnected,
                    "the peer shut down",
                    &mut work,
                );
                slot.peer = None;
                if slot.reconnecting() {
                    // the peer shut down (stop) or a successor took its alias over (the
                    // notice deleted its stream with our qp_ready: send it again)
                    slot.peer_left = true;
                    slot.retry_at = Some(Instant::now() + RECONNECT_FIRST);
                } else if was_pending {
                    slot.retry_at = Some(Instant::now());
                } else {
                    slot.pending = false;
                }
            }
        }
        if !work.dead.is_empty() || !work.sends.is_empty() {
            self.run_work(work);
        }
        let keep = self.peers.lock().get(peer).is_some_and(|s| s.pending);
        if !keep {
            self.desired.lock().remove(peer);
        }
    }
}

/// The error of a connection to an original DLSlime agent, which offers its TCP
/// endpoint (`tcp`: the 0.1.23 wheel) or RDMA queue pairs.
pub(super) fn original_peer_error(peer: &str, tcp: bool) -> Error {
    let offers = if tcp {
        "its TCP endpoint (the 0.1.23 wheel's TCP wire differs from this build's)"
    } else {
        "RDMA queue pairs through its own agent handshake (this library's RDMAEndpoint \
         interoperates with the original's one-sided operations when the two exchange \
         endpoint_info directly, not through the agents)"
    };
    Error::new(
        Status::Unsupported,
        format!(
            "peer '{peer}' is an original DLSlime PeerAgent: it offers {offers}; this dlslime \
             speaks the same control protocol but not its data transports, so the \
             connection cannot work"
        ),
    )
}
