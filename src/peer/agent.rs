//! [`PeerAgent`] and the state its parts share ([`Inner`]): start-up, the accessors,
//! and shutdown. Each concern adds its methods from its own file (`links`, `named`,
//! `regions`, `registry`, ...).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use rustc_hash::FxHashMap;

use super::control;
use super::http::{self, Http};
use super::links::Slot;
use super::nic::Nic;
use super::options::PeerAgentOptions;
use super::owner;
use super::regions::RegionRec;
use super::registry::{self, check_alias, Registration};
use super::stats::AgentStats;
use super::store::{Keys, RedisTarget, Store};
use crate::error::{Error, Result, Status};
use crate::memory::MemoryPool;
use crate::transport::tcp::TcpContext;

/// A PeerAgent. Thread-safe; dropping it shuts it down.
pub struct PeerAgent {
    pub(super) inner: Arc<Inner>,
    control: Mutex<Option<JoinHandle<()>>>,
}

/// What the agent's handles, its control thread and its connect workers share.
pub(super) struct Inner {
    pub alias: String,
    pub scope: Option<String>,
    pub keys: Keys,
    pub http: Http,
    pub opts: PeerAgentOptions,
    /// This incarnation (see [`registry::new_instance`]).
    pub instance: u64,
    pub host_id: String,
    /// The host peers reach this agent at.
    pub address: String,
    /// This incarnation's owner token (see `owner`).
    pub owner_token: String,
    pub store: Store,
    /// Every endpoint of the agent shares it.
    pub pool: Arc<MemoryPool>,
    /// Created at the first TCP endpoint.
    pub tcp: Mutex<Option<Arc<TcpContext>>>,
    /// The RDMA NIC port, opened at start-up (`None`: no RDMA on this agent).
    pub nic: Option<Nic>,
    /// One slot per peer (see `links`); `cv` is notified on every state change.
    pub peers: Mutex<FxHashMap<String, Slot>>,
    pub cv: Condvar,
    /// Bumped by every local region (un)registration: invalidates resolved names.
    pub regions_epoch: AtomicU64,
    pub regions: Mutex<BTreeMap<String, RegionRec>>,
    /// Device memory `allocate_memory_region` made: freed when the agent goes (an
    /// unregistered region's operations may still be in flight until then).
    pub allocations: Mutex<Vec<crate::memory::device::alloc::DeviceAlloc>>,
    /// Every peer `connect_to` was called for (the desired topology).
    pub desired: Mutex<BTreeSet<String>>,
    pub next_nonce: AtomicU64,
    pub shutdown: AtomicBool,
    pub stats: AgentStats,
    pub obs_reporter: super::obs_report::Reporter,
}

