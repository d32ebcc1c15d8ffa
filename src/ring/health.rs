//! Route health: quarantine after a retryable failure, round-robin over the healthy
//! routes, and never starve (all quarantined: use all).

use std::time::Instant;

use parking_lot::Mutex;

/// The quarantine deadline of one route (lazy expiry: a route whose deadline passed is
/// healthy again, and the entry is cleared when read).
#[derive(Default)]
pub struct Health {
    until: Mutex<Option<Instant>>,
}

impl Health {
    pub fn quarantine(&self, until: Instant) {
        *self.until.lock() = Some(until);
    }

    pub fn is_healthy(&self, now: Instant) -> bool {
        let mut g = self.until.lock();
        match *g {
            Some(t) if t > now => false,
            Some(_) => {
                *g = None;
                true
            }
            None => true,
        }
    }

    pub fn quarantined_until(&self) -> Option<Instant> {
        *self.until.lock()
    }
}

/// The route for attempt `k` of a call whose round-robin ticket is `rr`: the healthy
/// routes not tried yet in this call, else the healthy ones, else all (never starve).
pub fn pick(healthy: &[bool], tried: &[usize], rr: usize, k: usize) -> usize {
    let n = healthy.len();
    let fresh: Vec<usize> = (0..n)
        .filter(|i| healthy[*i] && !tried.contains(i))
        .collect();
    let pool: Vec<usize> = if !fresh.is_empty() {
        fresh
    } else {
        let h: Vec<usize> = (0..n).filter(|i| healthy[*i]).collect();
        if h.is_empty() {
            let untried: Vec<usize> = (0..n).filter(|i| !tried.contains(i)).collect();
            if untried.is_empty() {
                (0..n).collect()
            } else {
                untried
            }
        } else {
            h
        }
    };
    pool[(rr + k) % pool.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn round_robin_skips_quarantined_and_never_starves() {
        let all = [true; 4];
        let picks: Vec<usize> = (0..4).map(|rr| pick(&all, &[], rr, 0)).collect();
        assert_eq!(picks, vec![0, 1, 2, 3]);
        // attempt 1 avoids the route attempt 0 used
        assert_ne!(pick(&all, &[2], 2, 1), 2);
        let h = [false, true, true, true];
        for rr in 0..12 {
            assert_ne!(pick(&h, &[], rr, 0), 0);
        }
        // all quarantined: still a route, and a fresh one for the retry
        let none = [false; 4];
        assert_eq!(pick(&none, &[], 1, 0), 1);
        assert_ne!(pick(&none, &[1], 1, 1), 1);
        assert_eq!(pick(&[false], &[0], 0, 1), 0);
    }

    #[test]
    fn quarantine_expires() {
        let h = Health::default();
        let now = Instant::now();
        assert!(h.is_healthy(now));
        h.quarantine(now + Duration::from_millis(50));
        assert!(!h.is_healthy(now));
        assert!(h.is_healthy(now + Duration::from_millis(51)));
        assert!(h.quarantined_until().is_none(), "expired entry cleared");
    }
}
