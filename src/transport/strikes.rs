//! Refused accesses on one connection: a peer that presents wrong keys, ranges outside
//! every region, or targets it may not use more than [`MAX_STRIKES`] times is probing,
//! not making mistakes; the transport closes that connection and logs it once.

use std::sync::atomic::{AtomicU32, Ordering};

/// Refusals a connection may collect; the next one closes it.
pub const MAX_STRIKES: u32 = 8;

#[derive(Default, Debug)]
pub struct Strikes(AtomicU32);

impl Strikes {
    /// Counts one refusal; true exactly once, when the connection must be closed.
    pub fn hit(&self) -> bool {
        self.0.fetch_add(1, Ordering::Relaxed) == MAX_STRIKES
    }

    pub fn count(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_once_after_the_limit() {
        let s = Strikes::default();
        let fired: Vec<bool> = (0..MAX_STRIKES + 3).map(|_| s.hit()).collect();
        assert_eq!(fired.iter().filter(|f| **f).count(), 1);
        assert!(fired[MAX_STRIKES as usize]);
    }
}
