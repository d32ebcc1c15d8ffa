//! Observability counters under a known workload, two processes, over shared memory and
//! TCP: every operation kind, a refusal, a timeout and a cancellation show exactly in
//! the initiator's counters, the receives in the target's, and the JSON snapshot lists
//! the same numbers.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Peer;
use dlslime::obs::{self, OpKind};
use dlslime::transport::shm::{ShmConfig, ShmEndpoint};
use dlslime::transport::tcp::TcpEndpoint;
use dlslime::{Assignment, Endpoint, MemoryPool, Status};

const LEN: usize = 1 << 20;
const T: Option<Duration> = Some(Duration::from_secs(20));

struct Side {
    ep: Arc<dyn Endpoint>,
    _buf: Vec<u8>,
}

fn side(transport: &str) -> Side {
    let mut buf = vec![0u8; LEN];
    let ep: Arc<dyn Endpoint> = match transport {
        "shm" => Arc::new(ShmEndpoint::new(MemoryPool::new(), ShmConfig::default()).unwrap()),
        _ => TcpEndpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap(),
    };
    // SAFETY: `buf` lives in the returned `Side` next to the endpoint; its heap block
    // does not move, and the endpoint is dropped (field order) before it.
    unsafe {
        ep.register_memory_region("buf", buf.as_mut_ptr(), LEN)
            .unwrap()
    };
    Side { ep, _buf: buf }
}

// The target: posts receives and an imm_recv when told, reports its counters.
common::peer_entry!(fn obs_child(parent) {
    obs::set_enabled(true);
    let s = side(&std::env::var("OBS_TRANSPORT").unwrap());
    parent.connect_endpoint(&*s.ep);
    while let Some(line) = parent.recv() {
        let args: Vec<&str> = line.split_whitespace().collect();
        match args[0] {
            "recv" => {
                let n: usize = args[1].parse().unwrap();
                let mut bufs = vec![vec![0u8; 128]; n];
                let imm = s.ep.imm_recv(T).unwrap();
                let fs: Vec<_> = bufs
                    .iter_mut()
                    // SAFETY: `bufs` outlives the futures, each waited below.
                    .map(|b| unsafe { s.ep.recv(b.as_mut_ptr(), 128, T).unwrap() })
                    .collect();
                parent.send("posted");
                for f in &fs {
                    f.wait().unwrap();
                }
                imm.wait().unwrap();
                parent.send("received");
            }
            "stats" => {
                let v = s.ep.obs().unwrap().read();
                let r = &v.ops[OpKind::Recv as usize];
                let i = &v.ops[OpKind::ImmRecv as usize];
                parent.send(&format!(
                    "stats {} {} {} {}",
                    r.completed, r.completed_bytes, i.completed, r.latency.count
                ));
            }
            _ => break,
        }
    }
});

fn a(r_off: u64, l_off: u64, len: u64) -> Assignment {
    Assignment::new(0, 0, r_off, l_off, len)
}

