//! The slot state machine: one 64-bit control word per slot, changed only by
//! compare-and-swap, so every process that maps the ring obeys the same rules.
//!
//! ```text
//! ctl = state (bits 0..2) | token (bits 2..34) | lap (bits 34..64)
//!
//!   (FREE,    L, 0)    empty: never written, write aborted, or a dead writer reclaimed
//!   (FREE,    L, tok)  consumed: the attempt `tok` committed (its reader has the bytes)
//!   (WRITING, L, tok)  the producer attempt `tok` is copying a payload in
//!   (READY,   L, 0)    content of generation g with lap(g) = L is ready
//!   (READING, L, tok)  the read attempt `tok` owns the slot
//! ```
//!
//! A generation is the producer's write ticket: the value of the ring's `write_idx` when
//! the write claimed the slot, so slot = g % N and `lap(g) = (g / N + 1) mod 2^30` (0 is
//! "before the first write"). The lap in the control word makes every transition that
//! names a generation fail once the producer has moved the slot on (no ABA); the slot's
//! full 64-bit `gen` field is checked as well after a grant, so even a reference 2^30
//! laps old is refused.
//!
//! Edges (each one CAS on the whole word; the side that loses a race learns it from the
//! value it gets back):
//!
//! | edge | who | function |
//! |---|---|---|
//! | FREE/READY(L-1) → WRITING(L, tok) | producer, ticket g | [`SlotHeader::claim`] |
//! | WRITING(L, tok) → READY(L, 0) | that producer | [`SlotHeader::publish`] |
//! | WRITING(L, tok) → FREE(L, 0) | that producer (its copy failed) | [`SlotHeader::abort_write`] |
//! | READY(L, 0) → READING(L, tok) | a reader attempt for g | [`SlotHeader::grant`] |
//! | READING(L, tok) → FREE(L, tok) | the attempt's commit (bytes delivered) | [`SlotHeader::finish`] |
//! | READING(L, tok) → READY(L, 0) | the attempt's failure (read failed, lease over) | [`SlotHeader::finish`] |
//! | READING/WRITING(L, tok) → READY/FREE | anyone, once `tok`'s owner is dead or its lease expired | [`SlotHeader::reclaim`] |
//!
//! Finishing an attempt is a CAS on `(state, lap, token)`: once the slot moved on (the
//! attempt was reclaimed, committed elsewhere, the producer overwrote it), the finish is
//! a no-op that reports what it found. Because a commit leaves its token in the FREE
//! word, "did attempt `tok` commit?" has an exact answer ([`SlotHeader::commit_state`])
//! even when the commit's reply was lost.
//!
//! The payload and the `gen`/`len` fields are written only while the producer holds
//! WRITING; they are published by the release CAS to READY and acquired by the CAS to
//! READING. A reader's loads of the payload happen before its commit (release), and the
//! producer's next claim acquires from that commit, so a committed read never overlaps a
//! write. The model in this file's `model` tests (loom, `make test-loom`) checks exactly
//! that.

#[cfg(loom)]
use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// A slot's state (the low two bits of its control word).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlotState {
    Free = 0,
    Writing = 1,
    Ready = 2,
    Reading = 3,
}

impl SlotState {
    fn from_bits(b: u64) -> SlotState {
        match b & 3 {
            0 => SlotState::Free,
            1 => SlotState::Writing,
            2 => SlotState::Ready,
            _ => SlotState::Reading,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SlotState::Free => "FREE",
            SlotState::Writing => "WRITING",
            SlotState::Ready => "READY",
            SlotState::Reading => "READING",
        }
    }
}

const TOKEN_SHIFT: u32 = 2;
const LAP_SHIFT: u32 = 34;
/// Laps are kept modulo 2^30 in the control word.
pub const LAP_MASK: u64 = (1 << 30) - 1;

/// A decoded control word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Word(pub u64);

