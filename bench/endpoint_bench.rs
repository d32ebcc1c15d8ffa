//! Two-process endpoint benchmark over TCP, next to the raw floor measured in the same
//! run: a plain TCP ping-pong with the same bytes each way as the operation needs, and a
//! single-stream socket throughput test.
//!
//!   cargo bench --bench endpoint -- [--max-mib 256] [--csv bench/results/endpoint_tcp.csv]
//!
//! The parent is the initiator; it re-runs itself with `--role peer` as the target.

#[path = "common.rs"]
mod bench_common;

use bench_common::{stats, Stats};
use std::io::{BufRead, BufReader, IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use dlslime::transport::tcp::{TcpConfig, TcpContext, TcpEndpoint};
use dlslime::{Assignment, Endpoint, MemoryPool};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

fn sizes(max: usize) -> Vec<usize> {
    let mut v = Vec::new();
    let mut s = KIB;
    while s <= max {
        v.push(s);
        s *= 4;
    }
    v
}

fn iters(size: usize) -> usize {
    (256 * MIB / size).clamp(8, 2000)
}

fn time(n: usize, mut f: impl FnMut()) -> Stats {
    for _ in 0..(n / 10).max(2) {
        f();
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f();
        v.push(t.elapsed().as_secs_f64() * 1e6);
    }
    stats(v)
}

fn write_all_vectored(s: &mut TcpStream, head: &[u8], body: &[u8]) {
    let mut bufs = [IoSlice::new(head), IoSlice::new(body)];
    let mut bufs = &mut bufs[..];
    while !bufs.is_empty() {
        let n = s.write_vectored(bufs).unwrap();
        IoSlice::advance_slices(&mut bufs, n);
    }
}

fn ctx() -> Arc<TcpContext> {
    TcpContext::new(TcpConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    })
    .unwrap()
}

/// Raw floor server: per connection, reads a 16-byte request `(dir, size)`, then either
/// reads `size` bytes and answers 8 (dir 0), or answers `size` bytes (dir 1).
fn raw_server(l: TcpListener) {
    for s in l.incoming() {
        let Ok(mut s) = s else { return };
        s.set_nodelay(true).unwrap();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 * MIB];
            let mut req = [0u8; 16];
            while s.read_exact(&mut req).is_ok() {
                let dir = u64::from_le_bytes(req[..8].try_into().unwrap());
                let n = u64::from_le_bytes(req[8..].try_into().unwrap()) as usize;
                if dir == 0 {
                    if s.read_exact(&mut buf[..n]).is_err() || s.write_all(&[0u8; 8]).is_err() {
                        return;
                    }
                } else if dir == 1 {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                } else {
                    // dir 2: stream n bytes in, answer once
                    if s.read_exact(&mut buf[..n]).is_err() || s.write_all(&[0u8; 8]).is_err() {
                        return;
                    }
                }
            }
        });
    }
}

