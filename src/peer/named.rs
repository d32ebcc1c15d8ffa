//! Named I/O: operations that name memory regions (`"kv"`) instead of handles, resolved
//! per connection through the agent's pool, the endpoint's remote table and, for names
//! the endpoint does not know yet, the peer's published `mr:` keys; resolved names are
//! cached on the connection's endpoint.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::agent::{Inner, PeerAgent};
use super::links::{ConnState, Slot};
use crate::error::{Error, Result, Status};
use crate::future::Future;
use crate::transport::{Assignment, Endpoint};

/// One named transfer: `local[local_offset..]` ↔ the peer's `remote[remote_offset..]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedAssignment {
    pub local: String,
    pub remote: String,
    pub local_offset: u64,
    pub remote_offset: u64,
    pub length: u64,
}

impl NamedAssignment {
    /// The original's 4-tuple `(name, local_off, remote_off, len)`: the same region
    /// name on both sides.
    pub fn same(name: &str, local_offset: u64, remote_offset: u64, length: u64) -> Self {
        Self::pair(name, name, local_offset, remote_offset, length)
    }
    /// The 5-tuple `(local_name, remote_name, local_off, remote_off, len)`.
    pub fn pair(
        local: &str,
        remote: &str,
        local_offset: u64,
        remote_offset: u64,
        length: u64,
    ) -> Self {
        NamedAssignment {
            local: local.into(),
            remote: remote.into(),
            local_offset,
            remote_offset,
            length,
        }
    }
}

/// Resolved names kept per endpoint before the cache starts over.
const NAME_CACHE_MAX: usize = 4096;

impl PeerAgent {
    /// The connected endpoint towards `peer`, for raw-handle operations.
    pub fn endpoint(&self, peer: &str) -> Result<Arc<dyn Endpoint>> {
        self.inner.endpoint(peer)
    }

    /// Resolves named assignments to endpoint assignments, fetching remote regions the
    /// endpoint does not know yet from Redis.
    pub fn resolve(
        &self,
        peer: &str,
        assignments: &[NamedAssignment],
    ) -> Result<(Arc<dyn Endpoint>, Vec<Assignment>)> {
        let ep = self.inner.endpoint(peer)?;
        let v = self.inner.resolve(peer, &*ep, assignments)?;
        Ok((ep, v))
    }

    pub fn read(
        &self,
        peer: &str,
        assignments: &[NamedAssignment],
        timeout: Option<Duration>,
    ) -> Result<Future> {
        self.inner
            .with_resolved(peer, assignments, |ep, a| ep.read(a, timeout))
    }

    pub fn write(
        &self,
        peer: &str,
        assignments: &[NamedAssignment],
        timeout: Option<Duration>,
    ) -> Result<Future> {
        self.inner
            .with_resolved(peer, assignments, |ep, a| ep.write(a, timeout))
    }

    pub fn write_with_imm(
        &self,
        peer: &str,
        assignments: &[NamedAssignment],
        imm: i32,
        timeout: Option<Duration>,
    ) -> Result<Future> {
        self.inner.with_resolved(peer, assignments, |ep, a| {
            ep.write_with_imm(a, imm, timeout)
        })
    }

    pub fn imm_recv(&self, peer: &str, timeout: Option<Duration>) -> Result<Future> {
        let ep = self.inner.endpoint(peer)?;
        self.inner.watch(peer, &ep, ep.imm_recv(timeout))
    }

    /// # Safety
    /// As [`Endpoint::send`].
    pub unsafe fn send(
        &self,
        peer: &str,
        ptr: *const u8,
        len: usize,
        timeout: Option<Duration>,
    ) -> Result<Future> {
        let ep = self.inner.endpoint(peer)?;
        // SAFETY: the caller upholds Endpoint::send's contract for ptr/len.
        let r = unsafe { ep.send(ptr, len, timeout) };
        self.inner.watch(peer, &ep, r)
    }

    /// # Safety
    /// As [`Endpoint::recv`].
    pub unsafe fn recv(
        &self,
        peer: &str,
        ptr: *mut u8,
        len: usize,
        timeout: Option<Duration>,
    ) -> Result<Future> {
        let ep = self.inner.endpoint(peer)?;
        // SAFETY: the caller upholds Endpoint::recv's contract for ptr/len.
        let r = unsafe { ep.recv(ptr, len, timeout) };
        self.inner.watch(peer, &ep, r)
    }
}

impl Inner {
    /// The endpoint of the connection to `peer`, if connected.
    pub(super) fn endpoint(&self, peer: &str) -> Result<Arc<dyn Endpoint>> {
        self.check_live()?;
        let peers = self.peers.lock();
        let Some(slot) = peers.get(peer) else {
            return Err(Error::new(
                Status::NotConnected,
                format!("no connection to '{peer}': call connect_to first"),
            ));
        };
        match (&slot.state, &slot.ep) {
            (ConnState::Connected, Some(e)) => Ok(e.ep.clone()),
            (s, _) => Err(Error::new(
                if *s == ConnState::Disconnected {
                    Status::PeerDisconnected
                } else {
                    Status::NotConnected
                },
                format!(
                    "connection to '{peer}' is {}{}",
                    s.as_str(),
                    slot.error
                        .as_ref()
                        .map(|e| format!(" ({})", e.message()))
                        .unwrap_or_default()
                ),
            )),
        }
    }