impl Word {
    pub fn new(state: SlotState, token: u32, lap: u64) -> Word {
        Word(state as u64 | (u64::from(token) << TOKEN_SHIFT) | ((lap & LAP_MASK) << LAP_SHIFT))
    }
    pub fn state(self) -> SlotState {
        SlotState::from_bits(self.0)
    }
    pub fn token(self) -> u32 {
        (self.0 >> TOKEN_SHIFT) as u32
    }
    pub fn lap(self) -> u64 {
        self.0 >> LAP_SHIFT
    }
}

/// The lap a slot's control word carries while it holds generation `g` of a ring of `n`
/// slots.
pub fn lap_of(g: u64, n: u64) -> u64 {
    (g / n + 1) & LAP_MASK
}

/// The lap a slot must carry for the write with ticket `g` to claim it (the previous
/// content of that slot, or "never written").
pub fn claimable_lap(g: u64, n: u64) -> u64 {
    (g / n) & LAP_MASK
}

/// One slot's header in shared memory (64 bytes, one cache line). Only `ctl` decides
/// anything; `gen` and `len` describe the content and change only under WRITING; the
/// owner fields describe the attempt named by `owner_tok` (see [`SlotHeader::owner`]).
#[repr(C, align(64))]
pub struct SlotHeader {
    ctl: AtomicU64,
    gen: AtomicU64,
    len: AtomicU64,
    /// CLOCK_MONOTONIC nanoseconds after which the owner's attempt may be reclaimed;
    /// `u64::MAX`: only when the owner process is gone.
    lease_until: AtomicU64,
    owner_tok: AtomicU32,
    owner_pid: AtomicU32,
    _pad: [u64; 3],
}

/// What a producer's claim found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The slot is ours (WRITING). `dropped`: it held READY content nobody consumed.
    Claimed { dropped: bool },
    /// Another producer claimed this ticket first: move on to the next ticket.
    TicketTaken,
    /// The slot holds a lap this ticket cannot meet: the ticket is old (the producers
    /// have moved on since it was read), or the header is corrupt.
    Moved(Word),
    /// READY content nobody consumed, and overwriting is off.
    Full,
    /// A reader or another writer holds the slot (the word it holds).
    Busy(Word),
}

/// What a reader's grant found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// The slot is ours (READING) with `len` payload bytes.
    Granted { len: u64 },
    /// The slot holds another generation now (the producer lapped the reference), or the
    /// reference was never written. `current`: the generation it holds, if any.
    Stale { current: Option<u64> },
    /// This generation was consumed already (FREE after a commit).
    Consumed,
    /// Another attempt reads it, or it is still being written (the word found).
    Busy(Word),
}

/// Whether an attempt's finishing CAS applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    Done,
    /// The slot no longer holds `(READING, lap, token)`: a logged no-op.
    NotHeld(Word),
}

/// The fate of a read attempt, from the slot's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitState {
    /// The attempt committed (the slot is FREE with its token).
    Committed,
    /// The attempt still owns the slot.
    Held,
    /// The attempt lost the slot (reclaimed, finished as failed, or lapped).
    Lost,
}

impl SlotHeader {
    /// A zeroed header (what a fresh shared mapping holds): FREE, lap 0, no owner.
    #[cfg(any(test, loom))]
    #[allow(clippy::new_without_default)]
    pub fn new() -> SlotHeader {
        SlotHeader {
            ctl: AtomicU64::new(0),
            gen: AtomicU64::new(0),
            len: AtomicU64::new(0),
            lease_until: AtomicU64::new(0),
            owner_tok: AtomicU32::new(0),
            owner_pid: AtomicU32::new(0),
            _pad: [0; 3],
        }
    }

    pub fn word(&self) -> Word {
        Word(self.ctl.load(Ordering::Acquire))
    }

    /// The generation of the slot's content (meaningful in READY, READING, and FREE
    /// after a commit).
    pub fn generation(&self) -> u64 {
        self.gen.load(Ordering::Acquire)
    }

