//! `nanoctrl obs`: a `top`-like table of the PeerAgents' observability snapshots, read
//! from a running NanoCtrl's `GET /obs` (so it uses NanoCtrl's token, not Redis
//! credentials). Refreshes every `--interval` seconds until interrupted; `--once` prints
//! one table (or `--json`, the raw snapshots) and exits.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::Value;

use crate::cli::TokenArgs;
use crate::net;

#[derive(Args, Debug)]
pub struct ObsArgs {
    /// NanoCtrl's `host:port` (or `http://host:port`).
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub address: String,
    /// Only this scope (default: every scope).
    #[arg(long)]
    pub scope: Option<String>,
    /// Print once and exit.
    #[arg(long)]
    pub once: bool,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// An agent whose last snapshot is older than this (ms) shows as `stale`.
    #[arg(long, default_value_t = 45_000)]
    pub stale_ms: u64,
    /// Print the raw snapshots as JSON (implies --once).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub auth: TokenArgs,
}

pub fn run(args: ObsArgs) -> ExitCode {
    let Some((host, port)) = crate::cli::split_address(&args.address) else {
        eprintln!("nanoctrl obs: bad --address {:?}", args.address);
        return ExitCode::FAILURE;
    };
    let token = match args.auth.token() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("nanoctrl obs: {e}");
            return ExitCode::FAILURE;
        }
    };
    let path = match args.scope.as_deref() {
        Some(s) => format!(
            "/obs?scope={}",
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
        ),
        None => "/obs".into(),
    };
    let mut prev: HashMap<(String, String, String), (u64, Instant)> = HashMap::new();
    loop {
        let got = net::http_get(
            &host,
            port,
            &path,
            token.as_ref().map(|t| t.as_str()),
            Duration::from_secs(5),
        );
        let doc = match got {
            Ok((200, body)) => serde_json::from_str::<Value>(&body).map_err(|e| e.to_string()),
            Ok((_, head)) => Err(head),
            Err(e) => Err(e),
        };
        let doc = match doc {
            Ok(d) => d,
            Err(e) => {
                eprintln!("nanoctrl obs: GET http://{host}:{port}{path}: {e}");
                if args.once || args.json {
                    return ExitCode::FAILURE;
                }
                std::thread::sleep(Duration::from_secs_f64(args.interval.max(0.1)));
                continue;
            }
        };
        if args.json {
            println!("{}", doc["agents"]);
            return ExitCode::SUCCESS;
        }
        let now_ms = doc["now_ms"].as_u64().unwrap_or(0);
        let table = table(&doc["agents"], now_ms, args.stale_ms, &mut prev);
        if args.once {
            print!("{table}");
            return ExitCode::SUCCESS;
        }
        // clear the screen and home the cursor, as `top` does
        print!("\x1b[2J\x1b[H{table}");
        let _ = std::io::stdout().flush();
        std::thread::sleep(Duration::from_secs_f64(args.interval.max(0.1)));
    }
}

/// `alive`, `stale` (no snapshot for `stale_ms`) or `stopped`.
fn state(agent: &Value, now_ms: u64, stale_ms: u64) -> &'static str {
    if agent["status"] == "stopped" {
        "stopped"
    } else if now_ms.saturating_sub(agent["reported_at_ms"].as_u64().unwrap_or(0)) > stale_ms {
        "stale"
    } else {
        "alive"
    }
}

