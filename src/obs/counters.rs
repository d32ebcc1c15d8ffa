//! The counters of one endpoint: per operation kind, submissions, completions and
//! failures with their bytes plus a latency histogram; per status, the failures.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::histogram::{HistSnapshot, Histogram};
use crate::error::Status;

/// Operation kinds, in snapshot order. `write_imm` is `write_with_imm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum OpKind {
    Read = 0,
    Write = 1,
    WriteImm = 2,
    ImmRecv = 3,
    Send = 4,
    Recv = 5,
}

impl OpKind {
    pub const ALL: [OpKind; 6] = [
        OpKind::Read,
        OpKind::Write,
        OpKind::WriteImm,
        OpKind::ImmRecv,
        OpKind::Send,
        OpKind::Recv,
    ];

    /// The name in snapshots and metric labels (the original's `pending_by_op` keys).
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::WriteImm => "write_with_imm",
            OpKind::ImmRecv => "imm_recv",
            OpKind::Send => "send",
            OpKind::Recv => "recv",
        }
    }

    pub fn from_u8(v: u8) -> Option<OpKind> {
        OpKind::ALL.get(v as usize).copied()
    }
}

/// Where a status is counted in [`EndpointStats`]' per-status table.
fn status_index(s: Status) -> usize {
    Status::ALL.iter().position(|&x| x == s).unwrap_or(0)
}

#[derive(Default)]
pub struct OpCounters {
    submitted: AtomicU64,
    submitted_bytes: AtomicU64,
    // completions: the latency histogram's count minus `failed`
    completed_bytes: AtomicU64,
    failed: AtomicU64,
    failed_bytes: AtomicU64,
    /// Refused at submission (bad handle, not connected...): no future was made.
    rejected: AtomicU64,
    latency: Histogram,
}

/// Plain values of one kind's counters.
#[derive(Clone, Default)]
pub struct OpValues {
    pub submitted: u64,
    pub submitted_bytes: u64,
    pub completed: u64,
    pub completed_bytes: u64,
    pub failed: u64,
    pub failed_bytes: u64,
    pub rejected: u64,
    pub latency: HistSnapshot,
}

impl OpValues {
    pub fn merge(&mut self, o: &OpValues) {
        self.submitted += o.submitted;
        self.submitted_bytes += o.submitted_bytes;
        self.completed += o.completed;
        self.completed_bytes += o.completed_bytes;
        self.failed += o.failed;
        self.failed_bytes += o.failed_bytes;
        self.rejected += o.rejected;
        self.latency.merge(&o.latency);
    }

    /// Submitted and not yet completed or failed.
    pub fn pending(&self) -> u64 {
        self.submitted.saturating_sub(self.completed + self.failed)
    }
}

/// The counters of one endpoint. Shared by the endpoint and the process registry; the
/// registry keeps them after the endpoint is gone (totals per peer never go back).
pub struct EndpointStats {
    pub id: u64,
    pub transport: &'static str,
    peer: Mutex<Arc<str>>,
    ops: [OpCounters; 6],
    errors: [AtomicU64; Status::ALL.len()],
}

/// Plain values of [`EndpointStats`].
#[derive(Clone, Default)]
pub struct EndpointValues {
    pub ops: [OpValues; 6],
    /// `(status, count)` for every status seen at least once.
    pub errors: Vec<(Status, u64)>,
}

impl EndpointValues {
    pub fn merge(&mut self, o: &EndpointValues) {
        for (a, b) in self.ops.iter_mut().zip(o.ops.iter()) {
            a.merge(b);
        }
        for &(s, n) in &o.errors {
            match self.errors.iter_mut().find(|e| e.0 == s) {
                Some(e) => e.1 += n,
                None => self.errors.push((s, n)),
            }
        }
        self.errors.sort_by_key(|e| e.0.code());
    }

    pub fn errors_of(&self, s: Status) -> u64 {
        self.errors.iter().find(|e| e.0 == s).map_or(0, |e| e.1)
    }
}

impl EndpointStats {
    pub(super) fn new(id: u64, transport: &'static str) -> EndpointStats {
        EndpointStats {
            id,
            transport,
            peer: Mutex::new(Arc::from("")),
            ops: Default::default(),
            errors: [const { AtomicU64::new(0) }; Status::ALL.len()],
        }
    }

    /// The peer's label: an alias (PeerAgent) or an address (`host:port`, `pid@host`).
    pub fn set_peer(&self, label: &str) {
        *self.peer.lock() = Arc::from(label);
    }

    /// Sets the peer's label unless one is set already (a transport's address label
    /// does not replace the alias a PeerAgent gave).
    pub fn set_peer_default(&self, label: &str) {
        let mut p = self.peer.lock();
        if p.is_empty() {
            *p = Arc::from(label);
        }
    }

    pub fn peer(&self) -> Arc<str> {
        self.peer.lock().clone()
    }

    pub fn submitted(&self, kind: OpKind, bytes: u64) {
        let c = &self.ops[kind as usize];
        c.submitted.fetch_add(1, Ordering::Relaxed);
        c.submitted_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// An operation refused at submission with `status`.
    pub fn rejected(&self, kind: OpKind, status: Status) {
        self.ops[kind as usize]
            .rejected
            .fetch_add(1, Ordering::Relaxed);
        self.errors[status_index(status)].fetch_add(1, Ordering::Relaxed);
    }

    /// A submitted operation ended with `status` after `latency_ns`.
    pub fn finished(&self, kind: OpKind, status: Status, bytes: u64, latency_ns: u64) {
        let c = &self.ops[kind as usize];
        if status.is_ok() {
            c.completed_bytes.fetch_add(bytes, Ordering::Relaxed);
        } else {
            c.failed.fetch_add(1, Ordering::Relaxed);
            c.failed_bytes.fetch_add(bytes, Ordering::Relaxed);
            self.errors[status_index(status)].fetch_add(1, Ordering::Relaxed);
        }
        c.latency.record(latency_ns);
    }

    pub fn read(&self) -> EndpointValues {
        let mut v = EndpointValues::default();
        for (o, c) in v.ops.iter_mut().zip(self.ops.iter()) {
            o.submitted = c.submitted.load(Ordering::Relaxed);
            o.submitted_bytes = c.submitted_bytes.load(Ordering::Relaxed);
            o.completed_bytes = c.completed_bytes.load(Ordering::Relaxed);
            o.failed = c.failed.load(Ordering::Relaxed);
            o.failed_bytes = c.failed_bytes.load(Ordering::Relaxed);
            o.rejected = c.rejected.load(Ordering::Relaxed);
            c.latency.add_to(&mut o.latency);
            o.completed = o.latency.count.saturating_sub(o.failed);
        }
        v.errors = Status::ALL
            .iter()
            .zip(self.errors.iter())
            .filter_map(|(&s, n)| {
                let n = n.load(Ordering::Relaxed);
                (n > 0).then_some((s, n))
            })
            .collect();
        v
    }
}
