//! The agent's endpoints: one per peer and incarnation (endpoints connect once), made
//! over the transport the handshake agreed on. TCP endpoints share one context (one
//! listener) per agent; every endpoint shares the agent's memory pool.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;

use super::agent::Inner;
use super::negotiate::{Agreement, Transport};
use crate::error::{Error, Result, Status};
use crate::memory::{MrHandle, RemoteHandle};
use crate::transport::rdma::{RdmaEndpoint, RdmaEndpointConfig};
use crate::transport::shm::ShmEndpoint;
use crate::transport::tcp::{TcpContext, TcpEndpoint};
use crate::transport::Endpoint;

/// Resolved names of an endpoint, `local -> remote -> handles`.
pub(super) type NameCache = FxHashMap<String, FxHashMap<String, (MrHandle, RemoteHandle)>>;

/// This agent's endpoint towards one peer, in one incarnation.
pub(super) struct LocalEp {
    pub nonce: u64,
    pub transport: Transport,
    /// RDMA data QPs (1 on other transports).
    pub num_qp: usize,
    pub ep: Arc<dyn Endpoint>,
    /// The peer endpoint `(instance, nonce)` this one is connecting or connected to.
    pub bound: Option<(u64, u64)>,
    /// Resolved names of this endpoint, valid while the agent's region epoch is
    /// `names_epoch`; dies with the endpoint.
    pub names: NameCache,
    pub names_epoch: u64,
}

impl Inner {
    fn tcp_context(&self) -> Result<Arc<TcpContext>> {
        let mut g = self.tcp.lock();
        if let Some(c) = &*g {
            return Ok(c.clone());
        }
        let mut cfg = self.opts.tcp.clone();
        if cfg.advertise_host.is_none() {
            cfg.advertise_host = Some(self.address.clone());
        }
        let c = TcpContext::new(cfg)?;
        *g = Some(c.clone());
        Ok(c)
    }

    /// A new endpoint for the agreement, with the next nonce.
    pub(super) fn new_endpoint(&self, peer: &str, a: Agreement) -> Result<LocalEp> {
        let mut num_qp = 1;
        let ep: Arc<dyn Endpoint> = match a.transport {
            Transport::Tcp => TcpEndpoint::new(&self.tcp_context()?, self.pool.clone())?,
            Transport::Shm => Arc::new(ShmEndpoint::new(self.pool.clone(), self.opts.shm.clone())?),
            Transport::Rdma => {
                let nic = self.nic.as_ref().ok_or_else(|| {
                    Error::new(Status::RdmaUnavailable, "this agent has no RDMA NIC port")
                })?;
                num_qp = a.qp_num;
                let cfg = RdmaEndpointConfig {
                    num_qp,
                    ..Default::default()
                };
                RdmaEndpoint::new(&nic.ctx, self.pool.clone(), cfg)?
            }
        };
        if let Some(s) = ep.obs() {
            s.set_peer(peer);
        }
        Ok(LocalEp {
            nonce: self.next_nonce.fetch_add(1, Ordering::Relaxed),
            transport: a.transport,
            num_qp,
            ep,
            bound: None,
            names: NameCache::default(),
            names_epoch: 0,
        })
    }
}

/// Whether an endpoint's peer is still there: an empty read fails synchronously with
/// `PeerDisconnected`/`ShutDown` once the transport saw the peer go.
pub(super) fn ep_alive(ep: &dyn Endpoint) -> bool {
    match ep.read(&[], Some(Duration::from_millis(100))) {
        Err(e) => !matches!(e.status(), Status::PeerDisconnected | Status::ShutDown),
        Ok(_) => true,
    }
}
