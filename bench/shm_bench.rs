//! Two-process benchmark of the shared-memory transport against its floor, measured in
//! the same run: raw shared-memory ping-pong (spin, futex), single-thread memcpy, and the
//! shm endpoint (64 B send/recv round trip in spin and futex mode; one-sided write/read
//! bandwidth on shared-allocated regions). Prints a table and writes CSV under
//! bench/results/.
//!
//! `cargo run --release --example shm_bench [-- --quick] [--max-mib 256] [--csv PATH]`
//! (default CSV: `bench/results/shm_bench_<unix time>.csv`)
//!
//! `--obs-ab [ROUNDS]` measures only what observability costs (docs/observability.md):
//! 1 KiB writes and reads, recording off and on alternately in the same process (the
//! order flips every round), mean ns per op over batches of 2 000; prints the median
//! per mode and the on/off ratio. `--obs-one on|off [N]` runs N 1 KiB writes in one
//! mode only, for a profiler (`perf record -e cpu-clock`). `--rtt [N]` measures only the
//! 64 B spin round trip (N times, default 50 000) and its raw floor.

#[path = "common.rs"]
mod bench_common;
#[path = "floor.rs"]
mod floor;
#[path = "shm_endpoint_bench.rs"]
mod shm_endpoint_bench;

use std::io::Write;
use std::time::Duration;

use dlslime::transport::shm::ShmEndpoint;
use dlslime::Endpoint;

fn pct(v: &[Duration], p: f64) -> f64 {
    bench_common::pct(&mut bench_common::micros(v), p)
}

struct Row {
    metric: String,
    size: usize,
    p50: f64,
    p99: f64,
    floor_p50: f64,
    ratio: f64,
}

