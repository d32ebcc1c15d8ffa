//! Two-process RDMA endpoint benchmark (run by `bench/rdma/run.sh` inside the soft-RoCE VM,
//! next to perftest on the same device; it runs as is on real NICs too):
//!
//!   cargo run --release --example rdma_bench -- [--device rxe0] [--peer-device rxe0]
//!       [--max-mib 256] [--csv out.csv]
//!
//! Rows (CSV `impl,op,bytes,num_qp,metric,value`):
//! * `write_lat`: one-way latency, half the round trip of a write_with_imm ping-pong
//!   (the peer answers each immediate with one), as `ib_write_lat` measures;
//! * `read_lat`: read completion latency, as `ib_read_lat` measures;
//! * `write_done_lat`: write completion latency (one write, waited: a round trip);
//! * `write_bw`: write bandwidth, 8 writes in flight, 1 and 4 data QPs, MiB/s.
//!
//! The parent is the initiator; it re-runs itself with `--role peer` as the target.

#[path = "../common.rs"]
mod bench_common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use bench_common::arg_value as arg;
use dlslime::transport::rdma::{RdmaConfig, RdmaContext, RdmaEndpoint, RdmaEndpointConfig};
use dlslime::{Assignment, Endpoint, Future, MemoryPool};

const MIB: usize = 1 << 20;
const LAT_SIZES: [usize; 6] = [64, 256, 1024, 4096, 16384, 65536];
const QPS: [usize; 2] = [1, 4];

fn open(dev: &str, region: usize) -> (Arc<MemoryPool>, Vec<Arc<RdmaEndpoint>>, Vec<u8>, u32) {
    let ctx = RdmaContext::open(RdmaConfig {
        device: Some(dev.to_string()),
        ..Default::default()
    })
    .expect("open the RDMA device");
    let pool = MemoryPool::new();
    let eps: Vec<_> = QPS
        .iter()
        .map(|&q| {
            RdmaEndpoint::new(
                &ctx,
                pool.clone(),
                RdmaEndpointConfig {
                    num_qp: q,
                    ..Default::default()
                },
            )
            .expect("endpoint")
        })
        .collect();
    let mut buf = vec![0x5au8; region];
    // SAFETY: `buf` outlives the endpoints (both live until the process ends).
    let h = unsafe { pool.register(Some("buf"), buf.as_mut_ptr(), region) }.expect("register");
    (pool, eps, buf, h)
}

fn peer(dev: &str, region: usize) {
    let (_pool, eps, _buf, h) = open(dev, region);
    let mut out = std::io::stdout().lock();
    for ep in &eps {
        writeln!(out, "info {}", ep.endpoint_info()).unwrap();
    }
    out.flush().unwrap();
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.unwrap();
        let mut it = line.splitn(2, ' ');
        match (it.next().unwrap(), it.next().unwrap_or("")) {
            ("connect", rest) => {
                let (i, info) = rest.split_once(' ').unwrap();
                let ep = &eps[i.parse::<usize>().unwrap()];
                ep.connect(&serde_json::from_str(info).unwrap()).unwrap();
                writeln!(out, "ok").unwrap();
            }
            // pong <size> <n>: answer n immediates with a write_with_imm of size bytes
            ("pong", rest) => {
                let v: Vec<u64> = rest.split(' ').map(|s| s.parse().unwrap()).collect();
                let ep = &eps[0];
                let r = ep.remote_pool().handle("buf").unwrap();
                let a = [Assignment::new(h, r, 0, 0, v[0])];
                writeln!(out, "ready").unwrap();
                out.flush().unwrap();
                for _ in 0..v[1] {
                    ep.imm_recv(None).unwrap().wait().unwrap();
                    ep.write_with_imm(&a, 1, None).unwrap().wait().unwrap();
                }
                continue;
            }
            ("exit", _) => break,
            (c, _) => panic!("unknown command {c}"),
        }
        out.flush().unwrap();
    }
}

fn avg_p50(mut v: Vec<f64>) -> (f64, f64) {
    let avg = v.iter().sum::<f64>() / v.len() as f64;
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (avg, v[v.len() / 2])
}

