//! Two-process RDMA endpoint benchmark (run by `bench/rdma/run.sh` inside the soft-RoCE VM,
//! next to perftest on the same device; it runs as is on real NICs too):
//!
//!   cargo run --release --example rdma_bench -- [--device rxe0] [--peer-device rxe0]
//!       [--max-mib 256] [--csv out.csv] [--ops write_lat,write_bw,...] [--lat-sizes 64,4096]
//!
//! Rows (CSV `impl,op,bytes,num_qp,avg,p50`), the ops `--ops` selects (default all):
//! * `write_lat`: one-way latency of plain writes, as `ib_write_lat` measures it: each
//!   side waits for the peer's bytes by polling its own memory (the last byte), then
//!   writes its message and waits for the write's completion; half the round trip;
//! * `write_imm_lat`: the same ping-pong with `write_with_imm` and `imm_recv` (a
//!   notification instead of polling memory);
//! * `read_lat`: read completion latency, as `ib_read_lat` measures;
//! * `write_done_lat`: write completion latency (one write, waited: a round trip);
//! * `write_bw`: write bandwidth, 8 writes in flight, 1 and 4 data QPs, MiB/s.
//!
//! After every phase it prints to stderr how the device's `hw_counters` moved (soft-RoCE:
//! retransmissions, RNR NAKs, duplicates), to find the phases that lose packets.
//!
//! The parent is the initiator; it re-runs itself with `--role peer` as the target.

#[path = "../common.rs"]
mod bench_common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bench_common::arg_value as arg;
use dlslime::obs::{nic_counters, SYSFS_IB};
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
    let (_pool, eps, mut buf, h) = open(dev, region);
    let base = buf.as_mut_ptr();
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
            // mpong <size> <n>: n times, wait for the initiator's bytes in memory, then
            // write size bytes back (the plain-write ping-pong of `ib_write_lat`)
            ("mpong", rest) => {
                let v: Vec<u64> = rest.split(' ').map(|s| s.parse().unwrap()).collect();
                let ep = &eps[0];
                let r = ep.remote_pool().handle("buf").unwrap();
                let (n, half) = (v[0] as usize, region / 2);
                let a = [Assignment::new(h, r, half as u64, 0, n as u64)];
                let mine = flag(base, half + n - 1);
                mine.store(0, Ordering::Relaxed);
                writeln!(out, "ready").unwrap();
                out.flush().unwrap();
                for i in 0..v[1] {
                    let want = seq(i);
                    spin_until(mine, want);
                    flag(base, n - 1).store(want, Ordering::Relaxed);
                    ep.write(&a, None).unwrap().wait().unwrap();
                }
                continue;
            }
            ("exit", _) => break,
            (c, _) => panic!("unknown command {c}"),
        }
        out.flush().unwrap();
    }
}

/// The byte at `off` of the registered buffer at `base`, which the peer's NIC writes.
fn flag<'a>(base: *mut u8, off: usize) -> &'a AtomicU8 {
    // SAFETY: `off` lies inside the buffer, which lives until the process ends; the NIC
    // and this thread access the byte only as a whole (an atomic view of plain memory).
    unsafe { &*(base.add(off) as *const AtomicU8) }
}

/// The ping-pong's i-th marker: 1..=255, never the 0 a round starts from.
fn seq(i: u64) -> u8 {
    (i % 255) as u8 + 1
}

/// Polls `f` until it reads `want` (what `ib_write_lat` does); 10 s at most.
fn spin_until(f: &AtomicU8, want: u8) {
    let t = Instant::now();
    while f.load(Ordering::Acquire) != want {
        assert!(t.elapsed().as_secs() < 10, "the peer's write never arrived");
        std::hint::spin_loop();
    }
}

/// The device's `hw_counters` (port 1), by name.
fn hw_counters(dev: &str) -> BTreeMap<String, u64> {
    nic_counters(Path::new(SYSFS_IB))
        .into_iter()
        .find(|p| p["nic"] == dev && p["port"] == 1)
        .and_then(|p| serde_json::from_value(p["hw_counters"].clone()).ok())
        .unwrap_or_default()
}

