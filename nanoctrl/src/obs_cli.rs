//! `nanoctrl obs`: a `top`-like table of the PeerAgents' observability snapshots, read
//! from a running NanoCtrl's `GET /obs` (so it uses NanoCtrl's token, not Redis
//! credentials). Refreshes every `--interval` seconds until interrupted; `--once` prints
//! one table (or `--json`, the raw snapshots) and exits. The view: `top` (default: agents,
//! then peers by operation kind with throughput), or the original's sub-commands
//! `status` (one line per agent), `peers` (one per agent and peer), `nics` (the RDMA
//! NICs' sysfs counters) and `links` (the agents' connections).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::cli::TokenArgs;
use crate::net;

/// What `nanoctrl obs` shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum View {
    /// Agents, then each peer's operations with throughput and latency.
    #[default]
    Top,
    /// One line per agent: state, age, totals.
    Status,
    /// One line per agent and peer: totals, errors, timeouts, retries.
    Peers,
    /// The RDMA NICs' port and hardware counters.
    Nics,
    /// The agents' connections to their peers.
    Links,
}

#[derive(Args, Debug)]
pub struct ObsArgs {
    /// The view (the original's sub-commands, plus `top`).
    #[arg(value_enum, default_value_t = View::Top)]
    pub view: View,
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
        let table = match args.view {
            View::Top => table(&doc["agents"], now_ms, args.stale_ms, &mut prev),
            v => view_table(v, &doc["agents"], now_ms, args.stale_ms),
        };
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

/// The agents sorted by scope and alias.
fn sorted(agents: &Value) -> Vec<&Value> {
    let mut v: Vec<&Value> = agents.as_array().into_iter().flatten().collect();
    v.sort_by_key(|a| {
        (
            a["scope"].as_str().unwrap_or(""),
            a["peer_id"].as_str().unwrap_or(""),
        )
    });
    v
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The `status`, `peers`, `nics` and `links` views.
fn view_table(view: View, agents: &Value, now_ms: u64, stale_ms: u64) -> String {
    let mut s = String::new();
    let agents = sorted(agents);
    let id = |a: &Value| {
        (
            dash(a["scope"].as_str().unwrap_or("")).to_string(),
            a["peer_id"].as_str().unwrap_or("").to_string(),
        )
    };
    match view {
        View::Top => {}
        View::Status => {
            let _ = writeln!(
                s,
                "{:<12} {:<16} {:<8} {:>8} {:>8} {:>12} {:>10} {:>10} {:>8} {:>7} {:>7}",
                "SCOPE",
                "ALIAS",
                "STATE",
                "AGE",
                "PID",
                "BW",
                "OPS",
                "BYTES",
                "PENDING",
                "ERRORS",
                "RETRIES"
            );
            for a in agents {
                let (scope, alias) = id(a);
                let sm = &a["summary"];
                let age = now_ms.saturating_sub(n(&a["reported_at_ms"]));
                let _ = writeln!(
                    s,
                    "{:<12} {:<16} {:<8} {:>8} {:>8} {:>12} {:>10} {:>10} {:>8} {:>7} {:>7}",
                    scope,
                    alias,
                    state(a, now_ms, stale_ms),
                    dur(age * 1_000_000),
                    n(&a["pid"]),
                    bits(a["ewma_bandwidth_bps"].as_f64().unwrap_or(0.0)),
                    n(&sm["completed_total"]),
                    size(n(&sm["completed_bytes_total"]) as f64),
                    n(&sm["pending_ops"]),
                    n(&sm["error_total"]),
                    n(&sm["retry_total"]),
                );
            }
        }
        View::Peers => {
            let _ = writeln!(
                s,
                "{:<12} {:<16} {:<20} {:<10} {:>10} {:>10} {:>8} {:>7} {:>8} {:>7}",
                "SCOPE",
                "ALIAS",
                "PEER",
                "TRANSPORT",
                "OPS",
                "BYTES",
                "PENDING",
                "ERRORS",
                "TIMEOUTS",
                "RETRIES"
            );
            for a in agents {
                let (scope, alias) = id(a);
                for row in a["peers"].as_array().into_iter().flatten() {
                    let ops = row["ops"].as_object();
                    let sum = |f: &str| ops.map_or(0, |o| o.values().map(|v| n(&v[f])).sum());
                    let errors: u64 = row["errors"]
                        .as_object()
                        .map_or(0, |e| e.values().map(n).sum());
                    let transports: Vec<&str> = row["transports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    let _ = writeln!(
                        s,
                        "{:<12} {:<16} {:<20} {:<10} {:>10} {:>10} {:>8} {:>7} {:>8} {:>7}",
                        scope,
                        alias,
                        dash(row["peer"].as_str().unwrap_or("")),
                        dash(&transports.join(",")),
                        sum("completed"),
                        size(sum("completed_bytes") as f64),
                        sum("pending"),
                        errors,
                        n(&row["timeouts"]),
                        n(&row["retries"]),
                    );
                }
            }
        }
        View::Nics => {
            let _ = writeln!(
                s,
                "{:<12} {:<16} {:<10} {:>4} {:>10} {:>10} {:>10} {:>10}  HW COUNTERS (non-zero)",
                "SCOPE", "ALIAS", "NIC", "PORT", "TX", "RX", "TX PKTS", "RX PKTS"
            );
            for a in agents {
                let (scope, alias) = id(a);
                for nic in a["nics"].as_array().into_iter().flatten() {
                    let c = &nic["counters"];
                    let hw: Vec<String> = nic["hw_counters"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter(|(_, v)| n(v) > 0)
                        .map(|(k, v)| format!("{k}={}", n(v)))
                        .collect();
                    let _ = writeln!(
                        s,
                        "{:<12} {:<16} {:<10} {:>4} {:>10} {:>10} {:>10} {:>10}  {}",
                        scope,
                        alias,
                        nic["nic"].as_str().unwrap_or(""),
                        nic["port"],
                        // the IB data counters count 4-byte words
                        size(n(&c["port_xmit_data"]) as f64 * 4.0),
                        size(n(&c["port_rcv_data"]) as f64 * 4.0),
                        n(&c["port_xmit_packets"]),
                        n(&c["port_rcv_packets"]),
                        dash(&hw.join(" ")),
                    );
                }
            }
        }
        View::Links => {
            let _ = writeln!(
                s,
                "{:<12} {:<16} {:<20} {:<12} {:<9} {:<10}",
                "SCOPE", "ALIAS", "PEER", "STATE", "CONNECTED", "TRANSPORT"
            );
            for a in agents {
                let (scope, alias) = id(a);
                for c in a["connections"].as_array().into_iter().flatten() {
                    let _ = writeln!(
                        s,
                        "{:<12} {:<16} {:<20} {:<12} {:<9} {:<10}",
                        scope,
                        alias,
                        dash(c["peer"].as_str().unwrap_or("")),
                        dash(c["state"].as_str().unwrap_or("")),
                        c["connected"].as_bool().unwrap_or(false),
                        dash(c["transport"].as_str().unwrap_or("")),
                    );
                }
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

    #[test]
    fn the_original_sub_commands() {
        let agents = json!([{"scope": "", "peer_id": "a", "reported_at_ms": 1000, "pid": 42,
            "ewma_bandwidth_bps": 0.0,
            "summary": {"completed_total": 5, "completed_bytes_total": 5120, "pending_ops": 1,
                        "error_total": 2, "retry_total": 3},
            "peers": [{"peer": "b", "transports": ["shm"], "errors": {"timeout": 2},
                "timeouts": 2, "retries": 1,
                "ops": {"write": {"completed": 5, "completed_bytes": 5120, "pending": 1}}}],
            "nics": [{"nic": "rxe0", "port": 1,
                "counters": {"port_xmit_data": 256, "port_rcv_data": 0,
                             "port_xmit_packets": 7, "port_rcv_packets": 8},
                "hw_counters": {"sent_pkts": 7, "duplicate_request": 0}}],
            "connections": [{"peer": "b", "state": "connected", "connected": true,
                             "transport": "shm"}]}]);
        let st = view_table(View::Status, &agents, 2000, 45_000);
        let line = st.lines().nth(1).unwrap();
        assert!(
            line.contains(" a ") && line.contains("alive") && line.contains(" 42 "),
            "{st}"
        );
        assert!(
            line.contains("5.0KiB") && line.trim_end().ends_with(" 2       3"),
            "{st}"
        );
        let p = view_table(View::Peers, &agents, 2000, 45_000);
        let line = p.lines().nth(1).unwrap();
        assert!(
            line.contains(" b ") && line.contains("shm") && line.contains("5.0KiB"),
            "{p}"
        );
        assert!(
            line.split_whitespace().rev().take(3).eq(["1", "2", "2"]),
            "{p}"
        );
        let nc = view_table(View::Nics, &agents, 2000, 45_000);
        let line = nc.lines().nth(1).unwrap();
        assert!(line.contains("rxe0") && line.contains("1.0KiB"), "{nc}");
        assert!(line.trim_end().ends_with("sent_pkts=7"), "{nc}");
        let l = view_table(View::Links, &agents, 2000, 45_000);
        let line = l.lines().nth(1).unwrap();
        assert!(
            line.contains(" b ") && line.contains("connected") && line.contains("true"),
            "{l}"
        );
    }
}
