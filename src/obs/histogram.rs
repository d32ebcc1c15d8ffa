//! A lock-free log-linear latency histogram: every power of two is split into four
//! buckets (at most 25 % relative error), 252 buckets cover 0..2^64 ns. [`Histogram::record`]
//! is one relaxed `fetch_add` per counter, so any number of threads record at once;
//! [`Histogram::record_one_writer`] is plain loads and stores, for a histogram only one
//! thread records in (an endpoint's per-thread shard).

use std::sync::atomic::{AtomicU64, Ordering};

/// Sub-buckets per power of two, as a bit count.
const SUB_BITS: u32 = 2;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets needed for every u64 value.
pub const BUCKETS: usize = ((64 - SUB_BITS + 1) as usize) * SUB as usize;

/// The bucket a value falls in.
pub fn bucket_of(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    let sub = (v >> (e - SUB_BITS)) - SUB;
    ((e - SUB_BITS + 1) as u64 * SUB + sub) as usize
}

/// The smallest value of bucket `i`.
pub fn bucket_low(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let g = i / SUB;
    (SUB + i % SUB) << (g - 1)
}

/// The largest value of bucket `i`.
pub fn bucket_high(i: usize) -> u64 {
    if i + 1 >= BUCKETS {
        u64::MAX
    } else {
        bucket_low(i + 1) - 1
    }
}

/// The count is the sum of the buckets (one fewer atomic add per record).
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum: AtomicU64,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn record(&self, v: u64) {
        self.buckets[bucket_of(v)].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
        if v > self.max.load(Ordering::Relaxed) {
            self.max.fetch_max(v, Ordering::Relaxed);
        }
    }

    /// [`Histogram::record`] for a histogram that only the calling thread records in:
    /// no locked instruction (a second writer would lose counts, never tear them).
    #[inline]
    pub fn record_one_writer(&self, v: u64) {
        let add = |c: &AtomicU64, n: u64| {
            c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed)
        };
        add(&self.buckets[bucket_of(v)], 1);
        add(&self.sum, v);
        if v > self.max.load(Ordering::Relaxed) {
            self.max.store(v, Ordering::Relaxed);
        }
    }

    /// A copy of the counts (each counter read once; concurrent records may land in
    /// some counters and not yet in others).
    pub fn read(&self) -> HistSnapshot {
        let mut s = HistSnapshot::default();
        self.add_to(&mut s);
        s
    }

    pub fn add_to(&self, s: &mut HistSnapshot) {
        for (i, b) in self.buckets.iter().enumerate() {
            let n = b.load(Ordering::Relaxed);
            s.buckets[i] += n;
            s.count += n;
        }
        s.sum += self.sum.load(Ordering::Relaxed);
        s.max = s.max.max(self.max.load(Ordering::Relaxed));
    }
}

/// Plain counts of a histogram, for sums over endpoints and for the snapshot.
#[derive(Clone)]
pub struct HistSnapshot {
    pub buckets: [u64; BUCKETS],
    pub count: u64,
    pub sum: u64,
    pub max: u64,
}

impl Default for HistSnapshot {
    fn default() -> Self {
        HistSnapshot {
            buckets: [0; BUCKETS],
            count: 0,
            sum: 0,
            max: 0,
        }
    }
}

impl HistSnapshot {
    pub fn merge(&mut self, o: &HistSnapshot) {
        for (a, b) in self.buckets.iter_mut().zip(o.buckets.iter()) {
            *a += b;
        }
        self.count += o.count;
        self.sum += o.sum;
        self.max = self.max.max(o.max);
    }

