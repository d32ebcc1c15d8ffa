//! The TCP endpoint: turns operations into requests on the context's pooled
//! connections. Its target-side state (imm notifications, messages), which the server
//! threads fill, is [`EpCore`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::config::TcpConfig;
use super::conn::{Conn, Pending};
use super::context::TcpContext;
use super::staging;
use super::target::{EpCore, PeerRef, PendingSend};
use super::wire::{Header, Opcode, FLAG_PAYLOAD};
use crate::engine::Deadline;
use crate::error::{Error, Result, Status};
use crate::future::{bytes_of, observe, track, Future, OpState};
use crate::memory::{MemoryPool, RemotePool};
use crate::obs::{self, EndpointStats, OpKind};
use crate::transport::matching::PostedRecv;
use crate::transport::{auth, info};
use crate::transport::{Assignment, Endpoint};

/// Messages up to this size travel with their header; larger ones are pulled by the
/// receiver once a receive is posted (no unbounded buffering at the target).
const EAGER_MAX: u64 = 64 * 1024;

/// An endpoint over a [`TcpContext`]. Thread-safe: operations may be issued from any
/// number of threads.
pub struct TcpEndpoint {
    core: Arc<EpCore>,
    ctx: Arc<TcpContext>,
    remote: RemotePool,
    rr: AtomicUsize,
    next_msg: AtomicU64,
    obs: Arc<EndpointStats>,
}

impl TcpEndpoint {
    pub fn new(ctx: &Arc<TcpContext>, pool: Arc<MemoryPool>) -> Result<Arc<TcpEndpoint>> {
        let core = Arc::new(EpCore::new(
            ctx.targets().next_endpoint_id(),
            pool,
            Arc::downgrade(ctx.pool()),
        ));
        ctx.targets().add_endpoint(&core);
        Ok(Arc::new(TcpEndpoint {
            core,
            ctx: ctx.clone(),
            remote: RemotePool::default(),
            rr: AtomicUsize::new(0),
            next_msg: AtomicU64::new(1),
            obs: obs::register_endpoint("tcp"),
        }))
    }

    /// Creates an endpoint with its own context listening on `bind` (port 0:
    /// ephemeral) and a fresh memory pool.
    pub fn bind(bind: SocketAddr) -> Result<Arc<TcpEndpoint>> {
        let ctx = TcpContext::new(TcpConfig {
            bind,
            ..Default::default()
        })?;
        TcpEndpoint::new(&ctx, MemoryPool::new())
    }

    pub fn context(&self) -> &Arc<TcpContext> {
        &self.ctx
    }

    pub fn id(&self) -> u32 {
        self.core.id
    }

    fn ready(&self) -> Result<PeerRef> {
        if self.core.closed.load(Ordering::Acquire) {
            return Err(Error::new(Status::ShutDown, "endpoint is shut down"));
        }
        if self.core.peer_lost.load(Ordering::Acquire) {
            return Err(Error::new(
                Status::PeerDisconnected,
                "the peer of this endpoint is gone",
            ));
        }
        self.core
            .peer
            .read()
            .ok_or_else(|| Error::new(Status::NotConnected, "connect() this endpoint first"))
    }

    fn new_op(&self, parts: u32, timeout: Option<Duration>) -> Arc<OpState> {
        let cfg = &self.ctx.config().engine;
        let op = OpState::new(
            parts,
            Deadline::after(timeout.unwrap_or(cfg.default_timeout)),
            cfg.spin,
            None,
        );
        self.core.inflight.track(&op);
        op
    }

    /// Checks every assignment before anything is sent: `(local ptr, remote addr, key, len)`.
    fn resolve(&self, assignments: &[Assignment]) -> Result<Vec<(usize, u64, u64, u64)>> {
        assignments
            .iter()
            .map(|a| {
                let (_, ptr) =
                    self.core
                        .pool
                        .local_range_or_staged(a.local, a.local_offset, a.length)?;
                let (addr, key) = self
                    .remote
                    .remote_range(a.remote, a.remote_offset, a.length)?;
                Ok((ptr as usize, addr, key, a.length))
            })
            .collect()
    }

    fn lane(&self, peer: &PeerRef, i: usize) -> Result<Arc<Conn>> {
        let (c, redialled) = self.ctx.pool().lane_redialled(peer.pool_key(), i)?;
        if redialled {
            obs::retried(obs::Retry::TcpRedial);
            self.obs.retried(1);
        }
        Ok(c)
    }

