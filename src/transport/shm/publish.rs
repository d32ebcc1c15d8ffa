//! What each side tells the other about its memory after connect: the region table
//! (for the initiator's fast-path checks) and the shared allocations holding those
//! regions (memfds announced on the Unix socket, so memory made after connect, such as
//! an RPC session's mailboxes, is mapped by the peer too and one-sided operations on it
//! stay a single memcpy).
//!
//! Order: the announcement frames are sent before the table that counts them is
//! published, so a peer that sees a region in the table reads the frames waiting in its
//! socket (`sync_peer_maps`) before it trusts its mappings: a mapping of an allocation
//! the publisher freed and whose address range it reused is replaced, never used for the
//! new one. Freed allocations are announced too, and the peer unmaps them.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};

use super::conn::{Conn, Published};
use super::device;
use super::handshake;
use super::state::Inner;
use crate::error::Status;
use crate::memory::shared::{self, AllocInfo};

impl Inner {
    /// Publishes our regions (and announces their allocations) if the memory pool
    /// changed since the last time.
    pub fn publish_regions(&self, c: &Conn) {
        let gen = self.pool.generation();
        if c.published_gen.load(Ordering::Acquire) == gen {
            return;
        }
        let mut p = c.published.lock();
        if c.published_gen.load(Ordering::Acquire) == gen {
            return;
        }
        let regions = self.pool.regions();
        let mut holding = HashSet::new();
        let mut new: Vec<Arc<AllocInfo>> = Vec::new();
        for r in &regions {
            if let Some(a) = shared::find_allocation(r.addr, r.len) {
                if holding.insert(a.id) && !p.sent.contains(&a.id) {
                    new.push(a);
                }
            }
        }
        let live: HashSet<u64> = shared::live_allocations().iter().map(|a| a.id).collect();
        let freed: Vec<u64> = p
            .sent
            .iter()
            .filter(|id| !live.contains(id))
            .copied()
            .collect();
        self.announce(c, &mut p, &new, &freed);
        if let Some(frame) = device::announcement(&regions, &mut p.sent_dev) {
            self.send_announcement(c, &mut p, &frame, &[]);
        }
        let list: Vec<(u64, u64, u64)> = regions
            .iter()
            .map(|r| (r.addr as u64, r.len as u64, r.key))
            .collect();
        // SAFETY: our own table, in the segment the Conn keeps mapped; only this side
        // writes it, one writer at a time (under `published`).
        unsafe { (*c.my_table).publish(&list, p.announced) };
        c.published_gen.store(gen, Ordering::Release);
    }

    /// Announces the shared allocation holding `[addr, addr+len)` if the peer does not
    /// have it (memory we ask the peer to pull from that is in no region, e.g. a send
    /// buffer), and republishes the table so the peer reads the announcement first.
    pub fn announce_allocation_of(&self, c: &Conn, addr: usize, len: usize) {
        let Some(a) = shared::find_allocation(addr, len) else {
            return;
        };
        let mut p = c.published.lock();
        if p.sent.contains(&a.id) {
            return;
        }
        self.announce(c, &mut p, &[a], &[]);
        let list: Vec<(u64, u64, u64)> = self
            .pool
            .regions()
            .iter()
            .map(|r| (r.addr as u64, r.len as u64, r.key))
            .collect();
        // SAFETY: as in `publish_regions`.
        unsafe { (*c.my_table).publish(&list, p.announced) };
    }

    /// Sends announcement frames: `{"allocs": [{base, len, id}], "freed": [id]}` with
    /// the allocations' memfds, in batches the socket can carry.
    fn announce(&self, c: &Conn, p: &mut Published, new: &[Arc<AllocInfo>], freed: &[u64]) {
        if new.is_empty() && freed.is_empty() {
            return;
        }
        let mut batches: Vec<&[Arc<AllocInfo>]> = new.chunks(handshake::MAX_FDS).collect();
        if batches.is_empty() {
            batches.push(&[]);
        }
        for (i, batch) in batches.into_iter().enumerate() {
            let allocs: Vec<Value> = batch
                .iter()
                .map(|a| json!({"base": a.base as u64, "len": a.len as u64, "id": a.id}))
                .collect();
            let gone: &[u64] = if i == 0 { freed } else { &[] };
            let fds: Vec<i32> = batch.iter().map(|a| a.fd.as_raw_fd()).collect();
            let frame = json!({"allocs": allocs, "freed": gone});
            if !self.send_announcement(c, p, &frame, &fds) {
                return;
            }
            p.sent.extend(batch.iter().map(|a| a.id));
            for id in gone {
                p.sent.remove(id);
            }
        }
    }

    /// Sends one announcement frame (counted in the table we publish next); false when
    /// the peer is gone (or the socket broke: the progress thread sees the hang-up).
    fn send_announcement(&self, c: &Conn, p: &mut Published, frame: &Value, fds: &[i32]) -> bool {
        if let Err(e) = handshake::send_frame(c.sock.as_raw_fd(), frame, fds) {
            crate::warn_log!("shm: could not announce memory to the peer: {e}");
            return false;
        }
        p.announced += 1;
        true
    }

    /// Maps what the peer announced before publishing the table we are about to trust
    /// (the frames are in our socket by then).
    pub fn sync_peer_maps(&self, c: &Conn) {
        // SAFETY: the peer's table lies in the segment the Conn keeps mapped; the count
        // is untrusted and only decides whether to read the socket.
        let want = unsafe { (*c.peer_table).announced() };
        if c.maps_seen.load(Ordering::Acquire) < want {
            self.read_frames(c);
        }
    }

    /// Reads every frame waiting on the socket and applies it. False once the peer hung
    /// up.
    pub fn read_frames(&self, c: &Conn) -> bool {
        let _g = c.frames.lock();
        loop {
            match handshake::recv_frame_nowait(c.sock.as_raw_fd()) {
                Ok(Some((v, fds))) => {
                    self.apply_announcement(c, &v, fds);
                    c.maps_seen.fetch_add(1, Ordering::AcqRel);
                }
                Ok(None) => return true,
                Err(e) if e.status() == Status::PeerDisconnected => return false,
                Err(e) => {
                    // A frame we cannot read is dropped (its fds are closed); the fast
                    // path just misses for what it announced.
                    crate::warn_log!("shm: bad frame from the peer dropped: {e}");
                    c.maps_seen.fetch_add(1, Ordering::AcqRel);
                }
            }
        }
    }

    fn apply_announcement(&self, c: &Conn, v: &Value, fds: Vec<OwnedFd>) {
        if v.get("dev").is_some() {
            c.peer_devs.write().apply(v);
        }
        let mut maps = c.peer_maps.write();
        for id in v
            .get("freed")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
        {
            maps.remove(id);
        }
        let allocs = v.get("allocs").and_then(Value::as_array);
        for (a, fd) in allocs.into_iter().flatten().zip(fds) {
            let field = |k: &str| a.get(k).and_then(Value::as_u64).unwrap_or(0);
            if let Err(e) = maps.add(field("id"), field("base"), field("len"), fd) {
                crate::warn_log!("shm: could not map an allocation the peer announced: {e}");
            }
        }
    }
}
