//! What each thread keeps for the counters: its shards of the endpoints it recorded on
//! lately (so that every shard has one writer), and when to time its next operation.
//!
//! Timing is sampled: a clock read costs ~25 ns in a VM (`rdtsc` traps or is slow
//! there), several times the rest of a 1 KiB shared-memory write's bookkeeping. A thread
//! times one operation in `period` on average, the gaps drawn at random (no aliasing
//! with periodic workloads), and `period` follows the last latency it measured:
//! `BUDGET_NS / latency`, within `1..=MAX_PERIOD`. Operations of 16 µs or more are all
//! timed; a 100 ns operation is timed about once in 160; the first of each kind on each
//! endpoint always is. Counts are exact either way: a snapshot scales the timed sample
//! of each histogram to the exact number of operations (`HistSnapshot::scale_to`).

use std::cell::{Cell, UnsafeCell};
use std::sync::{Arc, OnceLock};

use super::counters::EndpointStats;
use super::shard::Shard;

/// Endpoints whose shard a thread keeps at once; past that the least recently used goes
/// (back to its endpoint, which hands it to the next thread that needs one).
const CACHE: usize = 16;
/// Operations of this latency or longer are all timed (two clock reads are then < 1 %).
const BUDGET_NS: u64 = 16384;
/// One operation in this many at most (on average) is timed, unless
/// `DLSLIME_OBS_SAMPLE_PERIOD` says otherwise (1: every operation is timed).
const MAX_PERIOD: u64 = 256;

/// [`MAX_PERIOD`] or the environment's, read once.
fn max_period() -> u64 {
    static P: OnceLock<u64> = OnceLock::new();
    *P.get_or_init(|| {
        std::env::var("DLSLIME_OBS_SAMPLE_PERIOD")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(MAX_PERIOD, |p| p.clamp(1, u32::MAX as u64 / 2))
    })
}

/// The cache of shards. Touched only by `with_shard` (and `miss`, which it calls),
/// neither of which re-enters: no other reference exists while one is in use.
struct Local {
    /// `(endpoint id, shard)`, most recently used first.
    shards: UnsafeCell<Vec<(u64, Arc<Shard>)>>,
}

impl Drop for Local {
    fn drop(&mut self) {
        // the shards go: nothing may reach them through the front entry any more
        let _ = HOT.try_with(|h| h.front_id.set(0));
    }
}

/// What every recorded operation touches, apart from the cache: when to time, and the
/// cache's front entry. With nothing to drop, its thread-local needs no destructor
/// registration, so an access is one `%fs`-relative address, no state check.
struct Hot {
    /// Operations to leave untimed before the next timed one.
    countdown: Cell<u32>,
    period: Cell<u32>,
    rng: Cell<u32>,
    /// The id of the endpoint whose shard `front` is (0: none; ids start at 1).
    front_id: Cell<u64>,
    /// The shard of the cache's first entry: valid while `front_id` is not 0, because the
    /// cache holds its `Arc` until `miss` moves another entry in front (and sets both) or
    /// the cache is dropped (and clears `front_id`).
    front: Cell<*const Shard>,
}

thread_local! {
    static LOCAL: Local = const { Local { shards: UnsafeCell::new(Vec::new()) } };
    static HOT: Hot = const {
        Hot {
            countdown: Cell::new(0),
            period: Cell::new(1),
            rng: Cell::new(0x9E37_79B9),
            front_id: Cell::new(0),
            front: Cell::new(std::ptr::null()),
        }
    };
}

/// Whether this thread times its next operation.
#[inline]
pub fn sample() -> bool {
    HOT.with(|l| {
        let c = l.countdown.get();
        if c > 0 {
            l.countdown.set(c - 1);
            return false;
        }
        // xorshift32: the next gap, uniform in [period/2, 3·period/2)
        let mut x = l.rng.get();
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        l.rng.set(x);
        let p = l.period.get();
        l.countdown.set(p / 2 + x % p);
        true
    })
}

/// This thread measured an operation of `latency_ns`: sets how often it times the next.
#[inline]
pub fn measured(latency_ns: u64) {
    let p = (BUDGET_NS / latency_ns.max(1)).clamp(1, max_period()) as u32;
    HOT.with(|l| {
        if l.period.get() != p {
            l.period.set(p);
            l.countdown.set(l.countdown.get().min(p));
        }
    });
}

/// Runs `f` on this thread's shard of `stats` (made or adopted on first use). The shard
/// of the endpoint recorded on last is one compare away; others are looked up in the
/// cache (`miss`). Where the thread has no cache (it is exiting), `f` runs on the
/// endpoint's shared spare shard under its lock.
#[inline]
pub fn with_shard<R>(stats: &EndpointStats, f: impl FnOnce(&Shard) -> R) -> R {
    let front = HOT.with(|h| {
        if h.front_id.get() == stats.id {
            h.front.get()
        } else {
            std::ptr::null()
        }
    });
    if !front.is_null() {
        // SAFETY: `front` is the shard the cache holds first (see `Hot::front`), and
        // nothing below can drop it: `f` only records in it.
        return f(unsafe { &*front });
    }
    with_shard_miss(stats, f)
}

#[cold]
#[inline(never)]
fn with_shard_miss<R>(stats: &EndpointStats, f: impl FnOnce(&Shard) -> R) -> R {
    let mut f = Some(f);
    let r = LOCAL.try_with(|l| {
        // SAFETY: the only reference to the cache while it lives (see `shards`): `f`
        // records in a shard and `miss` locks the endpoint's table, neither reaches
        // this thread's cache again.
        let v = unsafe { &mut *l.shards.get() };
        miss(v, stats);
        f.take().map(|f| f(&v[0].1))
    });
    match (r, f) {
        (Ok(Some(r)), _) => r,
        (_, Some(f)) => stats.with_spare(f),
        (_, None) => unreachable!("f ran"),
    }
}

/// Brings the shard of `stats` to the front of the cache, and makes it the front entry.
fn miss(v: &mut Vec<(u64, Arc<Shard>)>, stats: &EndpointStats) {
    match v.iter().position(|e| e.0 == stats.id) {
        Some(0) => {}
        Some(i) => {
            let e = v.remove(i);
            v.insert(0, e);
        }
        None => {
            if v.len() >= CACHE {
                v.pop();
            }
            v.insert(0, (stats.id, stats.adopt_shard()));
        }
    }
    let (id, shard) = (v[0].0, Arc::as_ptr(&v[0].1));
    HOT.with(|h| {
        h.front.set(shard);
        h.front_id.set(id);
    });
}
