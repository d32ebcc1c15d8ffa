//! Outgoing connections of one context, keyed by peer (listen address and the key it
//! must prove), shared by all the context's endpoints. Lane 0 of a peer stays open while an endpoint is connected to
//! it (its closing is how peer death is seen); other lanes are closed when idle. A
//! connection found dead on use is replaced, not reported.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::conn::{Conn, OnLost};
use crate::error::Result;
use crate::transport::auth::{Identity, PublicKey};

/// A peer context as dialled: where it listens and the key it must prove. A peer that
/// restarted on the same port with a new key is another peer.
pub type PeerKey = (SocketAddr, PublicKey);

#[derive(Default)]
struct Lanes {
    conns: Vec<Option<Arc<Conn>>>,
    /// Connected endpoints using this peer.
    pins: usize,
}

pub struct ConnPool {
    peers: Mutex<HashMap<PeerKey, Arc<Mutex<Lanes>>>>,
    lanes: usize,
    identity: Arc<Identity>,
    context_id: u64,
    connect_timeout: Duration,
    on_lost: OnLost,
}

impl ConnPool {
    pub fn new(
        lanes: usize,
        identity: Arc<Identity>,
        context_id: u64,
        connect_timeout: Duration,
        on_lost: OnLost,
    ) -> ConnPool {
        ConnPool {
            peers: Mutex::new(HashMap::new()),
            lanes: lanes.max(1),
            identity,
            context_id,
            connect_timeout,
            on_lost,
        }
    }

    fn peer(&self, p: PeerKey) -> Arc<Mutex<Lanes>> {
        self.peers.lock().entry(p).or_default().clone()
    }

    /// Lane `i` to peer `p`, dialling (or re-dialling a dead one) as needed.
    pub fn lane(&self, p: PeerKey, i: usize) -> Result<Arc<Conn>> {
        self.lane_redialled(p, i).map(|(c, _)| c)
    }

    /// [`Pool::lane`], and whether it replaced a dead connection (a retry).
    pub fn lane_redialled(&self, p: PeerKey, i: usize) -> Result<(Arc<Conn>, bool)> {
        let peer = self.peer(p);
        let mut l = peer.lock();
        if l.conns.len() < self.lanes {
            l.conns.resize(self.lanes, None);
        }
        let i = i % self.lanes;
        let mut redial = false;
        if let Some(c) = &l.conns[i] {
            if c.is_usable() {
                return Ok((c.clone(), false));
            }
            redial = true;
        }
        let c = Conn::dial(
            p.0,
            p.1,
            &self.identity,
            self.context_id,
            self.connect_timeout,
            self.on_lost.clone(),
        )?;
        l.conns[i] = Some(c.clone());
        Ok((c, redial))
    }

    pub fn pin(&self, p: PeerKey) {
        self.peer(p).lock().pins += 1;
    }

    pub fn unpin(&self, p: PeerKey) {
        let peer = self.peer(p);
        let mut l = peer.lock();
        l.pins = l.pins.saturating_sub(1);
    }

    /// Closes connections idle for `idle`, except lane 0 of pinned peers.
    pub fn evict_idle(&self, idle: Duration) {
        let now = Instant::now();
        let peers: Vec<_> = self.peers.lock().values().cloned().collect();
        for peer in peers {
            let mut l = peer.lock();
            let pinned = l.pins > 0;
            for (i, slot) in l.conns.iter_mut().enumerate() {
                let Some(c) = slot else { continue };
                let keep = (i == 0 && pinned) || c.has_pending() || c.idle_for(now) < idle;
                if !keep || c.is_dead() {
                    c.close();
                    *slot = None;
                }
            }
        }
    }

    pub fn close_all(&self) {
        let peers: Vec<_> = self.peers.lock().drain().map(|(_, p)| p).collect();
        for peer in peers {
            for c in peer.lock().conns.drain(..).flatten() {
                c.close();
            }
        }
    }

    /// Closes every connection to `addr` (test hook for "died while idle").
    pub fn close_peer(&self, addr: SocketAddr) {
        let peers: Vec<_> = self
            .peers
            .lock()
            .iter()
            .filter(|(p, _)| p.0 == addr)
            .map(|(_, l)| l.clone())
            .collect();
        for peer in peers {
            for c in peer.lock().conns.iter().flatten() {
                c.close();
            }
        }
    }
}
