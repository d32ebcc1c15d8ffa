//! PeerAgent: discovery, connection and named transfers through NanoCtrl and Redis.
//!
//! An agent registers with NanoCtrl (`/start_peer_agent`), publishes its resource record
//! and memory regions in Redis, and connects to peers through the original's stream
//! mailbox: `connect_peer` (written by NanoCtrl on `/v1/desired_topology`) and
//! `qp_ready` (written by agents, carrying `endpoint_info` as `qp_info` and a
//! `conn_meta`). See `docs/peer-agent.md` for the protocol, including what this
//! implementation adds to `conn_meta` (instance and endpoint nonces) to fix the
//! original's races.
//!
//! Threads: one control thread per agent multiplexes the stream mailbox (XREAD BLOCK),
//! the cleanup inbox (RPOP) and the heartbeat; `endpoint.connect` runs on a short-lived
//! worker per attempt, because a shared-memory connect blocks until the peer connects
//! too and must not stall the mailbox.

mod control;
pub mod http;
pub mod store;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex};
use serde_json::{json, Value};

use crate::error::{Error, Result, Status};
use crate::future::Future;
use crate::memory::{MemoryPool, MrHandle};
use crate::transport::shm::{ShmConfig, ShmEndpoint};
use crate::transport::tcp::{TcpConfig, TcpContext, TcpEndpoint};
use crate::transport::{Assignment, Endpoint};
use crate::{info_log, warn_log};

use http::Http;
use store::{Keys, Store};

/// A transport a connection runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Shm,
    Tcp,
    Rdma,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Shm => "shm",
            Transport::Tcp => "tcp",
            Transport::Rdma => "rdma",
        }
    }
    fn parse(s: &str) -> Option<Transport> {
        match s {
            "shm" => Some(Transport::Shm),
            "tcp" => Some(Transport::Tcp),
            "rdma" => Some(Transport::Rdma),
            _ => None,
        }
    }
}

/// What `connect_to` asked for: `Auto` picks shared memory on the same host, RDMA when
/// both sides have a usable NIC (never, in this build), TCP otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportRequest {
    Auto,
    Explicit(Transport),
}

impl TransportRequest {
    /// `"auto"`, `"shm"`, `"tcp"` or `"rdma"`; `"rdma"` is refused with `Unsupported`
    /// because this build has no RDMA transport.
    pub fn parse(s: &str) -> Result<TransportRequest> {
        match s {
            "auto" | "" => Ok(TransportRequest::Auto),
            "rdma" => Err(Error::new(
                Status::Unsupported,
                "transport \"rdma\" is not available: this build of dlslime has no RDMA transport; use \"auto\", \"shm\" or \"tcp\"",
            )),
            other => Transport::parse(other)
                .map(TransportRequest::Explicit)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "unknown transport {other:?}: want \"auto\", \"shm\", \"tcp\" or \"rdma\""
                    ))
                }),
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            TransportRequest::Auto => "auto",
            TransportRequest::Explicit(t) => t.as_str(),
        }
    }
    fn from_wire(s: &str) -> TransportRequest {
        match Transport::parse(s) {
            Some(t) => TransportRequest::Explicit(t),
            None => TransportRequest::Auto,
        }
    }
}

/// The transport both sides settle on, computed identically by each side from the two
/// requests and host identities: an explicit request wins over `auto`; two different
/// explicit requests are an error; `auto` on both sides is shared memory on the same
/// host, TCP otherwise.
pub fn agree_transport(
    mine: TransportRequest,
    theirs: TransportRequest,
    my_host: &str,
    their_host: &str,
) -> Result<Transport> {
    use TransportRequest::*;
    let t = match (mine, theirs) {
        (Explicit(a), Explicit(b)) if a != b => {
            return Err(Error::new(
                Status::Unsupported,
                format!(
                    "transport mismatch: this side asked for {:?}, the peer for {:?}",
                    a.as_str(),
                    b.as_str()
                ),
            ))
        }
        (Explicit(a), _) | (_, Explicit(a)) => a,
        (Auto, Auto) if my_host == their_host => Transport::Shm,
        (Auto, Auto) => Transport::Tcp,
    };
    if t == Transport::Rdma {
        return Err(Error::new(
            Status::Unsupported,
            "the peer asked for RDMA, which this build of dlslime does not have",
        ));
    }
    if t == Transport::Shm && my_host != their_host {
        return Err(Error::new(
            Status::Unsupported,
            format!("shared memory was requested but the peer is on another host ({their_host:?}, this host {my_host:?})"),
        ));
    }
    Ok(t)
}

/// Where a connection to a peer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// Known peer, nothing requested.
    Idle,
    /// Handshake in progress.
    Connecting,
    Connected,
    /// Gave up (transport mismatch, retries exhausted); `wait` returns the error.
    Failed,
    /// Was connected; the peer left, died or restarted. `connect_to` again re-dials.
    Disconnected,
}

impl ConnState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::Idle => "idle",
            ConnState::Connecting => "connecting",
            ConnState::Connected => "connected",
            ConnState::Failed => "failed",
            ConnState::Disconnected => "disconnected",
        }
    }
}

/// Knobs of an agent.
#[derive(Clone, Debug)]
pub struct PeerAgentOptions {
    /// Heartbeat period (NanoCtrl's TTL is 60 s; the original beats every 15 s).
    pub heartbeat_interval: Duration,
    /// Registration attempts on connection errors / 5xx, with doubling backoff.
    pub register_attempts: u32,
    pub register_backoff: Duration,
    /// Redis URL to use instead of the address NanoCtrl hands out.
    pub redis_url: Option<String>,
    /// Host peers reach this agent's TCP listener at (default: the local address of the
    /// route to NanoCtrl).
    pub advertise_host: Option<String>,
    /// Knobs of the agent's TCP context (bind, lanes, chunk size, engine).
    pub tcp: TcpConfig,
    /// Knobs of the agent's shared-memory endpoints.
    pub shm: ShmConfig,
    /// Connect attempts per handshake before the connection is marked failed.
    pub connect_attempts: u32,
    /// Deadline of each HTTP call to NanoCtrl.
    pub http_timeout: Duration,
    /// How long the control thread blocks in XREAD (also the inbox polling period).
    pub poll_interval: Duration,
}