fn peer() {
    let max: usize = std::env::var("BENCH_MAX").unwrap().parse().unwrap();
    let raw = TcpListener::bind("127.0.0.1:0").unwrap();
    let raw_port = raw.local_addr().unwrap().port();
    std::thread::spawn(move || raw_server(raw));
    let ep = TcpEndpoint::new(&ctx(), MemoryPool::new()).unwrap();
    let mut region = vec![7u8; max];
    // SAFETY: `region` lives until this function returns, after the last operation on it.
    unsafe {
        ep.register_memory_region("buf", region.as_mut_ptr(), max)
            .unwrap()
    };
    println!("{raw_port} {}", ep.endpoint_info());
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let info = lines.next().unwrap().unwrap();
    ep.connect(&serde_json::from_str(&info).unwrap()).unwrap();
    println!("ok");
    let mut inbox = vec![0u8; max];
    let ack = [0u8; 8];
    for line in lines {
        let line = line.unwrap();
        let f: Vec<usize> = line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if line.starts_with("pingpong") {
            // recv size, answer 8 bytes; repeated
            for _ in 0..f[1] {
                // SAFETY: `inbox` (at least `f[0]` bytes) is untouched until `r.wait()` returns.
                let r = unsafe { ep.recv(inbox.as_mut_ptr(), f[0], None).unwrap() };
                r.wait().unwrap();
                // SAFETY: `ack` stays alive and unmodified until this send is waited.
                unsafe { ep.send(ack.as_ptr(), 8, None).unwrap() }
                    .wait()
                    .unwrap();
            }
        } else {
            break;
        }
    }
    drop(region);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--role") {
        return peer();
    }
    let arg = |name: &str| bench_common::arg_value(&args, name);
    let max = arg("--max-mib").map_or(256, |v| v.parse().unwrap()) * MIB;
    let csv = arg("--csv").unwrap_or_else(|| "bench/results/endpoint_tcp.csv".into());

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--role", "peer"])
        .env("BENCH_MAX", max.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_child = child.stdin.take().unwrap();
    let mut from_child = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    from_child.read_line(&mut line).unwrap();
    let (raw_port, info) = line
        .trim()
        .split_once(' ')
        .map(|(a, b)| (a.parse::<u16>().unwrap(), b.to_string()))
        .unwrap();
    let ep = TcpEndpoint::new(&ctx(), MemoryPool::new()).unwrap();
    let mut local = vec![1u8; max];
    // SAFETY: `local` lives until this function returns, after the last operation on it.
    let lh = unsafe {
        ep.register_memory_region("local", local.as_mut_ptr(), max)
            .unwrap()
    };
    ep.connect(&serde_json::from_str(&info).unwrap()).unwrap();
    writeln!(to_child, "{}", ep.endpoint_info()).unwrap();
    line.clear();
    from_child.read_line(&mut line).unwrap();
    let rh = ep.remote_pool().handle("buf").unwrap();

    let mut raw = TcpStream::connect(("127.0.0.1", raw_port)).unwrap();
    raw.set_nodelay(true).unwrap();
    let mut ack = [0u8; 8];

    println!("{}", host_line());
    println!(
        "{:<10} {:>8} {:>10} {:>10} {:>9} {:>11} {:>11} {:>8}",
        "op", "size", "p50_us", "p99_us", "GB/s", "floor_p50", "floor_GB/s", "ratio"
    );
    let mut rows = vec!["op,size,p50_us,p99_us,gbps,floor_p50_us,floor_gbps,ratio_p50".to_string()];
    let mut emit = |op: &str, size: usize, s: &Stats, floor: &Stats| {
        let gbps = size as f64 / s.p50 / 1e3;
        let fgbps = size as f64 / floor.p50 / 1e3;
        let ratio = s.p50 / floor.p50;
        println!(
            "{:<10} {:>8} {:>10.1} {:>10.1} {:>9.3} {:>11.1} {:>11.3} {:>7.2}x",
            op,
            label(size),
            s.p50,
            s.p99,
            gbps,
            floor.p50,
            fgbps,
            ratio
        );
        rows.push(format!(
            "{op},{size},{:.3},{:.3},{gbps:.4},{:.3},{fgbps:.4},{ratio:.4}",
            s.p50, s.p99, floor.p50
        ));
    };
    for &size in &sizes(max) {
        let n = iters(size);
        let mut raw_out = |dir: u64| {
            let mut req = [0u8; 16];
            req[..8].copy_from_slice(&dir.to_le_bytes());
            req[8..].copy_from_slice(&(size as u64).to_le_bytes());
            if dir == 0 {
                // request and payload in one writev, as the endpoint sends them
                write_all_vectored(&mut raw, &req, &local[..size]);
                raw.read_exact(&mut ack).unwrap();
            } else {
                raw.write_all(&req).unwrap();
                raw.read_exact(&mut local[..size]).unwrap();
            }
        };
        let floor_w = time(n, || raw_out(0));
        let floor_r = time(n, || raw_out(1));
        let a = [Assignment::new(lh, rh, 0, 0, size as u64)];
        let w = time(n, || ep.write(&a, None).unwrap().wait().unwrap());
        emit("write", size, &w, &floor_w);
        let r = time(n, || ep.read(&a, None).unwrap().wait().unwrap());
        emit("read", size, &r, &floor_r);
        let total = n + (n / 10).max(2);
        writeln!(to_child, "pingpong {size} {total}").unwrap();
        let mut small = [0u8; 8];
        let sr = time(n, || {
            // SAFETY: `small` is untouched until `r.wait()` returns.
            let r = unsafe { ep.recv(small.as_mut_ptr(), 8, None).unwrap() };
            // SAFETY: `local` (at least `size` bytes) stays unmodified until this send is
            // waited.
            unsafe { ep.send(local.as_ptr(), size, None).unwrap() }
                .wait()
                .unwrap();
            r.wait().unwrap();
        });
        emit("send/recv", size, &sr, &floor_w);
    }
    // single-stream socket throughput: one large transfer, the ceiling for big writes
    let stream = time(8, || raw_out_stream(&mut raw, &local[..max], &mut ack));
    println!(
        "raw single-stream socket throughput ({}): {:.3} GB/s",
        label(max),
        max as f64 / stream.p50 / 1e3
    );
    rows.push(format!(
        "raw_stream,{max},{:.3},{:.3},{:.4},,,",
        stream.p50,
        stream.p99,
        max as f64 / stream.p50 / 1e3
    ));
    writeln!(to_child, "exit").unwrap();
    let _ = child.wait();
    if let Some(dir) = std::path::Path::new(&csv).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&csv, rows.join("\n") + "\n").unwrap();
    println!("wrote {csv}");
}

fn raw_out_stream(raw: &mut TcpStream, data: &[u8], ack: &mut [u8; 8]) {
    let mut req = [0u8; 16];
    req[..8].copy_from_slice(&2u64.to_le_bytes());
    req[8..].copy_from_slice(&(data.len() as u64).to_le_bytes());
    raw.write_all(&req).unwrap();
    raw.write_all(data).unwrap();
    raw.read_exact(ack).unwrap();
}

fn label(size: usize) -> String {
    if size >= MIB {
        format!("{}MiB", size / MIB)
    } else {
        format!("{}KiB", size / KIB)
    }
}

fn host_line() -> String {
    let (cpus, cpu, kernel) = bench_common::host();
    format!("host: {cpus} cpus, {cpu}, Linux {kernel}")
}
