//! Slot ring benchmark, two processes per transport (shared memory, TCP): a producer
//! process creates the ring and serves it; this process fetches payloads by reference
//! with a `RingClient` and, in the same run, reads the same slots with a plain one-sided
//! read of the same endpoint (the floor: what the fetch adds is the grant and the commit
//! round trips). Slots of 64 KiB ... 512 MiB, 1 and 4 concurrent consumers; p50/p99
//! latency per payload and throughput (bytes / wall time of the phase).
//!
//! ```text
//! cargo run --release --example ring_bench                       # the table
//! cargo run --release --example ring_bench -- --max-mib 64 --transports shm
//! cargo run --release --example ring_bench -- --chaos --secs 600   # the chaos run
//! ```
//!
//! Writes `bench/results/ring_<unix time>.csv` (and `ring_chaos_<time>.txt`).

#[path = "../common.rs"]
mod bench_common;
#[path = "chaos.rs"]
mod chaos;
#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "proc.rs"]
mod proc;

use bench_common::arg_or as arg;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Peer;
use dlslime::ring::{Ring, RingClient, RingClientConfig, RingConfig, RingServer, SlotRef};
use dlslime::transport::shm::{ShmConfig, ShmEndpoint};
use dlslime::transport::tcp::TcpEndpoint;
use dlslime::{Assignment, Endpoint, MemoryPool};
use proc::{commands, expect_prefix, fill, say};

fn endpoint(transport: &str) -> Arc<dyn Endpoint> {
    match transport {
        "shm" => Arc::new(ShmEndpoint::new(MemoryPool::new(), ShmConfig::default()).unwrap()),
        _ => TcpEndpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap(),
    }
}

