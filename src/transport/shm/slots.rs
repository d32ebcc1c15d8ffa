//! Our bounce slots (the staged path): `NSLOTS` slots of `SLOT_SIZE` bytes in the control
//! segment, taken by a submitter for one chunk and freed by the peer's `DONE` for it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::conn::Conn;
use super::ring::NSLOTS;
use super::state::Inner;
use crate::engine::Deadline;
use crate::error::{Error, Result, Status};

impl Inner {
    /// Takes a free slot, driving progress (so replies free slots) until the deadline.
    pub fn acquire_slot(&self, c: &Conn, deadline: Deadline) -> Result<u32> {
        loop {
            let cur = c.slots.load(Ordering::Acquire);
            let free = !cur & ((1u32 << NSLOTS) - 1);
            if free != 0 {
                let s = free.trailing_zeros();
                if c.slots
                    .compare_exchange(cur, cur | (1 << s), Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Ok(s);
                }
                continue;
            }
            self.conn()?;
            if deadline.expired() {
                return Err(Error::new(
                    Status::Timeout,
                    "no bounce slot freed before the deadline",
                ));
            }
            if !self.poll(c) {
                std::thread::sleep(Duration::from_micros(20));
            }
        }
    }

    pub fn free_slot(&self, c: &Conn, s: u32) {
        c.slots.fetch_and(!(1 << s), Ordering::AcqRel);
    }
}
