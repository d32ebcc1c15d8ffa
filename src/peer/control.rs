//! The agent's one control thread: the stream mailbox (XREAD BLOCK from `0-0`), the
//! cleanup inbox, the heartbeat (re-registering on `not_found`), connect retries and
//! liveness probes of connected endpoints, all in one loop. This file reads and checks
//! the messages; `handshake` reacts to them.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::agent::Inner;
use super::links::PeerView;
use super::negotiate::{Transport, TransportRequest};
use super::store::Store;
use crate::error::{Error, Result};
use crate::{info_log, warn_log};

/// Messages read from the stream per XREAD.
const XREAD_COUNT: usize = 100;
/// Cleanup notices handled per loop.
const INBOX_BATCH: usize = 100;
/// Period of the liveness probes of connected endpoints.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// Starts the control thread (`dlslime-peer-{alias}`).
pub(super) fn spawn(inner: Arc<Inner>) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("dlslime-peer-{}", inner.alias))
        .spawn(move || run(inner))
        .map_err(|e| Error::io("spawn PeerAgent control thread", e))
}

fn run(inner: Arc<Inner>) {
    // A connection of its own: XREAD BLOCK holds it for the whole block.
    let block = inner.opts.poll_interval.max(Duration::from_millis(1));
    let mbox = Store::open(inner.store.target().clone(), block + Duration::from_secs(5));
    let stream = inner.keys.stream(&inner.alias);
    let inbox = inner.keys.inbox(&inner.alias);
    // Read from the start: a peer may have dialled before this agent existed. The
    // stream is never deleted at start-up (only by this agent's own shutdown/cleanup).
    let mut last_id = "0-0".to_string();
    let hb = inner.opts.heartbeat_interval;
    let mut next_hb = Instant::now() + hb;
    let mut next_probe = Instant::now() + PROBE_EVERY;
    let mut redis_down_since: Option<Instant> = None;
    let mut hb_failing = false;
    while !inner.shutdown.load(Ordering::Acquire) {
        match mbox.xread(&stream, &last_id, XREAD_COUNT, block) {
            Ok(messages) => {
                if redis_down_since.take().is_some() {
                    info_log!("PeerAgent {}: Redis reachable again", inner.alias);
                }
                for m in messages {
                    handle_message(&inner, &m.id, &m.fields);
                    last_id = m.id;
                }
            }
            Err(e) => {
                if redis_down_since.is_none() {
                    warn_log!(
                        "PeerAgent {}: mailbox read failed: {e}; retrying",
                        inner.alias
                    );
                    redis_down_since = Some(Instant::now());
                }
                mbox.reset();
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if inner.shutdown.load(Ordering::Acquire) {
            break;
        }
        drain_inbox(&inner, &mbox, &inbox);
        let now = Instant::now();
        if now >= next_hb {
            inner.heartbeat(&mut hb_failing);
            next_hb = Instant::now() + hb;
        }
        inner.retry_due();
        if now >= next_probe {
            inner.probe_connected();
            next_probe = Instant::now() + PROBE_EVERY;
        }
    }
}

fn malformed(inner: &Inner, id: &str, why: &str) {
    inner
        .stats
        .malformed_messages
        .fetch_add(1, Ordering::Relaxed);
    warn_log!(
        "PeerAgent {}: skipping malformed mailbox message {id}: {why}",
        inner.alias
    );
}

fn handle_message(inner: &Arc<Inner>, id: &str, map: &HashMap<String, String>) {
    let Some(kind) = map.get("type") else {
        return malformed(inner, id, "no \"type\" field");
    };
    let Some(peer) = map.get("peer") else {
        return malformed(inner, id, "no \"peer\" field");
    };
    if peer.is_empty() || *peer == inner.alias {
        return malformed(inner, id, "\"peer\" is empty or this agent itself");
    }
    match kind.as_str() {
        "connect_peer" => inner.on_connect_peer(peer),
        "qp_ready" => {
            let (Some(qp_info), Some(meta)) = (map.get("qp_info"), map.get("conn_meta")) else {
                return malformed(inner, id, "qp_ready without qp_info/conn_meta");
            };
            let qp_info: Value = match serde_json::from_str(qp_info) {
                Ok(v @ Value::Object(_)) => v,
                _ => return malformed(inner, id, "qp_info is not a JSON object"),
            };
            let meta: Value = match serde_json::from_str(meta) {
                Ok(v @ Value::Object(_)) => v,
                _ => return malformed(inner, id, "conn_meta is not a JSON object"),
            };
            let (Some(instance), Some(nonce)) = (
                meta.get("src_instance").and_then(Value::as_u64),
                meta.get("src_nonce").and_then(Value::as_u64),
            ) else {
                // The original DLSlime agent's qp_ready: well formed, but its endpoints
                // cannot talk to ours. Its connection fails at once, saying why.
                return inner.on_original_peer(peer, original_offers_tcp(&meta, &qp_info));
            };
            let view = PeerView {
                instance,
                nonce,
                host_id: meta
                    .get("host_id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                request: TransportRequest::from_wire(
                    meta.get("transport_request")
                        .and_then(Value::as_str)
                        .unwrap_or("auto"),
                ),
                transport: qp_info
                    .get("transport")
                    .and_then(Value::as_str)
                    .and_then(Transport::parse),
                rdma: meta.get("rdma").and_then(Value::as_bool).unwrap_or(false),
                qp_num: meta.get("qp_num").and_then(Value::as_u64).unwrap_or(0) as usize,
                info: qp_info,
            };
            let dst_instance = meta.get("dst_instance").and_then(Value::as_u64);
            let dst_nonce = meta.get("dst_nonce").and_then(Value::as_u64);
            inner.on_qp_ready(peer, view, dst_instance, dst_nonce);
        }
        other => malformed(inner, id, &format!("unknown message type {other:?}")),
    }
}

/// Whether an original agent's `qp_ready` offers its TCP endpoint (the 0.1.23 wheel:
/// `conn_meta.transport` "tcp", `qp_info` `{host, port, mr_info}`) rather than RDMA.
fn original_offers_tcp(meta: &Value, qp_info: &Value) -> bool {
    meta.get("transport").and_then(Value::as_str) == Some("tcp")
        || (qp_info.get("host").is_some() && qp_info.get("port").is_some())
}

/// Cleanup notices (`{"type":"cleanup","peer":X}`, LPUSHed by NanoCtrl): X shut down.
fn drain_inbox(inner: &Arc<Inner>, mbox: &Store, inbox: &str) {
    for _ in 0..INBOX_BATCH {
        let Ok(Some(msg)) = mbox.rpop(inbox) else {
            return;
        };
        let v: Value = match serde_json::from_str(&msg) {
            Ok(v) => v,
            Err(_) => {
                malformed(inner, "inbox", "notice is not JSON");
                continue;
            }
        };
        let (Some("cleanup"), Some(peer)) = (
            v.get("type").and_then(Value::as_str),
            v.get("peer").and_then(Value::as_str),
        ) else {
            malformed(
                inner,
                "inbox",
                "notice is not {\"type\":\"cleanup\",\"peer\":…}",
            );
            continue;
        };
        inner.stats.cleanup_notices.fetch_add(1, Ordering::Relaxed);
        info_log!(
            "PeerAgent {}: {peer} shut down (cleanup notice)",
            inner.alias
        );
        inner.on_cleanup_notice(peer);
    }
}
