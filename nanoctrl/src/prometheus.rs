//! The agents' observability snapshots (`obs:peer:*`, written by PeerAgents) in the
//! Prometheus text exposition format 0.0.4, for `GET /metrics`. Every sample carries the
//! agent's `scope` and `alias`; per-peer rows add `peer`, per-kind rows `op`.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Histogram bounds: 2^k ns for k in this range (128 ns .. ~17 s). Every such bound is an
/// edge of the snapshot's log-linear buckets, so the cumulative counts are exact.
const LE_POW2: std::ops::RangeInclusive<u32> = 7..=34;

struct Family {
    help: &'static str,
    kind: &'static str,
    lines: Vec<String>,
}

#[derive(Default)]
struct Out {
    families: BTreeMap<&'static str, Family>,
}

impl Out {
    fn family(
        &mut self,
        name: &'static str,
        kind: &'static str,
        help: &'static str,
    ) -> &mut Family {
        self.families.entry(name).or_insert_with(|| Family {
            help,
            kind,
            lines: Vec::new(),
        })
    }

    fn sample(
        &mut self,
        name: &'static str,
        kind: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        v: f64,
    ) {
        let line = format!("{name}{} {}", fmt_labels(labels), fmt_value(v));
        self.family(name, kind, help).lines.push(line);
    }

