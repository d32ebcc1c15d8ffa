//! Helpers shared by the Rust benchmarks (each mounts this file with `#[path]`):
//! quantiles, command-line values, the host description.
#![allow(dead_code)] // each benchmark uses its own subset

use std::str::FromStr;
use std::time::Duration;

/// The `p` quantile (0..=1, nearest rank) of `v`; sorts `v`.
pub fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Mean, median (upper) and 99th percentile (floor rank) of samples.
pub struct Stats {
    pub avg: f64,
    pub p50: f64,
    pub p99: f64,
}

pub fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    Stats {
        avg: v.iter().sum::<f64>() / n as f64,
        p50: v[n / 2],
        p99: v[((n as f64 * 0.99) as usize).min(n - 1)],
    }
}

/// A per-sample timer as cheap as the one `ucx_perftest` reads (the time-stamp counter on
/// x86-64: about 25 ns a read in these VMs, against 65 ns for `Instant::now()`), so that a
/// sub-microsecond round trip timed per sample carries the same timer cost as the peer's
/// it is compared with. Elsewhere it reads `Instant`.
pub struct Ticks {
    ns_per_tick: f64,
    origin: std::time::Instant,
}

impl Ticks {
    /// Calibrated against `Instant` over 20 ms.
    pub fn calibrate() -> Ticks {
        let origin = std::time::Instant::now();
        let mut t = Ticks {
            ns_per_tick: 1.0,
            origin,
        };
        if cfg!(target_arch = "x86_64") {
            let (i0, c0) = (std::time::Instant::now(), t.now());
            std::thread::sleep(Duration::from_millis(20));
            let (i1, c1) = (std::time::Instant::now(), t.now());
            t.ns_per_tick = (i1 - i0).as_nanos() as f64 / c1.wrapping_sub(c0).max(1) as f64;
        }
        t
    }

    /// The current count.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    pub fn now(&self) -> u64 {
        // SAFETY: RDTSC only reads the time-stamp counter, present on every x86-64 CPU
        // (the intrinsic is an `unsafe fn` on older compilers, safe on newer ones).
        #[allow(unused_unsafe)]
        unsafe {
            core::arch::x86_64::_rdtsc()
        }
    }

    /// The current count.
    #[cfg(not(target_arch = "x86_64"))]
    #[inline]
    pub fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// The time since `start` (a value of [`Ticks::now`]).
    #[inline]
    pub fn since(&self, start: u64) -> Duration {
        Duration::from_nanos((self.now().wrapping_sub(start) as f64 * self.ns_per_tick) as u64)
    }
}

/// Durations in microseconds.
pub fn micros(v: &[Duration]) -> Vec<f64> {
    v.iter().map(|d| d.as_secs_f64() * 1e6).collect()
}

/// The value after `name` on the command line `args`.
pub fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// The value after `name` parsed, or `default` when absent or unparsable.
pub fn arg_or<T: FromStr>(args: &[String], name: &str, default: T) -> T {
    arg_value(args, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (CPUs available, CPU model, kernel release) of this host.
pub fn host() -> (usize, String, String) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    (cpus, cpu, kernel.trim().to_string())
}

/// A benchmark's peer process (`exe --child ...`) that announced its endpoint with a first
/// line `INFO <endpoint_info>`.
pub struct InfoChild {
    pub child: std::process::Child,
    pub stdin: std::process::ChildStdin,
    pub stdout: std::io::BufReader<std::process::ChildStdout>,
    pub info: serde_json::Value,
}

/// Spawns `exe --child <args>` with piped stdin and stdout and reads its INFO line.
pub fn spawn_info_child(exe: &std::path::Path, args: &[&str]) -> InfoChild {
    use std::io::BufRead;
    let mut child = std::process::Command::new(exe)
        .arg("--child")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let info = serde_json::from_str(line.trim().strip_prefix("INFO ").unwrap()).unwrap();
    let stdin = child.stdin.take().unwrap();
    InfoChild {
        child,
        stdin,
        stdout,
        info,
    }
}

/// The child's side of [`spawn_info_child`]: prints `INFO <endpoint_info>`, connects to
/// the endpoint_info line the parent answers, and returns the rest of stdin.
pub fn info_to_parent<E: dlslime::Endpoint + ?Sized>(
    ep: &E,
) -> std::io::Lines<std::io::BufReader<std::io::Stdin>> {
    use std::io::{BufRead, Write};
    println!("INFO {}", ep.endpoint_info());
    std::io::stdout().flush().unwrap();
    let mut lines = std::io::BufReader::new(std::io::stdin()).lines();
    let info: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    ep.connect(&info).unwrap();
    lines
}