    /// Read or write, split into chunks striped over the lanes.
    fn one_sided(
        &self,
        opcode: Opcode,
        assignments: &[Assignment],
        timeout: Option<Duration>,
    ) -> Result<Future> {
        let peer = self.ready()?;
        let ranges = self.resolve(assignments)?;
        if opcode != Opcode::Read {
            for &(ptr, _, _, len) in &ranges {
                check_source("write source", ptr, len as usize)?;
            }
        }
        let chunk = self.ctx.config().chunk_size.max(1) as u64;
        let parts: u64 = ranges.iter().map(|r| r.3.div_ceil(chunk)).sum();
        let parts =
            u32::try_from(parts).map_err(|_| Error::invalid("too many chunks in one operation"))?;
        let op = self.new_op(parts, timeout);
        op.set_nbytes(ranges.iter().map(|r| r.3).sum());
        for (ptr, addr, key, len) in ranges {
            let mut off = 0;
            while off < len {
                let n = chunk.min(len - off);
                let lane = self.rr.fetch_add(1, Ordering::Relaxed);
                let h = Header {
                    size: n,
                    addr: addr + off,
                    key,
                    endpoint: peer.endpoint,
                    ..Header::new(opcode)
                };
                let local = ptr + off as usize;
                match self.lane(&peer, lane) {
                    Ok(c) if opcode == Opcode::Read => c.request(
                        h,
                        (0, 0),
                        None,
                        Pending {
                            op: op.clone(),
                            sink: local,
                            expect: n,
                            then: None,
                        },
                    ),
                    Ok(c) => c.request(
                        h,
                        (local, n as usize),
                        Some(op.clone()),
                        Pending::status_only(&op),
                    ),
                    Err(e) => op.part_done(e.status(), Some(e.message())),
                }
                off += n;
            }
        }
        Ok(Future::new(op))
    }
}

/// `InvalidArgument` unless a frame may be written from `[ptr, ptr+len)`
/// ([`staging::readable`]): checked before anything is sent, so that a wrong pointer
/// fails its operation and the connection goes on.
fn check_source(what: &str, ptr: usize, len: usize) -> Result<()> {
    if staging::readable(ptr, len) {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "{what} [{ptr:#x}, +{len}) is not readable memory of this process (not mapped)"
    )))
}

