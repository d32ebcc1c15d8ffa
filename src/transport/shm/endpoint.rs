//! The shared-memory endpoint: the user's handle and its `Endpoint` implementation. The
//! work is done on [`super::state::Inner`], shared with the progress thread.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::config::ShmConfig;
use super::progress::PushMode;
use super::ring::Entry;
use super::state::Inner;
use super::stats::ShmStats;
use crate::engine::Deadline;
use crate::error::{Error, Result, Status};
use crate::future::{bytes_of, observe, Future};
use crate::memory::{MemoryPool, RemotePool};
use crate::obs::{self, EndpointStats, OpKind};
use crate::transport::matching::PostedRecv;
use crate::transport::{auth, info};
use crate::transport::{Assignment, Endpoint, PeerView};

/// A shared-memory endpoint. Create with [`ShmEndpoint::new`], publish
/// [`Endpoint::endpoint_info`], and call [`Endpoint::connect`] on both sides.
pub struct ShmEndpoint {
    inner: Arc<Inner>,
    obs: Arc<EndpointStats>,
}

impl ShmEndpoint {
    pub fn new(pool: Arc<MemoryPool>, cfg: ShmConfig) -> Result<ShmEndpoint> {
        Ok(ShmEndpoint {
            inner: Inner::new(pool, cfg)?,
            obs: obs::register_endpoint("shm"),
        })
    }

    pub fn stats(&self) -> &ShmStats {
        &self.inner.stats
    }

    /// Whether this connection moves non-shared memory through bounce slots.
    pub fn is_staged(&self) -> bool {
        self.inner.conn.get().is_some_and(|c| c.staged)
    }

    /// Test hook: writes `e` as the next ring entry without sealing it, so the peer's
    /// validation can be exercised with garbage.
    pub fn push_raw_entry_for_test(&self, e: &Entry) -> Result<()> {
        let c = self.inner.conn()?;
        let ok = c.prod.lock().0.push_raw_for_test(e);
        c.out_bell.ring();
        if ok {
            Ok(())
        } else {
            Err(Error::new(Status::ResourceExhausted, "ring full"))
        }
    }

    /// Test hook: a correctly sealed entry (for entries that are well formed but lie).
    pub fn push_entry_for_test(&self, e: &Entry) -> Result<()> {
        let c = self.inner.conn()?;
        self.inner.push(
            c,
            e,
            PushMode::Wait(Deadline::after(Duration::from_secs(5))),
        )
    }
}

impl Endpoint for ShmEndpoint {
    fn transport(&self) -> &'static str {
        "shm"
    }

    fn endpoint_info(&self) -> Value {
        let i = &self.inner;
        let mut m = Map::new();
        m.insert("socket".into(), i.sock_name.clone().into());
        m.insert("host".into(), i.host_id.clone().into());
        m.insert("pid".into(), std::process::id().into());
        m.insert(auth::INFO_FIELD.into(), i.identity.public().to_hex().into());
        info::envelope("shm", i.pool.mr_info(), m)
    }

    fn connect(&self, peer_info: &Value) -> Result<()> {
        self.inner.connect(peer_info)?;
        self.obs.set_peer_default(&info::peer_label(peer_info));
        Ok(())
    }

    fn obs(&self) -> Option<&Arc<EndpointStats>> {
        Some(&self.obs)
    }

    fn memory_pool(&self) -> &Arc<MemoryPool> {
        &self.inner.pool
    }

    fn remote_pool(&self) -> &RemotePool {
        &self.inner.remote
    }

    fn read(&self, assignments: &[Assignment], timeout: Option<Duration>) -> Result<Future> {
        observe(
            &self.obs,
            OpKind::Read,
            || bytes_of(assignments),
            || self.inner.rw(assignments, false, None, timeout),
        )
    }

    fn write(&self, assignments: &[Assignment], timeout: Option<Duration>) -> Result<Future> {
        observe(
            &self.obs,
            OpKind::Write,
            || bytes_of(assignments),
            || self.inner.rw(assignments, true, None, timeout),
        )
    }

    fn write_with_imm(
        &self,
        assignments: &[Assignment],
        imm: i32,
        timeout: Option<Duration>,
    ) -> Result<Future> {
        observe(
            &self.obs,
            OpKind::WriteImm,
            || bytes_of(assignments),
            || self.inner.rw(assignments, true, Some(imm), timeout),
        )
    }

    fn peer_view(&self, addr: u64, len: u64, key: u64) -> Option<PeerView> {
        self.inner.peer_view(addr, len, key)
    }

    fn imm_recv(&self, timeout: Option<Duration>) -> Result<Future> {
        observe(
            &self.obs,
            OpKind::ImmRecv,
            || 0,
            || {
                self.inner.conn()?;
                let op = self.inner.new_op(1, timeout);
                self.inner.imm.post(op.clone());
                Ok(Future::for_imm_recv(op))
            },
        )
    }

    unsafe fn send(&self, ptr: *const u8, len: usize, timeout: Option<Duration>) -> Result<Future> {
        // SAFETY: the caller's promise on [ptr, ptr+len), passed on unchanged.
        observe(
            &self.obs,
            OpKind::Send,
            || len as u64,
            || unsafe { self.inner.send(ptr, len, timeout) },
        )
    }

    unsafe fn recv(&self, ptr: *mut u8, len: usize, timeout: Option<Duration>) -> Result<Future> {
        observe(
            &self.obs,
            OpKind::Recv,
            || 0,
            || {
                let i = &self.inner;
                let c = i.conn()?;
                if ptr.is_null() && len > 0 {
                    return Err(Error::new(Status::NullParameter, "recv: null buffer"));
                }
                let op = i.new_op(1, timeout);
                let r = PostedRecv {
                    ptr: ptr as usize,
                    cap: len,
                    op: op.clone(),
                };
                i.post_recv(c, r);
                Ok(Future::new(op))
            },
        )
    }

    fn cancel_all(&self) -> usize {
        self.inner
            .ops
            .fail_all(Status::Cancelled, "cancelled by cancel_all")
    }

    fn shutdown(&self) {
        self.inner.shutdown();
    }
}

impl Drop for ShmEndpoint {
    fn drop(&mut self) {
        self.inner.shutdown();
    }
}