impl Default for PeerAgentOptions {
    fn default() -> Self {
        PeerAgentOptions {
            heartbeat_interval: Duration::from_secs(15),
            register_attempts: 5,
            register_backoff: Duration::from_secs(1),
            redis_url: None,
            advertise_host: None,
            tcp: TcpConfig::default(),
            shm: ShmConfig::default(),
            connect_attempts: 5,
            http_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(50),
        }
    }
}

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

/// Counters, for tests and operators.
#[derive(Default, Debug)]
pub struct AgentStats {
    /// Stream messages that were malformed (logged and skipped).
    pub malformed_messages: AtomicU64,
    /// Stream messages ignored as stale (another incarnation, an older endpoint).
    pub stale_messages: AtomicU64,
    pub qp_ready_sent: AtomicU64,
    pub cleanup_notices: AtomicU64,
    /// Registrations after the first (heartbeat said not found).
    pub reregistrations: AtomicU64,
    pub connect_failures: AtomicU64,
}

/// This agent's endpoint towards one peer, in one incarnation (endpoints connect once).
struct LocalEp {
    nonce: u64,
    transport: Transport,
    ep: Arc<dyn Endpoint>,
    /// The peer endpoint `(instance, nonce)` this one is connecting or connected to.
    bound: Option<(u64, u64)>,
    /// Resolved names of this endpoint, `local -> remote -> handles`, valid while the
    /// agent's region epoch is `names_epoch`; dies with the endpoint.
    names: FxMap<FxMap<(MrHandle, crate::memory::RemoteHandle)>>,
    names_epoch: u64,
}

/// FxHash (rustc's hasher): names and aliases are short, and this is on the path of
/// every named operation.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().unwrap());
            h = (h.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            h = (h.rotate_left(5) ^ b as u64).wrapping_mul(K);
        }
        self.0 = h;
    }
    fn write_u8(&mut self, i: u8) {
        self.write(&[i]);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<V> = HashMap<String, V, std::hash::BuildHasherDefault<FxHasher>>;

/// The freshest `qp_ready` seen from a peer.
#[derive(Clone)]
struct PeerView {
    instance: u64,
    nonce: u64,
    host_id: String,
    request: TransportRequest,
    transport: Option<Transport>,
    info: Value,
}

struct Slot {
    request: TransportRequest,
    /// `connect_to` asked for a connection that is not established yet.
    pending: bool,
    ep: Option<LocalEp>,
    peer: Option<PeerView>,
    /// Highest peer instance seen; messages from older ones are stale.
    known_instance: u64,
    state: ConnState,
    error: Option<Error>,
    attempts: u32,
    retry_at: Option<Instant>,
    /// `(my nonce, peer instance, peer nonce)` pairs a qp_ready was sent for.
    sent: HashSet<(u64, u64, u64)>,
    connected_transport: Option<Transport>,
    /// Stream ids of the qp_ready messages this agent wrote to the peer's stream; the
    /// ones a never-registered peer did not consume are removed at shutdown.
    outbox: Vec<String>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            request: TransportRequest::Auto,
            pending: false,
            ep: None,
            peer: None,
            known_instance: 0,
            state: ConnState::Idle,
            error: None,
            attempts: 0,
            retry_at: None,
            sent: HashSet::new(),
            connected_transport: None,
            outbox: Vec::new(),
        }
    }
}

/// A qp_ready to write: `(peer, stream fields, sent-key)`.
type PendingSend = (String, Vec<(String, String)>, (u64, u64, u64));

/// Deferred side effects of a state change, run after the peers lock is released.
#[derive(Default)]
struct Work {
    dead: Vec<Arc<dyn Endpoint>>,
    sends: Vec<PendingSend>,
    /// `(peer, my nonce, endpoint, peer info)`
    connects: Vec<(String, u64, Arc<dyn Endpoint>, Value)>,
}

#[derive(Clone)]
struct RegionRec {
    handle: MrHandle,
    addr: u64,
    length: u64,
}

struct Inner {
    alias: String,
    scope: Option<String>,
    keys: Keys,
    http: Http,
    opts: PeerAgentOptions,
    instance: u64,
    host_id: String,
    address: String,
    store: Store,
    pool: Arc<MemoryPool>,
    tcp: Mutex<Option<Arc<TcpContext>>>,
    peers: Mutex<FxMap<Slot>>,
    /// Bumped by every local region (un)registration: invalidates resolved names.
    regions_epoch: AtomicU64,
    cv: Condvar,
    regions: Mutex<BTreeMap<String, RegionRec>>,
    desired: Mutex<BTreeSet<String>>,
    next_nonce: AtomicU64,
    shutdown: AtomicBool,
    stats: AgentStats,
}

/// A PeerAgent. Thread-safe; dropping it shuts it down.
pub struct PeerAgent {
    inner: Arc<Inner>,
    control: Mutex<Option<JoinHandle<()>>>,
}