fn workload(transport: &str) {
    obs::set_enabled(true);
    let me = side(transport);
    let mut peer = Peer::spawn(
        "obs_child",
        &[
            ("OBS_TRANSPORT", transport.to_string()),
            ("DLSLIME_OBS", "1".to_string()),
        ],
    );
    peer.connect_endpoint(&*me.ep);
    let ep = &me.ep;
    let t0 = Instant::now();
    for i in 0..4 {
        ep.write(&[a(i * 1000, 0, 1000)], T)
            .unwrap()
            .wait()
            .unwrap();
    }
    for _ in 0..2 {
        ep.read(&[a(0, 4096, 1500), a(8192, 8192, 1500)], T)
            .unwrap()
            .wait()
            .unwrap();
    }
    let one_sided_wall = t0.elapsed();
    // refused at submission: past the end of the remote region
    assert_eq!(
        ep.write(&[a(LEN as u64, 0, 10)], T).unwrap_err().status(),
        Status::OutOfRange
    );
    peer.send("recv 3");
    peer.expect("posted");
    let msg = [7u8; 64];
    for _ in 0..3 {
        // SAFETY: `msg` outlives the wait.
        unsafe { ep.send(msg.as_ptr(), 64, T) }
            .unwrap()
            .wait()
            .unwrap();
    }
    ep.write_with_imm(&[a(0, 0, 100)], 5, T)
        .unwrap()
        .wait()
        .unwrap();
    peer.expect("received");
    // a timeout: no notification is coming
    let f = ep.imm_recv(Some(Duration::from_millis(50))).unwrap();
    assert_eq!(f.wait().unwrap_err().status(), Status::Timeout);
    // a cancellation: no message is coming
    let mut rbuf = [0u8; 16];
    // SAFETY: `rbuf` outlives the future (cancelled and waited below).
    let f = unsafe { ep.recv(rbuf.as_mut_ptr(), 16, T) }.unwrap();
    assert_eq!(ep.cancel_all(), 1);
    assert_eq!(f.wait().unwrap_err().status(), Status::Cancelled);

    let stats = ep.obs().expect("endpoint counters");
    let v = stats.read();
    let op = |k: OpKind| v.ops[k as usize].clone();
    let w = op(OpKind::Write);
    assert_eq!(common::traffic(&w), (4, 4000, 4, 4000));
    assert_eq!((w.failed, w.rejected, w.pending()), (0, 1, 0));
    assert_eq!(w.latency.count, 4);
    // timing is sampled (docs/observability.md), so the sum is an estimate; every timed
    // latency is real, so none exceeds the wall time
    assert!(
        w.latency.max > 0 && w.latency.max <= one_sided_wall.as_nanos() as u64,
        "write latency max {} ns past the wall time {one_sided_wall:?}",
        w.latency.max
    );
    let r = op(OpKind::Read);
    assert_eq!((r.submitted, r.completed, r.completed_bytes), (2, 2, 6000));
    let s = op(OpKind::Send);
    assert_eq!((s.submitted, s.completed, s.completed_bytes), (3, 3, 192));
    let wi = op(OpKind::WriteImm);
    assert_eq!(
        (wi.submitted, wi.completed, wi.completed_bytes),
        (1, 1, 100)
    );
    let ir = op(OpKind::ImmRecv);
    assert_eq!((ir.submitted, ir.completed, ir.failed), (1, 0, 1));
    // the timed-out wait lasted at least 50 ms: its bucket says so
    assert!(ir.latency.max >= 50_000_000, "{}", ir.latency.max);
    assert!(ir.latency.quantile(0.5) >= 40_000_000);
    let rv = op(OpKind::Recv);
    assert_eq!((rv.submitted, rv.completed, rv.failed), (1, 0, 1));
    assert_eq!(v.errors_of(Status::Timeout), 1);
    assert_eq!(v.errors_of(Status::Cancelled), 1);
    assert_eq!(v.errors_of(Status::OutOfRange), 1);
    assert_eq!(v.errors.len(), 3, "{:?}", v.errors);

    // the snapshot shows the same row
    let snap = obs::snapshot();
    assert_eq!(snap["enabled"], true);
    let row = snap["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == stats.id)
        .expect("endpoint row")
        .clone();
    assert_eq!(row["transport"], transport);
    assert_eq!(row["ops"]["write"]["completed_bytes"], 4000);
    assert_eq!(row["ops"]["write"]["latency_ns"]["count"], 4);
    assert_eq!(row["ops"]["read"]["submitted"], 2);
    assert_eq!(row["errors"]["timeout"], 1);
    assert_eq!(row["timeouts"], 1);
    assert_eq!(row["cancellations"], 1);
    assert!(!row["peer"].as_str().unwrap().is_empty());

    // the target counted the receives
    peer.send("stats");
    assert_eq!(peer.recv(), "stats 3 192 1 3");
    peer.send("exit");
    peer.join();
}

common::scenario_tests! {
    counters_exact_over_shm => workload("shm");
    counters_exact_over_tcp => workload("tcp");
}
