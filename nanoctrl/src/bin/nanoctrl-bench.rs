//! NanoCtrl load benchmark: starts its own redis-server and nanoctrl on loopback, then
//! drives N concurrent clients (one keep-alive connection each) through each scenario and
//! reports ops/s and latency percentiles as a table and a CSV.
//!
//! Scenarios (one "op" each):
//! - `floor_redis_ping`: PING straight to Redis, the floor under every route;
//! - `floor_http_get`: `GET /` (no Redis), the HTTP floor;
//! - `register`: `POST /register` of a fresh entity;
//! - `heartbeat`: `POST /heartbeat` of a registered entity;
//! - `register_query`: `POST /register` then `POST /get_entity_info` of the same entity
//!   (the register + query round trip of the targets).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(name = "nanoctrl-bench")]
struct Args {
    /// Comma-separated client counts.
    #[arg(long, default_value = "1,4,16,64", value_delimiter = ',')]
    clients: Vec<usize>,
    /// Measured seconds per (scenario, clients) cell.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Unmeasured warm-up seconds per cell.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Comma-separated scenarios (default: all).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "floor_redis_ping,floor_http_get,register,heartbeat,register_query"
    )]
    scenarios: Vec<String>,
    /// CSV output path.
    #[arg(long, default_value = "bench/results/nanoctrl.csv")]
    csv: PathBuf,
    /// nanoctrl binary (default: next to this executable).
    #[arg(long)]
    nanoctrl: Option<PathBuf>,
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
    /// Tokio worker threads for the clients (the machine is shared with the server and Redis).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Cell {
    scenario: String,
    clients: usize,
    secs: f64,
    ops: usize,
    errors: usize,
    avg_us: f64,
    p50_us: f64,
    p99_us: f64,
}

impl Cell {
    fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.secs
    }
}

#[derive(Clone)]
struct Target {
    base: String,
    redis_url: String,
}

/// Run one client's op in a loop; returns latencies (µs) of the measured window and errors.
async fn client_loop(
    t: Target,
    scenario: String,
    c: usize,
    warm_until: Instant,
    stop_at: Instant,
) -> (Vec<f64>, usize) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let mut redis_conn = if scenario == "floor_redis_ping" {
        // One dedicated connection per client, like the HTTP clients.
        Some(
            redis::Client::open(t.redis_url.as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap(),
        )
    } else {
        None
    };
    let scope = format!("bench-{scenario}-{c}");
    if scenario == "heartbeat" {
        let r = http
            .post(format!("{}/register", t.base))
            .json(&json!({"entity_id": "hb", "kind": "bench", "scope": scope}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let hb_body =
        serde_json::to_vec(&json!({"entity_type": "service", "entity_id": "hb", "scope": scope}))
            .unwrap();
    let mut lat = Vec::with_capacity(1 << 16);
    let mut errors = 0;
    let mut i: u64 = 0;
    loop {
        let start = Instant::now();
        if start >= stop_at {
            break;
        }
        i += 1;
        let ok = match scenario.as_str() {
            "floor_redis_ping" => redis::cmd("PING")
                .query_async::<String>(redis_conn.as_mut().unwrap())
                .await
                .is_ok(),
            "floor_http_get" => http
                .get(format!("{}/", t.base))
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false),
            "register" => post(&http, &t.base, "/register", register_body(&scope, i)).await,
            "heartbeat" => post(&http, &t.base, "/heartbeat", hb_body.clone()).await,
            "register_query" => {
                let id = format!("e{}", i % 1024);
                post(&http, &t.base, "/register", register_body_id(&scope, &id)).await
                    && post(
                        &http,
                        &t.base,
                        "/get_entity_info",
                        serde_json::to_vec(&json!({"entity_id": id, "scope": scope})).unwrap(),
                    )
                    .await
            }
            other => panic!("unknown scenario {other}"),
        };
        let us = start.elapsed().as_secs_f64() * 1e6;
        if start >= warm_until {
            if ok {
                lat.push(us);
            } else {
                errors += 1;
            }
        }
    }
    (lat, errors)
}

fn register_body(scope: &str, i: u64) -> Vec<u8> {
    register_body_id(scope, &format!("e{i}"))
}

fn register_body_id(scope: &str, id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "entity_id": id, "kind": "bench", "scope": scope,
        "endpoint": {"host": "127.0.0.1", "port": 9000}, "metadata": {"role": "bench"}
    }))
    .unwrap()
}

async fn post(http: &reqwest::Client, base: &str, path: &str, body: Vec<u8>) -> bool {
    match http
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
    {
        Ok(r) => {
            let ok = r.status().is_success();
            let _ = r.bytes().await; // read the body so the connection is reused
            ok
        }
        Err(_) => false,
    }
}