/// A connection handle returned by [`PeerAgent::connect_to`]. It names the peer, not one
/// endpoint incarnation: after a reconnect it reports the new connection.
#[derive(Clone)]
pub struct PeerConnection {
    inner: Arc<Inner>,
    peer: String,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn pid_alive(pid: i64) -> bool {
    if pid <= 0 || pid > i32::MAX as i64 {
        return true;
    }
    // SAFETY: signal 0 only checks for existence.
    let r = unsafe { libc::kill(pid as i32, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// This host's identity as the shared-memory transport sees it (boot id + host name,
/// or `DLSLIME_SHM_HOST_ID`).
pub fn host_id(shm: &ShmConfig) -> String {
    shm.host_id_override
        .clone()
        .unwrap_or_else(crate::host::identity)
}

impl PeerAgent {
    /// Registers with NanoCtrl at `nanoctrl_url` (`http://host:port`) as `alias` (or a
    /// generated name) in `scope`, publishes the resource record, removes this alias's
    /// stale keys and starts the control thread.
    ///
    /// Errors: `NameConflict` when a live agent holds `alias` in `scope` (a record left
    /// by a dead agent of this host, or one whose heartbeats stopped, is cleaned up and
    /// taken over); `Io` when NanoCtrl or Redis cannot be reached after the retries.
    pub fn new(
        nanoctrl_url: &str,
        alias: Option<&str>,
        scope: Option<&str>,
        opts: PeerAgentOptions,
    ) -> Result<PeerAgent> {
        if let Some(a) = alias {
            check_alias(a)?;
        }
        let http = Http::new(nanoctrl_url, opts.http_timeout)?;
        let scope = scope.filter(|s| !s.is_empty()).map(str::to_string);
        let keys = Keys::new(scope.as_deref());
        let host_id = host_id(&opts.shm);
        let instance = {
            let us = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0);
            (us << 8) | (rand::random::<u8>() as u64)
        };
        // Register (retry with backoff on transport errors and 5xx).
        let mut address = String::new();
        let mut reg: Option<(String, String)> = None;
        let mut delay = opts.register_backoff;
        let mut took_over = false;
        for attempt in 1..=opts.register_attempts.max(1) {
            let r = http.local_ip().and_then(|ip| {
                address = ip.to_string();
                register_once(
                    &http,
                    alias,
                    scope.as_deref(),
                    &address,
                    &host_id,
                    opts.heartbeat_interval,
                )
            });
            match r {
                Ok(v) => {
                    reg = Some(v);
                    break;
                }
                Err(e) if e.status() == Status::NameConflict && !took_over => {
                    let a = alias.expect("conflicts need an explicit alias");
                    match stale_holder(&http, a, &host_id, scope.as_deref()) {
                        Ok(true) => {
                            took_over = true;
                            continue;
                        }
                        Ok(false) => return Err(e),
                        Err(why) => {
                            return Err(Error::new(
                                Status::NameConflict,
                                format!(
                                    "{} (could not check whether the holder is alive: {why})",
                                    e.message()
                                ),
                            ))
                        }
                    }
                }
                Err(e) if e.status() == Status::NameConflict => return Err(e),
                Err(e) if e.status() == Status::InvalidArgument => return Err(e),
                Err(e) => {
                    if attempt == opts.register_attempts.max(1) {
                        return Err(Error::new(
                            e.status(),
                            format!(
                                "PeerAgent registration failed after {attempt} attempts: {}",
                                e.message()
                            ),
                        ));
                    }
                    warn_log!("PeerAgent registration attempt {attempt} failed ({e}); retrying in {delay:?}");
                    std::thread::sleep(delay);
                    delay *= 2;
                }
            }
        }
        let (alias, redis_addr) = reg.expect("registered");
        let url = opts
            .redis_url
            .clone()
            .unwrap_or_else(|| http::redis_url(&redis_addr));
        let store = Store::open(&url, Duration::from_secs(5))?;
        let advertise = opts
            .advertise_host
            .clone()
            .unwrap_or_else(|| address.clone());
        let inner = Arc::new(Inner {
            alias,
            scope,
            keys,
            http,
            instance,
            host_id,
            address: advertise,
            store,
            pool: MemoryPool::new(),
            tcp: Mutex::new(None),
            peers: Mutex::new(FxMap::default()),
            regions_epoch: AtomicU64::new(1),
            cv: Condvar::new(),
            regions: Mutex::new(BTreeMap::new()),
            desired: Mutex::new(BTreeSet::new()),
            next_nonce: AtomicU64::new(1),
            shutdown: AtomicBool::new(false),
            stats: AgentStats::default(),
            opts,
        });
        let startup = (|| {
            inner.publish_record()?;
            for pat in inner.keys.stale_patterns(&inner.alias) {
                let n = inner.store.delete_matching(&pat)?;
                if n > 0 {
                    info_log!(
                        "PeerAgent {}: removed {n} stale keys matching {pat}",
                        inner.alias
                    );
                }
            }
            let inbox = inner.keys.inbox(&inner.alias);
            inner.store.with("DEL inbox", |c| {
                redis::cmd("DEL").arg(&inbox).query::<i64>(c)
            })?;
            Ok::<(), Error>(())
        })();
        if let Err(e) = startup {
            inner.unregister_best_effort();
            return Err(e);
        }
        let me = inner.clone();
        let control = std::thread::Builder::new()
            .name(format!("dlslime-peer-{}", inner.alias))
            .spawn(move || control::run(me))
            .map_err(|e| Error::io("spawn PeerAgent control thread", e))?;
        Ok(PeerAgent {
            inner,
            control: Mutex::new(Some(control)),
        })
    }

    pub fn alias(&self) -> &str {
        &self.inner.alias
    }

    pub fn scope(&self) -> Option<&str> {
        self.inner.scope.as_deref()
    }

    /// This incarnation's id (microseconds at start, shifted, plus random bits).
    pub fn instance(&self) -> u64 {
        self.inner.instance
    }

    pub fn stats(&self) -> &AgentStats {
        &self.inner.stats
    }

    /// The agent's memory pool (every endpoint of the agent shares it).
    pub fn memory_pool(&self) -> &Arc<MemoryPool> {
        &self.inner.pool
    }

    /// Aliases registered in this scope (agent hashes that have not expired), sorted.
    pub fn list_agents(&self) -> Result<Vec<String>> {
        let i = &self.inner;
        let pat = i.keys.agents();
        let strip = format!("{}agent:", i.keys.prefix);
        let keys: Vec<String> = i.store.with("SCAN agents", |c| {
            let mut out = Vec::new();
            let mut cursor: u64 = 0;
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pat)
                    .arg("COUNT")
                    .arg(200)
                    .query(c)?;
                out.extend(batch);
                if next == 0 {
                    return Ok(out);
                }
                cursor = next;
            }
        })?;
        let mut out: Vec<String> = keys
            .iter()
            .filter_map(|k| k.strip_prefix(&strip))
            .map(str::to_string)
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Starts (or re-uses) the connection to `peer`. Does not block: call
    /// [`PeerConnection::wait`]. `transport` is `"auto"`, `"shm"`, `"tcp"` or `"rdma"`
    /// (refused: no RDMA in this build).
    pub fn connect_to(&self, peer: &str, transport: &str) -> Result<PeerConnection> {
        let req = TransportRequest::parse(transport)?;
        self.inner.connect_to(peer, req)?;
        Ok(PeerConnection {
            inner: self.inner.clone(),
            peer: peer.to_string(),
        })
    }

    /// A handle on the connection to `peer`, if there is one (any state).
    pub fn connection(&self, peer: &str) -> Option<PeerConnection> {
        self.inner
            .peers
            .lock()
            .contains_key(peer)
            .then(|| PeerConnection {
                inner: self.inner.clone(),
                peer: peer.to_string(),
            })
    }

    /// `{peer: state}` for every peer this agent knows.
    pub fn connections(&self) -> BTreeMap<String, ConnState> {
        self.inner
            .peers
            .lock()
            .iter()
            .map(|(k, s)| (k.clone(), s.state))
            .collect()
    }

    /// Registers `[ptr, ptr + offset + length)` as region `name` (the original's
    /// semantics: the region starts at `ptr`, not `ptr + offset`) and publishes it at
    /// `mr:{alias}:{name}`. Peers connected before can use it at once: they look names
    /// they do not know up in Redis.
    ///
    /// # Safety
    /// The memory must stay valid until the region is unregistered and every operation
    /// using it has completed.
    pub unsafe fn register_memory_region(
        &self,
        name: &str,
        ptr: *mut u8,
        offset: usize,
        length: usize,
    ) -> Result<MrHandle> {
        let i = &self.inner;
        i.check_live()?;
        if name.is_empty() {
            return Err(Error::invalid("memory region name is empty"));
        }
        let len = offset
            .checked_add(length)
            .ok_or_else(|| Error::new(Status::OutOfRange, "offset + length overflows"))?;
        let h = i.pool.register(Some(name), ptr, len)?;
        i.regions_epoch.fetch_add(1, Ordering::AcqRel);
        let region = i.pool.region(h)?;
        let rec = RegionRec {
            handle: h,
            addr: region.addr as u64,
            length: region.len as u64,
        };
        if let Err(e) = i.publish_region(name, &rec) {
            let _ = i.pool.unregister_name(name);
            return Err(e);
        }
        i.regions.lock().insert(name.to_string(), rec);
        i.publish_memory_keys()?;
        Ok(h)
    }

    /// Unregisters region `name` and removes its Redis key. `Ok(false)` if unknown.
    pub fn unregister_memory_region(&self, name: &str) -> Result<bool> {
        let i = &self.inner;
        let Some(rec) = i.regions.lock().get(name).cloned() else {
            return Ok(false);
        };
        // the pool may hold other names for the same handle: drop only this one when so
        let others = i
            .regions
            .lock()
            .iter()
            .any(|(n, r)| n != name && r.handle == rec.handle);
        if others {
            // MemoryPool has no per-name removal; keep the handle alive for the others.
        } else {
            i.pool.unregister(rec.handle)?;
        }
        i.regions.lock().remove(name);
        i.regions_epoch.fetch_add(1, Ordering::AcqRel);
        let key = i.keys.mr(&i.alias, name);
        i.store
            .with("DEL mr", |c| redis::cmd("DEL").arg(&key).query::<i64>(c))?;
        i.publish_memory_keys()?;
        Ok(true)
    }

    /// Names of this agent's regions (sorted).
    pub fn list_memory_regions(&self) -> Vec<String> {
        self.inner.regions.lock().keys().cloned().collect()
    }

    /// The record `peer` published for region `name` (`{"agent_name", "mr_name",
    /// "addr", "length", "rkey", ...}`), or `None`.
    pub fn get_mr_info(&self, peer: &str, name: &str) -> Result<Option<Value>> {
        self.inner.get_mr_info(peer, name)
    }

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
        let r = ep.send(ptr, len, timeout);
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
        let r = ep.recv(ptr, len, timeout);
        self.inner.watch(peer, &ep, r)
    }

    /// Stops the control thread, shuts every endpoint down (pending operations fail with
    /// `Cancelled`), deletes this agent's stream, spec and region keys and asks NanoCtrl
    /// to clean up (which removes the agent record and notifies the peers). Idempotent.
    pub fn shutdown(&self) {
        if self.inner.shutdown.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.cv.notify_all();
        if let Some(h) = self.control.lock().take() {
            let _ = h.join();
        }
        self.inner.teardown_all();
    }
}

impl Drop for PeerAgent {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn check_alias(a: &str) -> Result<()> {
    if a.is_empty() {
        return Err(Error::invalid("alias is empty"));
    }
    if a.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(format!(
            "alias {a:?} contains whitespace or control characters"
        )));
    }
    Ok(())
}