    fn resolve(
        &self,
        peer: &str,
        ep: &dyn Endpoint,
        assignments: &[NamedAssignment],
    ) -> Result<Vec<Assignment>> {
        let mut out = Vec::with_capacity(assignments.len());
        for a in assignments {
            let local = self.pool.handle(&a.local).ok_or_else(|| {
                Error::new(
                    Status::UnknownHandle,
                    format!("no local memory region named {:?}", a.local),
                )
            })?;
            let remote = match ep.remote_pool().handle(&a.remote) {
                Some(h) => h,
                None => {
                    let info = self.get_mr_info(peer, &a.remote)?.ok_or_else(|| {
                        Error::new(
                            Status::UnknownHandle,
                            format!(
                                "peer '{peer}' has not published a memory region named {:?}",
                                a.remote
                            ),
                        )
                    })?;
                    ep.register_remote_memory_region(&a.remote, &info)?
                }
            };
            out.push(Assignment::new(
                local,
                remote,
                a.remote_offset,
                a.local_offset,
                a.length,
            ));
        }
        Ok(out)
    }

    /// Runs `op` on the endpoint towards `peer` with the resolved assignments, on the
    /// stack for up to 8 of them.
    fn with_resolved(
        &self,
        peer: &str,
        assignments: &[NamedAssignment],
        op: impl FnOnce(&dyn Endpoint, &[Assignment]) -> Result<Future>,
    ) -> Result<Future> {
        const STACK: usize = 8;
        if assignments.len() <= STACK {
            // fast path: the endpoint and every name from the connection's cache, under
            // one lock
            let mut buf = [Assignment::new(0, 0, 0, 0, 0); STACK];
            let hit = {
                let epoch = self.regions_epoch.load(Ordering::Acquire);
                let mut peers = self.peers.lock();
                match peers.get_mut(peer) {
                    Some(Slot {
                        state: ConnState::Connected,
                        ep: Some(e),
                        ..
                    }) => {
                        if e.names_epoch != epoch {
                            e.names.clear();
                            e.names_epoch = epoch;
                        }
                        let all = assignments.iter().zip(buf.iter_mut()).all(|(a, slot)| {
                            match e.names.get(&a.local).and_then(|m| m.get(&a.remote)) {
                                Some(&(l, r)) => {
                                    *slot = Assignment::new(
                                        l,
                                        r,
                                        a.remote_offset,
                                        a.local_offset,
                                        a.length,
                                    );
                                    true
                                }
                                None => false,
                            }
                        });
                        all.then(|| e.ep.clone())
                    }
                    _ => None,
                }
            };
            if let Some(ep) = hit {
                self.check_live()?;
                let r = op(&*ep, &buf[..assignments.len()]);
                return self.watch(peer, &ep, r);
            }
        }
        let epoch = self.regions_epoch.load(Ordering::Acquire);
        let ep = self.endpoint(peer)?;
        let v = self.resolve(peer, &*ep, assignments)?;
        // remember the names for this connection (if it is still the current one)
        {
            let mut peers = self.peers.lock();
            if let Some(e) = peers.get_mut(peer).and_then(|s| s.ep.as_mut()) {
                if Arc::ptr_eq(&e.ep, &ep) {
                    if e.names_epoch != epoch || e.names.len() >= NAME_CACHE_MAX {
                        e.names.clear();
                        e.names_epoch = epoch;
                    }
                    for (a, r) in assignments.iter().zip(&v) {
                        e.names
                            .entry(a.local.clone())
                            .or_default()
                            .insert(a.remote.clone(), (r.local, r.remote));
                    }
                }
            }
        }
        let r = op(&*ep, &v);
        self.watch(peer, &ep, r)
    }

    /// Passes an operation's result through; a synchronous `PeerDisconnected` marks the
    /// connection lost so the next `connect_to` re-dials.
    fn watch(&self, peer: &str, ep: &Arc<dyn Endpoint>, r: Result<Future>) -> Result<Future> {
        if let Err(e) = &r {
            if e.status() == Status::PeerDisconnected {
                self.mark_lost(peer, ep);
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_assignment_shapes() {
        let a = NamedAssignment::same("kv", 8, 16, 32);
        assert_eq!((a.local.as_str(), a.remote.as_str()), ("kv", "kv"));
        assert_eq!((a.local_offset, a.remote_offset, a.length), (8, 16, 32));
        let b = NamedAssignment::pair("l", "r", 1, 2, 3);
        assert_eq!((b.local.as_str(), b.remote.as_str()), ("l", "r"));
    }
}
