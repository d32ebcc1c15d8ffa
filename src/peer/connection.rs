//! [`PeerConnection`]: the user's handle on the connection to one peer.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::agent::Inner;
use super::links::ConnState;
use super::negotiate::Transport;
use crate::error::{Error, Result, Status};

/// A connection handle returned by [`PeerAgent::connect_to`](super::PeerAgent::connect_to).
/// It names the peer, not one endpoint incarnation: after a reconnect it reports the new
/// connection.
#[derive(Clone)]
pub struct PeerConnection {
    inner: Arc<Inner>,
    peer: String,
}

impl PeerConnection {
    pub(super) fn new(inner: Arc<Inner>, peer: &str) -> PeerConnection {
        PeerConnection {
            inner,
            peer: peer.to_string(),
        }
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    pub fn state(&self) -> ConnState {
        self.inner
            .peers
            .lock()
            .get(&self.peer)
            .map_or(ConnState::Idle, |s| s.state)
    }

    pub fn is_connected(&self) -> bool {
        self.state() == ConnState::Connected
    }

    /// The connected endpoint towards the peer (the current incarnation after a
    /// reconnect); `NotConnected` until connected.
    pub fn endpoint(&self) -> Result<Arc<dyn crate::Endpoint>> {
        self.inner.endpoint(&self.peer)
    }

    /// Dials the peer again (after `Disconnected` or `Failed`), as
    /// [`PeerAgent::connect_to`](super::PeerAgent::connect_to) does, with the `qp_num`
    /// the connection asked for before.
    pub fn redial(&self, transport: &str) -> Result<()> {
        let qp_num = self
            .inner
            .peers
            .lock()
            .get(&self.peer)
            .map_or(1, |s| s.qp_num.max(1));
        self.inner.connect_to(
            &self.peer,
            super::negotiate::TransportRequest::parse(transport)?,
            qp_num,
        )
    }

    /// The transport of the established connection (`None` until connected).
    pub fn transport(&self) -> Option<Transport> {
        let peers = self.inner.peers.lock();
        peers.get(&self.peer).and_then(|s| {
            if s.state == ConnState::Connected {
                s.connected_transport
            } else {
                None
            }
        })
    }

    /// Blocks until connected (returns the transport), failed (its error), or
    /// `timeout` passes (`Timeout`, naming the state and the connected peers).
    pub fn wait(&self, timeout: Duration) -> Result<Transport> {
        let deadline = Instant::now() + timeout;
        let mut peers = self.inner.peers.lock();
        loop {
            if self.inner.shutdown.load(Ordering::Acquire) {
                return Err(Error::new(Status::ShutDown, "PeerAgent is shut down"));
            }
            let slot = peers.get(&self.peer);
            match slot.map(|s| s.state) {
                Some(ConnState::Connected) => {
                    return Ok(slot
                        .and_then(|s| s.connected_transport)
                        .unwrap_or(Transport::Tcp))
                }
                // lost, and being re-dialled on its own: wait for it
                Some(ConnState::Disconnected) if slot.is_some_and(|s| s.reconnecting()) => {}
                Some(ConnState::Failed) | Some(ConnState::Disconnected) => {
                    let s = slot.unwrap();
                    return Err(s.error.clone().unwrap_or_else(|| {
                        Error::new(
                            Status::Failed,
                            format!("connection to '{}' {}", self.peer, s.state.as_str()),
                        )
                    }));
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                let connected: Vec<&String> = peers
                    .iter()
                    .filter(|(_, s)| s.state == ConnState::Connected)
                    .map(|(k, _)| k)
                    .collect();
                let state = slot.map_or("unknown", |s| s.state.as_str());
                let last = slot
                    .and_then(|s| s.error.as_ref())
                    .map(|e| format!("; last error: {}", e.message()))
                    .unwrap_or_default();
                return Err(Error::new(
                    Status::Timeout,
                    format!(
                        "Timeout waiting for connection to '{}' after {:?} (state: {state}{last}). Connected peers: {connected:?}",
                        self.peer, timeout
                    ),
                ));
            }
            self.inner.cv.wait_until(&mut peers, deadline);
        }
    }
}
