//! Counters of a PeerAgent, for tests and operators.

use std::sync::atomic::AtomicU64;

/// Counters, for tests and operators.
#[derive(Default, Debug)]
pub struct AgentStats {
    /// Stream messages that were malformed (logged and skipped).
    pub malformed_messages: AtomicU64,
    /// Stream messages ignored as stale (another incarnation, an older endpoint).
    pub stale_messages: AtomicU64,
    /// `qp_ready` messages sent, each for a new (endpoint, peer view) pair.
    pub qp_ready_sent: AtomicU64,
    /// The same `qp_ready` sent again: unanswered while dialling, or answering a peer
    /// that evidently had not got it (see `docs/peer-agent.md`, "Lost messages").
    pub qp_ready_resent: AtomicU64,
    pub cleanup_notices: AtomicU64,
    /// Registrations after the first (heartbeat said not found).
    pub reregistrations: AtomicU64,
    pub connect_failures: AtomicU64,
    /// Lost connections that came back by an automatic re-dial.
    pub reconnects: AtomicU64,
    /// `qp_ready` messages from original DLSlime agents (their connections fail at once).
    pub original_peers: AtomicU64,
}