/// POST /start_peer_agent once. Returns `(name, redis_address)`.
fn register_once(
    http: &Http,
    alias: Option<&str>,
    scope: Option<&str>,
    address: &str,
    host_id: &str,
    hb_interval: Duration,
) -> Result<(String, String)> {
    let resource = resource_record(host_id, address, Vec::new(), hb_interval);
    let mut body = json!({"alias": alias, "address": address, "resource": resource});
    if let Some(s) = scope {
        body["scope"] = s.into();
    }
    let r = http.post("/start_peer_agent", &body)?;
    match r.code {
        200 => {
            let name = r.body.get("name").and_then(Value::as_str);
            let redis = r.body.get("redis_address").and_then(Value::as_str);
            match (name, redis) {
                (Some(n), Some(a)) => Ok((n.to_string(), a.to_string())),
                _ => Err(Error::new(
                    Status::Protocol,
                    format!(
                        "NanoCtrl /start_peer_agent reply lacks name/redis_address: {}",
                        r.body
                    ),
                )),
            }
        }
        409 => Err(Error::new(
            Status::NameConflict,
            format!(
                "PeerAgent '{}' registration conflict: {}",
                alias.unwrap_or(""),
                r.body
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("alias exists in this scope")
            ),
        )),
        c if c >= 500 => Err(Error::new(
            Status::Io,
            format!("NanoCtrl /start_peer_agent answered {c}: {}", r.body),
        )),
        c => Err(Error::invalid(format!(
            "NanoCtrl /start_peer_agent answered {c}: {}",
            r.body
        ))),
    }
}