fn child_main(args: &[String]) {
    match args[0].as_str() {
        "raw" => floor::raw_child(&args[1..]),
        "ep" => {
            let spin = args[1] == "spin";
            let n: usize = args[2].parse().unwrap();
            let (ep, _buf) = shm_endpoint_bench::endpoint(spin);
            let mut lines = bench_common::info_to_parent(&ep);
            shm_endpoint_bench::echo_child(&ep, n);
            let _ = lines.next(); // "done" (or EOF): blocks without spinning
            ep.shutdown();
        }
        _ => panic!("unknown child role"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        return child_main(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("--obs-micro") {
        return obs_micro();
    }
    if let Some(i) = args.iter().position(|a| a == "--rtt") {
        let n: usize = args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(50_000);
        return rtt_only(n);
    }
    if let Some(i) = args.iter().position(|a| a == "--obs-one") {
        let on = args.get(i + 1).map(String::as_str) == Some("on");
        let n: usize = args
            .get(i + 2)
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000_000);
        return obs_one(on, n);
    }
    if let Some(i) = args.iter().position(|a| a == "--obs-ab") {
        let rounds = args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(9);
        return obs_ab(rounds);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let arg = |name: &str| bench_common::arg_value(&args, name);
    let max_mib: usize = arg("--max-mib").map_or(256, |v| v.parse().expect("--max-mib N"));
    let n: u32 = if quick { 5_000 } else { 50_000 };
    let warm = (n / 10) as usize;
    let exe = std::env::current_exe().unwrap();
    let mut rows: Vec<Row> = Vec::new();

    // Raw ping-pong floors.
    let (spin, fut) = floor::raw_pingpong(&exe, n);
    let (spin, fut) = (&spin[warm..], &fut[warm..]);
    let raw_spin = pct(spin, 0.5);
    let raw_futex = pct(fut, 0.5);
    rows.push(Row {
        metric: "raw shm ping-pong spin (RTT)".into(),
        size: 4,
        p50: raw_spin,
        p99: pct(spin, 0.99),
        floor_p50: raw_spin,
        ratio: 1.0,
    });
    rows.push(Row {
        metric: "raw shm ping-pong futex (RTT)".into(),
        size: 4,
        p50: raw_futex,
        p99: pct(fut, 0.99),
        floor_p50: raw_futex,
        ratio: 1.0,
    });

    // Endpoint round trips, then one-sided bandwidth (spin-mode endpoint, child idle).
    let sizes: Vec<usize> = (0..10)
        .map(|i| 1024usize << (2 * i))
        .filter(|&s| s <= max_mib << 20)
        .collect();
    let mut memcpy_p50 = Vec::new();
    for &s in &sizes {
        let reps = ((1usize << 31) / s).clamp(5, 2000);
        let t = floor::memcpy_times(s, reps);
        let p50 = pct(&t[reps / 10..], 0.5);
        memcpy_p50.push(p50);
        rows.push(Row {
            metric: "memcpy 1 thread".into(),
            size: s,
            p50,
            p99: pct(&t[reps / 10..], 0.99),
            floor_p50: p50,
            ratio: 1.0,
        });
    }
    for mode in ["spin", "futex"] {
        with_peer(&exe, mode == "spin", n as usize, |ep| {
            let t = shm_endpoint_bench::rtt_parent(ep, n as usize);
            let t = &t[warm..];
            let floor = if mode == "spin" { raw_spin } else { raw_futex };
            let p50 = pct(t, 0.5);
            rows.push(Row {
                metric: format!("shm endpoint send/recv RTT ({mode})"),
                size: 64,
                p50,
                p99: pct(t, 0.99),
                floor_p50: floor,
                ratio: p50 / floor,
            });
            if mode == "spin" {
                for (i, &s) in sizes.iter().enumerate() {
                    let reps = ((1usize << 31) / s).clamp(5, 2000);
                    for write in [true, false] {
                        let t = shm_endpoint_bench::one_sided(ep, s, write, reps);
                        let p50 = pct(&t[reps / 10..], 0.5);
                        // Bandwidth ratio = memcpy time / op time.
                        rows.push(Row {
                            metric: format!(
                                "shm endpoint {} (shared region)",
                                if write { "write" } else { "read" }
                            ),
                            size: s,
                            p50,
                            p99: pct(&t[reps / 10..], 0.99),
                            floor_p50: memcpy_p50[i],
                            ratio: memcpy_p50[i] / p50,
                        });
                    }
                }
            }
        });
    }

    println!(
        "{:<40} {:>10} {:>11} {:>11} {:>11} {:>10} {:>8}",
        "metric", "size", "p50 us", "p99 us", "GB/s(p50)", "floor p50", "ratio"
    );
    for r in &rows {
        let gbs = if r.size >= 1024 {
            format!("{:.2}", r.size as f64 / r.p50 / 1e3)
        } else {
            "-".into()
        };
        println!(
            "{:<40} {:>10} {:>11.3} {:>11.3} {:>11} {:>10.3} {:>8.2}",
            r.metric, r.size, r.p50, r.p99, gbs, r.floor_p50, r.ratio
        );
    }
    println!("ratios: RTT rows = endpoint p50 / floor p50 (targets: spin <= 2.0, futex <= 1.3); bandwidth rows = memcpy time / op time (target >= 0.85 from 1 MiB)");
    let path = arg("--csv").map_or_else(
        || {
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("bench/results/shm_bench_{ts}.csv"))
        },
        std::path::PathBuf::from,
    );
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(f, "metric,size_bytes,p50_us,p99_us,floor_p50_us,ratio").unwrap();
    for r in &rows {
        writeln!(
            f,
            "{},{},{:.4},{:.4},{:.4},{:.4}",
            r.metric, r.size, r.p50, r.p99, r.floor_p50, r.ratio
        )
        .unwrap();
    }
    println!("wrote {}", path.display());
}

/// Runs `f` on an endpoint (spin or futex mode) connected to a child process that
/// echoes `n` messages, then tells the child it is done and shuts the endpoint down.
fn with_peer<R>(
    exe: &std::path::Path,
    spin: bool,
    n: usize,
    f: impl FnOnce(&ShmEndpoint) -> R,
) -> R {
    let mode = if spin { "spin" } else { "futex" };
    let mut peer = bench_common::spawn_info_child(exe, &["ep", mode, &n.to_string()]);
    let (ep, _buf) = shm_endpoint_bench::endpoint(spin);
    writeln!(peer.stdin, "{}", ep.endpoint_info()).unwrap();
    ep.connect(&peer.info).unwrap();
    let r = f(&ep);
    writeln!(peer.stdin, "done").unwrap();
    drop(peer.stdin);
    peer.child.wait().unwrap();
    ep.shutdown();
    r
}

/// Recording off vs on, interleaved: 1 KiB writes and reads on a shared region (spin).
fn obs_ab(rounds: usize) {
    let exe = std::env::current_exe().unwrap();
    with_peer(&exe, true, 0, |ep| obs_ab_on(ep, rounds));
}

fn obs_ab_on(ep: &ShmEndpoint, rounds: usize) {
    const REPS: usize = 2_000;
    // warm up both modes
    for on in [false, true] {
        dlslime::obs::set_enabled(on);
        shm_endpoint_bench::batch_mean_ns(ep, 1024, true, REPS);
    }
    // [write off, write on, read off, read on]
    let mut t: [Vec<f64>; 4] = Default::default();
    for r in 0..rounds {
        let order = if r % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for on in order {
            dlslime::obs::set_enabled(on);
            for (j, write) in [true, false].into_iter().enumerate() {
                let ns = shm_endpoint_bench::batch_mean_ns(ep, 1024, write, REPS);
                t[j * 2 + on as usize].push(ns);
            }
        }
    }
    dlslime::obs::set_enabled(false);
    let med = |v: &Vec<f64>| bench_common::pct(&mut v.clone(), 0.5);
    println!(
        "{:<28} {:>8} {:>12} {:>12} {:>8}",
        "1 KiB, shm, shared region", "rounds", "off ns/op", "on ns/op", "on/off"
    );
    for (j, name) in ["write", "read"].iter().enumerate() {
        let (off, on) = (med(&t[j * 2]), med(&t[j * 2 + 1]));
        println!(
            "{:<28} {:>8} {:>12.1} {:>12.1} {:>8.3}",
            name,
            rounds,
            off,
            on,
            on / off
        );
        let fmt = |v: &Vec<f64>| {
            v.iter()
                .map(|x| format!("{x:.1}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!("  {name} off: {}", fmt(&t[j * 2]));
        println!("  {name} on:  {}", fmt(&t[j * 2 + 1]));
    }
}

/// Only the 64 B send/recv round trip (spin), `n` times: p50 and p99 in µs, next to
/// the raw spin ping-pong floor of the same minutes.
fn rtt_only(n: usize) {
    let exe = std::env::current_exe().unwrap();
    let warm = n / 10;
    let (spin, _) = floor::raw_pingpong(&exe, n as u32);
    let t = with_peer(&exe, true, n, |ep| shm_endpoint_bench::rtt_parent(ep, n));
    println!(
        "64 B send/recv RTT (spin): p50 {:.3} us, p99 {:.3} us; raw spin ping-pong p50 {:.3} us",
        pct(&t[warm..], 0.5),
        pct(&t[warm..], 0.99),
        pct(&spin[warm..], 0.5)
    );
}

/// One mode only, `n` 1 KiB writes (for `perf stat`: instructions and cycles per op).
fn obs_one(on: bool, n: usize) {
    let exe = std::env::current_exe().unwrap();
    with_peer(&exe, true, 0, |ep| {
        dlslime::obs::set_enabled(on);
        let ns = shm_endpoint_bench::batch_mean_ns(ep, 1024, true, n);
        println!(
            "obs {} write 1 KiB: {ns:.1} ns/op",
            if on { "on" } else { "off" }
        );
    });
}

/// The recording hooks alone, in a loop (ns per call): where the cost of `--obs-ab` lies.
fn obs_micro() {
    use dlslime::obs::{self, OpKind};
    use std::time::Instant;
    const N: u64 = 5_000_000;
    obs::set_enabled(true);
    let stats = obs::register_endpoint("micro");
    let time = |name: &str, f: &dyn Fn(u64)| {
        let t = Instant::now();
        for i in 0..N {
            f(i);
        }
        println!(
            "{name:<40} {:>8.2} ns",
            t.elapsed().as_nanos() as f64 / N as f64
        );
    };
    for _ in 0..3 {
        time("enabled()", &|_| {
            std::hint::black_box(obs::enabled());
        });
        time("sample()", &|_| {
            std::hint::black_box(obs::sample());
        });
        time("now_ns()", &|_| {
            std::hint::black_box(obs::now_ns());
        });
        time("completed_at_once (untimed)", &|i| {
            stats.completed_at_once(OpKind::Write, 1024 + (i & 1), None)
        });
        time("completed_at_once (timed 100 ns)", &|i| {
            stats.completed_at_once(OpKind::Write, 1024 + (i & 1), Some(100))
        });
    }
}
