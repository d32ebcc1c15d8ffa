//! PeerAgent benchmark: time from `connect_to` to connected (p50/p99) for 2 and for 8
//! agents, and named read/write through the agent versus the same transfers on the bare
//! endpoint (raw handles), interleaved in the same run. Agents are separate processes;
//! Redis and NanoCtrl are started on loopback by the bench itself.
//!
//!   cargo bench --bench peer -- [--transport tcp|shm|both] [--rounds 50]
//!                               [--mesh-rounds 5] [--csv bench/results/peer.csv]
//!
//! The parent re-runs itself (env DLSLIME_TEST_CHILD, BENCH_ROLE) for the other agents.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/peer_fixture/mod.rs"]
mod peer_fixture;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{is_child, Parent, Peer};
use dlslime::memory::SharedBuf;
use dlslime::peer::{NamedAssignment, PeerAgent, PeerAgentOptions};
use dlslime::Assignment;
use peer_fixture::Cluster;

const MIB: usize = 1 << 20;
const WAIT: Duration = Duration::from_secs(60);

fn opts() -> PeerAgentOptions {
    PeerAgentOptions {
        heartbeat_interval: Duration::from_secs(5),
        ..Default::default()
    }
}

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"))
}

fn arg(name: &str) -> Option<String> {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1).cloned())
}

/// A PeerAgent of the benchmark's cluster, registered as `alias`.
fn bench_agent(alias: &str) -> PeerAgent {
    PeerAgent::new(
        &env("BENCH_URL"),
        Some(alias),
        Some(&env("BENCH_SCOPE")),
        opts(),
    )
    .unwrap()
}

fn pct(mut v: Vec<f64>) -> (f64, f64, f64, usize) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    (
        v[n / 2],
        v[((n as f64 * 0.99) as usize).min(n - 1)],
        v[n - 1],
        n,
    )
}

// ---------------------------------------------------------------- children

/// "new <alias>": (re)creates a passive agent. "exit".
fn child_conn2(parent: &mut Parent) {
    let mut agent: Option<PeerAgent> = None;
    while let Some(line) = parent.recv() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w[0] {
            "new" => {
                drop(agent.take());
                agent = Some(bench_agent(w[1]));
                parent.send("ready");
            }
            _ => break,
        }
    }
}

/// "new <alias>"; "dial <transport> <peer>...": connect_to all at once, one waiting
/// thread per peer, reply with the latencies in µs; "drop"; "exit".
fn child_mesh(parent: &mut Parent) {
    let mut agent: Option<Arc<PeerAgent>> = None;
    while let Some(line) = parent.recv() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w[0] {
            "new" => {
                agent = Some(Arc::new(bench_agent(w[1])));
                parent.send("ready");
            }
            "dial" => {
                let a = agent.clone().unwrap();
                let transport = w[1].to_string();
                let hs: Vec<_> = w[2..]
                    .iter()
                    .map(|p| {
                        let (a, p, t) = (a.clone(), p.to_string(), transport.clone());
                        std::thread::spawn(move || {
                            let t0 = Instant::now();
                            let c = a.connect_to(&p, &t).unwrap();
                            c.wait(WAIT).unwrap();
                            t0.elapsed().as_secs_f64() * 1e6
                        })
                    })
                    .collect();
                let lat: Vec<String> = hs
                    .into_iter()
                    .map(|h| format!("{:.1}", h.join().unwrap()))
                    .collect();
                parent.send(&format!("lat {}", lat.join(" ")));
            }
            "drop" => {
                drop(agent.take());
                parent.send("ok");
            }
            _ => break,
        }
    }
}

/// A passive agent with region "buf" (BENCH_LEN bytes, shared memory for shm).
fn child_io(parent: &mut Parent) {
    let len: usize = env("BENCH_LEN").parse().unwrap();
    let buf = SharedBuf::new(len).unwrap();
    let a = PeerAgent::new(
        &env("BENCH_URL"),
        Some("io-b"),
        Some(&env("BENCH_SCOPE")),
        opts(),
    )
    .unwrap();
    // SAFETY: `buf` is declared before the agent, so it outlives it and every operation.
    unsafe {
        a.register_memory_region("buf", buf.as_ptr(), 0, len)
            .unwrap()
    };
    parent.send("ready");
    while let Some(l) = parent.recv() {
        if l == "exit" {
            break;
        }
    }
    drop(a);
    drop(buf);
}