    /// Scales the counts to `total` operations, of which these are a sample (timing is
    /// sampled, counting is not): every bucket and the sum grow by `total / count`, the
    /// buckets rounded so that they add up to `total` exactly (largest remainders first);
    /// `max` stays the largest value seen. No sample at all: the `total` go to bucket 0.
    pub fn scale_to(&mut self, total: u64) {
        if total == self.count {
            return;
        }
        if self.count == 0 {
            self.buckets[0] = total;
            self.count = total;
            return;
        }
        let (t, c) = (total as u128, self.count as u128);
        let mut rem: Vec<(u128, usize)> = Vec::new();
        let mut given = 0u64;
        for (i, b) in self.buckets.iter_mut().enumerate() {
            if *b == 0 {
                continue;
            }
            let exact = *b as u128 * t;
            *b = (exact / c) as u64;
            given += *b;
            rem.push((exact % c, i));
        }
        rem.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(_, i) in rem.iter().take((total - given) as usize) {
            self.buckets[i] += 1;
        }
        self.sum = (self.sum as u128 * t / c).min(u64::MAX as u128) as u64;
        self.count = total;
    }

    /// The `q` quantile (0..=1): the upper bound of the bucket holding it, capped at the
    /// largest value seen; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bucket_high(i).min(self.max);
            }
        }
        self.max
    }

    /// Cumulative counts at the power-of-two bounds `2^k ns` for `k` in `from..=to`
    /// (every such bound is a bucket edge, so the counts are exact): `(bound, count <=
    /// bound - 1)`, i.e. values below the bound.
    pub fn cumulative_pow2(&self, from: u32, to: u32) -> Vec<(u64, u64)> {
        (from..=to)
            .map(|k| {
                let bound = 1u64 << k;
                let n = self
                    .buckets
                    .iter()
                    .enumerate()
                    .take_while(|(i, _)| bucket_high(*i) < bound)
                    .map(|(_, n)| n)
                    .sum();
                (bound, n)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_u64() {
        assert_eq!(bucket_low(0), 0);
        for i in 0..BUCKETS - 1 {
            assert_eq!(bucket_high(i) + 1, bucket_low(i + 1), "bucket {i}");
            assert_eq!(bucket_of(bucket_low(i)), i);
            assert_eq!(bucket_of(bucket_high(i)), i);
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn relative_error_at_most_a_quarter() {
        for v in [5u64, 17, 1000, 123_456, 9_999_999_999] {
            let i = bucket_of(v);
            assert!(bucket_high(i) - bucket_low(i) <= v / 4, "{v}");
        }
    }

    #[test]
    fn quantiles_and_counts() {
        let h = Histogram::default();
        for v in 1..=100u64 {
            h.record(v * 1000);
        }
        let s = h.read();
        assert_eq!(s.count, 100);
        assert_eq!(s.sum, 5050 * 1000);
        assert_eq!(s.max, 100_000);
        let p50 = s.quantile(0.5);
        assert!((50_000..=62_500).contains(&p50), "{p50}");
        assert_eq!(s.quantile(1.0), 100_000);
        let cum = s.cumulative_pow2(10, 17);
        assert_eq!(cum.last().unwrap(), &(1 << 17, 100));
        // below 2^16 = 65536: 1000..=65000
        assert_eq!(cum[6], (1 << 16, 65));
    }

    #[test]
    fn scaling_keeps_the_total_exact_and_the_shape() {
        let h = Histogram::default();
        for v in [100u64, 100, 100, 5000] {
            h.record_one_writer(v);
        }
        let mut s = h.read();
        s.scale_to(10);
        assert_eq!(s.count, 10);
        assert_eq!(s.buckets.iter().sum::<u64>(), 10);
        // 3/4 of 10 = 7.5 and 1/4 = 2.5: the tie goes to the lower bucket
        assert_eq!(s.buckets[bucket_of(100)], 8);
        assert_eq!(s.buckets[bucket_of(5000)], 2);
        assert_eq!((s.sum, s.max), (5300 * 10 / 4, 5000));
        let mut e = HistSnapshot::default();
        e.scale_to(3);
        assert_eq!((e.count, e.buckets[0]), (3, 3));
    }
}
