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

/// Retired peers kept at most; the oldest are merged into one `"(other)"` row per
/// transport. A row holds six latency histograms (about 12 KiB), and a process that
/// meets a new peer every few seconds (peers restarting on new ports, `make soak`) added
/// one per peer: at 4096 rows that was up to 50 MB, and memory that never stopped
/// growing in a day's run. 64 rows cap it below 1 MB.
const MAX_RETIRED: usize = 64;
/// The peer name of the row that holds the totals of peers merged away.
const OTHER: &str = "(other)";
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
                    None => {
                        if self.retired.len() >= MAX_RETIRED {
                            self.merge_oldest_away();
                        }
                        self.retired.push((key, vals));
                    }
                }
            } else {
                i += 1;
            }
        }
    }
}

impl Registry {
    /// Folds the oldest retired peer (rows are kept in the order they came) into its
    /// transport's `"(other)"` row: totals never go back, the table stays small.
    fn merge_oldest_away(&mut self) {
        let Some(at) = self.retired.iter().position(|(k, _)| &*k.1 != OTHER) else {
            return;
        };
        let ((transport, _), vals) = self.retired.remove(at);
        match self
            .retired
            .iter_mut()
            .find(|(k, _)| k.0 == transport && &*k.1 == OTHER)
        {
            Some(o) => o.1.merge(&vals),
            None => self.retired.push(((transport, Arc::from(OTHER)), vals)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::obs::OpKind;

    #[test]
    fn retired_peers_are_bounded_and_their_totals_kept() {
        let transport = "registry-test";
        let n = MAX_RETIRED + 40;
        for i in 0..n {
            let s = register_endpoint(transport);
            s.set_peer(&format!("peer-{i}"));
            s.completed_at_once(OpKind::Write, 10, None);
        }
        let mut r = registry().lock();
        r.sweep();
        let rows: Vec<_> = r.retired.iter().filter(|(k, _)| k.0 == transport).collect();
        assert!(r.retired.len() <= MAX_RETIRED + 3, "{}", r.retired.len());
        let total: u64 = rows
            .iter()
            .map(|(_, v)| v.ops[OpKind::Write as usize].completed)
            .sum();
        assert_eq!(total, n as u64, "totals never go back");
        assert!(rows.iter().any(|(k, _)| &*k.1 == OTHER));
        // the newest peer keeps its own row
        assert!(rows.iter().any(|(k, _)| *k.1 == *format!("peer-{}", n - 1)));
    }
}
