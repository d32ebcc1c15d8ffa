//! The early-message window: messages the peer has not received yet are bounded, like
//! TCP's, by [`EARLY_BUDGET`]. Each message is charged ([`Early::charge`]): the sender
//! counts what it sent, the receiver publishes in its ring controls what it handed to
//! receives, and a send that would take the difference past the budget waits (driving
//! progress) for room until its deadline, then fails with `Timeout`. The receiver also
//! enforces the bound itself, so a peer that ignores the window cannot grow our memory.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::conn::Conn;
use super::recv::Early;
use super::state::Inner;
use crate::engine::Deadline;
use crate::error::{Error, Result, Status};
use crate::transport::matching::{PostedRecv, EARLY_BUDGET};

/// What each held message costs beyond any bytes it buffers: its queue entry.
const NOTE: u64 = std::mem::size_of::<Early>() as u64;

const BUDGET: u64 = EARLY_BUDGET as u64;

/// The receiver refuses only a peer that ignores the window; the slack covers a
/// message taking its charge back (`requeue`) while the sender counted on it.
const HARD_BOUND: u64 = 2 * BUDGET;

/// The charge of messages matched on arrival (never held) that the receiver may still
/// owe the sender: it hands them back in batches (`release_matched`), one write to the
/// controls the sender reads per batch instead of a cache line moving between the two
/// processes with every small message. The sender's window is at most this much
/// smaller than it would be, and a message larger than the budget goes once at most
/// this much is held (on both sides' count).
const RELEASE_LAG: u64 = 64 * NOTE;

/// The charge of a message that buffers `buffered` bytes beyond its queue entry (both
/// sides compute it: inline and pulled messages 0, staged ones their length).
pub(super) fn charge(buffered: u64) -> u64 {
    NOTE + buffered
}

/// What the receiver did with an arriving message.
// Returned and matched at once, never stored: boxing the message would be the
// allocation per early message this path avoids.
#[allow(clippy::large_enum_variant)]
pub(super) enum Arrival {
    /// A receive was waiting: deliver the message into it.
    Matched(PostedRecv, Early),
    /// Held until a receive is posted.
    Queued,
    /// Refused: the peer went past the window (the caller says so to the peer).
    Refused,
}

impl Inner {
    /// Sender: takes `charge` of the window, waiting while the peer holds too much, until
    /// `deadline` (or `timeout` from the first wait). A message alone may exceed the
    /// budget (it waits until at most [`RELEASE_LAG`] is held). Returns the deadline it started, if
    /// it waited, for the rest of the send.
    pub fn reserve_early(
        &self,
        c: &Conn,
        charge: u64,
        mut deadline: Option<Deadline>,
        timeout: Duration,
    ) -> Result<Option<Deadline>> {
        let mut spins = 0u32;
        loop {
            let sent = c.early_sent.load(Ordering::Acquire);
            let held = sent.wrapping_sub(c.out_bell.released());
            if held <= RELEASE_LAG || held.saturating_add(charge) <= BUDGET {
                if c.early_sent
                    .compare_exchange(
                        sent,
                        sent.wrapping_add(charge),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok()
                {
                    return Ok(deadline);
                }
                continue;
            }
            self.conn()?;
            if spins == 0 {
                self.stats.window_waits.fetch_add(1, Ordering::Relaxed);
            }
            let d = *deadline.get_or_insert_with(|| Deadline::after(timeout));
            if d.expired() {
                return Err(Error::new(
                    Status::Timeout,
                    format!(
                        "the peer holds {held} bytes of messages it has not received (no recv \
                         posted; the bound is {BUDGET}): this send waited for room until its \
                         deadline"
                    ),
                ));
            }
            // Room comes from the peer's receives; our own progress may be what it needs.
            self.poll(c);
            spins += 1;
            if spins < 64 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    /// Sender: gives back a charge whose message never reached the ring.
    pub fn unreserve_early(&self, c: &Conn, charge: u64) {
        c.early_sent.fetch_sub(charge, Ordering::AcqRel);
    }

    /// Receiver: a message arrived; matched with a waiting receive, held, or refused
    /// when holding it would exceed the bound. Arrivals come from the one polling thread
    /// at a time, and receives only lower what is held, so check-then-queue is exact.
    pub fn arrive(&self, c: &Conn, m: Early) -> Arrival {
        let charge = m.charge();
        let held = self.early_held.load(Ordering::Acquire);
        if held > RELEASE_LAG && held + charge > HARD_BOUND && self.msgs.early_len() > 0 {
            self.stats.refused_messages.fetch_add(1, Ordering::Relaxed);
            return Arrival::Refused;
        }
        self.early_held.fetch_add(charge, Ordering::AcqRel);
        match self.msgs.arrive(m) {
            Some((r, m)) => {
                self.early_held.fetch_sub(charge, Ordering::AcqRel);
                c.in_bell.release(charge, false);
                Arrival::Matched(r, m)
            }
            None => Arrival::Queued,
        }
    }

    /// Receiver: a message went straight into a waiting receive (never held). Its
    /// charge goes back to the sender with the next batch, once more than
    /// [`RELEASE_LAG`] has gathered. Called under the consumer's lock (one writer).
    pub fn release_matched(&self, c: &Conn, charge: u64) {
        let owed = self.matched_unreleased.load(Ordering::Relaxed) + charge;
        if owed > RELEASE_LAG {
            self.matched_unreleased.store(0, Ordering::Relaxed);
            c.in_bell.release(owed, false);
        } else {
            self.matched_unreleased.store(owed, Ordering::Relaxed);
        }
    }

    /// Receiver: a receive is posted; the oldest held message, if any, is now its.
    pub fn post_recv(&self, c: &Conn, r: PostedRecv) {
        if let Some((r, m)) = self.msgs.post(r) {
            let charge = m.charge();
            self.early_held.fetch_sub(charge, Ordering::AcqRel);
            c.in_bell.release(charge, false);
            self.complete_recv(c, r, m);
        }
    }

    /// Receiver: a matched message whose receive was cancelled goes back to the queue
    /// (taking its charge back), or on to the next receive.
    pub fn requeue(&self, c: &Conn, m: Early) {
        let charge = m.charge();
        self.early_held.fetch_add(charge, Ordering::AcqRel);
        c.in_bell.release(charge, true);
        if let Some((r, m)) = self.msgs.requeue(m) {
            self.early_held.fetch_sub(charge, Ordering::AcqRel);
            c.in_bell.release(charge, false);
            self.complete_recv(c, r, m);
        }
    }
}