impl Endpoint for TcpEndpoint {
    fn transport(&self) -> &'static str {
        "tcp"
    }

    fn endpoint_info(&self) -> Value {
        let mut f = Map::new();
        f.insert("host".into(), self.ctx.advertise_host().into());
        f.insert("port".into(), self.ctx.local_addr().port().into());
        f.insert("endpoint_id".into(), self.core.id.into());
        f.insert("context_id".into(), self.ctx.id().into());
        f.insert(
            auth::INFO_FIELD.into(),
            self.ctx.public_key().to_hex().into(),
        );
        info::envelope("tcp", self.core.pool.mr_info(), f)
    }

    fn connect(&self, peer_info: &Value) -> Result<()> {
        if self.core.closed.load(Ordering::Acquire) {
            return Err(Error::new(Status::ShutDown, "endpoint is shut down"));
        }
        let obj = info::check_envelope(peer_info, "tcp")?;
        let host = info::str_field(obj, "host")?;
        let port = u16::try_from(info::u64_field(obj, "port")?)
            .map_err(|_| info::bad("\"port\" out of range"))?;
        let endpoint = u32::try_from(info::u64_field(obj, "endpoint_id")?)
            .map_err(|_| info::bad("\"endpoint_id\" out of range"))?;
        let key = auth::PublicKey::from_info(obj)?;
        let addr = (host, port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| info::bad(format!("cannot resolve peer host {host:?}")))?;
        {
            let mut p = self.core.peer.write();
            if p.is_some() {
                return Err(Error::new(
                    Status::AlreadyConnected,
                    "endpoint is already connected",
                ));
            }
            info::register_peer_regions(&self.remote, obj)?;
            *p = Some(PeerRef {
                addr,
                key,
                endpoint,
            });
        }
        self.core.wake_waiters();
        let peer = (addr, key);
        self.ctx.pool().pin(peer);
        // Lane 0 opens now and stays open: its closing is how the peer's death is seen.
        if let Err(e) = self.ctx.pool().lane(peer, 0) {
            self.ctx.pool().unpin(peer);
            self.core.set_peer(None);
            return Err(e);
        }
        self.obs.set_peer_default(&info::peer_label(peer_info));
        Ok(())
    }

    fn obs(&self) -> Option<&Arc<EndpointStats>> {
        Some(&self.obs)
    }

    fn memory_pool(&self) -> &Arc<MemoryPool> {
        &self.core.pool
    }

    fn remote_pool(&self) -> &RemotePool {
        &self.remote
    }

    fn read(&self, assignments: &[Assignment], timeout: Option<Duration>) -> Result<Future> {
        observe(
            &self.obs,
            OpKind::Read,
            || bytes_of(assignments),
            || self.one_sided(Opcode::Read, assignments, timeout),
        )
    }

    fn write(&self, assignments: &[Assignment], timeout: Option<Duration>) -> Result<Future> {
        observe(
            &self.obs,
            OpKind::Write,
            || bytes_of(assignments),
            || self.one_sided(Opcode::Write, assignments, timeout),
        )
    }

    /// All frames go on lane 0, so the notification is ordered after the data and after
    /// every earlier notification and message of this endpoint.
    fn write_with_imm(
        &self,
        assignments: &[Assignment],
        imm: i32,
        timeout: Option<Duration>,
    ) -> Result<Future> {
        let peer = self.ready()?;
        let ranges: Vec<_> = self
            .resolve(assignments)?
            .into_iter()
            .filter(|r| r.3 > 0)
            .collect();
        let conn = self.lane(&peer, 0)?;
        let op = self.new_op(ranges.len().max(1) as u32, timeout);
        op.set_nbytes(ranges.iter().map(|r| r.3).sum());
        if ranges.is_empty() {
            let h = Header {
                imm,
                endpoint: peer.endpoint,
                ..Header::new(Opcode::Imm)
            };
            conn.request(h, (0, 0), None, Pending::status_only(&op));
        }
        let last = ranges.len().saturating_sub(1);
        for (i, (ptr, addr, key, len)) in ranges.into_iter().enumerate() {
            let opcode = if i == last {
                Opcode::WriteImm
            } else {
                Opcode::Write
            };
            let h = Header {
                size: len,
                addr,
                key,
                imm,
                endpoint: peer.endpoint,
                ..Header::new(opcode)
            };
            conn.request(
                h,
                (ptr, len as usize),
                Some(op.clone()),
                Pending::status_only(&op),
            );
        }
        let bytes = bytes_of(assignments);
        Ok(track(&self.obs, OpKind::WriteImm, bytes, Future::new(op)))
    }

    fn imm_recv(&self, timeout: Option<Duration>) -> Result<Future> {
        self.ready()?;
        let op = self.new_op(1, timeout);
        self.core.imm.post(op.clone());
        Ok(track(
            &self.obs,
            OpKind::ImmRecv,
            0,
            Future::for_imm_recv(op),
        ))
    }

    unsafe fn send(&self, ptr: *const u8, len: usize, timeout: Option<Duration>) -> Result<Future> {
        if ptr.is_null() && len > 0 {
            return Err(Error::new(Status::NullParameter, "send: null buffer"));
        }
        let peer = self.ready()?;
        check_source("send data", ptr as usize, len)?;
        let conn = self.lane(&peer, 0)?;
        let op = self.new_op(1, timeout);
        op.set_nbytes(len as u64);
        let msg_id = self.next_msg.fetch_add(1, Ordering::Relaxed);
        self.core.sends.lock().insert(
            msg_id,
            PendingSend {
                ptr: ptr as usize,
                len,
                op: op.clone(),
            },
        );
        let eager = len as u64 <= EAGER_MAX;
        let h = Header {
            size: len as u64,
            addr: msg_id,
            flags: if eager { FLAG_PAYLOAD } else { 0 },
            endpoint: peer.endpoint,
            ..Header::new(Opcode::Send)
        };
        let core = Arc::downgrade(&self.core);
        let then = Box::new(move |_| {
            if let Some(c) = core.upgrade() {
                c.sends.lock().remove(&msg_id);
            }
        });
        let payload = if eager { (ptr as usize, len) } else { (0, 0) };
        conn.request(
            h,
            payload,
            eager.then(|| op.clone()),
            Pending {
                then: Some(then),
                ..Pending::status_only(&op)
            },
        );
        Ok(track(&self.obs, OpKind::Send, len as u64, Future::new(op)))
    }

    unsafe fn recv(&self, ptr: *mut u8, len: usize, timeout: Option<Duration>) -> Result<Future> {
        if ptr.is_null() && len > 0 {
            return Err(Error::new(Status::NullParameter, "recv: null buffer"));
        }
        self.ready()?;
        let op = self.new_op(1, timeout);
        if let Some((r, e)) = self.core.msgs.post(PostedRecv {
            ptr: ptr as usize,
            cap: len,
            op: op.clone(),
        }) {
            self.core.deliver_early(r, e);
        }
        Ok(track(&self.obs, OpKind::Recv, 0, Future::new(op)))
    }

    fn cancel_all(&self) -> usize {
        self.core
            .inflight
            .fail_all(Status::Cancelled, "cancelled by cancel_all")
    }

    fn shutdown(&self) {
        if self.core.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.core
            .inflight
            .fail_all(Status::Cancelled, "endpoint shut down");
        // dropping an early message's ack tells its sender CANCELLED
        drop(self.core.msgs.drain_early());
        self.core.early_bytes.store(0, Ordering::Release);
        self.core.sends.lock().clear();
        if let Some(peer) = self.core.peer_key() {
            self.ctx.pool().unpin(peer);
        }
        self.core.wake_waiters();
        self.ctx.targets().remove_endpoint(self.core.id);
    }
}

impl Drop for TcpEndpoint {
    fn drop(&mut self) {
        self.shutdown();
    }
}
