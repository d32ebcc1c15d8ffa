//! A shared allocation that a shared-memory peer mapped at connect time is freed, and a
//! new region is registered where it was: the peer's one-sided writes must land in the
//! new region, never in the old pages it still maps (found by the slot ring's tests,
//! whose RPC sessions come and go while other tests' allocations exist at connect time).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{check_pattern, fill_pattern, Peer};
use dlslime::memory::SharedBuf;
use dlslime::transport::shm::{ShmConfig, ShmEndpoint};
use dlslime::{Assignment, Endpoint, MemoryPool};

const LEN: usize = 1 << 20;
const T: Option<Duration> = Some(Duration::from_secs(60));

// The peer: connects, then for each `write <region json>` writes pattern 7 into that
// region one-sided and answers `done`.
common::peer_entry!(fn reuse_child(parent) {
    let pool = MemoryPool::new();
    let mut src = vec![0u8; LEN];
    fill_pattern(&mut src, 7);
    // SAFETY: `src` outlives the endpoint that uses the region.
    let h = unsafe { pool.register(Some("src"), src.as_mut_ptr(), LEN).unwrap() };
    let ep = ShmEndpoint::new(pool, ShmConfig::default()).unwrap();
    parent.send(&format!("info {}", ep.endpoint_info()));
    let info = parent.recv().unwrap();
    ep.connect(&serde_json::from_str(info.strip_prefix("connect ").unwrap()).unwrap())
        .unwrap();
    parent.send("connected");
    let mut n = 0;
    while let Some(line) = parent.recv() {
        let Some(region) = line.strip_prefix("write ") else {
            break;
        };
        let r = ep
            .register_remote_memory_region(
                &format!("dst{n}"),
                &serde_json::from_str(region).unwrap(),
            )
            .unwrap();
        n += 1;
        ep.write(&[Assignment::new(h, r, 0, 0, LEN as u64)], T)
            .unwrap()
            .wait()
            .unwrap();
        parent.send("done");
    }
});

#[test]
fn writes_reach_a_region_registered_where_a_freed_allocation_was() {
    let pool = MemoryPool::new();
    // allocations that exist at connect time: the peer maps them
    let mut olds: Vec<SharedBuf> = (0..4).map(|_| SharedBuf::new(LEN).unwrap()).collect();
    let ep: Arc<dyn Endpoint> =
        Arc::new(ShmEndpoint::new(pool.clone(), ShmConfig::default()).unwrap());
    let mut peer = Peer::spawn("reuse_child", &[]);
    let info = peer.recv();
    peer.send(&format!("connect {}", ep.endpoint_info()));
    ep.connect(&serde_json::from_str(info.strip_prefix("info ").unwrap()).unwrap())
        .unwrap();
    peer.expect("connected");
    let freed: Vec<usize> = olds.iter().map(|b| b.as_ptr() as usize).collect();
    olds.clear();
    // new shared allocations and plain buffers, possibly where the freed ones were
    for round in 0..4 {
        let shared = SharedBuf::new(LEN).unwrap();
        let mut plain = vec![0u8; LEN];
        for (i, p) in [shared.as_ptr(), plain.as_mut_ptr()]
            .into_iter()
            .enumerate()
        {
            let name = format!("dst{round}-{i}");
            // SAFETY: the buffer lives until after the region is unregistered below.
            let h = unsafe { pool.register(Some(&name), p, LEN).unwrap() };
            let region = &pool.mr_info()[&name];
            // let the progress loop publish the region, so the peer may take its fast path
            std::thread::sleep(Duration::from_millis(50));
            peer.send(&format!("write {region}"));
            peer.expect("done");
            // SAFETY: `p` is the live buffer of LEN bytes just written by the peer's completed write.
            let got = unsafe { std::slice::from_raw_parts(p, LEN) };
            assert_eq!(
                check_pattern(got, 7),
                None,
                "round {round} buffer {i} at {p:?} (freed allocations were at {freed:x?})"
            );
            pool.unregister(h).unwrap();
        }
        drop(shared);
        plain.fill(0);
    }
    peer.send("exit");
    peer.join();
}