async fn run_cell(t: &Target, scenario: &str, clients: usize, warmup: f64, duration: f64) -> Cell {
    let begin = Instant::now();
    let warm_until = begin + Duration::from_secs_f64(warmup);
    let stop_at = warm_until + Duration::from_secs_f64(duration);
    let mut tasks = Vec::new();
    for c in 0..clients {
        tasks.push(tokio::spawn(client_loop(
            t.clone(),
            scenario.to_string(),
            c,
            warm_until,
            stop_at,
        )));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (lat, e) = task.await.unwrap();
        all.extend(lat);
        errors += e;
    }
    let secs = duration;
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = all.len();
    let pick = |q: f64| {
        if n == 0 {
            0.0
        } else {
            all[((n as f64 * q) as usize).min(n - 1)]
        }
    };
    Cell {
        scenario: scenario.to_string(),
        clients,
        secs,
        ops: n,
        errors,
        avg_us: if n == 0 {
            0.0
        } else {
            all.iter().sum::<f64>() / n as f64
        },
        p50_us: pick(0.5),
        p99_us: pick(0.99),
    }
}

fn main() {
    let args = Args::parse();
    let nanoctrl = args
        .nanoctrl
        .clone()
        .unwrap_or_else(|| std::env::current_exe().unwrap().with_file_name("nanoctrl"));

    let redis_port = free_port();
    let _redis = Proc(
        Command::new(&args.redis_server)
            .args([
                "--port",
                &redis_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", args.redis_server)),
    );
    let redis_url = format!("redis://127.0.0.1:{redis_port}");
    wait_until(Duration::from_secs(10), "redis-server", || {
        redis::Client::open(redis_url.as_str())
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    });
    let port = free_port();
    let _ctrl = Proc(
        Command::new(&nanoctrl)
            .args([
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--redis-url",
                &redis_url,
            ])
            .env("NANOCTRL_RUST_LOG", "warn")
            .env_remove("NANOCTRL_REDIS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", nanoctrl.display())),
    );
    wait_until(Duration::from_secs(20), "nanoctrl", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let target = Target {
        base: format!("http://127.0.0.1:{port}"),
        redis_url,
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()
        .unwrap();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!(
        "nanoctrl-bench: {cpus} CPUs, redis-server + nanoctrl + clients on one host, {}s per cell",
        args.duration
    );
    let mut cells = Vec::new();
    for scenario in &args.scenarios {
        for &clients in &args.clients {
            let cell = rt.block_on(run_cell(
                &target,
                scenario,
                clients,
                args.warmup,
                args.duration,
            ));
            eprintln!(
                "  {:<17} clients={:<3} {:>9.0} ops/s  p50 {:>8.1} us  p99 {:>8.1} us  errors {}",
                cell.scenario,
                cell.clients,
                cell.ops_per_s(),
                cell.p50_us,
                cell.p99_us,
                cell.errors
            );
            cells.push(cell);
        }
    }

    println!();
    println!(
        "{:<17} | {:>7} | {:>9} | {:>10} | {:>9} | {:>9} | {:>9} | {:>6}",
        "Scenario", "Clients", "Ops", "Ops/s", "Avg (us)", "P50 (us)", "P99 (us)", "Errors"
    );
    println!("{}", "-".repeat(96));
    for c in &cells {
        println!(
            "{:<17} | {:>7} | {:>9} | {:>10.0} | {:>9.1} | {:>9.1} | {:>9.1} | {:>6}",
            c.scenario,
            c.clients,
            c.ops,
            c.ops_per_s(),
            c.avg_us,
            c.p50_us,
            c.p99_us,
            c.errors
        );
    }
    println!("{}", "-".repeat(96));
    // Ratios to the floors at the same client count: how much NanoCtrl adds.
    let find = |s: &str, n: usize| cells.iter().find(|c| c.scenario == s && c.clients == n);
    for &n in &args.clients {
        if let (Some(hb), Some(http)) = (find("heartbeat", n), find("floor_http_get", n)) {
            println!(
                "clients={n}: heartbeat p50 = {:.2}x GET / p50; heartbeat ops/s = {:.2}x GET / ops/s",
                hb.p50_us / http.p50_us.max(1e-9),
                hb.ops_per_s() / http.ops_per_s().max(1e-9)
            );
        }
    }

    if let Some(dir) = args.csv.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut csv =
        String::from("scenario,clients,duration_s,ops,errors,ops_per_s,avg_us,p50_us,p99_us\n");
    for c in &cells {
        csv.push_str(&format!(
            "{},{},{},{},{},{:.1},{:.1},{:.1},{:.1}\n",
            c.scenario,
            c.clients,
            c.secs,
            c.ops,
            c.errors,
            c.ops_per_s(),
            c.avg_us,
            c.p50_us,
            c.p99_us
        ));
    }
    std::fs::write(&args.csv, csv)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", args.csv.display()));
    println!("CSV: {}", args.csv.display());
}