/// Whether the agent record holding `alias` belongs to a dead agent: one of this host
/// whose process is gone, or one whose heartbeats stopped. If so it is cleaned up
/// through NanoCtrl (its peers get the cleanup notice) and `true` is returned.
fn stale_holder(http: &Http, alias: &str, my_host: &str, scope: Option<&str>) -> Result<bool> {
    // Read the holder's record through NanoCtrl (/query), which needs no Redis access.
    let r = http.post(
        "/query",
        &match scope {
            Some(s) => json!({"scope": s}),
            None => json!({}),
        },
    )?;
    let rec = r
        .body
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|e| e.get("name").and_then(Value::as_str) == Some(alias))
        })
        .and_then(|e| e.get("resource"))
        .cloned()
        .unwrap_or(Value::Null);
    let host = &rec["host"];
    let same_host = host.get("host_id").and_then(Value::as_str) == Some(my_host);
    let dead_pid = same_host
        && host
            .get("pid")
            .and_then(Value::as_i64)
            .is_some_and(|p| p as u32 != std::process::id() && !pid_alive(p));
    let silent = match (
        rec.get("heartbeat_at_ms").and_then(Value::as_i64),
        rec.get("heartbeat_interval_ms").and_then(Value::as_i64),
    ) {
        (Some(at), Some(iv)) => now_ms() as i64 - at > 3 * iv + 1000,
        _ => false,
    };
    let fields = rec.as_object().cloned().unwrap_or_default();
    if fields.is_empty() || !(dead_pid || silent) {
        return Ok(false);
    }
    warn_log!(
        "PeerAgent alias '{alias}' is held by a dead agent ({}); cleaning it up and taking over",
        if dead_pid {
            "its process is gone"
        } else {
            "its heartbeats stopped"
        }
    );
    let mut body = json!({"agent_name": alias});
    if let Some(s) = scope {
        body["scope"] = s.into();
    }
    let r = http.post("/cleanup", &body)?;
    if r.code != 200 {
        return Err(Error::new(
            Status::Io,
            format!("NanoCtrl /cleanup answered {}: {}", r.code, r.body),
        ));
    }
    Ok(true)
}

/// The resource record: the original's shape (no NICs here) plus what a successor
/// needs to tell a dead holder of an alias from a live one (host id, pid, last
/// heartbeat), refreshed by every heartbeat.
pub(crate) fn resource_record(
    host_id: &str,
    address: &str,
    memory_keys: Vec<String>,
    hb_interval: Duration,
) -> Value {
    json!({
        "schema_version": 1,
        "host": {"hostname": crate::host::name(), "address": address, "host_id": host_id,
                 "pid": std::process::id()},
        "nics": [], "accelerators": [], "memory_keys": memory_keys,
        "transports": ["shm", "tcp"],
        "topology_epoch": 0, "topology_backends": {},
        "heartbeat_at_ms": now_ms(),
        "heartbeat_interval_ms": hb_interval.as_millis() as u64,
    })
}

impl Inner {
    fn check_live(&self) -> Result<()> {
        if self.shutdown.load(Ordering::Acquire) {
            Err(Error::new(Status::ShutDown, "PeerAgent is shut down"))
        } else {
            Ok(())
        }
    }

    fn scope_body(&self, mut v: Value) -> Value {
        if let Some(s) = &self.scope {
            v["scope"] = s.clone().into();
        }
        v
    }

    /// HSETs this agent's fields on its record (the hash NanoCtrl created).
    fn publish_record(&self) -> Result<()> {
        let key = self.keys.agent(&self.alias);
        let resource = resource_record(
            &self.host_id,
            &self.address,
            self.regions.lock().keys().cloned().collect(),
            self.opts.heartbeat_interval,
        )
        .to_string();
        let mk = self.memory_keys_json();
        let now = now_ms();
        self.store.with("HSET agent", |c| {
            // only an existing record: HSET on a missing key (Redis restarted, record
            // expired) would create one without a TTL; the heartbeat re-registers then
            redis::cmd("EVAL")
                .arg("if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end return redis.call('HSET', KEYS[1], unpack(ARGV))")
                .arg(1)
                .arg(&key)
                .arg("addr")
                .arg(&self.address)
                .arg("resource")
                .arg(&resource)
                .arg("topology")
                .arg(&resource)
                .arg("memory_keys")
                .arg(&mk)
                .arg("updated_at")
                .arg(now / 1000)
                .arg("host_id")
                .arg(&self.host_id)
                .arg("pid")
                .arg(std::process::id())
                .arg("instance")
                .arg(self.instance)
                .query::<i64>(c)
        })?;
        Ok(())
    }

    fn memory_keys_json(&self) -> String {
        serde_json::to_string(&self.regions.lock().keys().collect::<Vec<_>>()).unwrap()
    }

    fn publish_memory_keys(&self) -> Result<()> {
        let key = self.keys.agent(&self.alias);
        let mk = self.memory_keys_json();
        self.store.with("HSET memory_keys", |c| {
            // only touch an existing record (HSET on a missing key would create one
            // without a TTL); a missing record is re-created by the heartbeat
            redis::cmd("EVAL")
                .arg("if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HSET', KEYS[1], 'memory_keys', ARGV[1], 'updated_at', ARGV[2]) end return 0")
                .arg(1)
                .arg(&key)
                .arg(&mk)
                .arg(now_ms() / 1000)
                .query::<i64>(c)
        })?;
        Ok(())
    }

    fn publish_region(&self, name: &str, r: &RegionRec) -> Result<()> {
        let key = self.keys.mr(&self.alias, name);
        let region = self.pool.region(r.handle)?;
        let v = json!({
            "agent_name": self.alias, "mr_name": name, "device": "", "ib_port": 1,
            "link_type": "", "addr": r.addr, "length": r.length, "rkey": region.key, "lkey": 0,
            "handle": r.handle, "instance": self.instance,
        })
        .to_string();
        self.store.with("SET mr", |c| {
            redis::cmd("SET").arg(&key).arg(&v).query::<()>(c)
        })
    }

