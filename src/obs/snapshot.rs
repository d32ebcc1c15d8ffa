//! The JSON snapshot of every counter in the process (`obs_snapshot()` in the original):
//! a summary in the original's shape, then per endpoint, per peer and per RPC method.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::counters::{EndpointValues, OpKind};
use super::histogram::{bucket_high, HistSnapshot};
use super::registry::registry;
use super::switch::enabled;
use crate::error::Status;

/// Version of the snapshot's layout (the original's `schema_version`).
pub const SCHEMA_VERSION: u64 = 1;
/// Endpoints listed one by one at most; the rest count only in their peer's totals.
pub const MAX_ENDPOINTS: usize = 256;

/// The snapshot: `{"enabled": false}` when recording is off.
pub fn snapshot() -> Value {
    if !enabled() {
        return json!({ "enabled": false });
    }
    let (endpoints, peers, methods) = {
        let mut r = registry().lock();
        r.sweep();
        let live: Vec<_> = r
            .live
            .iter()
            .map(|s| (s.id, s.transport, s.peer(), s.read()))
            .collect();
        let retired = r.retired.clone();
        let methods: Vec<_> = r
            .methods
            .iter()
            .map(|m| (m.side, m.name.clone(), m.read()))
            .filter(|m| m.2.calls + m.2.timeouts > 0)
            .collect();
        (live, retired, methods)
    };
    let retries = super::retries::retry_counts();
    let mut by_peer: BTreeMap<Arc<str>, (Vec<&'static str>, EndpointValues)> = BTreeMap::new();
    let mut total = EndpointValues::default();
    let groups = endpoints
        .iter()
        .map(|(_, t, p, v)| (*t, p.clone(), v))
        .chain(peers.iter().map(|((t, p), v)| (*t, p.clone(), v)));
    for (t, p, v) in groups {
        let e = by_peer.entry(p).or_default();
        if !e.0.contains(&t) {
            e.0.push(t);
        }
        e.1.merge(v);
        total.merge(v);
    }
    let ep_rows: Vec<Value> = endpoints
        .iter()
        .take(MAX_ENDPOINTS)
        .map(|(id, t, p, v)| {
            let mut m = group(v);
            m.insert("id".into(), (*id).into());
            m.insert("transport".into(), (*t).into());
            m.insert("peer".into(), (**p).into());
            Value::Object(m)
        })
        .collect();
    let peer_rows: Vec<Value> = by_peer
        .iter()
        .map(|(p, (ts, v))| {
            let mut m = group(v);
            m.insert("peer".into(), (**p).into());
            m.insert("transports".into(), json!(ts));
            Value::Object(m)
        })
        .collect();
    let rpc: Vec<Value> = methods
        .iter()
        .map(|(side, name, v)| {
            json!({
                "side": side,
                "method": &**name,
                "calls": v.calls,
                "errors": v.errors,
                "timeouts": v.timeouts,
                "latency_ns": hist(&v.latency),
            })
        })
        .collect();
    json!({
        "enabled": true,
        "schema_version": SCHEMA_VERSION,
        "pid": std::process::id(),
        "reported_at_ms": now_ms(),
        "summary": summary(&total, &retries),
        "retries": retries.iter().map(|(n, c)| (n.to_string(), Value::from(*c))).collect::<Map<String, Value>>(),
        "endpoints": ep_rows,
        "endpoints_truncated": endpoints.len() > MAX_ENDPOINTS,
        "peers": peer_rows,
        "rpc": rpc,
        "nics": super::nics::nic_counters(std::path::Path::new(super::nics::SYSFS_IB)),
    })
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The original's summary fields (those that have a meaning here) plus the totals.
fn summary(v: &EndpointValues, retries: &[(&str, u64)]) -> Value {
    let sum = |f: fn(&super::counters::OpValues) -> u64| v.ops.iter().map(f).sum::<u64>();
    let pending_by_op: Map<String, Value> = OpKind::ALL
        .iter()
        .map(|k| (k.name().to_string(), v.ops[*k as usize].pending().into()))
        .collect();
    json!({
        "batch_total": sum(|o| o.submitted),
        "submitted_bytes_total": sum(|o| o.submitted_bytes),
        "completed_total": sum(|o| o.completed),
        "completed_bytes_total": sum(|o| o.completed_bytes),
        "failed_total": sum(|o| o.failed),
        "failed_bytes_total": sum(|o| o.failed_bytes),
        "rejected_total": sum(|o| o.rejected),
        "pending_ops": sum(|o| o.pending()),
        "error_total": v.errors.iter().map(|e| e.1).sum::<u64>(),
        "timeout_total": v.errors_of(Status::Timeout),
        "cancelled_total": v.errors_of(Status::Cancelled),
        "retry_total": retries.iter().map(|r| r.1).sum::<u64>(),
        "pending_by_op": pending_by_op,
    })
}

/// The fields of an endpoint or peer row.
fn group(v: &EndpointValues) -> Map<String, Value> {
    let mut ops = Map::new();
    for k in OpKind::ALL {
        let o = &v.ops[k as usize];
        if o.submitted + o.rejected == 0 {
            continue;
        }
        ops.insert(
            k.name().into(),
            json!({
                "submitted": o.submitted,
                "submitted_bytes": o.submitted_bytes,
                "completed": o.completed,
                "completed_bytes": o.completed_bytes,
                "failed": o.failed,
                "failed_bytes": o.failed_bytes,
                "rejected": o.rejected,
                "pending": o.pending(),
                "latency_ns": hist(&o.latency),
            }),
        );
    }
    let errors: Map<String, Value> = v
        .errors
        .iter()
        .map(|(s, n)| (status_key(*s), (*n).into()))
        .collect();
    let mut m = Map::new();
    m.insert("ops".into(), Value::Object(ops));
    m.insert("errors".into(), Value::Object(errors));
    m.insert("timeouts".into(), v.errors_of(Status::Timeout).into());
    m.insert(
        "cancellations".into(),
        v.errors_of(Status::Cancelled).into(),
    );
    m.insert("retries".into(), v.retries.into());
    m
}

/// A status as a snapshot key: `timeout`, `peer_disconnected`...
pub fn status_key(s: Status) -> String {
    let mut out = String::new();
    for (i, c) in format!("{s:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// A histogram: count, sum, max, p50/p90/p99 (bucket upper bounds) and the non-empty
/// buckets as `[upper bound, count]`.
fn hist(h: &HistSnapshot) -> Value {
    let buckets: Vec<Value> = h
        .buckets
        .iter()
        .enumerate()
        .filter(|(_, &n)| n > 0)
        .map(|(i, &n)| json!([bucket_high(i), n]))
        .collect();
    json!({
        "count": h.count,
        "sum": h.sum,
        "max": h.max,
        "p50": h.quantile(0.5),
        "p90": h.quantile(0.9),
        "p99": h.quantile(0.99),
        "buckets": buckets,
    })
}
