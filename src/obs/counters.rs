//! The counters of one endpoint: per operation kind, submissions, completions and
//! failures with their bytes plus a latency histogram; per status, the failures; the
//! engine's retries.

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::histogram::HistSnapshot;
use super::local::{measured, with_shard};
use super::shard::{status_index, Shard};
use crate::error::Status;

named_enum! {
    /// Operation kinds, in snapshot order; the names are the snapshot's and the metric
    /// labels' (the original's `pending_by_op` keys). `write_imm` is `write_with_imm`.
    pub enum OpKind: u8 {
        Read = 0 => "read",
        Write = 1 => "write",
        WriteImm = 2 => "write_with_imm",
        ImmRecv = 3 => "imm_recv",
        Send = 4 => "send",
        Recv = 5 => "recv",
    }
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

/// The counters of one endpoint. Shared by the endpoint, its operations and the process
/// registry; the registry keeps them after the endpoint is gone (totals per peer never go
/// back). Every thread that records here writes its own shard; reads sum them.
#[repr(C)]
pub struct EndpointStats {
    /// First, with `timed_once`: every recorded operation reads both (one cache line).
    pub id: u64,
    /// Per kind, whether an operation was timed yet (the first one is).
    timed_once: [AtomicBool; 6],
    pub transport: &'static str,
    peer: Mutex<Arc<str>>,
    /// The shards threads hold in their caches (or held: a shard no thread holds goes to
    /// the next thread that needs one, so there are never more than threads at once).
    shards: Mutex<Vec<Arc<Shard>>>,
    /// For threads without a cache (exiting): written under the `shards` lock.
    spare: Shard,
}

/// Plain values of [`EndpointStats`].
#[derive(Clone, Default)]
pub struct EndpointValues {
    pub ops: [OpValues; 6],
    /// `(status, count)` for every status seen at least once.
    pub errors: Vec<(Status, u64)>,
    /// See [`EndpointStats::retried`].
    pub retries: u64,
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
        self.retries += o.retries;
    }

    pub fn errors_of(&self, s: Status) -> u64 {
        self.errors.iter().find(|e| e.0 == s).map_or(0, |e| e.1)
    }
}

