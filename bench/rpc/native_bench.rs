//! Native SlimeRPC echo benchmark, two processes, with the raw floors measured in the
//! same run:
//!
//! * floors: shared-memory ping-pong between two processes (spinning and futex), a
//!   length-prefixed TCP echo over loopback (TCP_NODELAY), single-thread memcpy, and (above
//!   4 KiB) an echo that copies the payload twice across the two processes (`copy_floor`);
//! * SlimeRPC echo (`call` + `wait`, the server answers from its request slot) over
//!   shared memory in spin mode (inline progress, waiters spin up to 1 s), shared memory
//!   with the default spin-then-park settings, and TCP.
//!
//! Prints a table (p50 against the floor of the same transport) and writes
//! `bench/results/rpc_native.csv` (`transport,size,avg_us,p50_us,p99_us,bw_gbps`).
//!
//! `cargo run --release --example rpc_native_bench [-- --quick] [--max-size-mb N]
//!  [--min-size-kb N] [--modes shm-spin,shm,tcp] [--pin] [--csv PATH]`; `--profile N
//!  [--modes M] [--size-kb K]` for counting per call (see bench/rpc/README.md)

#[path = "../common.rs"]
mod bench_common;
#[path = "copy_floor.rs"]
mod copy_floor;
#[path = "../floor.rs"]
mod floor;

use bench_common::{stats, Stats};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dlslime::engine::{Config, ProgressMode};
use dlslime::rpc::{RpcConfig, RpcMemory, RpcProgress, RpcSession};
use dlslime::transport::shm::{ShmConfig, ShmEndpoint};
use dlslime::transport::tcp::TcpEndpoint;
use dlslime::{Endpoint, MemoryPool};

const SLOT: usize = dlslime::rpc::config::DEFAULT_SLOT_SIZE;

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// `(spin, inline)` endpoint engine settings per mode.
fn engine(mode: &str) -> Config {
    match mode {
        "shm-spin" | "tcp-spin" => Config {
            spin: Duration::from_secs(1),
            progress: ProgressMode::Inline,
            ..Config::default()
        },
        // Default spin (50 us) then park; inline progress so the waiting thread is the
        // one the peer's doorbell wakes (no hand-off through a progress thread).
        "shm" => Config {
            progress: ProgressMode::Inline,
            ..Config::default()
        },
        _ => Config::default(),
    }
}

fn rpc_config(mode: &str) -> RpcConfig {
    RpcConfig {
        slot_size: SLOT,
        slot_count: 1,
        progress: RpcProgress::Inline,
        spin: engine(mode).spin,
        // Pre-allocated bulk buffers, mapped by the peer on shared memory.
        bulk_arena: 16 << 20,
        ..RpcConfig::default()
    }
}

fn make(mode: &str) -> (Arc<dyn Endpoint>, Arc<RpcMemory>) {
    let cfg = rpc_config(mode);
    if mode.starts_with("shm") {
        let pool = MemoryPool::new();
        let mem = RpcMemory::new(&pool, &cfg).unwrap();
        let ep = ShmEndpoint::new(
            pool,
            ShmConfig {
                engine: engine(mode),
                force_staged: false,
                host_id_override: None,
                ..ShmConfig::default()
            },
        )
        .unwrap();
        (Arc::new(ep), mem)
    } else {
        let ep = TcpEndpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let mem = RpcMemory::new(ep.memory_pool(), &cfg).unwrap();
        (ep, mem)
    }
}

/// The CPUs this process may run on (its affinity mask), in order.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: an all-zero `cpu_set_t` is a valid empty set; sched_getaffinity writes at
    // most its size into this local set, and CPU_ISSET only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pins this process (and the threads it starts later) to `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: an all-zero `cpu_set_t` is a valid empty set; CPU_SET and
    // sched_setaffinity only read and write this local set, passed with its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// With `--pin`, the driver runs on the first CPU of its original affinity mask and the
/// peer on the second, so the two sides of a measurement do not share a core by chance.
/// The driver picks both before it narrows its own mask and hands the peer's CPU to the
/// children in `RPC_BENCH_PIN` (children inherit the narrowed mask, so they must not
/// derive it themselves). Off by default: on a shared 2-core machine a pinned side that
/// meets another busy process cannot move.
fn pin_peer() {
    if let Some(cpu) = std::env::var("RPC_BENCH_PIN")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        pin_to(cpu);
    }
}

