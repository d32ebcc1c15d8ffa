//! The slot ring's serving path end to end, in real OS processes over shared memory,
//! TCP and RDMA (the `_rdma` tests, run by `make test-rdma` in the soft-RoCE VM): a
//! producer process that creates the ring and serves it, optionally a second serving
//! process that attaches the same ring, and this test process as the client.
//!
//! Covers: fetch by reference with content checks, stale references (lapped, consumed),
//! round robin over two serving processes, a serving process killed after its grant
//! (the fetch fails over within its timeout, the dead owner's slot is reclaimed), the
//! commit failing over to another session, an orphaned handler finishing late after the
//! client rotated, the producer lapping the ring during a read (no torn bytes: a read
//! whose lease passed is refused at its commit and the reference is then stale),
//! quarantine and its expiry, never-starve, session age-out before the server's idle
//! eviction (and eviction racing retirement), batch fetch and its worst-case wall time.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{check_pattern, fill_pattern, is_child, Peer, PeerCommand};
use dlslime::ring::{
    FaultHook, Ring, RingClient, RingClientConfig, RingConfig, RingHandle, RingServer,
    RingServerConfig, SlotRef,
};
use dlslime::transport::rdma::{available_nics, RdmaEndpoint};
use dlslime::transport::shm::{ShmConfig, ShmEndpoint};
use dlslime::transport::tcp::TcpEndpoint;
use dlslime::{Endpoint, MemoryPool, Status};

fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn new_endpoint(transport: &str) -> Arc<dyn Endpoint> {
    match transport {
        "shm" => Arc::new(ShmEndpoint::new(MemoryPool::new(), ShmConfig::default()).unwrap()),
        "tcp" => TcpEndpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap(),
        "rdma" => {
            let (mine, theirs) = rdma_devices();
            let dev = if is_child() { theirs } else { mine };
            RdmaEndpoint::open(Some(&dev), 1, None, 1).unwrap()
        }
        t => panic!("unknown transport {t}"),
    }
}

/// The RDMA devices of (this process, the serving processes): `DLSLIME_TEST_RDMA_DEVICES`
/// (`rxe0,rxe1`), else the first NIC for both. The `_rdma` tests are `#[ignore]`d: they
/// need a verbs device, and `make test-rdma` runs them in the soft-RoCE VM.
fn rdma_devices() -> (String, String) {
    let nics = available_nics().unwrap_or_default();
    let want = std::env::var("DLSLIME_TEST_RDMA_DEVICES")
        .unwrap_or_else(|_| nics.first().cloned().unwrap_or_default());
    let mut it = want.split(',').map(|s| s.trim().to_string());
    let a = it.next().unwrap_or_default();
    let b = it.next().unwrap_or_else(|| a.clone());
    assert!(
        !a.is_empty() && nics.contains(&a) && nics.contains(&b),
        "no RDMA device {want:?} here (devices: {nics:?}): run `make test-rdma`"
    );
    (a, b)
}

