//! The process-wide table of endpoint and RPC counters, which snapshots read. Endpoints
//! register when they are made; an endpoint that is gone is folded into its peer's
//! retired totals (so totals per peer never go back and the table stays bounded).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use super::counters::{EndpointStats, EndpointValues};
use super::rpc::MethodStats;

#[derive(Default)]
pub(super) struct Registry {
    pub live: Vec<Arc<EndpointStats>>,
    /// `(transport, peer)` → the sums of endpoints that are gone.
    pub retired: Vec<((&'static str, Arc<str>), EndpointValues)>,
    /// `(side, method)` → counters; `side` is "server" or "client".
    pub methods: Vec<Arc<MethodStats>>,
}

/// Retired groups kept at most (the oldest are merged into one `"(other)"` group).
const MAX_RETIRED: usize = 4096;
/// RPC method rows kept at most; later methods share one `"(other)"` row.
const MAX_METHODS: usize = 1024;

pub(super) fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(Mutex::default)
}

impl Registry {
    /// Folds the counters of endpoints nobody else holds into the retired totals.
    pub fn sweep(&mut self) {
        let mut i = 0;
        while i < self.live.len() {
            if Arc::strong_count(&self.live[i]) == 1 {
                let s = self.live.swap_remove(i);
                let key = (s.transport, s.peer());
                let vals = s.read();
                let at = self.retired.iter().position(|(k, _)| *k == key);
                match at {
                    Some(at) => self.retired[at].1.merge(&vals),
                    None if self.retired.len() < MAX_RETIRED => self.retired.push((key, vals)),
                    None => self.retired[MAX_RETIRED - 1].1.merge(&vals),
                }
            } else {
                i += 1;
            }
        }
    }
}

/// New counters for an endpoint of `transport`, listed in snapshots from now on.
pub fn register_endpoint(transport: &'static str) -> Arc<EndpointStats> {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let s = Arc::new(EndpointStats::new(
        NEXT.fetch_add(1, Ordering::Relaxed),
        transport,
    ));
    let mut r = registry().lock();
    r.sweep();
    r.live.push(s.clone());
    s
}

/// The counters of an RPC method (`side` "server" or "client"), made on first use.
pub fn method(side: &'static str, name: &str) -> Arc<MethodStats> {
    let mut r = registry().lock();
    if let Some(m) = r
        .methods
        .iter()
        .find(|m| m.side == side && &*m.name == name)
    {
        return m.clone();
    }
    let name = if r.methods.len() >= MAX_METHODS {
        "(other)"
    } else {
        name
    };
    if let Some(m) = r
        .methods
        .iter()
        .find(|m| m.side == side && &*m.name == name)
    {
        return m.clone();
    }
    let m = Arc::new(MethodStats::new(side, name));
    r.methods.push(m.clone());
    m
}