// ---------------------------------------------------------------- parent

fn spawn(role: &str, cl: &Cluster, extra: &[(&str, String)]) -> Peer {
    let mut e = vec![
        ("BENCH_ROLE", role.to_string()),
        ("BENCH_URL", cl.url().to_string()),
        ("BENCH_SCOPE", cl.scope.clone()),
    ];
    e.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
    Peer::spawn("bench-child", &e)
}

fn conn2(cl: &Cluster, transport: &str, rounds: usize) -> Vec<f64> {
    let a = PeerAgent::new(cl.url(), Some("c2-a"), Some(&cl.scope), opts()).unwrap();
    let mut b = spawn("conn2", cl, &[]);
    let mut v = Vec::new();
    for i in 0..rounds + 3 {
        let alias = format!("c2-b{i}");
        b.send(&format!("new {alias}"));
        assert_eq!(b.recv(), "ready");
        let t0 = Instant::now();
        let c = a.connect_to(&alias, transport).unwrap();
        c.wait(WAIT).unwrap();
        let dt = t0.elapsed().as_secs_f64() * 1e6;
        if i >= 3 {
            v.push(dt); // first rounds warm up
        }
    }
    b.send("exit");
    v
}

fn mesh(cl: &Cluster, transport: &str, n: usize, rounds: usize) -> Vec<f64> {
    let mut kids: Vec<Peer> = (0..n).map(|_| spawn("mesh", cl, &[])).collect();
    let mut v = Vec::new();
    for r in 0..rounds + 1 {
        let names: Vec<String> = (0..n).map(|i| format!("m{r}-{i}")).collect();
        for (k, name) in kids.iter_mut().zip(&names) {
            k.send(&format!("new {name}"));
            assert_eq!(k.recv(), "ready");
        }
        for (i, k) in kids.iter_mut().enumerate() {
            let others: Vec<&str> = names
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, s)| s.as_str())
                .collect();
            k.send(&format!("dial {transport} {}", others.join(" ")));
        }
        for k in kids.iter_mut() {
            let l = k.recv();
            let lat = l.strip_prefix("lat ").expect("latencies");
            if r > 0 {
                v.extend(lat.split_whitespace().map(|x| x.parse::<f64>().unwrap()));
            }
        }
        for k in kids.iter_mut() {
            k.send("drop");
            assert_eq!(k.recv(), "ok");
        }
    }
    for k in kids.iter_mut() {
        k.send("exit");
    }
    v
}

struct IoRow {
    op: &'static str,
    size: usize,
    agent_us: f64,
    bare_us: f64,
}

fn io(cl: &Cluster, transport: &str, sizes: &[usize]) -> Vec<IoRow> {
    let max = *sizes.iter().max().unwrap();
    // allocate before connecting: shm maps the peer's shared allocations at connect time
    let buf = SharedBuf::new(max).unwrap();
    let mut b = spawn("io", cl, &[("BENCH_LEN", max.to_string())]);
    assert_eq!(b.recv(), "ready");
    let a = PeerAgent::new(cl.url(), Some("io-a"), Some(&cl.scope), opts()).unwrap();
    // SAFETY: `buf` is declared before the agent, so it outlives it and every operation.
    unsafe {
        a.register_memory_region("buf", buf.as_ptr(), 0, max)
            .unwrap()
    };
    let c = a.connect_to("io-b", transport).unwrap();
    c.wait(WAIT).unwrap();
    let ep = a.endpoint("io-b").unwrap();
    let mut rows = Vec::new();
    for &size in sizes {
        let named = [NamedAssignment::same("buf", 0, 0, size as u64)];
        // the bare endpoint: the same connection with raw handles resolved once
        let (_, raw) = a.resolve("io-b", &named).unwrap();
        let raw: Vec<Assignment> = raw;
        let iters = (64 * MIB / size).clamp(20, 200);
        for op in ["write", "read"] {
            let agent_op = || {
                let t = Instant::now();
                let f = if op == "write" {
                    a.write("io-b", &named, None)
                } else {
                    a.read("io-b", &named, None)
                };
                f.unwrap().wait().unwrap();
                t.elapsed().as_secs_f64() * 1e6
            };
            let bare_op = || {
                let t = Instant::now();
                let f = if op == "write" {
                    ep.write(&raw, None)
                } else {
                    ep.read(&raw, None)
                };
                f.unwrap().wait().unwrap();
                t.elapsed().as_secs_f64() * 1e6
            };
            for _ in 0..(iters / 10 + 2) {
                agent_op();
                bare_op();
            }
            // one agent op and one bare op per iteration, alternating which goes first;
            // medians, so that what else runs on the machine does not pick a side
            let n = iters * 5;
            let (mut va, mut vb) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for k in 0..n {
                if k % 2 == 0 {
                    va.push(agent_op());
                    vb.push(bare_op());
                } else {
                    vb.push(bare_op());
                    va.push(agent_op());
                }
            }
            rows.push(IoRow {
                op,
                size,
                agent_us: pct(va).0,
                bare_us: pct(vb).0,
            });
        }
    }
    b.send("exit");
    drop(a);
    rows
}