// A serving process: `RING_ROLE=producer` creates the ring (`RING_SLOTS` x `RING_CAP`),
// `RING_ROLE=attach` maps the one in `RING_HANDLE`. Commands:
//   `endpoint` -> `info <json>` (a new endpoint), `connect <json>` -> `connected`
//   (connects the newest endpoint and serves it), `write <count> <len> <seed>` ->
//   `refs <slot>:<gen>,...` (payload i = pattern(seed + i)), `handle` -> `handle <json>`,
//   `metrics` / `counters` -> JSON, `exit`.
common::peer_entry!(fn ring_child(parent) {
    let transport = std::env::var("RING_TRANSPORT").unwrap();
    let ring = match std::env::var("RING_ROLE").as_deref() {
        Ok("attach") => {
            let h = RingHandle::parse(&std::env::var("RING_HANDLE").unwrap()).unwrap();
            Ring::attach(&h).unwrap()
        }
        _ => Ring::create(&RingConfig {
            name: "rollouts".into(),
            slot_count: env_u64("RING_SLOTS", 8) as usize,
            slot_capacity: env_u64("RING_CAP", 1 << 20) as usize,
            overwrite: true,
        })
        .unwrap(),
    };
    let server = RingServer::new(RingServerConfig {
        grant_delay: Duration::from_millis(env_u64("GRANT_DELAY_MS", 0)),
        max_lease: Duration::from_millis(env_u64("MAX_LEASE_MS", 60_000)),
        idle_timeout: Duration::from_millis(env_u64("IDLE_TIMEOUT_MS", 120_000)),
        ..Default::default()
    })
    .unwrap();
    server.add_ring(ring.clone()).unwrap();
    parent.send("ready");
    let mut newest: Option<Arc<dyn Endpoint>> = None;
    while let Some(line) = parent.recv() {
        let (cmd, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match cmd {
            "endpoint" => {
                let ep = new_endpoint(&transport);
                parent.send(&format!("info {}", ep.endpoint_info()));
                newest = Some(ep);
            }
            "connect" => {
                let ep = newest.take().expect("endpoint first");
                ep.connect(&serde_json::from_str(arg).unwrap()).unwrap();
                server.serve_endpoint(ep).unwrap();
                parent.send("connected");
            }
            "write" => {
                let v: Vec<u64> = arg.split(' ').map(|x| x.parse().unwrap()).collect();
                let (count, len, seed) = (v[0], v[1] as usize, v[2]);
                let mut refs = Vec::new();
                let mut buf = vec![0u8; len];
                for i in 0..count {
                    fill_pattern(&mut buf, seed + i);
                    match ring.write_raw(&buf) {
                        Ok(r) => refs.push(format!("{}:{}", r.slot, r.generation)),
                        Err(e) => refs.push(format!("err{}", e.status().code())),
                    }
                }
                parent.send(&format!("refs {}", refs.join(",")));
            }
            "handle" => parent.send(&format!("handle {}", ring.handle().to_json())),
            "metrics" => {
                let m = ring.metrics();
                parent.send(&format!(
                    "metrics {} {} {} {} {} {} {}",
                    m.writes, m.reads, m.drops, m.stale_reads, m.reclaims, m.orphan_noops, m.ready
                ));
            }
            "counters" => {
                let c = server.counters();
                parent.send(&format!(
                    "counters {} {} {} {} {}",
                    c.sessions, c.evictions, c.grants, c.commits, c.lease_expiries
                ));
            }
            "exit" => break,
            _ => panic!("unknown command {line}"),
        }
    }
    server.stop();
});

/// The outcome of each write of a `write` command: its reference or its status code.
type Writes = Vec<Result<SlotRef, i32>>;

struct Server {
    peer: Peer,
    transport: String,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Metrics {
    writes: u64,
    reads: u64,
    drops: u64,
    stale: u64,
    reclaims: u64,
    orphan_noops: u64,
    ready: u64,
}

impl Server {
    fn start(transport: &str, env: &[(&str, String)]) -> Server {
        let mut e: Vec<(&str, String)> = vec![("RING_TRANSPORT", transport.to_string())];
        e.extend_from_slice(env);
        let mut peer = Peer::spawn("ring_child", &e);
        peer.expect("ready");
        Server {
            peer,
            transport: transport.to_string(),
        }
    }

    fn attach(transport: &str, handle: &str, env: &[(&str, String)]) -> Server {
        let mut e = vec![
            ("RING_ROLE", "attach".to_string()),
            ("RING_HANDLE", handle.to_string()),
        ];
        e.extend_from_slice(env);
        Server::start(transport, &e)
    }

    /// A new endpoint pair between this process and the server, served there.
    fn pair(&mut self) -> Arc<dyn Endpoint> {
        let ep = new_endpoint(&self.transport);
        self.peer.send("endpoint");
        let info = self.peer.recv();
        let info = info.strip_prefix("info ").unwrap().to_string();
        self.peer.send(&format!("connect {}", ep.endpoint_info()));
        ep.connect(&serde_json::from_str(&info).unwrap()).unwrap();
        self.peer.expect("connected");
        ep
    }

    fn write(&mut self, count: u64, len: usize, seed: u64) -> Writes {
        self.peer.send(&format!("write {count} {len} {seed}"));
        let line = self.peer.recv();
        line.strip_prefix("refs ")
            .unwrap()
            .split(',')
            .map(|x| {
                if let Some(code) = x.strip_prefix("err") {
                    return Err(code.parse().unwrap());
                }
                let (s, g) = x.split_once(':').unwrap();
                Ok(SlotRef::new(s.parse().unwrap(), g.parse().unwrap()))
            })
            .collect()
    }

    fn write_ok(&mut self, count: u64, len: usize, seed: u64) -> Vec<SlotRef> {
        self.write(count, len, seed)
            .into_iter()
            .map(|r| r.expect("write succeeded"))
            .collect()
    }

    fn handle(&mut self) -> String {
        self.peer.send("handle");
        self.peer
            .recv()
            .strip_prefix("handle ")
            .unwrap()
            .to_string()
    }

    fn metrics(&mut self) -> Metrics {
        self.peer.send("metrics");
        let l = self.peer.recv();
        let c = PeerCommand::parse(&l);
        assert_eq!(c.name, "metrics");
        let v = c.nums();
        Metrics {
            writes: v[0],
            reads: v[1],
            drops: v[2],
            stale: v[3],
            reclaims: v[4],
            orphan_noops: v[5],
            ready: v[6],
        }
    }

    /// (sessions, evictions, grants, commits, lease_expiries)
    fn counters(&mut self) -> (u64, u64, u64, u64, u64) {
        self.peer.send("counters");
        let l = self.peer.recv();
        let v: Vec<u64> = l
            .strip_prefix("counters ")
            .unwrap()
            .split(' ')
            .map(|x| x.parse().unwrap())
            .collect();
        (v[0], v[1], v[2], v[3], v[4])
    }

    fn exit(mut self) {
        self.peer.send("exit");
        self.peer.join();
    }
}

fn client(cfg: RingClientConfig) -> RingClient {
    RingClient::new(cfg).unwrap()
}

fn check(p: &[u8], len: usize, seed: u64) {
    assert_eq!(p.len(), len);
    assert_eq!(
        check_pattern(p, seed),
        None,
        "payload of seed {seed} is corrupt"
    );
}

fn end_to_end(transport: &str) {
    let mut s = Server::start(transport, &[("RING_SLOTS", "4".into())]);
    let c = client(RingClientConfig::default());
    c.add_endpoint("rollouts", s.pair());
    // sizes across the slot capacity, in place and into pooled buffers
    for (i, len) in [0usize, 1, 4096, 65536, 1 << 20].into_iter().enumerate() {
        let seed = 100 + i as u64;
        let r = s.write_ok(1, len, seed)[0];
        if i % 2 == 0 {
            let p = c.fetch("rollouts", r).unwrap();
            check(&p, len, seed);
        } else {
            let mut dst = vec![0u8; 1 << 20];
            let n = c.fetch_into("rollouts", r, &mut dst).unwrap();
            check(&dst[..n], len, seed);
        }
        // consumed: the same reference again is stale, not a second copy
        let e = c.fetch("rollouts", r).unwrap_err();
        assert_eq!(e.status(), Status::StaleSlot, "{e}");
    }
    // the producer laps the ring: the old reference is stale (no silent ABA read)
    let old = s.write_ok(1, 1000, 7)[0];
    let new = s.write_ok(4, 1000, 8);
    assert_eq!(new[3].slot, old.slot);
    let e = c.fetch("rollouts", old).unwrap_err();
    assert_eq!(e.status(), Status::StaleSlot);
    assert!(
        e.message()
            .contains(&format!("holds generation {}", new[3].generation)),
        "{e}"
    );
    check(&c.fetch("rollouts", new[3]).unwrap(), 1000, 11);
    // a payload too large for the caller's buffer stays in the ring
    let mut small = vec![0u8; 10];
    let e = c.fetch_into("rollouts", new[0], &mut small).unwrap_err();
    assert_eq!(e.status(), Status::OutOfRange);
    check(&c.fetch("rollouts", new[0]).unwrap(), 1000, 8);
    // unknown producers and malformed references are typed errors
    assert_eq!(
        c.fetch("nobody", new[1]).unwrap_err().status(),
        Status::UnknownHandle
    );
    assert_eq!(
        c.fetch("rollouts", SlotRef::new(1, 2))
            .unwrap_err()
            .status(),
        Status::InvalidArgument
    );
    let m = s.metrics();
    assert_eq!(m.writes, 10);
    assert_eq!(m.reads, 7);
    assert_eq!(m.drops, 1);
    assert_eq!(m.ready, 2);
    assert_eq!(m.writes, m.reads + m.drops + m.ready);
    let k = c.counters();
    assert_eq!(k.quarantines, 0);
    assert_eq!(k.sessions_created, 1);
    s.exit();
}

#[test]
fn end_to_end_two_processes_shm() {
    end_to_end("shm");
}

common::scenario_tests! {
    end_to_end_two_processes_tcp => end_to_end("tcp");
    #[ignore = "needs a verbs device: make test-rdma (soft-RoCE VM)"]
    end_to_end_two_processes_rdma => end_to_end("rdma");
}

/// Producer-server P and a second serving process S that attached P's ring; the client
/// alternates between them and every payload arrives whole.
fn three_processes(transport: &str) {
    let mut p = Server::start(transport, &[("RING_SLOTS", "16".into())]);
    let h = p.handle();
    let mut s = Server::attach(transport, &h, &[]);
    let c = client(RingClientConfig::default());
    c.add_endpoint("rollouts", p.pair());
    c.add_endpoint("rollouts", s.pair());
    let refs = p.write_ok(12, 300_000, 1000);
    for (i, r) in refs.iter().enumerate() {
        check(&c.fetch("rollouts", *r).unwrap(), 300_000, 1000 + i as u64);
    }
    let (_, _, grants_p, commits_p, _) = p.counters();
    let (_, _, grants_s, commits_s, _) = s.counters();
    assert_eq!(
        (grants_p, grants_s),
        (6, 6),
        "round robin over both servers"
    );
    assert_eq!((commits_p, commits_s), (6, 6));
    // one metrics block for the ring, whichever process served
    assert_eq!(p.metrics(), s.metrics());
    assert_eq!(p.metrics().reads, 12);
    // a batch over both
    let refs = p.write_ok(10, 100_000, 5000);
    let t = Instant::now();
    let got = c.fetch_batch("rollouts", &refs);
    assert!(t.elapsed() < c.batch_worst_case(refs.len()));
    for (i, g) in got.iter().enumerate() {
        check(g.as_ref().unwrap(), 100_000, 5000 + i as u64);
    }
    s.exit();
    p.exit();
}

#[test]
fn three_processes_shm() {
    three_processes("shm");
}

common::scenario_tests! {
    three_processes_tcp => three_processes("tcp");
    #[ignore = "needs a verbs device: make test-rdma (soft-RoCE VM)"]
    three_processes_rdma => three_processes("rdma");
}

/// A serving process is SIGKILLed after granting a slot (its reply is delayed): the
/// fetch fails over to the producer's endpoint within its timeout, which reclaims the
/// dead owner's slot and serves the payload whole.
fn killed_after_grant(transport: &str) {
    use std::sync::Mutex;
    let p = Arc::new(Mutex::new(Server::start(transport, &[])));
    let h = p.lock().unwrap().handle();
    let mut s = Server::attach(transport, &h, &[("GRANT_DELAY_MS", "3000".into())]);
    let cfg = RingClientConfig {
        timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let c = client(cfg);
    c.add_endpoint("rollouts", s.pair());
    c.add_endpoint("rollouts", p.lock().unwrap().pair());
    let r = p.lock().unwrap().write_ok(1, 1 << 20, 42)[0];
    let pid = s.peer.pid();
    let p2 = p.clone();
    let killer = std::thread::spawn(move || {
        // kill only once the serving process holds the slot (its grant is delayed): a
        // fixed pause could fire before the request even arrived on a loaded machine
        let deadline = Instant::now() + Duration::from_secs(4);
        while p2.lock().unwrap().metrics().ready != 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: kill(2) with a pid of our own child and a signal number.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    let t = Instant::now();
    let got = c.fetch("rollouts", r).unwrap();
    let took = t.elapsed();
    killer.join().unwrap();
    check(&got, 1 << 20, 42);
    assert!(took < Duration::from_secs(5), "failover took {took:?}");
    let k = c.counters();
    assert_eq!((k.attempts, k.quarantines), (2, 1), "{k:?}");
    let m = p.lock().unwrap().metrics();
    assert_eq!(m.reclaims, 1, "{m:?}");
    assert_eq!(m.reads, 1);
    let st = c.routes("rollouts").unwrap();
    assert!(!st[0].healthy && st[1].healthy, "{st:?}");
    drop(s);
    let p = Arc::try_unwrap(p).ok().unwrap().into_inner().unwrap();
    p.exit();
}

#[test]
fn serving_process_killed_after_grant_fails_over_shm() {
    killed_after_grant("shm");
}

common::scenario_tests! {
    serving_process_killed_after_grant_fails_over_tcp => killed_after_grant("tcp");
    #[ignore = "needs a verbs device: make test-rdma (soft-RoCE VM)"]
    serving_process_killed_after_grant_fails_over_rdma => killed_after_grant("rdma");
}

/// Kills the process `pid` the first time the hook runs.
fn kill_once(pid: u32) -> (FaultHook, Arc<std::sync::atomic::AtomicBool>) {
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let k = killed.clone();
    let hook = FaultHook(Arc::new(move |_| {
        if !k.swap(true, std::sync::atomic::Ordering::SeqCst) {
            // SAFETY: kill(2) with a pid of our own child and a signal number.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            // long enough for the transport to notice
            std::thread::sleep(Duration::from_millis(200));
        }
    }));
    (hook, killed)
}

/// The serving process dies between the grant and the read: the fetch still returns
/// the whole payload within its timeout. (Over TCP the read fails and the fetch fails
/// over, reclaiming the dead owner's slot; over shared memory the read may still come
/// from the mapping, and then the commit is confirmed through the producer's session.)
fn killed_before_read(transport: &str) {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    let mut p = Server::start(transport, &[]);
    let h = p.handle();
    let mut s = Server::attach(transport, &h, &[]);
    let (hook, killed) = kill_once(s.peer.pid());
    let armed = Arc::new(AtomicBool::new(false));
    let a2 = armed.clone();
    let c = client(RingClientConfig {
        after_grant: Some(FaultHook(Arc::new(move |r| {
            if a2.load(SeqCst) {
                (hook.0)(r)
            }
        }))),
        ..Default::default()
    });
    c.add_endpoint("rollouts", p.pair());
    c.add_endpoint("rollouts", s.pair());
    let r = p.write_ok(2, 1 << 20, 77);
    // the first fetch goes to p (and makes its session), the second to s
    check(&c.fetch("rollouts", r[0]).unwrap(), 1 << 20, 77);
    armed.store(true, SeqCst);
    let t = Instant::now();
    check(&c.fetch("rollouts", r[1]).unwrap(), 1 << 20, 78);
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(killed.load(SeqCst));
    let k = c.counters();
    let m = p.metrics();
    let failed_over = (k.attempts, k.quarantines, m.reclaims) == (3, 1, 1);
    let committed_elsewhere = (k.attempts, k.commit_failovers, m.reclaims) == (2, 1, 0);
    if transport == "tcp" {
        assert!(failed_over, "{k:?} {m:?}");
    } else {
        assert!(failed_over || committed_elsewhere, "{k:?} {m:?}");
    }
    assert_eq!(m.reads, 2);
    drop(s);
    p.exit();
}

#[test]
fn serving_process_killed_before_the_read_shm() {
    killed_before_read("shm");
}

common::scenario_tests! {
    serving_process_killed_before_the_read_tcp => killed_before_read("tcp");
    #[ignore = "needs a verbs device: make test-rdma (soft-RoCE VM)"]
    serving_process_killed_before_the_read_rdma => killed_before_read("rdma");
}

/// The serving process dies after the read, before the commit: the commit's reply is
/// lost, so the client asks the producer's live session, which commits the same
/// attempt (its token): one attempt, one commit, nothing reclaimed, nothing lost.
fn killed_before_commit(transport: &str) {
    let mut p = Server::start(transport, &[]);
    let h = p.handle();
    let mut s = Server::attach(transport, &h, &[]);
    let (hook, _) = kill_once(s.peer.pid());
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let a2 = armed.clone();
    let c = client(RingClientConfig {
        before_commit: Some(FaultHook(Arc::new(move |r| {
            if a2.load(std::sync::atomic::Ordering::SeqCst) {
                (hook.0)(r)
            }
        }))),
        ..Default::default()
    });
    c.add_endpoint("rollouts", p.pair());
    c.add_endpoint("rollouts", s.pair());
    let r = p.write_ok(2, 1 << 20, 5);
    check(&c.fetch("rollouts", r[0]).unwrap(), 1 << 20, 5);
    armed.store(true, std::sync::atomic::Ordering::SeqCst);
    check(&c.fetch("rollouts", r[1]).unwrap(), 1 << 20, 6);
    let k = c.counters();
    assert_eq!((k.attempts, k.commit_failovers), (2, 1), "{k:?}");
    let m = p.metrics();
    assert_eq!((m.reads, m.reclaims, m.ready), (2, 0, 0), "{m:?}");
    assert_eq!(
        c.fetch("rollouts", r[1]).unwrap_err().status(),
        Status::StaleSlot
    );
    drop(s);
    p.exit();
}

#[test]
fn serving_process_killed_before_the_commit_shm() {
    killed_before_commit("shm");
}

common::scenario_tests! {
    serving_process_killed_before_the_commit_tcp => killed_before_commit("tcp");
    #[ignore = "needs a verbs device: make test-rdma (soft-RoCE VM)"]
    serving_process_killed_before_the_commit_rdma => killed_before_commit("rdma");
}

/// The first serving process grants, then its handler stalls past the client's timeout
/// (an orphan); the client rotates to the producer, which reclaims the slot (the orphan's
/// lease is short), serves and commits it. When the orphan finally finishes, its CAS on
/// its own token finds the slot moved on: a logged no-op that leaves the consumed slot
/// alone, and the next lap of the producer is unaffected.
fn orphan_finishes_late(transport: &str) {
    let mut p = Server::start(transport, &[("RING_SLOTS", "2".into())]);
    let h = p.handle();
    let mut s = Server::attach(
        transport,
        &h,
        &[
            ("GRANT_DELAY_MS", "4000".into()),
            ("MAX_LEASE_MS", "300".into()),
        ],
    );
    let c = client(RingClientConfig {
        timeout: Duration::from_millis(2000),
        ..Default::default()
    });
    c.add_endpoint("rollouts", s.pair());
    c.add_endpoint("rollouts", p.pair());
    let r = p.write_ok(1, 200_000, 9)[0];
    let t = Instant::now();
    check(&c.fetch("rollouts", r).unwrap(), 200_000, 9);
    assert!(
        t.elapsed() < Duration::from_millis(4000),
        "{:?}",
        t.elapsed()
    );
    // let the orphan wake (its grant delay ends about 4 s after the fetch began), fail
    // its reply and finish its attempt; a loaded machine (the RDMA VM) may take longer
    let deadline = t + Duration::from_secs(20);
    let mut m = p.metrics();
    while m.orphan_noops == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        m = p.metrics();
    }
    assert_eq!(m.reclaims, 1, "{m:?}");
    assert!(
        m.orphan_noops >= 1,
        "the orphan's late finish was a no-op: {m:?}"
    );
    assert_eq!(m.reads, 1);
    assert_eq!(m.ready, 0, "the orphan did not put the consumed slot back");
    let e = c.fetch("rollouts", r).unwrap_err();
    assert_eq!(e.status(), Status::StaleSlot, "consumed once, never twice");
    // the producer's next lap reuses the consumed slot
    let next = p.write_ok(2, 100, 10);
    assert_eq!(next[1].slot, r.slot);
    let (_, _, _, _, expiries) = s.counters();
    assert!(expiries <= 1);
    s.exit();
    p.exit();
}

#[test]
fn orphaned_handler_finishing_late_is_a_no_op_shm() {
    orphan_finishes_late("shm");
}

common::scenario_tests! {
    orphaned_handler_finishing_late_is_a_no_op_tcp => orphan_finishes_late("tcp");
    #[ignore = "needs a verbs device: make test-rdma (soft-RoCE VM)"]
    orphaned_handler_finishing_late_is_a_no_op_rdma => orphan_finishes_late("rdma");
}

/// The producer laps the ring while a read is in progress. With the lease still held
/// the producer cannot overwrite the slot (SLOT_BUSY, never skipping ahead) and the
/// read is whole. With a lease that passes during the read, the slot is taken back and
/// overwritten: the client's commit is refused, its retry finds the generation gone
/// (STALE_SLOT), and no byte of the overwritten payload is ever handed out.
fn producer_laps_during_read(transport: &str) {
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
    use std::sync::Mutex;
    let p = Arc::new(Mutex::new(Server::start(
        transport,
        &[("RING_SLOTS", "2".into()), ("MAX_LEASE_MS", "500".into())],
    )));
    let laps: Arc<Mutex<Vec<Writes>>> = Arc::default();
    let sleep_ms = Arc::new(AtomicU64::new(0));
    let (p2, l2, s2) = (p.clone(), laps.clone(), sleep_ms.clone());
    let c = client(RingClientConfig {
        timeout: Duration::from_secs(3),
        after_grant: Some(FaultHook(Arc::new(move |_| {
            std::thread::sleep(Duration::from_millis(s2.load(SeqCst)));
            // the producer laps the 2-slot ring
            let w = p2.lock().unwrap().write(2, 50_000, 100);
            l2.lock().unwrap().push(w);
        }))),
        ..Default::default()
    });
    let ep = p.lock().unwrap().pair();
    c.add_endpoint("rollouts", ep);
    let refs = p.lock().unwrap().write_ok(2, 50_000, 1);
    // 1: the lease holds during the lap
    check(&c.fetch("rollouts", refs[0]).unwrap(), 50_000, 1);
    assert_eq!(
        laps.lock().unwrap()[0],
        vec![Err(Status::SlotBusy.code()), Err(Status::SlotBusy.code())],
        "the write index stays on the slot being read"
    );
    // 2: the lease passes during the read; the lap overwrites slot 1
    sleep_ms.store(800, SeqCst);
    let e = c.fetch("rollouts", refs[1]).unwrap_err();
    assert_eq!(e.status(), Status::StaleSlot, "{e}");
    let lap2 = laps.lock().unwrap()[1].clone();
    assert_eq!(lap2, vec![Ok(SlotRef::new(0, 2)), Ok(SlotRef::new(1, 3))]);
    let k = c.counters();
    assert_eq!((k.lease_lost, k.fetched), (1, 1), "{k:?}");
    let m = p.lock().unwrap().metrics();
    assert_eq!((m.reads, m.drops, m.ready), (1, 1, 2), "{m:?}");
    // the new payload is whole (the hook's next lap cannot take the slot being read)
    sleep_ms.store(0, SeqCst);
    check(
        &c.fetch("rollouts", SlotRef::new(1, 3)).unwrap(),
        50_000,
        101,
    );
    drop(c);
    let p = Arc::try_unwrap(p).ok().unwrap().into_inner().unwrap();
    p.exit();
}

#[test]
fn producer_lapping_during_a_read_never_yields_torn_bytes_shm() {
    producer_laps_during_read("shm");
}

common::scenario_tests! {
    producer_lapping_during_a_read_never_yields_torn_bytes_tcp => producer_laps_during_read("tcp");
    #[ignore = "needs a verbs device: make test-rdma (soft-RoCE VM)"]
    producer_lapping_during_a_read_never_yields_torn_bytes_rdma => producer_laps_during_read("rdma");
}

/// A dead route is quarantined, skipped while quarantined, tried again once the
/// quarantine expires; with every route dead the fetch still tries them (never starve)
/// and fails with a typed error within its worst case.
#[test]
fn quarantine_expiry_and_never_starve() {
    let mut p = Server::start("tcp", &[]);
    let mut dead = Server::start("tcp", &[]);
    let c = client(RingClientConfig {
        quarantine: Duration::from_millis(600),
        timeout: Duration::from_secs(2),
        ..Default::default()
    });
    c.add_endpoint("rollouts", dead.pair());
    c.add_endpoint("rollouts", p.pair());
    dead.peer.kill();
    let refs = p.write_ok(6, 1000, 0);
    // rr 0 -> the dead route: quarantined, the retry goes to p
    check(&c.fetch("rollouts", refs[0]).unwrap(), 1000, 0);
    assert_eq!((c.counters().attempts, c.counters().quarantines), (2, 1));
    // while quarantined every fetch goes straight to p
    for (i, r) in refs[1..4].iter().enumerate() {
        check(&c.fetch("rollouts", *r).unwrap(), 1000, 1 + i as u64);
    }
    assert_eq!((c.counters().attempts, c.counters().quarantines), (5, 1));
    // expired: the dead route is tried again (and quarantined again)
    std::thread::sleep(Duration::from_millis(700));
    check(&c.fetch("rollouts", refs[4]).unwrap(), 1000, 4);
    check(&c.fetch("rollouts", refs[5]).unwrap(), 1000, 5);
    assert_eq!(c.counters().quarantines, 2, "{:?}", c.counters());
    // every route dead: still tried, typed failure within the worst case
    p.peer.kill();
    let t = Instant::now();
    let e = c.fetch("rollouts", refs[5]).unwrap_err();
    assert!(
        matches!(
            e.status(),
            Status::PeerDisconnected | Status::Timeout | Status::ShutDown
        ),
        "{e}"
    );
    assert!(t.elapsed() <= c.fetch_worst_case() + Duration::from_millis(500));
}

/// Sessions unused for `max_idle` are retired by the client before the server's idle
/// eviction (no failure, no quarantine); a server that evicts first is noticed at
/// checkout; retirement racing eviction never leaves the pair unusable.
#[test]
fn session_age_out_and_idle_eviction() {
    let mut s = Server::start(
        "shm",
        &[
            ("IDLE_TIMEOUT_MS", "800".into()),
            ("RING_SLOTS", "64".into()),
        ],
    );
    let ep = s.pair();
    let refs = s.write_ok(40, 100, 0);
    let mut next = refs.iter().enumerate();
    let mut fetch = |c: &RingClient| {
        let (i, r) = next.next().unwrap();
        check(&c.fetch("rollouts", *r).unwrap(), 100, i as u64);
    };
    {
        // retired before eviction
        let c = client(RingClientConfig {
            max_idle: Duration::from_millis(300),
            ..Default::default()
        });
        c.add_endpoint("rollouts", ep.clone());
        fetch(&c);
        fetch(&c);
        std::thread::sleep(Duration::from_millis(450));
        fetch(&c);
        let k = c.counters();
        assert_eq!(
            (k.sessions_created, k.sessions_retired, k.quarantines),
            (2, 1, 0),
            "{k:?}"
        );
        let (_, evictions, ..) = s.counters();
        assert_eq!(evictions, 0);
    }
    {
        // misconfigured (max_idle above the server's idle_timeout): the server evicts,
        // the client notices at checkout and makes a new session, without a failure
        let c = client(RingClientConfig {
            max_idle: Duration::from_secs(60),
            ..Default::default()
        });
        c.add_endpoint("rollouts", ep.clone());
        fetch(&c);
        std::thread::sleep(Duration::from_millis(1300));
        fetch(&c);
        let k = c.counters();
        assert_eq!(
            (k.sessions_created, k.sessions_lost, k.quarantines),
            (2, 1, 0),
            "{k:?}"
        );
        let (_, evictions, ..) = s.counters();
        assert!(evictions >= 1);
    }
    {
        // retirement racing eviction (max_idle == idle_timeout): whatever the order of
        // the two close notices, the next sessions pair up and fetches succeed
        let c = client(RingClientConfig {
            max_idle: Duration::from_millis(800),
            max_attempts: 3,
            ..Default::default()
        });
        c.add_endpoint("rollouts", ep.clone());
        for k in 0..6u64 {
            fetch(&c);
            std::thread::sleep(Duration::from_millis(760 + 15 * k));
        }
        fetch(&c);
    }
    s.exit();
}

/// The documented worst case holds: a route that never answers makes every attempt
/// time out, each fetch takes max_attempts x timeout, the batch max_rounds rounds.
#[test]
fn batch_worst_case_wall_time_with_black_hole_servers() {
    let mut a = Server::start("tcp", &[("GRANT_DELAY_MS", "60000".into())]);
    let h = a.handle();
    let mut b = Server::attach("tcp", &h, &[("GRANT_DELAY_MS", "60000".into())]);
    let c = client(RingClientConfig {
        timeout: Duration::from_millis(300),
        max_attempts: 2,
        max_rounds: 3,
        concurrency: 4,
        round_backoff: Duration::from_millis(20),
        commit_grace: Duration::from_millis(100),
        ..Default::default()
    });
    c.add_endpoint("rollouts", a.pair());
    c.add_endpoint("rollouts", b.pair());
    let refs = a.write_ok(4, 10, 0);
    let t = Instant::now();
    let got = c.fetch_batch("rollouts", &refs);
    let took = t.elapsed();
    let bound = c.batch_worst_case(refs.len());
    assert_eq!(bound, Duration::from_millis(3 * 2 * (300 + 100) + 2 * 20));
    // Timeout, or SHUT_DOWN for a fetch whose session another fetch's timeout closed
    let statuses: Vec<Status> = got
        .iter()
        .map(|g| g.as_ref().unwrap_err().status())
        .collect();
    assert!(
        statuses
            .iter()
            .all(|s| matches!(s, Status::Timeout | Status::ShutDown)),
        "{statuses:?}"
    );
    assert!(took >= Duration::from_millis(3 * 2 * 300), "{took:?}");
    assert!(
        took <= bound + Duration::from_millis(700),
        "{took:?} > {bound:?}"
    );
    assert_eq!(c.counters().batch_rounds, 3);
    assert_eq!(c.counters().attempts, 4 * 2 * 3);
    drop(a);
    drop(b);
}