    fn get_mr_info(&self, peer: &str, name: &str) -> Result<Option<Value>> {
        let key = self.keys.mr(peer, name);
        let v: Option<String> = self
            .store
            .with("GET mr", |c| redis::cmd("GET").arg(&key).query(c))?;
        match v {
            None => Ok(None),
            Some(t) => serde_json::from_str(&t).map(Some).map_err(|e| {
                Error::new(
                    Status::InvalidEndpointInfo,
                    format!("{key} is not valid JSON: {e}"),
                )
            }),
        }
    }

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

    fn new_endpoint(&self, t: Transport) -> Result<LocalEp> {
        let ep: Arc<dyn Endpoint> = match t {
            Transport::Tcp => TcpEndpoint::new(&self.tcp_context()?, self.pool.clone())?,
            Transport::Shm => Arc::new(ShmEndpoint::new(self.pool.clone(), self.opts.shm.clone())?),
            Transport::Rdma => {
                return Err(Error::new(
                    Status::Unsupported,
                    "this build of dlslime has no RDMA transport",
                ))
            }
        };
        Ok(LocalEp {
            nonce: self.next_nonce.fetch_add(1, Ordering::Relaxed),
            transport: t,
            ep,
            bound: None,
            names: FxMap::default(),
            names_epoch: 0,
        })
    }

    /// The transport to open towards a peer before it has answered: its host identity
    /// from its record when registered, TCP (works everywhere) otherwise.
    fn guess_transport(&self, slot: &Slot, peer: &str) -> Result<Transport> {
        if let TransportRequest::Explicit(t) = slot.request {
            return Ok(t);
        }
        if let Some(v) = &slot.peer {
            return agree_transport(slot.request, v.request, &self.host_id, &v.host_id);
        }
        let key = self.keys.agent(peer);
        let host: Option<String> = self
            .store
            .with("HGET host_id", |c| {
                redis::cmd("HGET").arg(&key).arg("host_id").query(c)
            })
            .unwrap_or(None);
        Ok(match host {
            Some(h) if h == self.host_id => Transport::Shm,
            _ => Transport::Tcp,
        })
    }

    fn connect_to(self: &Arc<Self>, peer: &str, req: TransportRequest) -> Result<()> {
        self.check_live()?;
        if peer.is_empty() {
            return Err(Error::invalid("peer alias is empty"));
        }
        if peer == self.alias {
            return Err(Error::invalid(format!(
                "connect_to: '{peer}' is this agent's own alias"
            )));
        }
        check_alias(peer)?;
        let mut work = Work::default();
        let mut already = false;
        {
            let mut peers = self.peers.lock();
            let slot = peers.entry(peer.to_string()).or_insert_with(Slot::new);
            slot.request = req;
            let fits = |t: Transport| req_transport(req).unwrap_or(t) == t;
            let alive = match (&slot.state, &slot.ep) {
                (ConnState::Connected, Some(e)) => ep_alive(&*e.ep),
                _ => false,
            };
            if alive && slot.connected_transport.is_some_and(fits) {
                already = true;
            } else {
                // connected, but the peer is gone or the transport is one this
                // request excludes
                if slot.state == ConnState::Connected {
                    self.teardown(slot, Status::PeerDisconnected, "connection lost", &mut work);
                }
                // An endpoint that fits the request is kept, also one opened before this
                // call (this side answered the peer's dial first, as a passive "auto"
                // side) and already bound or connecting: replacing it would give it a new
                // nonce, and the peer, possibly connected already (its wait() returned),
                // would have to tear down and start over, i.e. crossing dials would
                // sometimes go "connected" -> "connecting" (tests/peer_agent.rs,
                // both_dial_at_once_repeatedly_*). Only an endpoint of a transport this
                // request excludes starts over.
                if slot.ep.as_ref().is_some_and(|e| !fits(e.transport)) {
                    let e = slot.ep.take().unwrap();
                    work.dead.push(e.ep);
                }
                slot.pending = true;
                slot.attempts = 0;
                slot.retry_at = None;
                slot.error = None;
                slot.state = ConnState::Connecting;
                self.dial(peer, slot, &mut work);
            }
        }
        self.run_work(work);
        if self.desired.lock().insert(peer.to_string()) || !already {
            self.post_topology();
        }
        Ok(())
    }

    /// POST the desired topology: every peer this agent dialled (not just the last one,
    /// which limited the original's cleanup fan-out). NanoCtrl writes `connect_peer` to
    /// this agent's stream for each; the mailbox ignores those already handled.
    fn post_topology(&self) {
        let targets: Vec<String> = self.desired.lock().iter().cloned().collect();
        let body = self.scope_body(json!({"target_peers": targets}));
        match self
            .http
            .post(&format!("/v1/desired_topology/{}", self.alias), &body)
        {
            Ok(r) if r.code == 200 => {}
            Ok(r) => warn_log!(
                "PeerAgent {}: desired_topology answered {}: {}",
                self.alias,
                r.code,
                r.body
            ),
            Err(e) => warn_log!("PeerAgent {}: desired_topology failed: {e}", self.alias),
        }
    }

    /// Opens an endpoint if needed and sends our qp_ready unless already sent for it.
    fn dial(&self, peer: &str, slot: &mut Slot, work: &mut Work) {
        if slot.ep.as_ref().is_some_and(|e| e.bound.is_some()) {
            return;
        }
        if slot.ep.is_none() {
            let t = match self.guess_transport(slot, peer) {
                Ok(t) => t,
                Err(e) => return self.fail(slot, e, work),
            };
            match self.new_endpoint(t) {
                Ok(e) => slot.ep = Some(e),
                Err(e) => return self.fail(slot, e, work),
            }
        }
        self.queue_send(peer, slot, work);
    }

