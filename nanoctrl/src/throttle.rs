//! Rate-limited logging: during a Redis outage every request fails the same way, and one
//! log line per request would flood the log (and, with a slow log sink, cost more than
//! the request). A [`Throttle`] lets one line through per window and counts the rest;
//! the next line that gets through says how many were suppressed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Throttle {
    window: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Throttle {
    pub const fn new(window: Duration) -> Throttle {
        Throttle {
            window,
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be logged now (`n` lines were suppressed since the last
    /// one), `None` when it must be dropped. Never blocks on I/O.
    pub fn admit(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < self.window) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }

    /// Lines suppressed since the last admitted one (and resets the window, so that the
    /// next failure after a recovery is logged at once).
    pub fn reset(&self) -> u64 {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.suppressed.swap(0, Ordering::Relaxed)
    }
}

/// `" (N similar lines suppressed)"`, or nothing.
pub fn suppressed_note(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} similar lines suppressed)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_window() {
        let t = Throttle::new(Duration::from_millis(200));
        assert_eq!(t.admit(), Some(0));
        for _ in 0..100 {
            assert_eq!(t.admit(), None);
        }
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(t.admit(), Some(100));
        assert_eq!(t.admit(), None);
        assert_eq!(t.reset(), 1);
        assert_eq!(t.admit(), Some(0));
        assert_eq!(suppressed_note(0), "");
        assert_eq!(suppressed_note(3), " (3 similar lines suppressed)");
    }
}
