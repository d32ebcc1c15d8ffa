//! The ring's chaos run: a producer process writing continuously into a ring too small
//! for the backlog (it overwrites), a second serving process on the same ring that is
//! SIGKILLed and restarted every few seconds, and consumers in this process: normal ones
//! (5 s attempts) and an impatient one whose attempts time out after a few milliseconds
//! (orphaned grants on the servers). Every reference the producer publishes is fetched
//! until it is delivered or typed as stale; the content of each delivered payload is
//! checked against its generation.
//!
//! Counted: `fetched` (right bytes), `corrupt` (wrong bytes: must be 0), `stale`
//! (overwritten before anyone fetched it: a typed `STALE_SLOT`), `lost` (consumed by a
//! fetch that reported an error, so nobody got it: must be 0), `failed` (still a typed
//! error after every retry), `hangs` (a fetch longer than its documented worst case: must
//! be 0).
#![allow(dead_code)] // the report's fields are read through Debug

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::common::Peer;
use super::proc::{check, commands, expect_prefix, fill, say};
use dlslime::ring::{
    Connector, Ring, RingClient, RingClientConfig, RingConfig, RingHandle, RingServer,
    RingServerConfig, SlotRef,
};
use dlslime::transport::shm::{ShmConfig, ShmEndpoint};
use dlslime::transport::tcp::TcpEndpoint;
use dlslime::{Endpoint, MemoryPool, Status};

#[derive(Clone, Debug)]
pub struct ChaosConfig {
    pub secs: u64,
    pub transport: String,
    pub payload: usize,
    pub slots: usize,
    /// Pause between two producer writes.
    pub write_every: Duration,
    /// Mean time between kills of the second serving process.
    pub kill_every: Duration,
    pub consumers: usize,
    /// The impatient consumer's attempt timeout (its first try of each reference).
    pub impatient_timeout: Duration,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        ChaosConfig {
            secs: 30,
            transport: "shm".into(),
            payload: 256 << 10,
            slots: 16,
            write_every: Duration::from_millis(4),
            kill_every: Duration::from_secs(3),
            consumers: 3,
            impatient_timeout: Duration::from_micros(1500),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct ChaosReport {
    pub secs: f64,
    pub published: u64,
    pub fetched: u64,
    pub corrupt: u64,
    pub stale: u64,
    pub lost: u64,
    pub failed: u64,
    pub skipped: u64,
    /// published minus every outcome: a reference that vanished (must be 0).
    pub unaccounted: u64,
    pub hangs: u64,
    pub impatient_timeouts: u64,
    pub kills: u64,
    pub max_fetch_ms: u64,
    pub drops: u64,
    pub reclaims: u64,
    pub orphan_noops: u64,
    pub quarantines: u64,
    pub commit_failovers: u64,
}

fn endpoint(transport: &str) -> Arc<dyn Endpoint> {
    match transport {
        "shm" => Arc::new(ShmEndpoint::new(MemoryPool::new(), ShmConfig::default()).unwrap()),
        _ => TcpEndpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap(),
    }
}

/// Child side of a pairing: `pair` -> `info <json>`, then `connect <json>`.
fn serve_pairs(server: &RingServer, transport: &str, line: &str) -> bool {
    if line == "pair" {
        let ep = endpoint(transport);
        say(&format!("info {}", ep.endpoint_info()));
        PENDING.lock().unwrap().replace(ep);
        return true;
    }
    if let Some(info) = line.strip_prefix("connect ") {
        let ep = PENDING.lock().unwrap().take().expect("pair first");
        ep.connect(&serde_json::from_str(info).unwrap()).unwrap();
        server.serve_endpoint(ep).unwrap();
        say("connected");
        return true;
    }
    false
}

static PENDING: Mutex<Option<Arc<dyn Endpoint>>> = Mutex::new(None);

fn server_config() -> RingServerConfig {
    RingServerConfig {
        max_lease: Duration::from_secs(8),
        ..Default::default()
    }
}

/// The producer process: creates the ring, serves it, writes continuously.
pub fn producer_main() {
    let env = |k: &str| std::env::var(k).unwrap();
    let transport = env("CHAOS_TRANSPORT");
    let payload: usize = env("CHAOS_PAYLOAD").parse().unwrap();
    let ring = Ring::create(&RingConfig {
        name: "chaos".into(),
        slot_count: env("CHAOS_SLOTS").parse().unwrap(),
        slot_capacity: payload,
        overwrite: true,
    })
    .unwrap();
    let server = RingServer::new(server_config()).unwrap();
    server.add_ring(ring.clone()).unwrap();
    say(&format!("handle {}", ring.handle().to_json()));
    let every = Duration::from_micros(env("CHAOS_WRITE_US").parse().unwrap());
    let writing = Arc::new(AtomicBool::new(false));
    let w2 = writing.clone();
    let r2 = ring.clone();
    let writer = std::thread::spawn(move || {
        let mut buf = vec![0u8; payload];
        while !w2.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(5));
        }
        while w2.load(Ordering::Acquire) {
            let g = r2.write_index();
            fill(&mut buf, g);
            match r2.write_with(payload, |b| {
                b.copy_from_slice(&buf);
                Ok(())
            }) {
                Ok(r) => {
                    if r.generation == g {
                        say(&format!("ref {} {}", r.slot, r.generation));
                    }
                }
                Err(e) => assert_eq!(e.status(), Status::SlotBusy, "{e}"),
            }
            std::thread::sleep(every);
        }
    });
    for line in commands() {
        if serve_pairs(&server, &transport, &line) {
            continue;
        }
        match line.as_str() {
            "start" => writing.store(true, Ordering::Release),
            "stop" => {
                writing.store(false, Ordering::Release);
                say("stopped");
            }
            "metrics" => {
                let m = ring.metrics();
                say(&format!(
                    "metrics {} {} {} {} {}",
                    m.writes, m.drops, m.reclaims, m.orphan_noops, m.reads
                ));
            }
            _ => break,
        }
    }
    writing.store(false, Ordering::Release);
    // a writer still waiting for "start" sees false forever: leave it, the process ends
    drop(writer);
    server.stop();
}

