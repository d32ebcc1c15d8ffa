//! The shared-memory transport's path for staged regions (device memory, reached only
//! through a copier), on host memory, between two processes: regions registered with the
//! host copier stand for device regions whose CUDA IPC handle is unavailable (no driver
//! here), so every byte goes through the copiers and the bounce slots (or, for a shared
//! allocation on the other side, one copy by the local copier) exactly as a GPU without
//! IPC would. Runs in every CI run; CUDA IPC itself is `make test-gpu` (tests/gpu.rs).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{check_pattern, fill_pattern, is_child, Parent, Peer, PeerCommand};
use dlslime::memory::device::HostCopier;
use dlslime::memory::SharedBuf;
use dlslime::transport::shm::{ShmConfig, ShmEndpoint};
use dlslime::{Assignment, Endpoint, MemoryPool, Status};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const REGION: usize = 8 * MIB;
const T: Option<Duration> = Some(Duration::from_secs(60));

/// The child: a staged region "buf" (plain memory through a host copier), a plain
/// region "shared" in a shared allocation, and, on command, a staged region "late"
/// registered after connect.
#[test]
#[ignore = "peer process entry, run by the two-process tests"]
fn shm_staging_peer() {
    if !is_child() {
        return;
    }
    let mut parent = Parent::new();
    let pool = MemoryPool::new();
    let copier = Arc::new(HostCopier::new());
    let mut buf = vec![0u8; REGION];
    let shared = SharedBuf::new(REGION).unwrap();
    let mut late = vec![0u8; MIB];
    // SAFETY: the buffers live until this function returns, after the command loop and
    // the endpoint's shutdown: every operation of the parent on them has ended.
    unsafe {
        pool.register_staged(Some("buf"), buf.as_mut_ptr(), REGION, copier.clone())
            .unwrap();
        pool.register(Some("shared"), shared.as_ptr(), REGION)
            .unwrap();
    }
    let ep = ShmEndpoint::new(pool.clone(), ShmConfig::default()).unwrap();
    parent.connect_endpoint(&ep);
    while let Some(line) = parent.recv() {
        let c = PeerCommand::parse(&line);
        let n: Vec<usize> = c.nums().iter().map(|&v| v as usize).collect();
        let region: &mut [u8] = match n.first() {
            Some(0) => &mut buf,
            // SAFETY: the allocation holds REGION bytes; commands run between the
            // parent's operations, so nothing else touches it meanwhile.
            Some(1) => unsafe { std::slice::from_raw_parts_mut(shared.as_ptr(), REGION) },
            _ => &mut late,
        };
        match c.name {
            // check <which> <off> <len> <seed>
            "check" => match check_pattern(&region[n[1]..n[1] + n[2]], n[3] as u64) {
                None => parent.send("ok"),
                Some(i) => parent.send(&format!("bad {i}")),
            },
            "fill" => {
                fill_pattern(&mut region[n[1]..n[1] + n[2]], n[3] as u64);
                parent.send("ok");
            }
            "late" => {
                // SAFETY: as above.
                unsafe {
                    pool.register_staged(Some("late"), late.as_mut_ptr(), MIB, copier.clone())
                        .unwrap()
                };
                let info = ep.memory_pool().mr_info()["late"].clone();
                parent.send(&format!("late {info}"));
            }
            "stats" => {
                let (out, inn) = copier.copied();
                parent.send(&format!("stats {out} {inn}"));
            }
            "exit" => break,
            other => panic!("unknown command {other}"),
        }
    }
    ep.shutdown();
}

struct Rig {
    peer: Peer,
    ep: ShmEndpoint,
    copier: Arc<HostCopier>,
    buf: Vec<u8>,
    host: Vec<u8>,
    local: u32,
    lhost: u32,
    remote: u32,
    rshared: u32,
}

impl Rig {
    fn new() -> Rig {
        let mut peer = Peer::spawn("shm_staging_peer", &[]);
        let pool = MemoryPool::new();
        let copier = Arc::new(HostCopier::new());
        let mut buf = vec![0u8; REGION];
        let mut host = vec![0u8; REGION];
        // SAFETY: the buffers move into the Rig, whose Drop shuts the endpoint down
        // before the fields drop.
        let (local, lhost) = unsafe {
            (
                pool.register_staged(Some("local"), buf.as_mut_ptr(), REGION, copier.clone())
                    .unwrap(),
                pool.register(Some("lhost"), host.as_mut_ptr(), REGION)
                    .unwrap(),
            )
        };
        let ep = ShmEndpoint::new(pool, ShmConfig::default()).unwrap();
        peer.connect_endpoint(&ep);
        let remote = ep.remote_pool().handle("buf").unwrap();
        let rshared = ep.remote_pool().handle("shared").unwrap();
        Rig {
            peer,
            ep,
            copier,
            buf,
            host,
            local,
            lhost,
            remote,
            rshared,
        }
    }

    fn cmd(&mut self, c: &str) -> String {
        self.peer.send(c);
        self.peer.recv()
    }

    fn child_copied(&mut self) -> (u64, u64) {
        let l = self.cmd("stats");
        let v: Vec<u64> = l
            .split_whitespace()
            .skip(1)
            .map(|s| s.parse().unwrap())
            .collect();
        (v[0], v[1])
    }

    /// Our buffer behind handle `local`.
    fn local_buf(&mut self, local: u32) -> &mut [u8] {
        if local == self.local {
            &mut self.buf
        } else {
            &mut self.host
        }
    }