    fn queue_send(&self, peer: &str, slot: &mut Slot, work: &mut Work) {
        let Some(ep) = &slot.ep else { return };
        let (di, dn) = slot
            .peer
            .as_ref()
            .map_or((None, None), |v| (Some(v.instance), Some(v.nonce)));
        let key = (ep.nonce, di.unwrap_or(0), dn.unwrap_or(0));
        if slot.sent.contains(&key) {
            return;
        }
        slot.sent.insert(key);
        let info = ep.ep.endpoint_info();
        let conn_id = format!(
            "{}:{}:n{}->{}",
            self.alias,
            ep.transport.as_str(),
            ep.nonce,
            peer
        );
        let meta = json!({
            "conn_id": conn_id, "src": self.alias, "dst": peer,
            "src_device": ep.transport.as_str(), "dst_device": "", "ib_port": 1, "qp_num": 1,
            "link_type": "", "profile": "default", "transport": ep.transport.as_str(),
            "transport_request": slot.request.as_str(), "host_id": self.host_id,
            "src_instance": self.instance, "src_nonce": ep.nonce,
            "dst_instance": di, "dst_nonce": dn,
        });
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        work.sends.push((
            peer.to_string(),
            vec![
                ("type".into(), "qp_ready".into()),
                ("peer".into(), self.alias.clone()),
                ("qp_info".into(), info.to_string()),
                ("conn_meta".into(), meta.to_string()),
                ("timestamp".into(), format!("{ts:.6}")),
            ],
            key,
        ));
    }

    fn fail(&self, slot: &mut Slot, e: Error, work: &mut Work) {
        warn_log!("PeerAgent {}: connection failed: {e}", self.alias);
        if let Some(ep) = slot.ep.take() {
            work.dead.push(ep.ep);
        }
        slot.state = ConnState::Failed;
        slot.error = Some(e);
        slot.pending = false;
        slot.retry_at = None;
        self.cv.notify_all();
    }

    /// Drops the current endpoint (pending operations fail) and forgets what was sent.
    fn teardown(&self, slot: &mut Slot, status: Status, why: &str, work: &mut Work) {
        if let Some(ep) = slot.ep.take() {
            work.dead.push(ep.ep);
        }
        slot.sent.clear();
        slot.connected_transport = None;
        if slot.state == ConnState::Connected {
            slot.state = ConnState::Disconnected;
            slot.error = Some(Error::new(status, why.to_string()));
        }
        self.cv.notify_all();
    }

    fn run_work(self: &Arc<Self>, work: Work) {
        for ep in work.dead {
            ep.shutdown();
        }
        for (peer, fields, key) in work.sends {
            let stream = self.keys.stream(&peer);
            let r = self.store.with("XADD qp_ready", |c| {
                let mut cmd = redis::cmd("XADD");
                cmd.arg(&stream).arg("MAXLEN").arg("~").arg(1000).arg("*");
                for (k, v) in &fields {
                    cmd.arg(k).arg(v);
                }
                cmd.query::<String>(c)
            });
            match r {
                Ok(id) => {
                    self.stats.qp_ready_sent.fetch_add(1, Ordering::Relaxed);
                    if let Some(s) = self.peers.lock().get_mut(&peer) {
                        if s.outbox.len() < 1024 {
                            s.outbox.push(id);
                        }
                    }
                }
                Err(e) => {
                    warn_log!(
                        "PeerAgent {}: qp_ready to {peer} not sent ({e}); will retry",
                        self.alias
                    );
                    let mut peers = self.peers.lock();
                    if let Some(s) = peers.get_mut(&peer) {
                        s.sent.remove(&key);
                        if s.retry_at.is_none() {
                            s.retry_at = Some(Instant::now() + Duration::from_millis(200));
                        }
                    }
                }
            }
        }
        for (peer, nonce, ep, info) in work.connects {
            let me = self.clone();
            let spawned = std::thread::Builder::new()
                .name("dlslime-peer-connect".into())
                .spawn(move || {
                    let r = ep.connect(&info);
                    me.on_connect_done(&peer, nonce, r);
                });
            if let Err(e) = spawned {
                warn_log!("PeerAgent: cannot spawn a connect worker: {e}");
            }
        }
    }

    fn on_connect_done(self: &Arc<Self>, peer: &str, nonce: u64, r: Result<()>) {
        let mut work = Work::default();
        {
            let mut peers = self.peers.lock();
            let Some(slot) = peers.get_mut(peer) else {
                return;
            };
            if slot.ep.as_ref().map(|e| e.nonce) != Some(nonce) {
                return; // superseded
            }
            match r {
                Ok(()) => {
                    slot.state = ConnState::Connected;
                    slot.connected_transport = slot.ep.as_ref().map(|e| e.transport);
                    slot.pending = false;
                    slot.error = None;
                    slot.attempts = 0;
                    slot.retry_at = None;
                    info_log!("PeerAgent {}: connected to {peer}", self.alias);
                    self.cv.notify_all();
                }
                Err(e) => {
                    self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                    slot.attempts += 1;
                    warn_log!(
                        "PeerAgent {}: connect to {peer} failed (attempt {}): {e}",
                        self.alias,
                        slot.attempts
                    );
                    if let Some(ep) = slot.ep.take() {
                        work.dead.push(ep.ep);
                    }
                    slot.sent.clear();
                    if slot.attempts >= self.opts.connect_attempts.max(1) {
                        self.fail(slot, e, &mut work);
                    } else {
                        slot.state = ConnState::Connecting;
                        slot.error = Some(e);
                        let backoff = Duration::from_millis(50 << slot.attempts.min(6));
                        slot.retry_at = Some(Instant::now() + backoff);
                    }
                }
            }
        }
        self.run_work(work);
    }

    fn endpoint(&self, peer: &str) -> Result<Arc<dyn Endpoint>> {
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
        self.resolve_into(peer, ep, assignments, |a| out.push(a))?;
        Ok(out)
    }