impl EndpointStats {
    pub(super) fn new(id: u64, transport: &'static str) -> EndpointStats {
        EndpointStats {
            id,
            timed_once: [const { AtomicBool::new(false) }; 6],
            transport,
            peer: Mutex::new(Arc::from("")),
            shards: Mutex::new(Vec::new()),
            spare: Shard::default(),
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

    /// A shard for the calling thread: one no thread holds any more, else a new one.
    pub(super) fn adopt_shard(&self) -> Arc<Shard> {
        let mut v = self.shards.lock();
        // under the lock no other thread can adopt the same one; the fence makes the
        // last holder's writes (released by its drop) visible before ours
        if let Some(s) = v.iter().find(|s| Arc::strong_count(s) == 1) {
            fence(Ordering::Acquire);
            return s.clone();
        }
        let s = Arc::new(Shard::default());
        v.push(s.clone());
        s
    }

    pub(super) fn with_spare<R>(&self, f: impl FnOnce(&Shard) -> R) -> R {
        let _g = self.shards.lock();
        f(&self.spare)
    }

    /// Whether no `kind` operation has been timed here yet: then the next one is, so that
    /// the histogram has a sample to scale.
    #[inline]
    pub fn needs_timing(&self, kind: OpKind) -> bool {
        !self.timed_once[kind as usize].load(Ordering::Relaxed)
    }

    pub fn submitted(&self, kind: OpKind, bytes: u64) {
        with_shard(self, |s| {
            let c = &s.ops[kind as usize];
            c.submitted.add(1);
            c.submitted_bytes.add(bytes);
        })
    }

    /// An operation refused at submission with `status`.
    pub fn rejected(&self, kind: OpKind, status: Status) {
        with_shard(self, |s| {
            s.ops[kind as usize].rejected.add(1);
            s.errors[status_index(status)].add(1);
        })
    }

    /// A submitted operation ended with `status` after `latency_ns` (`None`: untimed).
    pub fn finished(&self, kind: OpKind, status: Status, bytes: u64, latency_ns: Option<u64>) {
        if let Some(l) = latency_ns {
            self.timed(kind, l);
        }
        with_shard(self, |s| {
            let c = &s.ops[kind as usize];
            if status.is_ok() {
                c.completed_bytes.add(bytes);
            } else {
                c.failed.add(1);
                c.failed_bytes.add(bytes);
                s.errors[status_index(status)].add(1);
            }
            match latency_ns {
                Some(l) => c.latency.record_one_writer(l),
                None => c.untimed.add(1),
            }
        })
    }

    /// An operation of `nbytes` that completed with `Ok` within its submission.
    #[inline]
    pub fn completed_at_once(&self, kind: OpKind, nbytes: u64, latency_ns: Option<u64>) {
        match latency_ns {
            None => with_shard(self, |s| {
                let c = &s.ops[kind as usize];
                c.at_once.add(1);
                c.at_once_bytes.add(nbytes);
            }),
            Some(l) => self.completed_at_once_timed(kind, nbytes, l),
        }
    }

    #[cold]
    fn completed_at_once_timed(&self, kind: OpKind, nbytes: u64, latency_ns: u64) {
        self.timed(kind, latency_ns);
        with_shard(self, |s| {
            let c = &s.ops[kind as usize];
            c.at_once.add(1);
            c.at_once_bytes.add(nbytes);
            c.at_once_timed.add(1);
            c.latency.record_one_writer(latency_ns);
        })
    }

    /// The engine did work again on this endpoint `n` times (re-dialled a connection):
    /// `retries` in its rows.
    pub fn retried(&self, n: u64) {
        if super::switch::enabled() {
            with_shard(self, |s| s.retries.add(n))
        }
    }

    /// A `kind` operation was timed at `latency_ns` (sets how often this thread times).
    fn timed(&self, kind: OpKind, latency_ns: u64) {
        let t = &self.timed_once[kind as usize];
        if !t.load(Ordering::Relaxed) {
            t.store(true, Ordering::Relaxed);
        }
        measured(latency_ns);
    }

    pub fn read(&self) -> EndpointValues {
        let mut v = EndpointValues::default();
        let mut errors = [0u64; Status::ALL.len()];
        let mut untimed = [0u64; 6];
        let shards = self.shards.lock();
        for s in shards
            .iter()
            .map(|s| &**s)
            .chain(std::iter::once(&self.spare))
        {
            for ((o, u), c) in v.ops.iter_mut().zip(untimed.iter_mut()).zip(s.ops.iter()) {
                let (n, b) = (c.at_once.get(), c.at_once_bytes.get());
                o.submitted += c.submitted.get() + n;
                o.submitted_bytes += c.submitted_bytes.get() + b;
                o.completed_bytes += c.completed_bytes.get() + b;
                o.failed += c.failed.get();
                o.failed_bytes += c.failed_bytes.get();
                o.rejected += c.rejected.get();
                *u += c.untimed.get() + n.saturating_sub(c.at_once_timed.get());
                c.latency.add_to(&mut o.latency);
            }
            for (e, c) in errors.iter_mut().zip(s.errors.iter()) {
                *e += c.get();
            }
            v.retries += s.retries.get();
        }
        drop(shards);
        for (o, u) in v.ops.iter_mut().zip(untimed) {
            o.latency.scale_to(o.latency.count + u);
            o.completed = o.latency.count.saturating_sub(o.failed);
        }
        v.errors = Status::ALL
            .iter()
            .zip(errors)
            .filter(|(_, n)| *n > 0)
            .map(|(&s, n)| (s, n))
            .collect();
        v
    }
}
