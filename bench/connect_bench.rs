//! How long `connect()` takes, in one process: a fresh pair of TCP endpoints (each with
//! its own context, so every connect dials and handshakes a new connection) and a fresh
//! pair of shared-memory endpoints (both sides connect concurrently, as they must).
//! Prints p50/p90 of each side's `connect()` in microseconds.
//!
//! `cargo run --release --example connect_bench [-- --n 200]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use dlslime::transport::shm::{ShmConfig, ShmEndpoint};
use dlslime::transport::tcp::{TcpConfig, TcpContext, TcpEndpoint};
use dlslime::{Endpoint, MemoryPool};

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6
}

fn tcp_ep() -> Arc<TcpEndpoint> {
    let ctx = TcpContext::new(TcpConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    })
    .unwrap();
    TcpEndpoint::new(&ctx, MemoryPool::new()).unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .position(|a| a == "--n")
        .map_or(200, |i| args[i + 1].parse().unwrap());

    let (mut tcp_a, mut tcp_b) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let (a, b) = (tcp_ep(), tcp_ep());
        let (ia, ib) = (a.endpoint_info(), b.endpoint_info());
        let t = Instant::now();
        a.connect(&ib).unwrap();
        tcp_a.push(t.elapsed());
        let t = Instant::now();
        b.connect(&ia).unwrap();
        tcp_b.push(t.elapsed());
    }

    let (mut shm_a, mut shm_b) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let a = ShmEndpoint::new(MemoryPool::new(), ShmConfig::default()).unwrap();
        let b = ShmEndpoint::new(MemoryPool::new(), ShmConfig::default()).unwrap();
        let (ia, ib) = (a.endpoint_info(), b.endpoint_info());
        let (da, db) = std::thread::scope(|s| {
            let h = s.spawn(|| {
                let t = Instant::now();
                b.connect(&ia).unwrap();
                t.elapsed()
            });
            let t = Instant::now();
            a.connect(&ib).unwrap();
            (t.elapsed(), h.join().unwrap())
        });
        shm_a.push(da);
        shm_b.push(db);
    }

    println!("connect() latency over {n} fresh pairs (us)");
    println!("{:<22} {:>10} {:>10}", "case", "p50", "p90");
    for (name, v) in [
        ("tcp first side", &mut tcp_a),
        ("tcp second side", &mut tcp_b),
        ("shm side a", &mut shm_a),
        ("shm side b", &mut shm_b),
    ] {
        println!("{:<22} {:>10.1} {:>10.1}", name, pct(v, 0.5), pct(v, 0.9));
    }
}
