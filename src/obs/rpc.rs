//! SlimeRPC counters per method: calls, errors (exception replies and failed calls) and
//! latency (client: call to reply; server: the handler plus its reply).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::histogram::{HistSnapshot, Histogram};

pub struct MethodStats {
    pub side: &'static str,
    pub name: Arc<str>,
    calls: AtomicU64,
    errors: AtomicU64,
    /// Client side: waits for a reply that timed out.
    timeouts: AtomicU64,
    latency: Histogram,
}

#[derive(Clone, Default)]
pub struct MethodValues {
    pub calls: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub latency: HistSnapshot,
}

impl MethodStats {
    pub(super) fn new(side: &'static str, name: &str) -> MethodStats {
        MethodStats {
            side,
            name: Arc::from(name),
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            latency: Histogram::default(),
        }
    }

    /// One call that took `latency_ns`; `ok` false for an error.
    pub fn record(&self, ok: bool, latency_ns: u64) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency.record(latency_ns);
    }

    /// A client's wait for the reply timed out.
    pub fn timed_out(&self) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn read(&self) -> MethodValues {
        MethodValues {
            calls: self.calls.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            latency: self.latency.read(),
        }
    }
}