    /// The payload length of the slot's content (as `generation`).
    pub fn payload_len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    fn cas(&self, from: Word, to: Word) -> Result<(), Word> {
        self.ctl
            .compare_exchange(from.0, to.0, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(Word)
    }

    /// Records who owns the attempt `tok` that just took the slot (after its CAS).
    fn set_owner(&self, tok: u32, pid: u32, lease_until: u64) {
        self.lease_until.store(lease_until, Ordering::Relaxed);
        self.owner_pid.store(pid, Ordering::Relaxed);
        self.owner_tok.store(tok, Ordering::Release);
    }

    /// `(pid, lease_until)` of the attempt `tok`, if the owner fields describe it yet
    /// (they are written just after the CAS that installed `tok`).
    pub fn owner(&self, tok: u32) -> Option<(u32, u64)> {
        if self.owner_tok.load(Ordering::Acquire) != tok {
            return None;
        }
        let pid = self.owner_pid.load(Ordering::Relaxed);
        let lease = self.lease_until.load(Ordering::Relaxed);
        // Still the same attempt after reading them (a newer one rewrites all three).
        (self.owner_tok.load(Ordering::Acquire) == tok).then_some((pid, lease))
    }

    /// Producer: claims the slot for the write with ticket `g` (slot `g % n`).
    pub fn claim(&self, g: u64, n: u64, tok: u32, pid: u32, overwrite: bool) -> Claim {
        let want = claimable_lap(g, n);
        let mine = Word::new(SlotState::Writing, tok, lap_of(g, n));
        let mut w = self.word();
        loop {
            if w.lap() == lap_of(g, n) {
                return Claim::TicketTaken;
            }
            if w.lap() != want {
                return Claim::Moved(w);
            }
            let dropped = match w.state() {
                SlotState::Free => false,
                SlotState::Ready if overwrite => true,
                SlotState::Ready => return Claim::Full,
                SlotState::Writing | SlotState::Reading => return Claim::Busy(w),
            };
            match self.cas(w, mine) {
                Ok(()) => {
                    self.set_owner(tok, pid, u64::MAX);
                    return Claim::Claimed { dropped };
                }
                Err(now) => w = now,
            }
        }
    }

    /// Producer: the payload of ticket `g` (`len` bytes) is in place; publish it.
    pub fn publish(&self, g: u64, n: u64, tok: u32, len: u64) -> Finish {
        self.gen.store(g, Ordering::Relaxed);
        self.len.store(len, Ordering::Relaxed);
        let from = Word::new(SlotState::Writing, tok, lap_of(g, n));
        match self.cas(from, Word::new(SlotState::Ready, 0, lap_of(g, n))) {
            Ok(()) => Finish::Done,
            Err(now) => Finish::NotHeld(now),
        }
    }

    /// Producer: the copy of ticket `g` failed; the slot is empty again.
    pub fn abort_write(&self, g: u64, n: u64, tok: u32) -> Finish {
        let from = Word::new(SlotState::Writing, tok, lap_of(g, n));
        match self.cas(from, Word::new(SlotState::Free, 0, lap_of(g, n))) {
            Ok(()) => Finish::Done,
            Err(now) => Finish::NotHeld(now),
        }
    }

    /// Reader: takes generation `g` for the attempt `tok` (owner `pid`, reclaimable
    /// after `lease_until`).
    pub fn grant(&self, g: u64, n: u64, tok: u32, pid: u32, lease_until: u64) -> Grant {
        let lap = lap_of(g, n);
        let ready = Word::new(SlotState::Ready, 0, lap);
        let mine = Word::new(SlotState::Reading, tok, lap);
        let mut w = self.word();
        loop {
            if w.lap() != lap {
                let current = match w.state() {
                    SlotState::Ready | SlotState::Reading => Some(self.generation()),
                    _ => None,
                };
                return Grant::Stale { current };
            }
            match w.state() {
                SlotState::Ready => {}
                SlotState::Free if w.token() != 0 => return Grant::Consumed,
                // FREE with no token: written for this lap and aborted, or never published.
                SlotState::Free => return Grant::Stale { current: None },
                SlotState::Writing | SlotState::Reading => return Grant::Busy(w),
            }
            match self.cas(ready, mine) {
                Ok(()) => break,
                Err(now) => w = now,
            }
        }
        // The full generation, now that it cannot change under us.
        let have = self.gen.load(Ordering::Relaxed);
        if have != g {
            // A reference 2^30 laps old that matched the truncated lap: give it back.
            let _ = self.cas(mine, ready);
            return Grant::Stale {
                current: Some(have),
            };
        }
        self.set_owner(tok, pid, lease_until);
        Grant::Granted {
            len: self.len.load(Ordering::Relaxed),
        }
    }

    /// Ends the read attempt `tok` on generation `g`: commit (READING → FREE, the token
    /// stays as the consumer's mark) or failure (READING → READY, the bytes stay for a
    /// retry). A no-op reporting the word it found when the attempt no longer holds.
    pub fn finish(&self, g: u64, n: u64, tok: u32, commit: bool) -> Finish {
        let lap = lap_of(g, n);
        let to = if commit {
            Word::new(SlotState::Free, tok, lap)
        } else {
            Word::new(SlotState::Ready, 0, lap)
        };
        match self.cas(Word::new(SlotState::Reading, tok, lap), to) {
            Ok(()) => Finish::Done,
            Err(now) => Finish::NotHeld(now),
        }
    }

    /// Whether the read attempt `tok` on generation `g` committed, still holds, or lost.
    pub fn commit_state(&self, g: u64, n: u64, tok: u32) -> CommitState {
        let w = self.word();
        let lap = lap_of(g, n);
        if w == Word::new(SlotState::Free, tok, lap) {
            CommitState::Committed
        } else if w == Word::new(SlotState::Reading, tok, lap) {
            CommitState::Held
        } else {
            CommitState::Lost
        }
    }

    /// Takes the slot back from the attempt in `seen` (READING → READY, WRITING → FREE)
    /// when `dead(pid, lease_until)` says its owner can no longer finish it. Returns the
    /// state the slot was put in, or `None` when the owner is alive, unknown yet, or the
    /// slot moved on.
    pub fn reclaim(&self, seen: Word, dead: impl FnOnce(u32, u64) -> bool) -> Option<SlotState> {
        let to = match seen.state() {
            SlotState::Reading => Word::new(SlotState::Ready, 0, seen.lap()),
            SlotState::Writing => Word::new(SlotState::Free, 0, seen.lap()),
            _ => return None,
        };
        let (pid, lease) = self.owner(seen.token())?;
        if !dead(pid, lease) {
            return None;
        }
        self.cas(seen, to).ok().map(|()| to.state())
    }

    /// Takes the slot back from an attempt whose owner fields were never written (its
    /// process died between its CAS and recording itself), after the caller saw `seen`
    /// unchanged for long enough.
    pub fn reclaim_unrecorded(&self, seen: Word) -> Option<SlotState> {
        if self.owner_tok.load(Ordering::Acquire) == seen.token() {
            return None;
        }
        let to = match seen.state() {
            SlotState::Reading => Word::new(SlotState::Ready, 0, seen.lap()),
            SlotState::Writing => Word::new(SlotState::Free, 0, seen.lap()),
            _ => return None,
        };
        self.cas(seen, to).ok().map(|()| to.state())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const N: u64 = 4;
    const PID: u32 = 7;

    fn write(s: &SlotHeader, g: u64, tok: u32) {
        assert_eq!(
            s.claim(g, N, tok, PID, true),
            Claim::Claimed { dropped: false }
        );
        assert_eq!(s.publish(g, N, tok, 10), Finish::Done);
    }

    #[test]
    fn word_packs_and_unpacks() {
        let w = Word::new(SlotState::Reading, u32::MAX, LAP_MASK);
        assert_eq!(w.state(), SlotState::Reading);
        assert_eq!(w.token(), u32::MAX);
        assert_eq!(w.lap(), LAP_MASK);
        assert_eq!(Word::new(SlotState::Free, 0, LAP_MASK + 1).lap(), 0);
        assert_eq!(lap_of(3, 4), 1);
        assert_eq!(lap_of(4, 4), 2);
        assert_eq!(claimable_lap(4, 4), 1);
    }

    #[test]
    fn write_grant_commit_then_consumed() {
        let s = SlotHeader::new();
        write(&s, 1, 11);
        assert_eq!(s.grant(1, N, 21, PID, u64::MAX), Grant::Granted { len: 10 });
        assert_eq!(s.commit_state(1, N, 21), CommitState::Held);
        // a second attempt meets the first
        assert!(matches!(s.grant(1, N, 22, PID, u64::MAX), Grant::Busy(_)));
        assert_eq!(s.finish(1, N, 21, true), Finish::Done);
        assert_eq!(s.commit_state(1, N, 21), CommitState::Committed);
        assert_eq!(s.grant(1, N, 23, PID, u64::MAX), Grant::Consumed);
        // finishing again, either way, is a no-op
        assert!(matches!(s.finish(1, N, 21, false), Finish::NotHeld(_)));
        assert!(matches!(s.finish(1, N, 21, true), Finish::NotHeld(_)));
    }

    #[test]
    fn failure_returns_to_ready_and_late_orphan_is_a_no_op() {
        let s = SlotHeader::new();
        write(&s, 2, 11);
        assert!(matches!(s.grant(2, N, 30, PID, 0), Grant::Granted { .. }));
        assert_eq!(s.finish(2, N, 30, false), Finish::Done);
        assert_eq!(s.word().state(), SlotState::Ready);
        assert!(matches!(s.grant(2, N, 31, PID, 0), Grant::Granted { .. }));
        // the orphan 30 finishing late touches nothing of attempt 31
        assert!(matches!(s.finish(2, N, 30, true), Finish::NotHeld(_)));
        assert!(matches!(s.finish(2, N, 30, false), Finish::NotHeld(_)));
        assert_eq!(s.commit_state(2, N, 31), CommitState::Held);
        assert_eq!(s.commit_state(2, N, 30), CommitState::Lost);
    }

    #[test]
    fn lapping_makes_references_stale() {
        let s = SlotHeader::new();
        write(&s, 1, 11);
        // the ticket of the next lap overwrites unconsumed content
        assert_eq!(
            s.claim(1 + N, N, 12, PID, true),
            Claim::Claimed { dropped: true }
        );
        assert!(matches!(s.grant(1, N, 40, PID, 0), Grant::Stale { .. }));
        assert_eq!(s.publish(1 + N, N, 12, 3), Finish::Done);
        assert_eq!(
            s.grant(1, N, 41, PID, 0),
            Grant::Stale {
                current: Some(1 + N)
            }
        );
        assert_eq!(s.grant(1 + N, N, 42, PID, 0), Grant::Granted { len: 3 });
    }

    #[test]
    fn claim_rules() {
        let s = SlotHeader::new();
        write(&s, 0, 1);
        assert_eq!(s.claim(N, N, 2, PID, false), Claim::Full);
        assert_eq!(s.claim(0, N, 2, PID, true), Claim::TicketTaken);
        assert!(matches!(s.claim(3 * N, N, 2, PID, true), Claim::Moved(_)));
        assert!(matches!(s.grant(0, N, 5, PID, 0), Grant::Granted { .. }));
        assert!(matches!(s.claim(N, N, 2, PID, true), Claim::Busy(_)));
        // an aborted write leaves FREE without a consumer token: references to it are stale
        assert_eq!(s.finish(0, N, 5, true), Finish::Done);
        assert_eq!(
            s.claim(N, N, 3, PID, true),
            Claim::Claimed { dropped: false }
        );
        assert_eq!(s.abort_write(N, N, 3), Finish::Done);
        assert_eq!(s.grant(N, N, 6, PID, 0), Grant::Stale { current: None });
        assert_eq!(
            s.claim(2 * N, N, 4, PID, true),
            Claim::Claimed { dropped: false }
        );
    }

    #[test]
    fn reclaim_needs_a_dead_owner() {
        let s = SlotHeader::new();
        write(&s, 1, 11);
        assert!(matches!(s.grant(1, N, 50, 99, 1000), Grant::Granted { .. }));
        let seen = s.word();
        assert_eq!(s.reclaim(seen, |_, _| false), None);
        assert_eq!(
            s.reclaim(seen, |pid, lease| pid == 99 && lease == 1000),
            Some(SlotState::Ready)
        );
        // the reclaimed attempt can no longer commit
        assert!(matches!(s.finish(1, N, 50, true), Finish::NotHeld(_)));
        assert_eq!(s.commit_state(1, N, 50), CommitState::Lost);
        // a second reclaim of the same word does nothing
        assert_eq!(s.reclaim(seen, |_, _| true), None);
    }

    #[test]
    fn full_generation_is_checked_after_the_lap() {
        let s = SlotHeader::new();
        write(&s, 1, 11);
        // same slot, same lap modulo 2^30, another generation
        let alias = 1 + N * (LAP_MASK + 1);
        assert_eq!(
            s.grant(alias, N, 60, PID, 0),
            Grant::Stale { current: Some(1) }
        );
        assert_eq!(
            s.word().state(),
            SlotState::Ready,
            "the undo restored READY"
        );
    }
}

/// The loom model of the slot protocol (`make test-loom`): every interleaving of a
/// producer that laps the slot, a reader attempt that grants, copies and commits, and a
/// reclaimer that may take the slot back at any moment (a lease that expires at the
/// worst time), plus a second reader and an orphan finishing late.
#[cfg(all(test, loom))]
mod model {
    use super::*;
    use loom::sync::atomic::AtomicU64 as Cell;
    use loom::sync::Arc;
    use loom::thread;

    const N: u64 = 1;

    /// Payload of generation g: two words that must be read as a matching pair.
    fn word_a(g: u64) -> u64 {
        g * 1000 + 1
    }
    fn word_b(g: u64) -> u64 {
        g * 1000 + 2
    }

    struct Slot {
        h: SlotHeader,
        a: Cell,
        b: Cell,
    }

    /// The producer's write of generation g; false when a reader held the slot.
    fn write(s: &Slot, g: u64, tok: u32) -> bool {
        match s.h.claim(g, N, tok, 1, true) {
            Claim::Claimed { .. } => {}
            Claim::Busy(_) => return false,
            other => panic!("unexpected claim {other:?}"),
        }
        s.a.store(word_a(g), Ordering::Relaxed);
        s.b.store(word_b(g), Ordering::Relaxed);
        assert_eq!(s.h.publish(g, N, tok, 2), Finish::Done);
        true
    }

    /// A reader attempt on generation g: grant, copy, commit. Returns the bytes it
    /// accepted, if it committed.
    fn read(s: &Slot, g: u64, tok: u32) -> Option<(u64, u64)> {
        match s.h.grant(g, N, tok, 2, 0) {
            Grant::Granted { .. } => {}
            _ => return None,
        }
        let got = (s.a.load(Ordering::Relaxed), s.b.load(Ordering::Relaxed));
        match s.h.finish(g, N, tok, true) {
            Finish::Done => Some(got),
            Finish::NotHeld(_) => None,
        }
    }

    /// 3, or none when `DLSLIME_LOOM_EXHAUSTIVE=1` (`make test-loom-full`), or
    /// `LOOM_MAX_PREEMPTIONS` when set.
    fn preemption_bound() -> Option<usize> {
        if std::env::var("DLSLIME_LOOM_EXHAUSTIVE").as_deref() == Ok("1") {
            return None;
        }
        let env = std::env::var("LOOM_MAX_PREEMPTIONS").ok();
        Some(env.and_then(|v| v.parse().ok()).unwrap_or(3))
    }

    fn slot() -> Arc<Slot> {
        Arc::new(Slot {
            h: SlotHeader::new(),
            a: Cell::new(0),
            b: Cell::new(0),
        })
    }

    /// A committed read never sees a torn or foreign payload, while the producer laps
    /// the slot and a reclaimer takes it back at any moment; the producer's second write
    /// either waits (Busy) or happens after the commit.
    #[test]
    fn committed_reads_are_whole_while_the_producer_laps() {
        // Exhaustive up to 3 preemptions per execution (`make test-loom`, seconds; bugs
        // of this kind need 1 or 2); `make test-loom-full` lifts the bound (every
        // interleaving of the 3 threads: a long run, see docs/ring.md).
        let mut b = loom::model::Builder::new();
        b.preemption_bound = preemption_bound();
        b.check(|| {
            let s = slot();
            assert!(write(&s, 0, 1));
            let r = {
                let s = s.clone();
                thread::spawn(move || read(&s, 0, 10))
            };
            let reclaimer = {
                let s = s.clone();
                thread::spawn(move || {
                    // the reader's lease expires (its pid is 2); the producer is alive
                    let w = s.h.word();
                    s.h.reclaim(w, |pid, _| pid == 2);
                })
            };
            let p = {
                let s = s.clone();
                thread::spawn(move || write(&s, 1, 2))
            };
            let got = r.join().unwrap();
            reclaimer.join().unwrap();
            let wrote = p.join().unwrap();
            if let Some((a, b)) = got {
                assert_eq!((a, b), (word_a(0), word_b(0)), "torn or foreign payload");
            }
            // The slot ends in a consistent state: generation 1 READY if the producer
            // wrote, else generation 0 consumed or READY again.
            let w = s.h.word();
            if wrote {
                assert_eq!(w, Word::new(SlotState::Ready, 0, lap_of(1, N)));
                assert_eq!(s.h.generation(), 1);
            } else {
                assert!(matches!(w.state(), SlotState::Free | SlotState::Ready));
                assert_eq!(w.lap(), lap_of(0, N));
                assert_eq!(got.is_some(), w.state() == SlotState::Free);
            }
        });
    }

    /// Two readers race for one generation: at most one commits, and an orphan's late
    /// finish (failure) after the other's grant never takes the slot from it.
    #[test]
    fn one_owner_at_a_time_and_orphans_are_no_ops() {
        loom::model(|| {
            let s = slot();
            assert!(write(&s, 0, 1));
            let a = {
                let s = s.clone();
                thread::spawn(move || {
                    // attempt 10 grants, then fails (as an orphan whose client left)
                    if let Grant::Granted { .. } = s.h.grant(0, N, 10, 2, 0) {
                        s.h.finish(0, N, 10, false);
                    }
                    // and finishes again late: must be a no-op whatever happened since
                    s.h.finish(0, N, 10, false)
                })
            };
            let b = {
                let s = s.clone();
                thread::spawn(move || read(&s, 0, 11))
            };
            let late = a.join().unwrap();
            let got = b.join().unwrap();
            assert!(matches!(late, Finish::NotHeld(_)));
            let w = s.h.word();
            match got {
                Some(v) => {
                    assert_eq!(v, (word_a(0), word_b(0)));
                    assert_eq!(w, Word::new(SlotState::Free, 11, lap_of(0, N)));
                }
                None => assert_eq!(w, Word::new(SlotState::Ready, 0, lap_of(0, N))),
            }
        });
    }

    /// Two producers race for the same ticket: exactly one claims it, the other learns
    /// the ticket is taken (never a second WRITING, never a skipped slot).
    #[test]
    fn racing_producers_claim_a_ticket_once() {
        loom::model(|| {
            let s = slot();
            let t = |tok: u32| {
                let s = s.clone();
                thread::spawn(move || s.h.claim(0, N, tok, 1, true))
            };
            let (x, y) = (t(1), t(2));
            let (x, y) = (x.join().unwrap(), y.join().unwrap());
            let claimed = [x, y]
                .iter()
                .filter(|c| matches!(c, Claim::Claimed { .. }))
                .count();
            assert_eq!(claimed, 1, "{x:?} {y:?}");
            assert!(matches!(x, Claim::TicketTaken) || matches!(y, Claim::TicketTaken));
        });
    }
}