/// Prints how the device's counters moved since `before` (one line per phase).
fn counters_since(dev: &str, phase: &str, before: &mut BTreeMap<String, u64>) {
    let now = hw_counters(dev);
    let moved: Vec<String> = now
        .iter()
        .filter_map(|(k, &v)| {
            let d = v.wrapping_sub(before.get(k).copied().unwrap_or(0));
            (d != 0).then(|| format!("{k}+{d}"))
        })
        .collect();
    eprintln!("  counters {phase}: {}", moved.join(" "));
    *before = now;
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
    let (_pool, eps, mut buf, h) = open(&dev, max);
    let base = buf.as_mut_ptr();
    let ops = arg(&args, "--ops")
        .unwrap_or_else(|| "write_lat,write_imm_lat,write_done_lat,read_lat,write_bw".into());
    let on = |op: &str| ops.split(',').any(|o| o == op);
    let lat_sizes: Vec<usize> = arg(&args, "--lat-sizes").map_or(LAT_SIZES.to_vec(), |s| {
        s.split(',').map(|n| n.parse().unwrap()).collect()
    });
    let depth: usize = arg(&args, "--inflight").map_or(8, |s| s.parse().unwrap());
    let mut rows = Vec::new();
    for (i, ep) in eps.iter().enumerate() {
        ep.connect(&serde_json::from_str(&infos[i]).unwrap())
            .unwrap();
        writeln!(to, "connect {i} {}", ep.endpoint_info()).unwrap();
        assert_eq!(next(), "ok");
    }
    let mut cnt = hw_counters(&dev);
    let r0 = eps[0].remote_pool().handle("buf").unwrap();
    let warm = (iters / 10).max(3);
    for &n in &lat_sizes {
        let a = [Assignment::new(h, r0, 0, 0, n as u64)];
        let ep = &eps[0];
        if on("write_done_lat") {
            let (avg, p50) = timed(iters, || ep.write(&a, None).unwrap().wait().unwrap());
            rows.push(("write_done_lat", n, 1, avg, p50));
            counters_since(&dev, &format!("write_done_lat {n} B"), &mut cnt);
        }
        if on("read_lat") {
            let (avg, p50) = timed(iters, || ep.read(&a, None).unwrap().wait().unwrap());
            rows.push(("read_lat", n, 1, avg, p50));
            counters_since(&dev, &format!("read_lat {n} B"), &mut cnt);
        }
        if on("write_lat") {
            let half = max / 2;
            let a = [Assignment::new(h, r0, half as u64, 0, n as u64)];
            let mine = flag(base, half + n - 1);
            mine.store(0, Ordering::Relaxed);
            writeln!(to, "mpong {n} {}", iters + warm).unwrap();
            assert_eq!(next(), "ready");
            let mut i = 0;
            let (avg, p50) = timed(iters, || {
                flag(base, n - 1).store(seq(i), Ordering::Relaxed);
                ep.write(&a, None).unwrap().wait().unwrap();
                spin_until(mine, seq(i));
                i += 1;
            });
            rows.push(("write_lat", n, 1, avg / 2.0, p50 / 2.0));
            eprintln!("{n} B: write (ping-pong one-way) {:.1} µs p50", p50 / 2.0);
            counters_since(&dev, &format!("write_lat {n} B"), &mut cnt);
        }
        if on("write_imm_lat") {
            writeln!(to, "pong {n} {}", iters + warm).unwrap();
            assert_eq!(next(), "ready");
            let (avg, p50) = timed(iters, || {
                let imm = ep.imm_recv(None).unwrap();
                ep.write_with_imm(&a, 1, None).unwrap().wait().unwrap();
                imm.wait().unwrap();
            });
            rows.push(("write_imm_lat", n, 1, avg / 2.0, p50 / 2.0));
            eprintln!(
                "{n} B: write_with_imm (ping-pong one-way) {:.1} µs p50",
                p50 / 2.0
            );
            counters_since(&dev, &format!("write_imm_lat {n} B"), &mut cnt);
        }
    }
    for (qi, ep) in eps.iter().enumerate().filter(|_| on("write_bw")) {
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
                if inflight.len() == depth {
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
            counters_since(&dev, &format!("write_bw {size} B {} QP", QPS[qi]), &mut cnt);
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