    /// Resolves names to handles, handing each assignment to `sink` (no allocation).
    fn resolve_into(
        &self,
        peer: &str,
        ep: &dyn Endpoint,
        assignments: &[NamedAssignment],
        mut sink: impl FnMut(Assignment),
    ) -> Result<()> {
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
            sink(Assignment::new(
                local,
                remote,
                a.remote_offset,
                a.local_offset,
                a.length,
            ));
        }
        Ok(())
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
                    if e.names_epoch != epoch || e.names.len() >= 4096 {
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

    fn mark_lost(&self, peer: &str, ep: &Arc<dyn Endpoint>) {
        let mut work = Work::default();
        {
            let mut peers = self.peers.lock();
            if let Some(slot) = peers.get_mut(peer) {
                if slot.ep.as_ref().is_some_and(|e| Arc::ptr_eq(&e.ep, ep)) {
                    self.teardown(
                        slot,
                        Status::PeerDisconnected,
                        "the peer's process is gone",
                        &mut work,
                    );
                    // a re-dial must reach the peer's next incarnation too
                    slot.peer = None;
                }
            }
        }
        for ep in work.dead {
            ep.shutdown();
        }
    }

    fn unregister_best_effort(&self) {
        let body = self.scope_body(json!({"agent_name": self.alias}));
        if let Err(e) = self.http.post("/cleanup", &body) {
            warn_log!("PeerAgent {}: cleanup failed: {e}", self.alias);
        }
    }

    fn teardown_all(&self) {
        let eps: Vec<Arc<dyn Endpoint>> = {
            let mut peers = self.peers.lock();
            let v = peers
                .values_mut()
                .filter_map(|s| {
                    s.state = match s.state {
                        ConnState::Connected => ConnState::Disconnected,
                        other => other,
                    };
                    s.error = Some(Error::new(Status::ShutDown, "PeerAgent is shut down"));
                    s.ep.take().map(|e| e.ep)
                })
                .collect();
            self.cv.notify_all();
            v
        };
        for ep in eps {
            ep.shutdown();
        }
        // Messages left in the streams of peers that never registered (a dial to an
        // alias that never came): remove ours, and the stream if nothing else is in it.
        let outboxes: Vec<(String, Vec<String>)> = self
            .peers
            .lock()
            .iter_mut()
            .filter(|(_, s)| !s.outbox.is_empty())
            .map(|(p, s)| (p.clone(), std::mem::take(&mut s.outbox)))
            .collect();
        for (peer, ids) in outboxes {
            let (stream, agent) = (self.keys.stream(&peer), self.keys.agent(&peer));
            let r = self.store.with("XDEL outbox", |c| {
                redis::cmd("EVAL")
                    .arg("if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end redis.call('XDEL', KEYS[1], unpack(ARGV)) if redis.call('XLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[1]) end return 1")
                    .arg(2)
                    .arg(&stream)
                    .arg(&agent)
                    .arg(&ids)
                    .query::<i64>(c)
            });
            if let Err(e) = r {
                warn_log!(
                    "PeerAgent {}: could not withdraw messages to {peer}: {e}",
                    self.alias
                );
            }
        }
        let a = &self.alias;
        let keys = vec![self.keys.stream(a), self.keys.spec(a)];
        if let Err(e) = self
            .store
            .with("DEL", |c| redis::cmd("DEL").arg(&keys).query::<i64>(c))
        {
            warn_log!("PeerAgent {a}: shutdown could not delete its keys: {e}");
        }
        for pat in self.keys.stale_patterns(a) {
            if let Err(e) = self.store.delete_matching(&pat) {
                warn_log!("PeerAgent {a}: shutdown could not delete {pat}: {e}");
            }
        }
        self.unregister_best_effort();
    }
}

fn req_transport(r: TransportRequest) -> Option<Transport> {
    match r {
        TransportRequest::Explicit(t) => Some(t),
        TransportRequest::Auto => None,
    }
}

/// Whether an endpoint's peer is still there: an empty read fails synchronously with
/// `PeerDisconnected`/`ShutDown` once the transport saw the peer go.
fn ep_alive(ep: &dyn Endpoint) -> bool {
    match ep.read(&[], Some(Duration::from_millis(100))) {
        Err(e) => !matches!(e.status(), Status::PeerDisconnected | Status::ShutDown),
        Ok(_) => true,
    }
}

impl PeerConnection {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_agreement() {
        use Transport::*;
        use TransportRequest::*;
        assert_eq!(agree_transport(Auto, Auto, "h", "h").unwrap(), Shm);
        assert_eq!(agree_transport(Auto, Auto, "h", "g").unwrap(), Tcp);
        assert_eq!(agree_transport(Explicit(Tcp), Auto, "h", "h").unwrap(), Tcp);
        assert_eq!(agree_transport(Auto, Explicit(Tcp), "h", "h").unwrap(), Tcp);
        assert_eq!(
            agree_transport(Explicit(Shm), Explicit(Tcp), "h", "h")
                .unwrap_err()
                .status(),
            Status::Unsupported
        );
        assert_eq!(
            agree_transport(Explicit(Shm), Auto, "h", "g")
                .unwrap_err()
                .status(),
            Status::Unsupported
        );
        assert_eq!(
            agree_transport(Auto, Explicit(Rdma), "h", "h")
                .unwrap_err()
                .status(),
            Status::Unsupported
        );
        assert_eq!(
            TransportRequest::parse("rdma").unwrap_err().status(),
            Status::Unsupported
        );
        assert_eq!(
            TransportRequest::parse("carrier-pigeon")
                .unwrap_err()
                .status(),
            Status::InvalidArgument
        );
        assert_eq!(TransportRequest::parse("auto").unwrap(), Auto);
        assert_eq!(TransportRequest::from_wire("tcp"), Explicit(Tcp));
        assert_eq!(TransportRequest::from_wire("auto"), Auto);
    }

    #[test]
    fn named_assignment_shapes() {
        let a = NamedAssignment::same("kv", 8, 16, 32);
        assert_eq!((a.local.as_str(), a.remote.as_str()), ("kv", "kv"));
        assert_eq!((a.local_offset, a.remote_offset, a.length), (8, 16, 32));
        let b = NamedAssignment::pair("l", "r", 1, 2, 3);
        assert_eq!((b.local.as_str(), b.remote.as_str()), ("l", "r"));
    }
}
