//! The Endpoint contract shared by every transport, and the pieces transports share:
//! the `endpoint_info` envelope, connection authentication (`auth`), the count of a
//! connection's refused accesses (`strikes`) and the receive-side matching queues.

pub mod auth;
pub mod info;
pub mod matching;
mod peer_view;
pub mod rdma;
pub mod shm;
pub mod strikes;
pub mod tcp;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::error::Result;
use crate::future::Future;
use crate::memory::{MemoryPool, MrHandle, RemoteHandle, RemotePool};
use crate::obs::EndpointStats;

pub use peer_view::PeerView;

/// One transfer: the original DLSlime tuple order `(local, remote, remote_offset,
/// local_offset, length)`. Read copies `remote[remote_offset..]` into
/// `local[local_offset..]`; write copies the other way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub local: MrHandle,
    pub remote: RemoteHandle,
    pub remote_offset: u64,
    pub local_offset: u64,
    pub length: u64,
}

impl Assignment {
    pub fn new(
        local: MrHandle,
        remote: RemoteHandle,
        remote_offset: u64,
        local_offset: u64,
        length: u64,
    ) -> Self {
        Assignment {
            local,
            remote,
            remote_offset,
            local_offset,
            length,
        }
    }
}

impl From<(MrHandle, RemoteHandle, u64, u64, u64)> for Assignment {
    fn from(t: (MrHandle, RemoteHandle, u64, u64, u64)) -> Self {
        Assignment::new(t.0, t.1, t.2, t.3, t.4)
    }
}

/// What every transport implements. Operations return a [`Future`]; invalid local input
/// (unknown handle, out-of-range offset) is refused synchronously and touches no memory.
/// `timeout = None` uses the endpoint's default deadline (30 s unless configured).
pub trait Endpoint: Send + Sync {
    /// `"tcp"`, `"shm"` or `"rdma"`.
    fn transport(&self) -> &'static str;

    /// The JSON document a peer passes to [`Endpoint::connect`].
    fn endpoint_info(&self) -> Value;

    /// Connects to the peer described by its `endpoint_info`; registers the peer's
    /// published regions (sorted by handle, so handles match when this side had none).
    fn connect(&self, peer_info: &Value) -> Result<()>;

    fn memory_pool(&self) -> &Arc<MemoryPool>;
    fn remote_pool(&self) -> &RemotePool;

    fn read(&self, assignments: &[Assignment], timeout: Option<Duration>) -> Result<Future>;
    fn write(&self, assignments: &[Assignment], timeout: Option<Duration>) -> Result<Future>;
    /// Like `write`, then delivers exactly one notification carrying `imm` to the peer's
    /// `imm_recv`, after the data is visible there.
    fn write_with_imm(
        &self,
        assignments: &[Assignment],
        imm: i32,
        timeout: Option<Duration>,
    ) -> Result<Future>;
    /// Completes with the next immediate-data notification (queued if it came first).
    fn imm_recv(&self, timeout: Option<Duration>) -> Result<Future>;

    /// Sends `len` bytes to the peer's next posted `recv`.
    ///
    /// # Safety
    /// `[ptr, ptr+len)` must stay valid and unmodified until the future completes.
    unsafe fn send(&self, ptr: *const u8, len: usize, timeout: Option<Duration>) -> Result<Future>;

    /// Posts a receive buffer; messages match posted receives in FIFO order.
    ///
    /// # Safety
    /// `[ptr, ptr+len)` must stay valid and not be read or written by the caller until
    /// the future completes (a failed or timed-out wait also ends the library's access).
    unsafe fn recv(&self, ptr: *mut u8, len: usize, timeout: Option<Duration>) -> Result<Future>;

    /// Fails every pending operation with `Cancelled`; completed ones keep their
    /// outcome. Returns how many were cancelled. The endpoint stays usable.
    fn cancel_all(&self) -> usize;

    /// Cancels pending operations and closes the endpoint. Idempotent.
    fn shutdown(&self);

    /// This endpoint's counters ([`crate::obs`]); `None` for a transport without them.
    fn obs(&self) -> Option<&Arc<EndpointStats>> {
        None
    }

    /// The peer's bytes `[addr, addr+len)`, in a region it published with `key`, as memory
    /// of this process: `Some` when the transport maps the peer's memory (shared memory,
    /// for the peer's shared allocations) and the peer's own table permits the range with
    /// that key; `None` otherwise (move the bytes with `read`/`write`, which the target
    /// checks). Lets a service read a peer's payload where it lies.
    fn peer_view(&self, addr: u64, len: u64, key: u64) -> Option<PeerView> {
        let _ = (addr, len, key);
        None
    }

    /// Registers a local region in this endpoint's pool.
    ///
    /// # Safety
    /// See [`MemoryPool::register`].
    unsafe fn register_memory_region(
        &self,
        name: &str,
        ptr: *mut u8,
        len: usize,
    ) -> Result<MrHandle> {
        // SAFETY: the caller keeps the memory valid as `MemoryPool::register` requires
        // (this function's contract).
        unsafe { self.memory_pool().register(Some(name), ptr, len) }
    }

    /// Registers a peer's region from its `{addr, length, rkey}` info.
    fn register_remote_memory_region(&self, name: &str, info: &Value) -> Result<RemoteHandle> {
        self.remote_pool().register_json(name, info)
    }
}