/// The table: one line per agent, then one per (peer, operation kind).
/// `prev` keeps the bytes seen per row for the throughput between refreshes.
fn table(
    agents: &Value,
    now_ms: u64,
    stale_ms: u64,
    prev: &mut HashMap<(String, String, String), (u64, Instant)>,
) -> String {
    let mut agents: Vec<&Value> = agents.as_array().into_iter().flatten().collect();
    agents.sort_by_key(|a| {
        (
            a["scope"].as_str().unwrap_or(""),
            a["peer_id"].as_str().unwrap_or(""),
        )
    });
    let mut s = String::new();
    let _ = writeln!(s, "agents: {}", agents.len());
    let _ = writeln!(
        s,
        "{:<12} {:<16} {:<8} {:>12}  {:<20} {:<15} {:>10} {:>10} {:>11} {:>9} {:>9} {:>7}",
        "SCOPE",
        "ALIAS",
        "STATE",
        "BW",
        "PEER",
        "OP",
        "OPS",
        "BYTES",
        "THROUGHPUT",
        "P50",
        "P99",
        "ERRORS"
    );
    for a in agents {
        let scope = a["scope"].as_str().unwrap_or("");
        let alias = a["peer_id"].as_str().unwrap_or("");
        let _ = writeln!(
            s,
            "{:<12} {:<16} {:<8} {:>12}",
            dash(scope),
            alias,
            state(a, now_ms, stale_ms),
            bits(a["ewma_bandwidth_bps"].as_f64().unwrap_or(0.0)),
        );
        for row in a["peers"].as_array().into_iter().flatten() {
            let peer = row["peer"].as_str().unwrap_or("");
            let errors: u64 = row["errors"]
                .as_object()
                .map_or(0, |e| e.values().filter_map(Value::as_u64).sum());
            for (op, o) in row["ops"].as_object().into_iter().flatten() {
                let bytes = o["completed_bytes"].as_u64().unwrap_or(0);
                let key = (format!("{scope}/{alias}"), peer.to_string(), op.clone());
                let now = Instant::now();
                let tput = match prev.insert(key, (bytes, now)) {
                    Some((b0, t0)) if now > t0 => {
                        let dt = (now - t0).as_secs_f64();
                        format!("{}/s", size(bytes.saturating_sub(b0) as f64 / dt))
                    }
                    _ => "-".into(),
                };
                let lat = &o["latency_ns"];
                let _ = writeln!(
                    s,
                    "{:<12} {:<16} {:<8} {:>12}  {:<20} {:<15} {:>10} {:>10} {:>11} {:>9} {:>9} {:>7}",
                    "",
                    "",
                    "",
                    "",
                    dash(peer),
                    op,
                    o["completed"].as_u64().unwrap_or(0),
                    size(bytes as f64),
                    tput,
                    dur(lat["p50"].as_u64().unwrap_or(0)),
                    dur(lat["p99"].as_u64().unwrap_or(0)),
                    errors,
                );
            }
        }
    }
    s
}

fn dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

fn size(b: f64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0}{}", U[i])
    } else {
        format!("{v:.1}{}", U[i])
    }
}

fn bits(bps: f64) -> String {
    const U: [&str; 4] = ["bit/s", "Kbit/s", "Mbit/s", "Gbit/s"];
    let mut v = bps;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < U.len() {
        v /= 1000.0;
        i += 1;
    }
    format!("{v:.1}{}", U[i])
}

fn dur(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns}ns"),
        1_000..=999_999 => format!("{:.1}us", ns as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_shows_agents_peers_and_states() {
        let agents = json!([
            {"scope": "", "peer_id": "b", "status": "stopped", "reported_at_ms": 100,
             "ewma_bandwidth_bps": 0.0, "peers": []},
            {"scope": "", "peer_id": "a", "status": "alive", "reported_at_ms": 1000,
             "ewma_bandwidth_bps": 2.5e6,
             "peers": [{"peer": "b", "errors": {"timeout": 1},
                "ops": {"write": {"completed": 7, "completed_bytes": 7168,
                    "latency_ns": {"p50": 1500, "p99": 2_500_000}}}}]},
        ]);
        let t = table(&agents, 2000, 45_000, &mut HashMap::new());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "agents: 2");
        assert!(
            lines[2].contains(" a ")
                && lines[2].contains("alive")
                && lines[2].contains("2.5Mbit/s"),
            "{t}"
        );
        assert!(
            lines[3].contains("write") && lines[3].contains(" 7 ") && lines[3].contains("7.0KiB")
        );
        assert!(
            lines[3].contains("1.5us")
                && lines[3].contains("2.5ms")
                && lines[3].trim_end().ends_with(" 1")
        );
        assert!(lines[4].contains(" b ") && lines[4].contains("stopped"));
        assert_eq!(
            state(&json!({"reported_at_ms": 0}), 50_000, 45_000),
            "stale"
        );
    }
}