fn child_main(args: &[String]) {
    pin_peer();
    match args[0].as_str() {
        "raw" => floor::raw_child(&args[1..]),
        "copyecho" => copy_floor::child(&args[1..]),
        "tcpraw" => {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            println!("ADDR {}", l.local_addr().unwrap());
            std::io::stdout().flush().unwrap();
            let (mut s, _) = l.accept().unwrap();
            s.set_nodelay(true).unwrap();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let mut h = [0u8; 4];
                if s.read_exact(&mut h).is_err() {
                    return;
                }
                let n = u32::from_le_bytes(h) as usize;
                s.read_exact(&mut buf[..n]).unwrap();
                s.write_all(&h).unwrap();
                s.write_all(&buf[..n]).unwrap();
            }
        }
        "rpc" => {
            let mode = &args[1];
            let (ep, mem) = make(mode);
            bench_common::info_to_parent(&*ep);
            let sess = RpcSession::with_memory(ep, mem, rpc_config(mode)).unwrap();
            // Echo until the driver closes its session.
            loop {
                match sess.poll_request(Some(Duration::from_secs(600))) {
                    Ok(Some(r)) => {
                        let n = r.payload().len();
                        let p = r.payload_ptr();
                        r.reply_inplace(n, false, |b| {
                            // SAFETY: `p` points at the request's `n` payload bytes, which stay in place until the
                            // reply is sent (after this writer returns); `b` is the separate reply buffer of at
                            // least `n` bytes.
                            unsafe { std::ptr::copy_nonoverlapping(p, b.as_mut_ptr(), n) };
                            Ok(n)
                        })
                        .unwrap();
                    }
                    Ok(None) => {}
                    Err(_) => break,
                }
            }
        }
        _ => panic!("unknown child role"),
    }
}

/// `--profile N [--modes M] [--size-kb K]`: only `N` RPC echoes of one size over one mode
/// (default tcp, 1 KiB), no floors, for `perf` / `strace -c` to count per call.
fn profile(args: &[String], n: usize) {
    let mode = bench_common::arg_value(args, "--modes").unwrap_or_else(|| "tcp".into());
    let size = bench_common::arg_or(args, "--size-kb", 1usize) << 10;
    let exe = std::env::current_exe().unwrap();
    let (peer, sess) = rpc_pair(&exe, &mode);
    let st = echo_stats(&sess, size, n, 20);
    println!(
        "{mode} {}: {n} calls, p50 {:.2} us, avg {:.2} us",
        label(size),
        st.p50,
        st.avg
    );
    close_pair(peer, sess);
}

/// A peer process echoing over `mode`, and our session with it.
fn rpc_pair(exe: &std::path::Path, mode: &str) -> (bench_common::InfoChild, RpcSession) {
    let mut peer = bench_common::spawn_info_child(exe, &["rpc", mode]);
    let (ep, mem) = make(mode);
    writeln!(peer.stdin, "{}", ep.endpoint_info()).unwrap();
    ep.connect(&peer.info).unwrap();
    let sess = RpcSession::with_memory(ep, mem, rpc_config(mode)).unwrap();
    (peer, sess)
}

fn close_pair(peer: bench_common::InfoChild, sess: RpcSession) {
    sess.close();
    drop(peer.stdin);
    let mut child = peer.child;
    let _ = child.wait();
}

/// `n` timed echoes of `size` bytes (the cheap per-sample timer, as the floors), after
/// `warm` untimed ones.
fn echo_stats(sess: &RpcSession, size: usize, n: usize, warm: usize) -> Stats {
    let ticks = bench_common::Ticks::calibrate();
    let msg = vec![5u8; size];
    let mut v = Vec::with_capacity(n);
    for i in 0..n + warm {
        let t = ticks.now();
        let mut f = sess.call(0, &msg).unwrap();
        assert_eq!(f.wait_ok(None).unwrap().len(), size);
        drop(f);
        if i >= warm {
            v.push(us(ticks.since(t)));
        }
    }
    stats(v)
}

fn iters(size: usize, quick: bool) -> usize {
    let n = (200_000_000 / size).clamp(50, 20_000);
    if quick {
        (n / 10).max(30)
    } else {
        n
    }
}