fn timed(n: usize, mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..(n / 10).max(3) {
        f();
    }
    avg_p50(
        (0..n)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect(),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dev = arg(&args, "--device").unwrap_or_else(|| "rxe0".into());
    let max = arg(&args, "--max-mib").map_or(256, |s| s.parse().unwrap()) * MIB;
    if arg(&args, "--role").as_deref() == Some("peer") {
        return peer(&dev, max);
    }
    let peer_dev = arg(&args, "--peer-device").unwrap_or_else(|| dev.clone());
    let iters: usize = arg(&args, "--iters").map_or(300, |s| s.parse().unwrap());
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--role", "peer", "--device", &peer_dev, "--max-mib"])
        .arg((max / MIB).to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the peer");
    let mut to = child.stdin.take().unwrap();
    let mut from = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = move || from.next().expect("peer output").expect("peer line");
    let infos: Vec<String> = QPS
        .iter()
        .map(|_| next().strip_prefix("info ").unwrap().to_string())
        .collect();
    let (_pool, eps, _buf, h) = open(&dev, max);
    let mut rows = Vec::new();
    for (i, ep) in eps.iter().enumerate() {
        ep.connect(&serde_json::from_str(&infos[i]).unwrap())
            .unwrap();
        writeln!(to, "connect {i} {}", ep.endpoint_info()).unwrap();
        assert_eq!(next(), "ok");
    }
    let r0 = eps[0].remote_pool().handle("buf").unwrap();
    for &n in &LAT_SIZES {
        let a = [Assignment::new(h, r0, 0, 0, n as u64)];
        let ep = &eps[0];
        let (avg, p50) = timed(iters, || ep.write(&a, None).unwrap().wait().unwrap());
        rows.push(("write_done_lat", n, 1, avg, p50));
        let (avg, p50) = timed(iters, || ep.read(&a, None).unwrap().wait().unwrap());
        rows.push(("read_lat", n, 1, avg, p50));
        let warm = (iters / 10).max(3);
        writeln!(to, "pong {n} {}", iters + warm).unwrap();
        assert_eq!(next(), "ready");
        let (avg, p50) = timed(iters, || {
            let imm = ep.imm_recv(None).unwrap();
            ep.write_with_imm(&a, 1, None).unwrap().wait().unwrap();
            imm.wait().unwrap();
        });
        rows.push(("write_lat", n, 1, avg / 2.0, p50 / 2.0));
        eprintln!("{n} B: write (ping-pong one-way) {:.1} µs", avg / 2.0);
    }
    for (qi, ep) in eps.iter().enumerate() {
        let r = ep.remote_pool().handle("buf").unwrap();
        let mut size = MIB;
        while size <= max {
            let total = (64 * MIB).max(2 * size);
            let n = total / size;
            let a = [Assignment::new(h, r, 0, 0, size as u64)];
            // soft-RoCE under TCG moves tens of MB/s: the default 30 s deadline is too short
            let long = Some(std::time::Duration::from_secs(900));
            ep.write(&a, long).unwrap().wait().unwrap();
            let t = Instant::now();
            let mut inflight: Vec<Future> = Vec::new();
            for _ in 0..n {
                if inflight.len() == 8 {
                    inflight.remove(0).wait().unwrap();
                }
                inflight.push(ep.write(&a, long).unwrap());
            }
            for f in inflight {
                f.wait().unwrap();
            }
            let mibs = total as f64 / MIB as f64 / t.elapsed().as_secs_f64();
            eprintln!("{} MiB x {n}, {} QP: {mibs:.1} MiB/s", size / MIB, QPS[qi]);
            rows.push(("write_bw", size, QPS[qi], mibs, mibs));
            size *= 4;
        }
    }
    writeln!(to, "exit").unwrap();
    drop(to);
    let _ = child.wait();
    let mut csv = String::from("impl,op,bytes,num_qp,avg,p50\n");
    for (op, n, q, avg, p50) in rows {
        csv += &format!("dlslime,{op},{n},{q},{avg:.3},{p50:.3}\n");
    }
    match arg(&args, "--csv") {
        Some(p) => std::fs::write(&p, csv).expect("write the CSV"),
        None => print!("{csv}"),
    }
}