fn main() {
    if is_child() {
        let mut parent = Parent::new();
        match std::env::var("BENCH_ROLE").as_deref() {
            Ok("conn2") => child_conn2(&mut parent),
            Ok("mesh") => child_mesh(&mut parent),
            Ok("io") => child_io(&mut parent),
            other => panic!("unknown BENCH_ROLE {other:?}"),
        }
        return;
    }
    let transports: Vec<&str> = match arg("--transport").as_deref() {
        Some("tcp") => vec!["tcp"],
        Some("shm") => vec!["shm"],
        _ => vec!["tcp", "shm"],
    };
    let rounds: usize = arg("--rounds").and_then(|v| v.parse().ok()).unwrap_or(50);
    let mesh_rounds: usize = arg("--mesh-rounds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let csv = arg("--csv").unwrap_or_else(|| "bench/results/peer.csv".into());
    let sizes = [64 * 1024, 256 * 1024, MIB, 4 * MIB, 16 * MIB];
    let mut out = vec![
        "kind,transport,param,p50_us,p99_us,max_us,n,agent_p50_us,bare_p50_us,ratio".to_string(),
    ];
    println!(
        "PeerAgent benchmark (loopback; Redis + NanoCtrl started by the bench; {} CPUs)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for t in &transports {
        let cl = Cluster::start("bench");
        let v = conn2(&cl, t, rounds);
        let (p50, p99, max, n) = pct(v);
        println!("\nconnect_to -> connected, 2 agents, {t}: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (n={n})",
            p50 / 1e3, p99 / 1e3, max / 1e3);
        out.push(format!("connect,{t},2,{p50:.1},{p99:.1},{max:.1},{n},,,"));
        let v = mesh(&cl, t, 8, mesh_rounds);
        let (p50, p99, max, n) = pct(v);
        println!("connect_to -> connected, 8 agents all-to-all (7 dials each at once), {t}: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (n={n})",
            p50 / 1e3, p99 / 1e3, max / 1e3);
        out.push(format!("connect,{t},8,{p50:.1},{p99:.1},{max:.1},{n},,,"));
        let rows = io(&cl, t, &sizes);
        println!("\nnamed I/O through the agent vs the bare endpoint (same connection, raw handles; median per op), {t}:");
        println!(
            "{:<6} {:>10} {:>12} {:>12} {:>10} {:>10} {:>10}",
            "op", "size", "agent p50 us", "bare p50 us", "agent/bare", "extra ns", "agent GB/s"
        );
        for r in &rows {
            let ratio = r.agent_us / r.bare_us;
            println!(
                "{:<6} {:>10} {:>12.2} {:>12.2} {:>9.3}x {:>10.0} {:>10.2}",
                r.op,
                r.size,
                r.agent_us,
                r.bare_us,
                ratio,
                (r.agent_us - r.bare_us) * 1e3,
                r.size as f64 / (r.agent_us * 1e-6) / 1e9
            );
            out.push(format!(
                "io_{},{t},{},,,,,{:.2},{:.2},{ratio:.4}",
                r.op, r.size, r.agent_us, r.bare_us
            ));
        }
    }
    if let Some(dir) = std::path::Path::new(&csv).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&csv, out.join("\n") + "\n").unwrap();
    println!("\nwrote {csv}");
}