fn label(size: usize) -> String {
    if size < 1 << 20 {
        format!("{}KB", size >> 10)
    } else {
        format!("{}MB", size >> 20)
    }
}

fn host_line() -> String {
    let (cpus, cpu, kernel) = bench_common::host();
    format!("{cpus} CPUs ({cpu}), Linux {kernel}")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        return child_main(&args[1..]);
    }
    if let Some(n) = bench_common::arg_value(&args, "--profile") {
        return profile(&args, n.parse().expect("--profile N"));
    }
    let quick = args.iter().any(|a| a == "--quick");
    let host = host_line(); // before --pin narrows this process's CPU mask
    let pinned = if args.iter().any(|a| a == "--pin") {
        let cpus = allowed_cpus();
        match cpus.as_slice() {
            [driver, peer, ..] => {
                std::env::set_var("RPC_BENCH_PIN", peer.to_string());
                pin_to(*driver);
                format!("driver pinned to CPU {driver}, peer to CPU {peer}")
            }
            _ => format!("--pin ignored: only CPUs {cpus:?} allowed"),
        }
    } else {
        std::env::remove_var("RPC_BENCH_PIN");
        "processes not pinned".to_string()
    };
    let max_mb: usize = bench_common::arg_or(&args, "--max-size-mb", 16);
    let exe = std::env::current_exe().unwrap();
    let min_kb: usize = bench_common::arg_or(&args, "--min-size-kb", 1);
    let sizes: Vec<usize> = [1usize << 10, 4 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20]
        .into_iter()
        .filter(|s| *s <= max_mb << 20 && *s >= min_kb << 10)
        .collect();
    println!("host: {host}; {pinned}");

    // Floor: shared-memory ping-pong (spin, futex), 4-byte flags.
    let n: u32 = if quick { 5_000 } else { 50_000 };
    let (spin, fut) = floor::raw_pingpong(&exe, n);
    let (spin, fut) = (bench_common::micros(&spin), bench_common::micros(&fut));
    let raw_spin = stats(spin[n as usize / 10..].to_vec());
    let raw_futex = stats(fut[n as usize / 10..].to_vec());

    // Floor: TCP length-prefixed echo over loopback.
    let mut child = Command::new(&exe)
        .args(["--child", "tcpraw"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let mut s = TcpStream::connect(line.trim().strip_prefix("ADDR ").unwrap()).unwrap();
    s.set_nodelay(true).unwrap();
    let mut tcp_floor = Vec::new();
    for &size in sizes.iter().filter(|s| **s <= 1 << 20) {
        let msg = vec![3u8; size];
        let mut back = vec![0u8; size];
        let n = iters(size, quick);
        let mut v = Vec::with_capacity(n);
        for i in 0..n + 20 {
            let t = Instant::now();
            s.write_all(&(size as u32).to_le_bytes()).unwrap();
            s.write_all(&msg).unwrap();
            let mut h = [0u8; 4];
            s.read_exact(&mut h).unwrap();
            s.read_exact(&mut back).unwrap();
            if i >= 20 {
                v.push(us(t.elapsed()));
            }
        }
        tcp_floor.push((size, stats(v)));
    }
    drop(s);
    child.wait().unwrap();

    // Floor: memcpy of each size.
    let memcpy: Vec<(usize, f64)> = sizes
        .iter()
        .map(|&s| {
            let reps = ((1usize << 31) / s).clamp(5, 2000);
            let t: Vec<f64> = floor::memcpy_times(s, reps).into_iter().map(us).collect();
            (s, stats(t[reps / 10..].to_vec()).p50)
        })
        .collect();

    // Floor: an echo that copies the payload twice across the two processes (shared
    // memory, spinning), for the sizes that are compared with two memcpys.
    let copy_echo: Vec<(usize, f64)> = sizes
        .iter()
        .filter(|&&s| s > 4096)
        .map(|&s| {
            let n = iters(s, quick) as u32;
            let t = bench_common::micros(&copy_floor::times(&exe, s, n));
            (s, stats(t[n as usize / 10..].to_vec()).p50)
        })
        .collect();

    // SlimeRPC echo.
    let mut rows: Vec<(String, usize, Stats)> = Vec::new();
    let modes: Vec<String> = args
        .iter()
        .position(|a| a == "--modes")
        .and_then(|i| args.get(i + 1))
        .map_or("shm-spin,shm,tcp", |v| v.as_str())
        .split(',')
        .map(str::to_string)
        .collect();
    for mode in modes.iter().map(String::as_str) {
        let (peer, sess) = rpc_pair(&exe, mode);
        for &size in &sizes {
            let n = iters(size, quick);
            let st = echo_stats(&sess, size, n, 20.max(n / 20));
            println!(
                "  {mode:<9} {:<6} avg {:>9.2} us  p50 {:>9.2} us  p99 {:>9.2} us",
                label(size),
                st.avg,
                st.p50,
                st.p99
            );
            rows.push((mode.to_string(), size, st));
        }
        close_pair(peer, sess);
    }

    // Table and CSV.
    println!();
    println!(
        "floors: shm ping-pong spin p50 {:.2} us (p99 {:.2}), futex p50 {:.2} us (p99 {:.2})",
        raw_spin.p50, raw_spin.p99, raw_futex.p50, raw_futex.p99
    );
    println!(
        "{:<9} | {:<6} | {:>10} | {:>10} | {:>10} | {:>9} | {:>12} | {:>8}",
        "transport", "size", "avg us", "p50 us", "p99 us", "GB/s", "floor p50 us", "p50/floor"
    );
    println!("{}", "-".repeat(96));
    let mut csv = String::from(
        "transport,size,avg_us,p50_us,p99_us,bw_gbps,floor,floor_p50_us,copy_echo_p50_us\n",
    );
    for (mode, size, st) in &rows {
        let (fname, fp50) = if mode == "shm-spin" {
            if *size <= 4096 {
                ("shm ping-pong spin".to_string(), raw_spin.p50)
            } else {
                (
                    "2 x memcpy".to_string(),
                    2.0 * memcpy.iter().find(|m| m.0 == *size).unwrap().1,
                )
            }
        } else if mode == "shm" {
            if *size <= 4096 {
                ("shm ping-pong futex".to_string(), raw_futex.p50)
            } else {
                (
                    "2 x memcpy".to_string(),
                    2.0 * memcpy.iter().find(|m| m.0 == *size).unwrap().1,
                )
            }
        } else {
            match tcp_floor.iter().find(|t| t.0 == *size) {
                Some((_, t)) => ("tcp socket echo".to_string(), t.p50),
                None => ("-".to_string(), f64::NAN),
            }
        };
        let bw = 2.0 * *size as f64 / 1e9 / (st.avg / 1e6);
        // Shared memory, large payloads: also against the cross-process two-copy echo.
        let echo = copy_echo
            .iter()
            .find(|e| e.0 == *size && mode.starts_with("shm"))
            .map(|e| e.1);
        let vs_echo = echo.map_or(String::new(), |e| {
            format!("; {:.2}x the 2-copy echo {e:.2} us", st.p50 / e)
        });
        println!(
            "{:<9} | {:<6} | {:>10.2} | {:>10.2} | {:>10.2} | {:>9.3} | {:>12.2} | {:>7.2}x  ({fname}{vs_echo})",
            mode,
            label(*size),
            st.avg,
            st.p50,
            st.p99,
            bw,
            fp50,
            st.p50 / fp50
        );
        csv.push_str(&format!(
            "{mode},{size},{},{},{},{bw},{fname},{fp50},{}\n",
            st.avg,
            st.p50,
            st.p99,
            echo.map_or(String::new(), |e| e.to_string())
        ));
    }
    for (size, t) in &tcp_floor {
        println!(
            "tcp socket echo floor {:<6}: p50 {:.2} us, p99 {:.2} us",
            label(*size),
            t.p50,
            t.p99
        );
    }
    for (size, m) in &memcpy {
        println!("memcpy floor {:<6}: p50 {:.2} us", label(*size), m);
    }
    for (size, e) in &copy_echo {
        println!(
            "2-copy echo floor {:<6}: p50 {:.2} us (two processes, spinning)",
            label(*size),
            e
        );
    }
    let path = args
        .iter()
        .position(|a| a == "--csv")
        .and_then(|i| args.get(i + 1))
        .map_or_else(
            || {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("bench/results/rpc_native.csv")
            },
            std::path::PathBuf::from,
        );
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(&path, csv).unwrap();
    println!("wrote {}", path.display());
}