/// The producer: a ring of `RB_SLOTS` x `RB_CAP`, served on one endpoint. Commands:
/// `write <n> <len>` -> `refs g1 g2 ...` (slot = g % slots), `exit`.
fn producer_main() {
    let env = |k: &str| std::env::var(k).unwrap();
    let transport = env("RB_TRANSPORT");
    let slots: usize = env("RB_SLOTS").parse().unwrap();
    let cap: usize = env("RB_CAP").parse().unwrap();
    let ring = Ring::create(&RingConfig {
        name: "bench".into(),
        slot_count: slots,
        slot_capacity: cap,
        overwrite: true,
    })
    .unwrap();
    let server = RingServer::new(Default::default()).unwrap();
    server.add_ring(ring.clone()).unwrap();
    let ep = endpoint(&transport);
    say(&format!("info {}", ep.endpoint_info()));
    let mut lines = commands();
    let info = lines.next().unwrap();
    ep.connect(&serde_json::from_str(&info).unwrap()).unwrap();
    server.serve_endpoint(ep.clone()).unwrap();
    // the region the floor reads: the ring's data area, as the serving thread registers it
    let t = Instant::now();
    let region = loop {
        let v = ep.memory_pool().mr_info()["ring:bench"].clone();
        if !v.is_null() || t.elapsed() > Duration::from_secs(30) {
            break v;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    say(&format!("region {region}"));
    let mut buf = vec![0u8; cap];
    fill(&mut buf, 7);
    for line in lines {
        let Some(rest) = line.strip_prefix("write ") else {
            break;
        };
        let v: Vec<usize> = rest.split(' ').map(|x| x.parse().unwrap()).collect();
        let refs: Vec<String> = (0..v[0])
            .map(|_| ring.write_raw(&buf[..v[1]]).unwrap().generation.to_string())
            .collect();
        say(&format!("refs {}", refs.join(" ")));
    }
    server.stop();
}

struct Row {
    transport: String,
    size: usize,
    consumers: usize,
    what: &'static str,
    p50_us: f64,
    p99_us: f64,
    gbps: f64,
}

impl Row {
    fn new(
        transport: &str,
        size: usize,
        consumers: usize,
        what: &'static str,
        lat: &mut [f64],
        gbps: f64,
    ) -> Row {
        Row {
            transport: transport.into(),
            size,
            consumers,
            what,
            p50_us: bench_common::pct(lat, 0.5),
            p99_us: bench_common::pct(lat, 0.99),
            gbps,
        }
    }
}

/// Runs `consumers` concurrent operations `op(consumer)`: their latencies (µs) and the
/// wall time of the whole group.
fn group(consumers: usize, op: &(dyn Fn(usize) + Sync)) -> (Vec<f64>, Duration) {
    let t = Instant::now();
    let lat = std::thread::scope(|s| {
        let hs: Vec<_> = (0..consumers)
            .map(|c| {
                s.spawn(move || {
                    let t = Instant::now();
                    op(c);
                    t.elapsed().as_secs_f64() * 1e6
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    (lat, t.elapsed())
}

fn bench_transport(transport: &str, sizes: &[usize], mem_budget: usize, rows: &mut Vec<Row>) {
    for &size in sizes {
        for consumers in [1usize, 4] {
            // ring: 2 payloads per consumer; client: a pooled buffer and a floor buffer each
            let slots = 2 * consumers;
            let need = size * (slots + 2 * consumers);
            if need > mem_budget {
                eprintln!(
                    "skip {transport} {size} x{consumers}: needs {} MiB",
                    need >> 20
                );
                continue;
            }
            let rounds = ((1usize << 30) / (size * consumers)).clamp(8, 200);
            let mut p = Peer::spawn(
                "producer",
                &[
                    ("RB_TRANSPORT", transport.to_string()),
                    ("RB_SLOTS", slots.to_string()),
                    ("RB_CAP", size.to_string()),
                ],
            );
            let info = expect_prefix(&mut p, "info");
            let ep = endpoint(transport);
            p.send(&ep.endpoint_info().to_string());
            ep.connect(&serde_json::from_str(&info).unwrap()).unwrap();
            let region = expect_prefix(&mut p, "region");
            let remote = ep
                .register_remote_memory_region(
                    "bench-floor",
                    &serde_json::from_str(&region).unwrap(),
                )
                .unwrap();
            let client = RingClient::new(RingClientConfig {
                timeout: Duration::from_secs(60),
                concurrency: consumers,
                ..Default::default()
            })
            .unwrap();
            client.add_endpoint("bench", ep.clone());
            // floor buffers, registered in the endpoint's pool, touched once
            let mut floors: Vec<Vec<u8>> = (0..consumers).map(|_| vec![1u8; size]).collect();
            let handles: Vec<u32> = floors
                .iter_mut()
                // SAFETY: the floor buffers outlive their registration (unregistered below).
                .map(|b| unsafe {
                    ep.memory_pool()
                        .register(None, b.as_mut_ptr(), size)
                        .unwrap()
                })
                .collect();
            let refs = std::sync::Mutex::new(Vec::<SlotRef>::new());
            let mut write = |n: usize| {
                p.send(&format!("write {n} {size}"));
                let gens = expect_prefix(&mut p, "refs");
                *refs.lock().unwrap() = gens
                    .split(' ')
                    .map(|g| {
                        let g: u64 = g.parse().unwrap();
                        SlotRef::new((g % slots as u64) as u32, g)
                    })
                    .collect();
            };
            // warm-up: sessions, pooled buffers, page faults
            write(consumers);
            let warm: Vec<SlotRef> = refs.lock().unwrap().clone();
            drop(client.fetch_batch("bench", &warm));
            // Each round: the producer writes one payload per consumer, then the consumers
            // fetch them and read the same slots one-sided, in alternating order (so load
            // and cache effects fall on both alike).
            let fetch = |c: usize| {
                let r = refs.lock().unwrap()[c];
                let got = client.fetch("bench", r).expect("fetch");
                assert_eq!(got.len(), size);
            };
            let read = |c: usize| {
                let slot = refs.lock().unwrap()[c].slot as u64;
                let a = Assignment::new(handles[c], remote, slot * stride(size), 0, size as u64);
                ep.read(&[a], Some(Duration::from_secs(60)))
                    .unwrap()
                    .wait()
                    .unwrap();
            };
            let (mut fl, mut rl) = (Vec::new(), Vec::new());
            let (mut ft, mut rt) = (Duration::ZERO, Duration::ZERO);
            for round in 0..rounds {
                write(consumers);
                for k in 0..2 {
                    if (round + k) % 2 == 0 {
                        let (l, t) = group(consumers, &fetch);
                        fl.extend(l);
                        ft += t;
                    } else {
                        let (l, t) = group(consumers, &read);
                        rl.extend(l);
                        rt += t;
                    }
                }
            }
            let bytes = (rounds * consumers * size) as f64;
            rows.push(Row::new(
                transport,
                size,
                consumers,
                "ring fetch",
                &mut fl,
                bytes / ft.as_secs_f64() / 1e9,
            ));
            rows.push(Row::new(
                transport,
                size,
                consumers,
                "one-sided read",
                &mut rl,
                bytes / rt.as_secs_f64() / 1e9,
            ));
            let r = &rows[rows.len() - 2..];
            eprintln!(
                "{transport} {:>9} x{consumers}: fetch p50 {:>10.1} us {:>6.2} GB/s | read p50 {:>10.1} us {:>6.2} GB/s | ratio {:.2}",
                size, r[0].p50_us, r[0].gbps, r[1].p50_us, r[1].gbps, r[0].gbps / r[1].gbps
            );
            for h in handles {
                let _ = ep.memory_pool().unregister(h);
            }
            drop(client);
            p.send("exit");
            p.join();
        }
    }
}

/// The ring's slot stride for a capacity (as `ring::layout::Geometry` computes it).
fn stride(cap: usize) -> u64 {
    dlslime::ring::layout::Geometry::new(1, cap as u64)
        .unwrap()
        .stride
}

fn stamp() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // A child started by the harness: its first argument names the role.
    if common::is_child() {
        match args.get(1).map(String::as_str) {
            Some("producer") => producer_main(),
            Some("chaos_producer") => chaos::producer_main(),
            Some("chaos_server") => chaos::server_main(),
            r => panic!("unknown child role {r:?}"),
        }
        return;
    }
    let out_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/results");
    std::fs::create_dir_all(out_dir).unwrap();
    if args.iter().any(|a| a == "--chaos") {
        let cfg = chaos::ChaosConfig {
            secs: arg(&args, "--secs", 60),
            transport: arg(&args, "--transport", "shm".to_string()),
            payload: arg(&args, "--payload-kib", 256usize) << 10,
            kill_every: Duration::from_millis(arg(&args, "--kill-every-ms", 3000)),
            write_every: Duration::from_micros(arg(&args, "--write-every-us", 4000)),
            impatient_timeout: Duration::from_micros(arg(&args, "--impatient-us", 1500)),
            ..Default::default()
        };
        eprintln!("chaos run: {cfg:?}");
        let rep = chaos::run(&cfg);
        let text = format!("{cfg:?}\n{rep:#?}\n");
        println!("{text}");
        let path = format!("{out_dir}/ring_chaos_{}.txt", stamp());
        std::fs::write(&path, text).unwrap();
        eprintln!("wrote {path}");
        let ok = rep.corrupt == 0 && rep.lost == 0 && rep.hangs == 0 && rep.unaccounted == 0;
        std::process::exit(if ok { 0 } else { 1 });
    }
    let max_mib: usize = arg(&args, "--max-mib", 512);
    let mem_budget: usize = arg(&args, "--mem-gib", 8usize) << 30;
    let transports: String = arg(&args, "--transports", "shm,tcp".to_string());
    let sizes: Vec<usize> = [
        64usize << 10,
        1 << 20,
        16 << 20,
        64 << 20,
        256 << 20,
        512 << 20,
    ]
    .into_iter()
    .filter(|s| *s <= max_mib << 20)
    .collect();
    let mut rows = Vec::new();
    for t in transports.split(',') {
        bench_transport(t, &sizes, mem_budget, &mut rows);
    }
    println!(
        "\n| transport | slot | consumers | ring fetch p50 / p99 (us) | one-sided read p50 / p99 (us) | fetch GB/s | read GB/s | fetch/read |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut csv = String::from("transport,size,consumers,what,p50_us,p99_us,gbps\n");
    for pair in rows.chunks(2) {
        let (f, r) = (&pair[0], &pair[1]);
        println!(
            "| {} | {} | {} | {:.1} / {:.1} | {:.1} / {:.1} | {:.2} | {:.2} | {:.2} |",
            f.transport,
            human(f.size),
            f.consumers,
            f.p50_us,
            f.p99_us,
            r.p50_us,
            r.p99_us,
            f.gbps,
            r.gbps,
            f.gbps / r.gbps
        );
        for x in pair {
            csv += &format!(
                "{},{},{},{},{:.1},{:.1},{:.3}\n",
                x.transport, x.size, x.consumers, x.what, x.p50_us, x.p99_us, x.gbps
            );
        }
    }
    let path = format!("{out_dir}/ring_{}.csv", stamp());
    std::fs::write(&path, csv).unwrap();
    eprintln!("wrote {path}");
}

fn human(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{} MiB", n >> 20)
    } else {
        format!("{} KiB", n >> 10)
    }
}
