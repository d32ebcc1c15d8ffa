//! The live connection to the peer, as `connect` built it: the control segment and its
//! two rings, the peer's mapped allocations, both region tables, the bounce slots, and
//! the requests of ours that wait for the peer's reply.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};

use parking_lot::{Mutex, RwLock};

use super::device::{PeerDevices, SentDevices};
use super::mappings::PeerMappings;
use super::pending::Pending;
use super::ring::{self, Consumer, Doorbell, Entry, Producer, RegionTable, NSLOTS, SLOT_SIZE};
use crate::error::Status;
use crate::transport::strikes::Strikes;

pub(super) struct Conn {
    pub _seg_fd: OwnedFd,
    /// The control segment (`ring::SEGMENT_SIZE` bytes), mapped by this Conn.
    pub seg: *mut u8,
    /// The handshake socket, kept open: its hang-up is how peer death is seen.
    pub sock: OwnedFd,
    pub peer_pid: i32,
    /// Our ring to the peer, and the entries that found it full (replies never block).
    pub prod: Mutex<(Producer, VecDeque<Entry>)>,
    pub out_bell: Doorbell,
    /// The peer's ring to us; whoever holds this lock is the one thread polling.
    pub cons: Mutex<Consumer>,
    pub in_bell: Doorbell,
    /// The peer's allocations mapped here; read-locked across every copy through them.
    pub peer_maps: RwLock<PeerMappings>,
    /// The peer's staged (device) regions, as announced ([`super::device`]).
    pub peer_devs: RwLock<PeerDevices>,
    /// Allocation announcements of the peer processed (see `RegionTable::announced`).
    pub maps_seen: AtomicU64,
    /// One thread at a time reads frames from the socket.
    pub frames: Mutex<()>,
    /// What we told the peer about our allocations and regions.
    pub published: Mutex<Published>,
    /// The memory pool generation last published.
    pub published_gen: AtomicU64,
    /// The regions the peer publishes (read under its seqlock) and ours.
    pub peer_table: *const RegionTable,
    pub my_table: *mut RegionTable,
    /// Bounce slots: ours carry our staged chunks, the peer's carry its chunks.
    pub my_slots: *mut u8,
    pub peer_slots: *mut u8,
    /// Non-shared memory moves through bounce slots (attach refused or forced).
    pub staged: bool,
    /// Our requests awaiting the peer's `DONE`, by request id.
    pub pending: Mutex<HashMap<u64, Pending>>,
    pub next_id: AtomicU64,
    /// The early-message charge of everything we sent ([`super::window`]).
    pub early_sent: AtomicU64,
    /// Bitmap of our bounce slots in use.
    pub slots: AtomicU32,
    /// Whether replies wait in the backlog (saves taking the producer lock per poll).
    pub backlogged: AtomicBool,
    /// The peer's refused accesses (see [`crate::transport::strikes`]).
    pub strikes: Strikes,
}

/// Our side of the allocation announcements: the allocations the peer has (sent at
/// connect time or announced since) and how many announcement frames we sent.
#[derive(Default)]
pub(super) struct Published {
    pub sent: HashSet<u64>,
    /// Our staged regions the peer was told about.
    pub sent_dev: SentDevices,
    pub announced: u64,
}

// SAFETY: the raw pointers point into mappings owned by the Conn for its whole life (the
// segment, the peer's allocations), not tied to any thread.
unsafe impl Send for Conn {}
// SAFETY: shared state is accessed atomically, under the mutexes, or copied out of the
// segment and checked before use; the pointers themselves are never written after
// connect.
unsafe impl Sync for Conn {}

impl Conn {
    /// Our bounce slot `s` (we fill it for ST_WRITE/ST_MSG, the peer for ST_READ).
    pub fn my_slot(&self, s: u32) -> *mut u8 {
        assert!((s as usize) < NSLOTS);
        self.my_slots.wrapping_add(s as usize * SLOT_SIZE)
    }

    /// The peer's bounce slot `s`.
    pub fn peer_slot(&self, s: u32) -> *mut u8 {
        assert!((s as usize) < NSLOTS);
        self.peer_slots.wrapping_add(s as usize * SLOT_SIZE)
    }

    /// Fails every request awaiting a reply (peer death, shutdown).
    pub fn abort_pending(&self, status: Status, msg: &str) {
        let pend: Vec<Pending> = self.pending.lock().drain().map(|(_, p)| p).collect();
        for p in pend {
            p.agg().op.abort(status, msg);
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: connect mapped SEGMENT_SIZE bytes at `seg` for this Conn alone; the Conn
        // is going away, so nothing reads the rings or slots any more.
        unsafe { libc::munmap(self.seg as *mut libc::c_void, ring::SEGMENT_SIZE) };
    }
}
