//! The TCP staging path on host memory, between two processes: both sides register their
//! regions as staged (reached only through a copier, as device memory is), with the host
//! copier, so every byte goes region → staging buffer → socket → staging buffer → region
//! through the same pool, pipeline and TCP hook a GPU uses. Runs in every CI run; the
//! CUDA copier on a real GPU is `make test-gpu`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{check_pattern, check_reply, fill_pattern, region_command, Peer};
use dlslime::memory::device::{HostCopier, StagingPool};
use dlslime::transport::tcp::{TcpConfig, TcpContext, TcpEndpoint};
use dlslime::{Assignment, Endpoint, MemoryPool};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
/// The biggest transfer, and the region size on both sides.
const REGION: usize = 64 * MIB;
/// The child's pool: small chunks and few buffers, so its transfers are many-chunk
/// pipelines that must reuse buffers within the bound.
const CHILD_CHUNK: usize = 64 * KIB;
const CHILD_BUFFERS: usize = 6;

fn ctx() -> Arc<TcpContext> {
    TcpContext::new(TcpConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    })
    .unwrap()
}

// The child: a staged 64 MiB region "buf" and a host (unstaged) region "host".
common::peer_entry!(fn staging_peer(parent) {
    let ep = TcpEndpoint::new(&ctx(), MemoryPool::new()).unwrap();
    let copier = Arc::new(HostCopier::new());
    let mut region = vec![0u8; REGION];
    let mut host = vec![0u8; MIB];
    // SAFETY: both buffers live until this function returns, after the command loop and
    // the endpoint's shutdown: every operation of the parent on them has ended.
    unsafe {
        ep.memory_pool()
            .register_staged(Some("buf"), region.as_mut_ptr(), REGION, copier.clone())
            .unwrap();
        ep.register_memory_region("host", host.as_mut_ptr(), MIB)
            .unwrap();
    }
    parent.connect_endpoint(&*ep);
    parent.serve(|parent, c| {
        let nums = c.nums();
        match c.name {
            "checkhost" => parent.send(&check_reply(&host[..nums[0] as usize], nums[1])),
            // stats: bytes through the copier, and the pool's counters
            "stats" => {
                let (out, inn) = copier.copied();
                let s = StagingPool::global().stats();
                parent.send(&format!(
                    "stats {out} {inn} {} {} {} {}",
                    s.created,
                    s.in_use,
                    s.staged_bytes,
                    StagingPool::global().config().chunk
                ));
            }
            // check <off> <len> <seed>, fill <off> <len> <seed>
            _ => return region_command(parent, &*ep, &mut region, c),
        }
        true
    });
    ep.shutdown();
});

struct Rig {
    peer: Peer,
    ep: Arc<TcpEndpoint>,
    copier: Arc<HostCopier>,
    buf: Vec<u8>,
    local: u32,
    remote: u32,
}

impl Rig {
    fn new() -> Rig {
        let mut peer = Peer::spawn(
            "staging_peer",
            &[
                ("DLSLIME_STAGING_CHUNK", CHILD_CHUNK.to_string()),
                ("DLSLIME_STAGING_BUFFERS", CHILD_BUFFERS.to_string()),
            ],
        );
        let ep = TcpEndpoint::new(&ctx(), MemoryPool::new()).unwrap();
        let copier = Arc::new(HostCopier::new());
        let mut buf = vec![0u8; REGION];
        // SAFETY: `buf` moves into the Rig, which drops `ep` (shut down) before `buf`.
        let local = unsafe {
            ep.memory_pool()
                .register_staged(Some("local"), buf.as_mut_ptr(), REGION, copier.clone())
                .unwrap()
        };
        peer.connect_endpoint(&*ep);
        let remote = ep.remote_pool().handle("buf").unwrap();
        Rig {
            peer,
            ep,
            copier,
            buf,
            local,
            remote,
        }
    }