    /// Writes `len` bytes from `local` (our staged or host buffer) to the child's region
    /// `which` (0 "buf", 1 "shared") and reads fresh ones back to local offset `off`,
    /// checking the bytes on both sides.
    fn round_trip(&mut self, local: u32, which: u32, len: usize, seed: u64, off: usize) {
        let remote = if which == 0 {
            self.remote
        } else {
            self.rshared
        };
        fill_pattern(&mut self.local_buf(local)[..len], seed);
        self.run(Assignment::new(local, remote, 0, 0, len as u64), true)
            .unwrap();
        let check = self.cmd(&format!("check {which} 0 {len} {seed}"));
        assert_eq!(check, "ok", "write {len}");
        let fill = self.cmd(&format!("fill {which} 0 {len} {}", seed + 50));
        assert_eq!(fill, "ok");
        self.run(
            Assignment::new(local, remote, 0, off as u64, len as u64),
            false,
        )
        .unwrap();
        let got = check_pattern(&self.local_buf(local)[off..off + len], seed + 50);
        assert_eq!(got, None, "read {len}");
    }

    fn run(&self, a: Assignment, write: bool) -> dlslime::Result<()> {
        let f = if write {
            self.ep.write(&[a], T)
        } else {
            self.ep.read(&[a], T)
        }?;
        f.wait()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.peer.send("exit");
        self.ep.shutdown();
    }
}

const SIZES: [usize; 5] = [1, KIB, 64 * KIB + 1, MIB + 3, REGION];

#[test]
fn staged_to_staged_through_both_copiers() {
    let mut r = Rig::new();
    for (i, &len) in SIZES.iter().enumerate() {
        let seed = 20 + i as u64;
        let (c_out, c_in) = r.child_copied();
        let (p_out, p_in) = r.copier.copied();
        let off = if len == REGION { 0 } else { 4096 + 5 };
        r.round_trip(r.local, 0, len, seed, off);
        // Every byte through both copiers: ours out (write) and in (read), the child's
        // in (write) and out (read).
        assert_eq!(r.copier.copied(), (p_out + len as u64, p_in + len as u64));
        assert_eq!(r.child_copied(), (c_out + len as u64, c_in + len as u64));
    }
    assert!(
        r.ep.stats()
            .staged_chunks
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
}

#[test]
fn host_region_to_a_staged_peer_region_uses_the_peers_copier() {
    let mut r = Rig::new();
    for (i, &len) in SIZES.iter().enumerate() {
        let seed = 40 + i as u64;
        let (c_out, c_in) = r.child_copied();
        r.round_trip(r.lhost, 0, len, seed, 0);
        assert_eq!(r.child_copied(), (c_out + len as u64, c_in + len as u64));
    }
}

#[test]
fn staged_region_to_a_shared_allocation_is_one_copy_by_the_local_copier() {
    let mut r = Rig::new();
    let chunks0 =
        r.ep.stats()
            .staged_chunks
            .load(std::sync::atomic::Ordering::Relaxed);
    let (c_out, c_in) = r.child_copied();
    for (i, &len) in SIZES.iter().enumerate() {
        let seed = 60 + i as u64;
        let (p_out, p_in) = r.copier.copied();
        r.round_trip(r.local, 1, len, seed, 0);
        assert_eq!(r.copier.copied(), (p_out + len as u64, p_in + len as u64));
    }
    // No bounce slot, and the child's copier was never involved.
    assert_eq!(
        r.ep.stats()
            .staged_chunks
            .load(std::sync::atomic::Ordering::Relaxed),
        chunks0
    );
    assert_eq!(r.child_copied(), (c_out, c_in));
}

#[test]
fn a_staged_region_registered_after_connect_is_reached_through_the_copier() {
    let mut r = Rig::new();
    let line = r.cmd("late");
    let info: serde_json::Value =
        serde_json::from_str(line.strip_prefix("late ").unwrap()).unwrap();
    let late = r.ep.register_remote_memory_region("late", &info).unwrap();
    let (c_out, c_in) = r.child_copied();
    fill_pattern(&mut r.host[..MIB], 91);
    // Whether or not our view of the peer is current yet, the write lands through the
    // peer's copier (bounce slots, or attach into a host buffer the copier drains).
    r.run(Assignment::new(r.lhost, late, 0, 0, MIB as u64), true)
        .unwrap();
    assert_eq!(r.cmd(&format!("check 2 0 {MIB} 91")), "ok");
    assert_eq!(r.child_copied(), (c_out, c_in + MIB as u64));
}

#[test]
fn out_of_range_and_wrong_key_on_staged_regions_touch_nothing() {
    let mut r = Rig::new();
    let (c_out, c_in) = r.child_copied();
    let e = r
        .run(
            Assignment::new(r.local, r.remote, REGION as u64 - 10, 0, 11),
            true,
        )
        .unwrap_err();
    assert_eq!(e.status(), Status::OutOfRange);
    let e = r
        .run(
            Assignment::new(r.local, r.remote, 0, REGION as u64, 1),
            false,
        )
        .unwrap_err();
    assert_eq!(e.status(), Status::OutOfRange);
    // A forged remote region (right address, wrong key): refused by the target.
    let info = r.ep.remote_pool().get(r.remote).unwrap();
    let forged =
        r.ep.register_remote_memory_region(
            "forged",
            &serde_json::json!({"addr": info.addr, "length": 64, "rkey": info.key ^ 1}),
        )
        .unwrap();
    let e = r
        .run(Assignment::new(r.local, forged, 0, 0, 64), true)
        .unwrap_err();
    assert_eq!(e.status(), Status::RemoteAccess);
    assert_eq!(r.child_copied(), (c_out, c_in));
}
