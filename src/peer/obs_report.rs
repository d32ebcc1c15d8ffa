//! The agent's observability reporter (the original's `ObsReporter`): while
//! [`crate::obs`] records, the control thread publishes the process snapshot plus the
//! agent's identity, connections and an EWMA of its bandwidth at `obs:peer:{alias}`
//! every `obs_interval`, with a TTL so that a dead agent's entry expires; at shutdown
//! one last snapshot says `"status": "stopped"`. NanoCtrl serves them as `/metrics` and
//! `nanoctrl obs` prints them.

use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};

use super::agent::Inner;
use crate::obs;
use crate::warn_log;

/// Largest snapshot published; beyond it the per-endpoint rows go, then peer rows.
pub const MAX_PUBLISHED: usize = 256 * 1024;
/// The original's EWMA weight of the newest sample.
const ALPHA: f64 = 0.3;

/// What the reporter keeps between ticks.
#[derive(Default)]
pub(super) struct Reporter {
    state: Mutex<Ewma>,
}

#[derive(Default)]
struct Ewma {
    start_ms: u64,
    last_bytes: u64,
    last_ms: u64,
    bps: f64,
}

impl Inner {
    fn obs_ttl(&self, stopped: bool) -> Duration {
        let step3 = 3 * self.opts.obs_interval;
        match (stopped, self.opts.obs_ttl) {
            (false, Some(t)) => t,
            (false, None) => step3.max(Duration::from_secs(180)),
            (true, Some(t)) => t.min(step3.max(Duration::from_secs(10))),
            (true, None) => step3.max(Duration::from_secs(10)),
        }
    }

    /// Publishes one snapshot (nothing when recording is off).
    pub(super) fn publish_obs(&self, stopped: bool) {
        let snap = obs::snapshot();
        if snap["enabled"] != Value::Bool(true) {
            return;
        }
        let doc = self.obs_document(snap, stopped);
        let text = bounded(doc);
        let key = self.keys.obs(&self.alias);
        if let Err(e) = self.store.set_px(&key, &text, self.obs_ttl(stopped)) {
            if !stopped {
                warn_log!(
                    "PeerAgent {}: could not publish obs snapshot: {e}",
                    self.alias
                );
            }
        }
    }

    fn obs_document(&self, mut snap: Value, stopped: bool) -> Value {
        let now = obs::now_ms();
        let bytes = snap["summary"]["completed_bytes_total"]
            .as_u64()
            .unwrap_or(0);
        let bps = {
            let mut e = self.obs_reporter.state.lock();
            if e.start_ms == 0 {
                e.start_ms = now;
                e.last_ms = now;
                e.last_bytes = bytes;
            } else {
                let dt_ms = now.saturating_sub(e.last_ms).max(1);
                let instant =
                    8.0 * bytes.saturating_sub(e.last_bytes) as f64 * 1000.0 / dt_ms as f64;
                e.bps = ALPHA * instant + (1.0 - ALPHA) * e.bps;
                e.last_ms = now;
                e.last_bytes = bytes;
            }
            if stopped {
                0.0
            } else {
                e.bps
            }
        };
        let start_ms = self.obs_reporter.state.lock().start_ms;
        let connections: Vec<Value> = self
            .peers
            .lock()
            .iter()
            .map(|(peer, slot)| {
                json!({
                    "peer": peer,
                    "state": slot.state.as_str(),
                    "connected": slot.state == super::links::ConnState::Connected,
                    "transport": slot.connected_transport.map(|t| t.as_str()),
                })
            })
            .collect();
        let o = snap.as_object_mut().expect("snapshot is an object");
        o.insert("peer_id".into(), self.alias.clone().into());
        o.insert(
            "scope".into(),
            self.scope.clone().unwrap_or_default().into(),
        );
        o.insert(
            "session_id".into(),
            format!("{}:{}:{start_ms}", self.alias, std::process::id()).into(),
        );
        o.insert("host".into(), self.address.clone().into());
        o.insert("reported_at_ms".into(), now.into());
        o.insert(
            "interval_ms".into(),
            (self.opts.obs_interval.as_millis() as u64).into(),
        );
        o.insert(
            "status".into(),
            if stopped { "stopped" } else { "alive" }.into(),
        );
        o.insert("ewma_bandwidth_bps".into(), bps.into());
        o.insert("connections".into(), connections.into());
        snap
    }
}

/// The document as text, at most [`MAX_PUBLISHED`] bytes: the endpoint rows go first,
/// then peer rows (the busiest are kept), marked `"truncated": true`.
fn bounded(mut doc: Value) -> String {
    let text = doc.to_string();
    if text.len() <= MAX_PUBLISHED {
        return text;
    }
    doc["endpoints"] = json!([]);
    doc["truncated"] = true.into();
    loop {
        let text = doc.to_string();
        let peers = doc["peers"].as_array_mut();
        match peers {
            _ if text.len() <= MAX_PUBLISHED => return text,
            Some(p) if !p.is_empty() => {
                p.sort_by_key(|r| std::cmp::Reverse(peer_bytes(r)));
                let keep = p.len() / 2;
                p.truncate(keep);
            }
            _ => {
                doc["rpc"] = json!([]);
                return doc.to_string();
            }
        }
    }
}

fn peer_bytes(row: &Value) -> u64 {
    row["ops"].as_object().map_or(0, |ops| {
        ops.values()
            .filter_map(|o| o["completed_bytes"].as_u64())
            .sum()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_documents_are_cut_to_the_bound() {
        let row = |i: u64| json!({"peer": format!("p{i}"), "ops": {"read": {"completed_bytes": i}}, "pad": "x".repeat(1000)});
        let doc = json!({
            "endpoints": (0..300).map(row).collect::<Vec<_>>(),
            "peers": (0..600).map(row).collect::<Vec<_>>(),
            "rpc": [],
        });
        let text = bounded(doc);
        assert!(text.len() <= MAX_PUBLISHED);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["truncated"], true);
        assert!(v["endpoints"].as_array().unwrap().is_empty());
        // the busiest peer is kept
        assert!(v["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["peer"] == "p599"));
    }
}