    /// (child copied out, child copied in, child pool created, in use, staged bytes, chunk)
    fn child_stats(&mut self) -> Vec<u64> {
        let line = self.peer.cmd("stats");
        line.split_whitespace()
            .skip(1)
            .map(|s| s.parse().unwrap())
            .collect()
    }

    fn run(&self, a: Assignment, write: bool) {
        let f = if write {
            self.ep.write(&[a], Some(Duration::from_secs(120)))
        } else {
            self.ep.read(&[a], Some(Duration::from_secs(120)))
        }
        .unwrap();
        f.wait().unwrap();
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.peer.send("exit");
        self.ep.shutdown();
    }
}

#[test]
fn staged_regions_move_every_size_with_the_right_bytes() {
    let mut r = Rig::new();
    let sizes = [
        KIB,
        64 * KIB + 1,
        MIB,
        4 * MIB + 3,
        16 * MIB,
        REGION, // 64 MiB
    ];
    let mut moved = 0u64;
    for (i, &len) in sizes.iter().enumerate() {
        let seed = 10 + i as u64;
        // write: local staged -> remote staged, checked by the child
        fill_pattern(&mut r.buf[..len], seed);
        r.run(Assignment::new(r.local, r.remote, 0, 0, len as u64), true);
        assert_eq!(
            r.peer.cmd(&format!("check 0 {len} {seed}")),
            "ok",
            "write of {len}"
        );
        // read: the child fills (another seed), read into the local region at an offset
        let off = if len == REGION { 0 } else { 4096 + 7 };
        assert_eq!(r.peer.cmd(&format!("fill 0 {len} {}", seed + 100)), "ok");
        r.run(
            Assignment::new(r.local, r.remote, 0, off as u64, len as u64),
            false,
        );
        assert_eq!(
            check_pattern(&r.buf[off..off + len], seed + 100),
            None,
            "read of {len}"
        );
        moved += len as u64;
    }
    // Every byte went through the copiers on both sides (the staged path was taken),
    // and the child's pool stayed within its bound and gave every buffer back.
    assert_eq!(r.copier.copied(), (moved, moved));
    let s = r.child_stats();
    assert_eq!(s[0], moved, "child copied out (served reads)");
    assert_eq!(s[1], moved, "child copied in (applied writes)");
    assert!(
        s[2] as usize <= CHILD_BUFFERS,
        "child pool created {} buffers",
        s[2]
    );
    assert!(s[2] >= 2, "the pipeline used more than one buffer");
    assert_eq!(s[3], 0, "child buffers still out");
    assert_eq!(s[4], 2 * moved);
    assert_eq!(s[5] as usize, CHILD_CHUNK);
    // (The parent's pool is shared with the other test of this binary: only its bound.)
    assert!(StagingPool::global().stats().created <= StagingPool::global().config().buffers);
}

/// Host and staged regions mix in one operation's assignments.
#[test]
fn host_and_staged_regions_mix() {
    let mut r = Rig::new();
    let mut host = vec![0u8; MIB];
    fill_pattern(&mut host, 77);
    // SAFETY: `host` outlives the write waited on below; the region is unregistered after.
    let h = unsafe { r.ep.register_memory_region("h", host.as_mut_ptr(), MIB) }.unwrap();
    let remote_host = r.ep.remote_pool().handle("host").unwrap();
    fill_pattern(&mut r.buf[..MIB], 78);
    let f =
        r.ep.write(
            &[
                Assignment::new(h, remote_host, 0, 0, MIB as u64),
                Assignment::new(r.local, r.remote, 0, 0, MIB as u64),
                Assignment::new(h, r.remote, MIB as u64, 0, MIB as u64),
            ],
            Some(Duration::from_secs(60)),
        )
        .unwrap();
    f.wait().unwrap();
    assert_eq!(r.peer.cmd(&format!("checkhost {MIB} 77")), "ok");
    assert_eq!(r.peer.cmd(&format!("check 0 {MIB} 78")), "ok");
    assert_eq!(r.peer.cmd(&format!("check {MIB} {MIB} 77")), "ok");
    r.ep.memory_pool().unregister(h).unwrap();
}