/// The second serving process: attaches the producer's ring and serves it.
pub fn server_main() {
    let transport = std::env::var("CHAOS_TRANSPORT").unwrap();
    let h = RingHandle::parse(&std::env::var("CHAOS_HANDLE").unwrap()).unwrap();
    let ring = Ring::attach(&h).unwrap();
    let server = RingServer::new(server_config()).unwrap();
    server.add_ring(ring).unwrap();
    say("ready");
    for line in commands() {
        if !serve_pairs(&server, &transport, &line) {
            break;
        }
    }
    server.stop();
}

/// A route whose endpoint the orchestrator replaces after restarting its process.
struct Swappable(Mutex<Arc<dyn Endpoint>>);

impl Connector for Swappable {
    fn endpoint(&self, _timeout: Duration) -> dlslime::Result<Arc<dyn Endpoint>> {
        Ok(self.0.lock().unwrap().clone())
    }
    fn redials(&self) -> bool {
        true
    }
    fn describe(&self) -> String {
        "restartable serving process".into()
    }
}

fn pair(p: &mut Peer, transport: &str) -> Arc<dyn Endpoint> {
    let ep = endpoint(transport);
    p.send("pair");
    let info = expect_prefix(p, "info");
    p.send(&format!("connect {}", ep.endpoint_info()));
    ep.connect(&serde_json::from_str(&info).unwrap()).unwrap();
    expect_prefix(p, "connected");
    ep
}

struct Queue {
    refs: Mutex<VecDeque<(SlotRef, u32)>>,
    cv: Condvar,
    /// References dropped because consumers fell 4096 behind (stale by then anyway).
    skipped: AtomicU64,
}

