//! Outgoing connections of one context, keyed by peer listen address, shared by all the
//! context's endpoints. Lane 0 of a peer stays open while an endpoint is connected to
//! it (its closing is how peer death is seen); other lanes are closed when idle. A
//! connection found dead on use is replaced, not reported.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::conn::{Conn, OnLost};
use crate::error::Result;

#[derive(Default)]
struct Lanes {
    conns: Vec<Option<Arc<Conn>>>,
    /// Connected endpoints using this peer.
    pins: usize,
}

pub struct ConnPool {
    peers: Mutex<HashMap<SocketAddr, Arc<Mutex<Lanes>>>>,
    lanes: usize,
    context_id: u64,
    connect_timeout: Duration,
    on_lost: OnLost,
}

impl ConnPool {
    pub fn new(
        lanes: usize,
        context_id: u64,
        connect_timeout: Duration,
        on_lost: OnLost,
    ) -> ConnPool {
        ConnPool {
            peers: Mutex::new(HashMap::new()),
            lanes: lanes.max(1),
            context_id,
            connect_timeout,
            on_lost,
        }
    }

    fn peer(&self, addr: SocketAddr) -> Arc<Mutex<Lanes>> {
        self.peers.lock().entry(addr).or_default().clone()
    }

    /// Lane `i` to `addr`, dialling (or re-dialling a dead one) as needed.
    pub fn lane(&self, addr: SocketAddr, i: usize) -> Result<Arc<Conn>> {
        let peer = self.peer(addr);
        let mut l = peer.lock();
        if l.conns.len() < self.lanes {
            l.conns.resize(self.lanes, None);
        }
        let i = i % self.lanes;
        if let Some(c) = &l.conns[i] {
            if c.is_usable() {
                return Ok(c.clone());
            }
        }
        let c = Conn::dial(
            addr,
            self.context_id,
            self.connect_timeout,
            self.on_lost.clone(),
        )?;
        l.conns[i] = Some(c.clone());
        Ok(c)
    }

    pub fn pin(&self, addr: SocketAddr) {
        self.peer(addr).lock().pins += 1;
    }

    pub fn unpin(&self, addr: SocketAddr) {
        let peer = self.peer(addr);
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
        if let Some(peer) = self.peers.lock().get(&addr).cloned() {
            for c in peer.lock().conns.iter().flatten() {
                c.close();
            }
        }
    }
}