    /// A histogram from a snapshot's `{count, sum, buckets: [[upper_ns, n]...]}`.
    fn histogram(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        h: &Value,
    ) {
        let buckets: Vec<(u64, u64)> = h["buckets"]
            .as_array()
            .map(|b| {
                b.iter()
                    .filter_map(|p| Some((p.get(0)?.as_u64()?, p.get(1)?.as_u64()?)))
                    .collect()
            })
            .unwrap_or_default();
        let count: u64 = buckets.iter().map(|b| b.1).sum();
        let mut lines = Vec::new();
        for k in LE_POW2 {
            let bound = 1u64 << k;
            let n: u64 = buckets.iter().filter(|b| b.0 < bound).map(|b| b.1).sum();
            let le = fmt_value(bound as f64 / 1e9);
            let mut l = labels.to_vec();
            l.push(("le", &le));
            lines.push(format!("{name}_bucket{} {n}", fmt_labels(&l)));
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        lines.push(format!("{name}_bucket{} {count}", fmt_labels(&l)));
        let sum = h["sum"].as_u64().unwrap_or(0) as f64 / 1e9;
        lines.push(format!(
            "{name}_sum{} {}",
            fmt_labels(labels),
            fmt_value(sum)
        ));
        lines.push(format!("{name}_count{} {count}", fmt_labels(labels)));
        self.family(name, "histogram", help).lines.extend(lines);
    }

    fn text(&self) -> String {
        let mut s = String::new();
        for (name, f) in &self.families {
            let _ = writeln!(s, "# HELP {name} {}", f.help);
            let _ = writeln!(s, "# TYPE {name} {}", f.kind);
            for l in &f.lines {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn fmt_labels(labels: &[(&str, &str)]) -> String {
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn fmt_value(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "NaN".into()
    }
}

fn u(v: &Value) -> f64 {
    v.as_u64()
        .map_or_else(|| v.as_f64().unwrap_or(0.0), |n| n as f64)
}

/// The text of every snapshot; `now_ms` for the report ages.
pub fn render(snapshots: &[Value], now_ms: u64) -> String {
    let mut out = Out::default();
    for snap in snapshots {
        let scope = snap["scope"].as_str().unwrap_or("");
        let alias = snap["peer_id"].as_str().unwrap_or("");
        let agent = [("scope", scope), ("alias", alias)];
        let up = if snap["status"] == "stopped" {
            0.0
        } else {
            1.0
        };
        out.sample(
            "dlslime_agent_up",
            "gauge",
            "1 while the agent reports, 0 once it said it stopped.",
            &agent,
            up,
        );
        let age = now_ms.saturating_sub(snap["reported_at_ms"].as_u64().unwrap_or(0)) as f64 / 1e3;
        out.sample(
            "dlslime_agent_report_age_seconds",
            "gauge",
            "Seconds since the agent's last snapshot.",
            &agent,
            age,
        );
        out.sample(
            "dlslime_agent_bandwidth_bits_per_second",
            "gauge",
            "EWMA (alpha 0.3) of the agent's completed bytes per second, in bits.",
            &agent,
            u(&snap["ewma_bandwidth_bps"]),
        );
        for row in snap["peers"].as_array().into_iter().flatten() {
            let peer = row["peer"].as_str().unwrap_or("");
            let labels = [("scope", scope), ("alias", alias), ("peer", peer)];
            if let Some(ops) = row["ops"].as_object() {
                for (op, o) in ops {
                    let l = [labels[0], labels[1], labels[2], ("op", op.as_str())];
                    out.sample(
                        "dlslime_ops_submitted_total",
                        "counter",
                        "Operations submitted.",
                        &l,
                        u(&o["submitted"]),
                    );
                    out.sample(
                        "dlslime_ops_completed_total",
                        "counter",
                        "Operations completed successfully.",
                        &l,
                        u(&o["completed"]),
                    );
                    out.sample(
                        "dlslime_ops_failed_total",
                        "counter",
                        "Operations that failed (timeouts and cancellations included).",
                        &l,
                        u(&o["failed"]),
                    );
                    out.sample(
                        "dlslime_ops_rejected_total",
                        "counter",
                        "Operations refused at submission.",
                        &l,
                        u(&o["rejected"]),
                    );
                    out.sample(
                        "dlslime_ops_pending",
                        "gauge",
                        "Operations submitted and not finished.",
                        &l,
                        u(&o["pending"]),
                    );
                    out.sample(
                        "dlslime_bytes_completed_total",
                        "counter",
                        "Bytes of completed operations.",
                        &l,
                        u(&o["completed_bytes"]),
                    );
                    out.sample(
                        "dlslime_bytes_failed_total",
                        "counter",
                        "Bytes of failed operations.",
                        &l,
                        u(&o["failed_bytes"]),
                    );
                    out.histogram(
                        "dlslime_op_latency_seconds",
                        "Submission to completion, by operation kind.",
                        &l,
                        &o["latency_ns"],
                    );
                }
            }
            if let Some(errors) = row["errors"].as_object() {
                for (status, n) in errors {
                    let l = [labels[0], labels[1], labels[2], ("status", status.as_str())];
                    out.sample(
                        "dlslime_errors_total",
                        "counter",
                        "Failed or refused operations by status.",
                        &l,
                        u(n),
                    );
                }
            }
        }
        for m in snap["rpc"].as_array().into_iter().flatten() {
            let l = [
                ("scope", scope),
                ("alias", alias),
                ("side", m["side"].as_str().unwrap_or("")),
                ("method", m["method"].as_str().unwrap_or("")),
            ];
            out.sample(
                "dlslime_rpc_calls_total",
                "counter",
                "SlimeRPC calls per method.",
                &l,
                u(&m["calls"]),
            );
            out.sample(
                "dlslime_rpc_errors_total",
                "counter",
                "SlimeRPC calls that failed or raised.",
                &l,
                u(&m["errors"]),
            );
            out.sample(
                "dlslime_rpc_timeouts_total",
                "counter",
                "SlimeRPC waits for a reply that timed out (client side).",
                &l,
                u(&m["timeouts"]),
            );
            out.histogram(
                "dlslime_rpc_latency_seconds",
                "SlimeRPC handler time (server side) or request to reply (client side).",
                &l,
                &m["latency_ns"],
            );
        }
        for (kind, n) in snap["retries"].as_object().into_iter().flatten() {
            out.sample(
                "dlslime_retries_total",
                "counter",
                "What the engine did again, by kind (tcp_redial, qp_ready_resend, ring_*).",
                &[("scope", scope), ("alias", alias), ("kind", kind.as_str())],
                u(n),
            );
        }
        for nic in snap["nics"].as_array().into_iter().flatten() {
            let name = nic["nic"].as_str().unwrap_or("");
            let port = match &nic["port"] {
                Value::String(p) => p.clone(),
                p => p.to_string(),
            };
            for (set, family, help) in [
                (
                    "counters",
                    "dlslime_nic_port_counter",
                    "RDMA port counters from sysfs (ports/N/counters; *_data in 4-byte units).",
                ),
                (
                    "hw_counters",
                    "dlslime_nic_hw_counter",
                    "RDMA driver counters from sysfs (ports/N/hw_counters).",
                ),
            ] {
                for (c, n) in nic[set].as_object().into_iter().flatten() {
                    let l = [
                        ("scope", scope),
                        ("alias", alias),
                        ("nic", name),
                        ("port", port.as_str()),
                        ("counter", c.as_str()),
                    ];
                    out.sample(family, "untyped", help, &l, u(n));
                }
            }
        }
    }
    out.text()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn histogram_buckets_are_cumulative_and_exact() {
        let snap = json!({
            "scope": "s", "peer_id": "a\"b", "status": "alive", "reported_at_ms": 1000,
            "ewma_bandwidth_bps": 8.0,
            "peers": [{"peer": "p", "errors": {"timeout": 2},
                "ops": {"write": {"submitted": 3, "completed": 3, "failed": 0, "rejected": 0,
                    "pending": 0, "completed_bytes": 30, "failed_bytes": 0,
                    "latency_ns": {"count": 3, "sum": 3000,
                        "buckets": [[127, 1], [1023, 1], [1279, 1]]}}}}],
            "rpc": [],
        });
        let t = render(&[snap], 3000);
        assert!(
            t.contains("dlslime_agent_up{scope=\"s\",alias=\"a\\\"b\"} 1\n"),
            "{t}"
        );
        assert!(t.contains("dlslime_agent_report_age_seconds{scope=\"s\",alias=\"a\\\"b\"} 2\n"));
        assert!(t.contains(",op=\"write\",le=\"0.000000128\"} 1\n"), "{t}");
        assert!(t.contains(",op=\"write\",le=\"0.000001024\"} 2\n"), "{t}");
        assert!(t.contains(",op=\"write\",le=\"0.000002048\"} 3\n"), "{t}");
        assert!(t.contains(",op=\"write\",le=\"+Inf\"} 3\n"));
        assert!(t.contains("dlslime_op_latency_seconds_sum{scope=\"s\",alias=\"a\\\"b\",peer=\"p\",op=\"write\"} 0.000003\n"));
        assert!(t.contains(
            "dlslime_errors_total{scope=\"s\",alias=\"a\\\"b\",peer=\"p\",status=\"timeout\"} 2\n"
        ));
        assert_eq!(
            t.matches("# TYPE dlslime_op_latency_seconds histogram")
                .count(),
            1
        );
    }

    #[test]
    fn retries_rpc_timeouts_and_nic_counters() {
        let snap = json!({
            "scope": "", "peer_id": "a", "reported_at_ms": 1000, "peers": [],
            "rpc": [{"side": "client", "method": "echo", "calls": 4, "errors": 1,
                     "timeouts": 2, "latency_ns": {"count": 4, "sum": 0, "buckets": []}}],
            "retries": {"tcp_redial": 3, "qp_ready_resend": 0},
            "nics": [{"nic": "rxe0", "port": 1, "counters": {"port_xmit_data": 256},
                      "hw_counters": {"sent_pkts": 9}}],
        });
        let t = render(&[snap], 1000);
        assert!(t.contains("dlslime_rpc_timeouts_total{scope=\"\",alias=\"a\",side=\"client\",method=\"echo\"} 2\n"), "{t}");
        assert!(
            t.contains("dlslime_retries_total{scope=\"\",alias=\"a\",kind=\"tcp_redial\"} 3\n"),
            "{t}"
        );
        assert!(t.contains("dlslime_nic_port_counter{scope=\"\",alias=\"a\",nic=\"rxe0\",port=\"1\",counter=\"port_xmit_data\"} 256\n"), "{t}");
        assert!(t.contains("dlslime_nic_hw_counter{scope=\"\",alias=\"a\",nic=\"rxe0\",port=\"1\",counter=\"sent_pkts\"} 9\n"), "{t}");
        assert_eq!(
            t.matches("# TYPE dlslime_nic_hw_counter untyped").count(),
            1
        );
    }
}