impl Queue {
    fn push(&self, r: SlotRef, tries: u32) {
        let mut q = self.refs.lock().unwrap();
        if q.len() >= 4096 {
            q.pop_front();
            self.skipped.fetch_add(1, Ordering::Relaxed);
        }
        q.push_back((r, tries));
        self.cv.notify_one();
    }
    fn pop(&self, stop: &AtomicBool) -> Option<(SlotRef, u32)> {
        let mut q = self.refs.lock().unwrap();
        loop {
            if let Some(x) = q.pop_front() {
                return Some(x);
            }
            if stop.load(Ordering::Acquire) {
                return None;
            }
            q = self
                .cv
                .wait_timeout(q, Duration::from_millis(50))
                .unwrap()
                .0;
        }
    }
}

#[derive(Default)]
struct Counts {
    fetched: AtomicU64,
    corrupt: AtomicU64,
    stale: AtomicU64,
    lost: AtomicU64,
    failed: AtomicU64,
    hangs: AtomicU64,
    impatient_timeouts: AtomicU64,
    max_ms: AtomicU64,
}

/// Runs the chaos scenario; `spawn_args` are the roles' names in this binary.
pub fn run(cfg: &ChaosConfig) -> ChaosReport {
    let env = vec![
        ("CHAOS_TRANSPORT", cfg.transport.clone()),
        ("CHAOS_PAYLOAD", cfg.payload.to_string()),
        ("CHAOS_SLOTS", cfg.slots.to_string()),
        ("CHAOS_WRITE_US", cfg.write_every.as_micros().to_string()),
    ];
    let mut producer = Peer::spawn("chaos_producer", &env);
    let handle = expect_prefix(&mut producer, "handle");
    let mut senv = env.clone();
    senv.push(("CHAOS_HANDLE", handle.clone()));
    let start_server = |senv: &Vec<(&str, String)>| {
        let mut s = Peer::spawn("chaos_server", senv);
        expect_prefix(&mut s, "ready");
        s
    };
    let mut server = start_server(&senv);
    let patient = RingClient::new(RingClientConfig {
        timeout: Duration::from_secs(5),
        quarantine: Duration::from_secs(2),
        ..Default::default()
    })
    .unwrap();
    let impatient = RingClient::new(RingClientConfig {
        timeout: cfg.impatient_timeout,
        quarantine: Duration::from_millis(50),
        max_attempts: 1,
        ..Default::default()
    })
    .unwrap();
    let routes: Vec<Arc<Swappable>> = (0..2)
        .map(|_| Arc::new(Swappable(Mutex::new(pair(&mut server, &cfg.transport)))))
        .collect();
    patient.add_endpoint("chaos", pair(&mut producer, &cfg.transport));
    patient.add_route("chaos", routes[0].clone());
    impatient.add_endpoint("chaos", pair(&mut producer, &cfg.transport));
    impatient.add_route("chaos", routes[1].clone());
    let worst = patient.fetch_worst_case() + Duration::from_secs(2);

    let queue = Arc::new(Queue {
        refs: Mutex::new(VecDeque::new()),
        cv: Condvar::new(),
        skipped: AtomicU64::new(0),
    });
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let published = AtomicU64::new(0);
    let kills = AtomicU64::new(0);
    let t0 = Instant::now();
    producer.send("start");
    let report_max = |c: &Counts, t: Duration| {
        c.max_ms.fetch_max(t.as_millis() as u64, Ordering::Relaxed);
    };
    std::thread::scope(|s| {
        // consumers
        for i in 0..cfg.consumers + 1 {
            let (queue, counts, stop) = (queue.clone(), counts.clone(), stop.clone());
            let (patient, impatient) = (&patient, &impatient);
            s.spawn(move || {
                let eager = i == cfg.consumers;
                while let Some((r, tries)) = queue.pop(&stop) {
                    let client = if eager && tries == 0 {
                        impatient
                    } else {
                        patient
                    };
                    let t = Instant::now();
                    let res = client.fetch("chaos", r);
                    let took = t.elapsed();
                    report_max(&counts, took);
                    if took > worst {
                        counts.hangs.fetch_add(1, Ordering::Relaxed);
                    }
                    match res {
                        Ok(p) => {
                            if check(&p, r.generation) {
                                counts.fetched.fetch_add(1, Ordering::Relaxed);
                            } else {
                                counts.corrupt.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) if e.status() == Status::StaleSlot => {
                            if tries > 0 && e.message().contains("consumed already") {
                                // an earlier attempt of ours committed but reported failure
                                counts.lost.fetch_add(1, Ordering::Relaxed);
                            } else {
                                counts.stale.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => {
                            if eager && tries == 0 {
                                counts.impatient_timeouts.fetch_add(1, Ordering::Relaxed);
                            }
                            if tries < 5 {
                                queue.push(r, tries + 1);
                            } else {
                                counts.failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            });
        }
        // the orchestrator: refs in, kills and restarts
        let mut next_kill = Instant::now() + cfg.kill_every;
        let mut rng = cfg.kill_every.as_millis() as u64 ^ 0x5DEE_CE66;
        while t0.elapsed() < Duration::from_secs(cfg.secs) {
            take_refs(&mut producer, &queue, &published);
            if Instant::now() >= next_kill {
                server.kill();
                kills.fetch_add(1, Ordering::Relaxed);
                server = start_server(&senv);
                for r in &routes {
                    *r.0.lock().unwrap() = pair(&mut server, &cfg.transport);
                }
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let jitter = rng % (cfg.kill_every.as_millis() as u64 + 1);
                next_kill = Instant::now() + cfg.kill_every / 2 + Duration::from_millis(jitter);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        producer.send("stop");
        // the references published before "stopped", then the rest of the queue
        loop {
            let m = producer.recv();
            if m == "stopped" {
                break;
            }
            take_ref(&m, &queue, &published);
        }
        take_refs(&mut producer, &queue, &published);
        // let the consumers drain the queue, then stop them
        let drain_until = Instant::now() + Duration::from_secs(120);
        while Instant::now() < drain_until && !queue.refs.lock().unwrap().is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Release);
    });
    producer.send("metrics");
    let m: Vec<u64> = expect_prefix(&mut producer, "metrics")
        .split(' ')
        .map(|x| x.parse().unwrap())
        .collect();
    let k = patient.counters();
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let outcomes = g(&counts.fetched)
        + g(&counts.corrupt)
        + g(&counts.stale)
        + g(&counts.lost)
        + g(&counts.failed)
        + g(&queue.skipped);
    let rep = ChaosReport {
        secs: t0.elapsed().as_secs_f64(),
        published: g(&published),
        fetched: g(&counts.fetched),
        corrupt: g(&counts.corrupt),
        stale: g(&counts.stale),
        lost: g(&counts.lost),
        failed: g(&counts.failed),
        skipped: g(&queue.skipped),
        unaccounted: g(&published).saturating_sub(outcomes),
        hangs: g(&counts.hangs),
        impatient_timeouts: g(&counts.impatient_timeouts),
        kills: g(&kills),
        max_fetch_ms: g(&counts.max_ms),
        drops: m[1],
        reclaims: m[2],
        orphan_noops: m[3],
        quarantines: k.quarantines,
        commit_failovers: k.commit_failovers,
    };
    drop(patient);
    drop(impatient);
    server.send("exit");
    server.join();
    producer.send("exit");
    producer.join();
    rep
}

/// Queues the reference in a producer's `ref <slot> <gen>` line.
fn take_ref(m: &str, queue: &Queue, published: &AtomicU64) {
    if let Some(rest) = m.strip_prefix("ref ") {
        let mut it = rest.split(' ').map(|x| x.parse::<u64>().unwrap());
        let (slot, gen) = (it.next().unwrap() as u32, it.next().unwrap());
        published.fetch_add(1, Ordering::Relaxed);
        queue.push(SlotRef::new(slot, gen), 0);
    }
}

/// Queues every reference the producer published so far.
fn take_refs(p: &mut Peer, queue: &Queue, published: &AtomicU64) {
    while let Some(m) = p.try_recv() {
        take_ref(&m, queue, published);
    }
}
