//! Connecting two endpoints: the checks on the peer's `endpoint_info`, the authenticated
//! handshake over the Unix socket (`accept`: the dialling side creates the control
//! segment and both send their shared allocations' memfds), the cross-memory attach
//! probe, and the start of the progress thread. See `docs/shm-transport.md`.

use std::collections::{HashMap, VecDeque};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde_json::{json, Value};

use super::accept::{self, Sides};
use super::cma;
use super::conn::{Conn, Published};
use super::handshake;
use super::mappings::PeerMappings;
use super::ring::{self, Consumer, Producer, Segment};
use super::state::Inner;
use crate::engine::Deadline;
use crate::error::{Error, Result, Status};
use crate::memory::shared;
use crate::transport::auth::PublicKey;
use crate::transport::info;
use crate::transport::strikes::Strikes;
use crate::warn_log;

/// Unmaps a control segment `connect` mapped and gave up on.
fn unmap_segment(seg: *mut u8) {
    // SAFETY: `seg` is a SEGMENT_SIZE mapping made in `connect` that no Conn owns (it is
    // abandoned on an error path) and that nothing else refers to.
    unsafe { libc::munmap(seg as *mut libc::c_void, ring::SEGMENT_SIZE) };
}

impl Inner {
    /// `connect`: checks the peer's info, runs the handshake (the dialling side creates
    /// the control segment), maps the peer's allocations, probes cross-memory attach,
    /// and starts the progress thread.
    pub fn connect(self: &Arc<Inner>, peer: &Value) -> Result<()> {
        let obj = info::check_envelope(peer, "shm")?;
        let host = info::str_field(obj, "host")?;
        if host != self.host_id {
            return Err(Error::new(
                Status::Unsupported,
                format!("shared-memory peer is on another host (peer host {host:?}, this host {:?}); use the TCP transport", self.host_id),
            ));
        }
        let peer_sock = info::str_field(obj, "socket")?.to_string();
        let peer_key = PublicKey::from_info(obj)?;
        if peer_sock == self.sock_name {
            return Err(Error::new(
                Status::InvalidArgument,
                "connect: endpoint info names this endpoint itself",
            ));
        }
        let _g = self.connecting.lock();
        if self.conn.get().is_some() {
            return Err(Error::new(
                Status::AlreadyConnected,
                "endpoint is already connected",
            ));
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::new(Status::ShutDown, "endpoint is shut down"));
        }
        info::register_peer_regions(&self.remote, obj)?;
        let deadline = Deadline::after(self.cfg.engine.default_timeout);
        let client = self.sock_name < peer_sock;
        let allocs = shared::live_allocations();
        let allocs = &allocs[..allocs.len().min(handshake::MAX_FDS - 1)];
        let alloc_list: Vec<Value> = allocs
            .iter()
            .map(|a| json!({"base": a.base as u64, "len": a.len as u64, "id": a.id}))
            .collect();
        let mut hello = json!({
            "pid": std::process::id(), "host": self.host_id,
            "probe": &cma::PROBE_WORD as *const u64 as u64, "allocs": alloc_list,
        });
        let sides = Sides {
            me: &self.sock_name,
            peer: &peer_sock,
            peer_key: &peer_key,
            id: &self.identity,
            host: &self.host_id,
        };
        let mut fds: Vec<i32> = Vec::new();
        let (sock, seg_fd, seg, peer_hello, peer_fds);
        if client {
            let (fd, base, _) = shared::memfd_map("dlslime-shm-ctl", ring::SEGMENT_SIZE)?;
            // SAFETY: a fresh, page-aligned mapping of SEGMENT_SIZE bytes, ours alone.
            unsafe { Segment::init(base) };
            fds.push(fd.as_raw_fd());
            fds.extend(allocs.iter().map(|a| a.fd.as_raw_fd()));
            let r = accept::dial(&sides, &mut hello, &fds, deadline)
                .and_then(|s| handshake::recv_frame(s.as_raw_fd(), deadline).map(|hf| (s, hf)));
            let (s, (h, f)) = match r {
                Ok(v) => v,
                Err(e) => {
                    unmap_segment(base);
                    return Err(e);
                }
            };
            sock = s;
            seg_fd = fd;
            seg = base;
            peer_hello = h;
            peer_fds = f;
        } else {
            let lfd = self
                .listener
                .lock()
                .as_ref()
                .map(|l| l.fd())
                .ok_or_else(|| Error::new(Status::ShutDown, "listener closed"))?;
            let got = accept::accept(lfd, &sides, self.cfg.handshake_timeout, deadline)?;
            let mut f = got.fds;
            if f.is_empty() {
                return Err(Error::new(
                    Status::Protocol,
                    "the peer sent no control segment",
                ));
            }
            let fd = f.remove(0);
            if shared::fd_size(fd.as_raw_fd())? < ring::SEGMENT_SIZE {
                return Err(Error::new(
                    Status::Protocol,
                    "peer's control segment is too small",
                ));
            }
            let base = shared::map_fd(fd.as_raw_fd(), ring::SEGMENT_SIZE)?;
            // SAFETY: we just mapped SEGMENT_SIZE bytes at `base` (the fd is at least
            // that large); check only reads the header.
            if !unsafe { Segment::check(base) } {
                unmap_segment(base);
                return Err(Error::new(
                    Status::VersionMismatch,
                    "peer's control segment has another layout",
                ));
            }
            fds.extend(allocs.iter().map(|a| a.fd.as_raw_fd()));
            if let Err(e) = handshake::send_frame(got.sock.as_raw_fd(), &hello, &fds) {
                unmap_segment(base);
                return Err(e);
            }
            sock = got.sock;
            seg_fd = fd;
            seg = base;
            peer_hello = got.hello;
            peer_fds = f;
        }
        if peer_hello.get("host").and_then(Value::as_str) != Some(self.host_id.as_str()) {
            unmap_segment(seg);
            return Err(Error::new(
                Status::Unsupported,
                "shared-memory peer reports another host identity",
            ));
        }
        // The kernel's word for who is at the other end; its own claim only where the
        // kernel cannot say (another pid namespace).
        let peer_pid = match handshake::peer_pid(sock.as_raw_fd()) {
            0 => peer_hello.get("pid").and_then(Value::as_u64).unwrap_or(0) as i32,
            pid => pid,
        };
        let probe_addr = peer_hello.get("probe").and_then(Value::as_u64).unwrap_or(0);
        // Map the peer's shared allocations (fd order matches the list order).
        let mut maps = PeerMappings::default();
        let list = peer_hello
            .get("allocs")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (a, fd) in list.iter().zip(peer_fds) {
            let base = a.get("base").and_then(Value::as_u64).unwrap_or(0);
            let len = a.get("len").and_then(Value::as_u64).unwrap_or(0);
            let id = a.get("id").and_then(Value::as_u64).unwrap_or(0);
            if let Err(e) = maps.add(id, base, len, fd) {
                warn_log!("shm: could not map a peer allocation: {e}");
            }
        }
        // Can we attach to the peer? Tell it; learn whether it can attach to us.
        let my_cma = match cma::probe(peer_pid, probe_addr) {
            Ok(()) => true,
            Err(e) => {
                warn_log!(
                    "shm: cross-memory attach to pid {peer_pid} refused ({}); non-shared memory will use the staged path",
                    std::io::Error::from_raw_os_error(e)
                );
                false
            }
        };
        let r = handshake::send_frame(sock.as_raw_fd(), &json!({"cma": my_cma}), &[])
            .and_then(|_| handshake::recv_frame(sock.as_raw_fd(), deadline));
        let peer_cma = match r {
            Ok((v, _)) => v.get("cma").and_then(Value::as_bool).unwrap_or(false),
            Err(e) => {
                unmap_segment(seg);
                return Err(e);
            }
        };
        let staged = self.cfg.force_staged || !my_cma || !peer_cma;
        if staged && !self.cfg.force_staged {
            self.stats.staged_fallbacks.fetch_add(1, Ordering::Relaxed);
            warn_log!("shm: cross-memory attach unavailable between pid {} and {peer_pid}; using the staged (bounce buffer) path", std::process::id());
        }
        let side = if client { 0 } else { 1 };
        let segp = seg as *mut Segment;
        // SAFETY: the segment is mapped (SEGMENT_SIZE bytes, layout checked or initialised
        // above) for the Conn's whole life; each side produces only on its own direction.
        let (prod, cons) = unsafe { (Producer::new(segp, side), Consumer::new(segp, 1 - side)) };
        let (mine, peers) = (prod.view(), cons.view());
        let conn = Conn {
            _seg_fd: seg_fd,
            seg,
            sock,
            peer_pid,
            out_bell: mine.bell,
            in_bell: peers.bell,
            my_table: mine.table,
            peer_table: peers.table,
            my_slots: mine.slots,
            peer_slots: peers.slots,
            prod: Mutex::new((prod, VecDeque::new())),
            cons: Mutex::new(cons),
            peer_maps: RwLock::new(maps),
            peer_devs: Default::default(),
            maps_seen: AtomicU64::new(0),
            frames: Mutex::new(()),
            published: Mutex::new(Published {
                sent: allocs.iter().map(|a| a.id).collect(),
                sent_dev: Default::default(),
                announced: 0,
            }),
            published_gen: AtomicU64::new(u64::MAX),
            staged,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            slots: AtomicU32::new(0),
            backlogged: AtomicBool::new(false),
            strikes: Strikes::default(),
            early_sent: AtomicU64::new(0),
        };
        let _ = self.conn.set(conn);
        let c = self.conn.get().unwrap();
        self.publish_regions(c);
        // One peer per endpoint: the name is no longer needed.
        self.listener.lock().take();
        let me = self.clone();
        let h = std::thread::Builder::new()
            .name("dlslime-shm".into())
            .spawn(move || me.run())
            .map_err(|e| Error::io("spawn shm progress thread", e))?;
        *self.thread.lock() = Some(h);
        Ok(())
    }
}
