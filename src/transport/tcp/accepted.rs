//! The connections a context accepted: bounded in number (in all and per remote IP),
//! each with the key it authenticated as and when it last carried a frame, so that
//! connections nobody uses can be closed (strangers, silent or idle ones) and a flood
//! cannot crowd out the connections of connected peers.

use std::collections::HashMap;
use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::transport::auth::PublicKey;

/// What the serving thread tells the registry about its connection.
#[derive(Default)]
pub struct Activity {
    /// Milliseconds since the registry's epoch at the last frame (or the accept).
    last_ms: AtomicU64,
    /// Set once the handshake authenticated the connection.
    key: OnceLock<PublicKey>,
}

struct Entry {
    stream: TcpStream,
    ip: IpAddr,
    accepted_ms: u64,
    activity: Arc<Activity>,
}

pub struct Accepted {
    conns: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
    epoch: Instant,
    max_total: usize,
    max_per_ip: usize,
}

/// A connection's place in the registry; dropping it (the serving thread ends) frees it.
pub struct Ticket {
    id: u64,
    reg: Weak<Accepted>,
    activity: Arc<Activity>,
    epoch: Instant,
}

impl Ticket {
    pub fn authenticated(&self, key: PublicKey) {
        let _ = self.activity.key.set(key);
        self.touch();
    }

    /// A frame arrived.
    pub fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.activity.last_ms.store(ms, Ordering::Relaxed);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(r) = self.reg.upgrade() {
            r.conns.lock().remove(&self.id);
        }
    }
}

impl Accepted {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Accepted> {
        Arc::new(Accepted {
            conns: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            epoch: Instant::now(),
            max_total: max_total.max(1),
            max_per_ip: max_per_ip.max(1),
        })
    }

    /// Admits a new connection. At a cap, the oldest connection that serves nobody
    /// (still in its handshake, or authenticated as a key no endpoint is connected to)
    /// is closed to make room; `None` (refuse the newcomer) only when every connection
    /// in the way is in use. `in_use` says whether a key is a connected endpoint's peer.
    pub fn admit(
        self: &Arc<Self>,
        stream: &TcpStream,
        in_use: impl Fn(&PublicKey) -> bool,
    ) -> Option<Ticket> {
        let ip = stream.peer_addr().ok()?.ip();
        let clone = stream.try_clone().ok()?;
        let mut conns = self.conns.lock();
        loop {
            let same_ip = conns.values().filter(|e| e.ip == ip).count();
            let full_ip = same_ip >= self.max_per_ip;
            if conns.len() < self.max_total && !full_ip {
                break;
            }
            let victim = conns
                .iter()
                .filter(|(_, e)| !full_ip || e.ip == ip)
                .filter(|(_, e)| e.activity.key.get().is_none_or(|k| !in_use(k)))
                .min_by_key(|(_, e)| e.accepted_ms)
                .map(|(id, _)| *id)?;
            if let Some(e) = conns.remove(&victim) {
                let _ = e.stream.shutdown(Shutdown::Both);
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64;
        let activity = Arc::new(Activity::default());
        activity.last_ms.store(now, Ordering::Relaxed);
        conns.insert(
            id,
            Entry {
                stream: clone,
                ip,
                accepted_ms: now,
                activity: activity.clone(),
            },
        );
        Some(Ticket {
            id,
            reg: Arc::downgrade(self),
            activity,
            epoch: self.epoch,
        })
    }

    /// Closes authenticated connections that carried no frame for `idle` and whose key
    /// no endpoint is connected to. (Connections of connected peers are the peer's to
    /// close: its lane 0 stays open on purpose, as its liveness signal.)
    pub fn sweep_idle(&self, idle: Duration, in_use: impl Fn(&PublicKey) -> bool) {
        let now = self.epoch.elapsed().as_millis() as u64;
        let idle = idle.as_millis() as u64;
        let mut conns = self.conns.lock();
        conns.retain(|_, e| {
            let last = e.activity.last_ms.load(Ordering::Relaxed);
            let stale = now.saturating_sub(last) >= idle;
            let unused = e.activity.key.get().is_some_and(|k| !in_use(k));
            if stale && unused {
                let _ = e.stream.shutdown(Shutdown::Both);
                return false;
            }
            true
        });
    }

    pub fn close_all(&self) {
        for (_, e) in self.conns.lock().drain() {
            let _ = e.stream.shutdown(Shutdown::Both);
        }
    }

    pub fn len(&self) -> usize {
        self.conns.lock().len()
    }
}
