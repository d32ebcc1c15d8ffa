//! The endpoint's state, shared by the user's threads, the progress thread and inline
//! waiters (`Inner`), and the operation state it hands out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use super::config::ShmConfig;
use super::conn::Conn;
use super::handshake;
use super::reassembly::Assembly;
use super::recv::Early;
use super::stats::ShmStats;
use crate::engine::{Deadline, ProgressMode};
use crate::error::{Error, Result, Status};
use crate::future::{Driver, OpPool, OpState};
use crate::memory::{MemoryPool, RemotePool};
use crate::transport::auth::Identity;
use crate::transport::matching::{ImmQueue, MsgMatcher};

/// The message of every failure the peer's death causes.
pub(super) const PEER_GONE: &str = "shared-memory peer disconnected";

pub(super) struct Inner {
    pub pool: Arc<MemoryPool>,
    pub remote: RemotePool,
    pub cfg: ShmConfig,
    pub host_id: String,
    /// Path of our handshake socket, published in `endpoint_info`.
    pub sock_name: String,
    /// The handshake listener, until the peer has connected (dropping it removes the
    /// socket file).
    pub listener: Mutex<Option<handshake::Listener>>,
    /// Our key pair: the handshake proves we hold it (`auth_key` in `endpoint_info`).
    pub identity: Identity,
    /// Serialises `connect` calls.
    pub connecting: Mutex<()>,
    pub conn: OnceLock<Conn>,
    /// Our operations: recycled states that are also the in-flight table.
    pub ops: OpPool,
    pub imm: ImmQueue,
    pub msgs: MsgMatcher<Early>,
    /// The window charge of the messages in `msgs` ([`super::window`]).
    pub early_held: AtomicU64,
    /// The charge of messages matched on arrival not yet handed back to the sender
    /// (`release_matched`; written under the consumer's lock).
    pub matched_unreleased: AtomicU64,
    /// Staged messages being reassembled, by message id.
    pub assemblies: Mutex<HashMap<u64, Assembly>>,
    pub stats: ShmStats,
    pub closed: AtomicBool,
    pub dead: AtomicBool,
    /// The background progress thread.
    pub thread: Mutex<Option<JoinHandle<()>>>,
    /// Our position in the peer's ring, mirrored from the consumer (which is behind a
    /// lock) so that a poll can see there is nothing new without taking it.
    pub in_tail: AtomicU64,
}

impl Inner {
    pub fn new(pool: Arc<MemoryPool>, cfg: ShmConfig) -> Result<Arc<Inner>> {
        let listener = handshake::listen()?;
        let sock_name = listener.path().to_string();
        let host_id = cfg
            .host_id_override
            .clone()
            .unwrap_or_else(crate::host::identity);
        Ok(Arc::new_cyclic(|me: &Weak<Inner>| Inner {
            // In inline mode waiters drive this endpoint's progress.
            ops: OpPool::new(
                cfg.engine.spin,
                (cfg.engine.progress == ProgressMode::Inline)
                    .then(|| me.clone() as Weak<dyn Driver>),
            ),
            pool,
            remote: RemotePool::default(),
            cfg,
            host_id,
            sock_name,
            listener: Mutex::new(Some(listener)),
            identity: Identity::generate(),
            connecting: Mutex::new(()),
            conn: OnceLock::new(),
            imm: ImmQueue::default(),
            msgs: MsgMatcher::default(),
            early_held: AtomicU64::new(0),
            matched_unreleased: AtomicU64::new(0),
            assemblies: Mutex::new(HashMap::new()),
            stats: ShmStats::default(),
            closed: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            thread: Mutex::new(None),
            in_tail: AtomicU64::new(0),
        }))
    }

    /// The connection, if the endpoint is connected and neither shut down nor orphaned.
    pub fn conn(&self) -> Result<&Conn> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::new(Status::ShutDown, "endpoint is shut down"));
        }
        if self.dead.load(Ordering::Acquire) {
            return Err(Error::new(Status::PeerDisconnected, PEER_GONE));
        }
        self.conn
            .get()
            .ok_or_else(|| Error::new(Status::NotConnected, "endpoint is not connected"))
    }

    /// A tracked operation of `parts` parts; in inline mode (the default) its waiters
    /// drive progress.
    pub fn new_op(&self, parts: u32, timeout: Option<Duration>) -> Arc<OpState> {
        let deadline = Deadline::after(timeout.unwrap_or(self.cfg.engine.default_timeout));
        self.ops.acquire(parts, deadline)
    }
}