impl PeerAgent {
    /// Registers with NanoCtrl at `nanoctrl_url` (`http://host:port`, or several
    /// replicas separated by commas: a replica that does not answer is skipped) as
    /// `alias` (or a generated name) in `scope`, publishes the resource record, removes
    /// this alias's stale keys and starts the control thread. The alias is owned: while
    /// this agent lives, nobody else can clean it up or register it.
    ///
    /// Errors: `NameConflict` when a live agent holds `alias` in `scope` (a record left
    /// by a dead agent of this host, or one whose heartbeats stopped, is cleaned up and
    /// taken over); `PermissionDenied` when NanoCtrl wants a token this agent does not
    /// have; `Io` when NanoCtrl or Redis cannot be reached after the retries.
    pub fn new(
        nanoctrl_url: &str,
        alias: Option<&str>,
        scope: Option<&str>,
        opts: PeerAgentOptions,
    ) -> Result<PeerAgent> {
        if let Some(a) = alias {
            check_alias(a)?;
        }
        let token = opts
            .nanoctrl_token
            .clone()
            .or_else(|| std::env::var("NANOCTRL_TOKEN").ok())
            .filter(|t| !t.is_empty());
        let http = Http::with_token(nanoctrl_url, token.as_deref(), opts.http_timeout)?;
        let scope = scope.filter(|s| !s.is_empty()).map(str::to_string);
        let host_id = registry::host_id(&opts.shm);
        // a configured Redis list is checked before anything is registered
        let fixed = opts
            .redis_url
            .as_deref()
            .map(RedisTarget::fixed)
            .transpose()?;
        let pool = MemoryPool::new();
        let nic = Nic::open(&opts.rdma, &pool)?;
        let nics = serde_json::Value::Array(nic.iter().map(Nic::record).collect());
        let owner_token = owner::new_token();
        let reg = registry::register(
            &http,
            alias,
            scope.as_deref(),
            &host_id,
            &nics,
            &opts,
            &owner_token,
        )?;
        owner::remember(scope.as_deref(), &reg.alias, &reg.owner_token);
        let target = match fixed {
            Some(t) => t,
            None => {
                // after a Redis failover NanoCtrl knows the new primary
                let (h, addr) = (http.clone(), reg.address.clone());
                let url = reg
                    .redis_url
                    .clone()
                    .unwrap_or_else(|| http::redis_url(&reg.redis_address));
                RedisTarget::asking(url, move || registry::ask_redis_url(&h, &addr))
                    .inspect_err(|_| registry::withdraw(&http, scope.as_deref(), &reg))?
            }
        };
        let store = Store::open(target, Duration::from_secs(5));
        let inner = Arc::new(Inner::new(
            reg,
            scope,
            http,
            store,
            host_id,
            (pool, nic),
            opts,
        ));
        if let Err(e) = inner.announce() {
            inner.unregister_best_effort();
            return Err(e);
        }
        let control = control::spawn(inner.clone())?;
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
        i.store.scan_names(&i.keys.agents(), &i.keys.agent(""))
    }

    /// Stops the control thread, shuts every endpoint down (pending operations fail with
    /// `Cancelled`), deletes this agent's stream, spec and region keys and asks NanoCtrl
    /// to clean up (which removes the agent record and notifies the peers). Idempotent.
    pub fn shutdown(&self) {
        let i = &self.inner;
        if i.shutdown.swap(true, Ordering::AcqRel) {
            return;
        }
        i.cv.notify_all();
        if let Some(h) = self.control.lock().take() {
            let _ = h.join();
        }
        let outboxes = i.close_all();
        i.publish_obs(true);
        i.remove_own_keys(outboxes);
        i.unregister_best_effort();
    }
}

impl Drop for PeerAgent {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Inner {
    fn new(
        reg: Registration,
        scope: Option<String>,
        http: Http,
        store: Store,
        host_id: String,
        (pool, nic): (Arc<MemoryPool>, Option<Nic>),
        opts: PeerAgentOptions,
    ) -> Inner {
        let keys = Keys::new(scope.as_deref());
        let address = opts
            .advertise_host
            .clone()
            .unwrap_or_else(|| reg.address.clone());
        Inner {
            alias: reg.alias,
            scope,
            keys,
            http,
            instance: registry::new_instance(),
            host_id,
            address,
            owner_token: reg.owner_token,
            store,
            pool,
            tcp: Mutex::new(None),
            nic,
            peers: Mutex::new(FxHashMap::default()),
            cv: Condvar::new(),
            regions_epoch: AtomicU64::new(1),
            regions: Mutex::new(BTreeMap::new()),
            allocations: Mutex::new(Vec::new()),
            desired: Mutex::new(BTreeSet::new()),
            next_nonce: AtomicU64::new(1),
            shutdown: AtomicBool::new(false),
            stats: AgentStats::default(),
            obs_reporter: Default::default(),
            opts,
        }
    }

    pub(super) fn check_live(&self) -> Result<()> {
        if self.shutdown.load(Ordering::Acquire) {
            Err(Error::new(Status::ShutDown, "PeerAgent is shut down"))
        } else {
            Ok(())
        }
    }
}
