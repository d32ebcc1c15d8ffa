//! The agent's one control thread: the stream mailbox (XREAD BLOCK from `0-0`), the
//! cleanup inbox, the heartbeat (re-registering on `not_found`), connect retries and
//! liveness probes of connected endpoints, all in one loop.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::streams::StreamReadReply;
use redis::Value as RValue;
use serde_json::{json, Value};

use super::store::Store;
use super::{
    agree_transport, ep_alive, register_once, ConnState, Inner, PeerView, Transport,
    TransportRequest, Work,
};
use crate::error::Status;
use crate::{info_log, warn_log};

pub(super) fn run(inner: Arc<Inner>) {
    // A connection of its own: XREAD BLOCK holds it for the whole block.
    let block = inner.opts.poll_interval.max(Duration::from_millis(1));
    let mbox = match Store::open(inner.store.url(), block + Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => {
            warn_log!(
                "PeerAgent {}: control thread cannot open Redis: {e}",
                inner.alias
            );
            return;
        }
    };
    let stream = inner.keys.stream(&inner.alias);
    let inbox = inner.keys.inbox(&inner.alias);
    // Read from the start: a peer may have dialled before this agent existed. The
    // stream is never deleted at start-up (only by this agent's own shutdown/cleanup).
    let mut last_id = "0-0".to_string();
    let hb = inner.opts.heartbeat_interval;
    let mut next_hb = Instant::now() + hb;
    let mut next_probe = Instant::now() + Duration::from_millis(500);
    let mut redis_down_since: Option<Instant> = None;
    let mut hb_failing = false;
    while !inner.shutdown.load(Ordering::Acquire) {
        let r = mbox.with("XREAD", |c| {
            redis::cmd("XREAD")
                .arg("COUNT")
                .arg(100)
                .arg("BLOCK")
                .arg(block.as_millis() as u64)
                .arg("STREAMS")
                .arg(&stream)
                .arg(&last_id)
                .query::<Option<StreamReadReply>>(c)
        });
        match r {
            Ok(reply) => {
                if redis_down_since.take().is_some() {
                    info_log!("PeerAgent {}: Redis reachable again", inner.alias);
                }
                for k in reply.map(|r| r.keys).unwrap_or_default() {
                    for m in k.ids {
                        last_id = m.id.clone();
                        handle_message(&inner, &m.id, &m.map);
                    }
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
            heartbeat(&inner, &mut hb_failing);
            next_hb = Instant::now() + hb;
        }
        retries(&inner);
        if now >= next_probe {
            probe(&inner);
            next_probe = Instant::now() + Duration::from_millis(500);
        }
    }
}

fn text(v: &RValue) -> Option<String> {
    redis::from_redis_value_ref::<String>(v).ok()
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

fn handle_message(inner: &Arc<Inner>, id: &str, map: &HashMap<String, RValue>) {
    let Some(kind) = map.get("type").and_then(text) else {
        return malformed(inner, id, "no \"type\" field");
    };
    let Some(peer) = map.get("peer").and_then(text) else {
        return malformed(inner, id, "no \"peer\" field");
    };
    if peer.is_empty() || peer == inner.alias {
        return malformed(inner, id, "\"peer\" is empty or this agent itself");
    }
    match kind.as_str() {
        "connect_peer" => on_connect_peer(inner, &peer),
        "qp_ready" => {
            let qp_info = map.get("qp_info").and_then(text);
            let meta = map.get("conn_meta").and_then(text);
            let (Some(qp_info), Some(meta)) = (qp_info, meta) else {
                return malformed(inner, id, "qp_ready without qp_info/conn_meta");
            };
            let qp_info: Value = match serde_json::from_str(&qp_info) {
                Ok(v @ Value::Object(_)) => v,
                _ => return malformed(inner, id, "qp_info is not a JSON object"),
            };
            let meta: Value = match serde_json::from_str(&meta) {
                Ok(v @ Value::Object(_)) => v,
                _ => return malformed(inner, id, "conn_meta is not a JSON object"),
            };
            let (Some(instance), Some(nonce)) = (
                meta.get("src_instance").and_then(Value::as_u64),
                meta.get("src_nonce").and_then(Value::as_u64),
            ) else {
                return malformed(
                    inner,
                    id,
                    "conn_meta lacks src_instance/src_nonce (a peer speaking the original RDMA-only protocol?)",
                );
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
                info: qp_info,
            };
            let dst_instance = meta.get("dst_instance").and_then(Value::as_u64);
            let dst_nonce = meta.get("dst_nonce").and_then(Value::as_u64);
            on_qp_ready(inner, &peer, view, dst_instance, dst_nonce);
        }
        other => malformed(inner, id, &format!("unknown message type {other:?}")),
    }
}

/// NanoCtrl relayed our own `desired_topology`: dial `peer` if a `connect_to` for it is
/// still pending (otherwise this is a repeat, or a replay from an earlier incarnation).
fn on_connect_peer(inner: &Arc<Inner>, peer: &str) {
    let mut work = Work::default();
    {
        let mut peers = inner.peers.lock();
        let Some(slot) = peers.get_mut(peer) else {
            return;
        };
        if !slot.pending || slot.state == ConnState::Connected {
            return;
        }
        inner.dial(peer, slot, &mut work);
    }
    inner.run_work(work);
}

fn stale(inner: &Inner, peer: &str, why: &str) {
    inner.stats.stale_messages.fetch_add(1, Ordering::Relaxed);
    crate::log_at!(
        3,
        "debug",
        "PeerAgent {}: stale qp_ready from {peer} ignored: {why}",
        inner.alias
    );
}

/// The handshake. Each side connects its endpoint to the peer's only on a message that
/// names its *current* endpoint (`dst_nonce`), i.e. once the peer holds its info too; a
/// message carrying peer info this endpoint has not answered yet is answered once.
/// Endpoints connect once, so a peer that restarted (higher instance) or re-created its
/// endpoint (higher nonce) makes this side start over with a new endpoint; messages from
/// older incarnations are ignored.
fn on_qp_ready(
    inner: &Arc<Inner>,
    peer: &str,
    m: PeerView,
    dst_instance: Option<u64>,
    dst_nonce: Option<u64>,
) {
    if let Some(di) = dst_instance {
        if di != inner.instance {
            return stale(
                inner,
                peer,
                "addressed to another incarnation of this agent",
            );
        }
    }
    // Replies only go to registered agents, so replays of dead peers' messages do not
    // leave streams behind in Redis.
    let key = inner.keys.agent(peer);
    let registered = inner
        .store
        .with("EXISTS agent", |c| {
            redis::cmd("EXISTS").arg(&key).query::<i64>(c)
        })
        .map(|n| n > 0)
        .unwrap_or(true);
    if !registered {
        return stale(inner, peer, "the sender is not registered (gone)");
    }
    let mut work = Work::default();
    {
        let mut peers = inner.peers.lock();
        let slot = peers
            .entry(peer.to_string())
            .or_insert_with(super::Slot::new);
        if m.instance < slot.known_instance {
            drop(peers);
            return stale(inner, peer, "from an older incarnation of the peer");
        }
        if m.instance > slot.known_instance {
            if slot.known_instance != 0 && slot.ep.is_some() {
                inner.teardown(
                    slot,
                    Status::PeerDisconnected,
                    "the peer restarted",
                    &mut work,
                );
            }
            slot.known_instance = m.instance;
            slot.peer = None;
        }
        if let Some(v) = &slot.peer {
            if m.nonce < v.nonce {
                drop(peers);
                return stale(inner, peer, "for an older endpoint of the peer");
            }
        }
        let agreed = agree_transport(slot.request, m.request, &inner.host_id, &m.host_id);
        let (mi, mn, mt) = (m.instance, m.nonce, m.transport);
        let info = m.info.clone();
        slot.peer = Some(m);
        let agreed = match agreed {
            Ok(t) => t,
            Err(e) => {
                // tell the peer what this side wants, so it fails the same way
                inner.queue_send(peer, slot, &mut work);
                inner.fail(slot, e, &mut work);
                drop(peers);
                inner.run_work(work);
                return;
            }
        };
        if let Some((bi, bn)) = slot.ep.as_ref().and_then(|e| e.bound) {
            if (bi, bn) != (mi, mn) {
                inner.teardown(
                    slot,
                    Status::PeerDisconnected,
                    "the peer re-created its endpoint",
                    &mut work,
                );
            }
        }
        if slot.ep.as_ref().is_some_and(|e| e.transport != agreed) {
            let e = slot.ep.take().unwrap();
            work.dead.push(e.ep);
        }
        if slot.ep.is_none() {
            match inner.new_endpoint(agreed) {
                Ok(e) => slot.ep = Some(e),
                Err(e) => {
                    inner.fail(slot, e, &mut work);
                    drop(peers);
                    inner.run_work(work);
                    return;
                }
            }
        }
        if slot.state != ConnState::Connected {
            slot.state = ConnState::Connecting;
            slot.error = None;
        }
        inner.queue_send(peer, slot, &mut work);
        let ep = slot.ep.as_mut().unwrap();
        if dst_nonce == Some(ep.nonce) && mt == Some(ep.transport) && ep.bound.is_none() {
            ep.bound = Some((mi, mn));
            work.connects
                .push((peer.to_string(), ep.nonce, ep.ep.clone(), info));
        }
    }
    inner.run_work(work);
}

/// Cleanup notices (`{"type":"cleanup","peer":X}`, LPUSHed by NanoCtrl): X shut down.
fn drain_inbox(inner: &Arc<Inner>, mbox: &Store, inbox: &str) {
    for _ in 0..100 {
        let r = mbox.with("RPOP inbox", |c| {
            redis::cmd("RPOP").arg(inbox).query::<Option<String>>(c)
        });
        let msg = match r {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(_) => return,
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
        let mut work = Work::default();
        {
            let mut peers = inner.peers.lock();
            if let Some(slot) = peers.get_mut(peer) {
                let was_pending = slot.pending && slot.state != ConnState::Connected;
                inner.teardown(
                    slot,
                    Status::PeerDisconnected,
                    "the peer shut down",
                    &mut work,
                );
                slot.peer = None;
                if was_pending {
                    // Still wanted: dial again; the message waits in the peer's stream
                    // for its next incarnation.
                    slot.retry_at = Some(Instant::now());
                } else {
                    slot.pending = false;
                }
            }
        }
        if !work.dead.is_empty() || !work.sends.is_empty() {
            inner.run_work(work);
        }
        let keep = inner.peers.lock().get(peer).is_some_and(|s| s.pending);
        if !keep {
            inner.desired.lock().remove(peer);
        }
    }
}

fn heartbeat(inner: &Arc<Inner>, failing: &mut bool) {
    let body = inner.scope_body(json!({"entity_type": "agent", "entity_id": inner.alias}));
    let r = inner.http.post("/heartbeat", &body);
    let status = r.as_ref().ok().and_then(|r| {
        r.body
            .get("status")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    match (&r, status.as_deref()) {
        (Ok(r), Some("ok")) if r.code == 200 => {
            if std::mem::take(failing) {
                info_log!("PeerAgent {}: heartbeats succeed again", inner.alias);
            }
            // refresh the liveness fields a successor checks (see stale_holder)
            let _ = inner.publish_record();
        }
        (Ok(_), Some("not_found")) => {
            warn_log!(
                "PeerAgent {}: NanoCtrl lost this agent's record; registering again",
                inner.alias
            );
            reregister(inner);
        }
        _ => {
            // one line per outage, not one per beat
            if !std::mem::replace(failing, true) {
                match r {
                    Ok(r) => warn_log!(
                        "PeerAgent {}: heartbeat answered {}: {} (retrying every {:?})",
                        inner.alias,
                        r.code,
                        r.body,
                        inner.opts.heartbeat_interval
                    ),
                    Err(e) => warn_log!(
                        "PeerAgent {}: heartbeat failed: {e} (retrying every {:?})",
                        inner.alias,
                        inner.opts.heartbeat_interval
                    ),
                }
            }
        }
    }
}

/// Registers again under the same alias (Redis lost the record, or it expired) and
/// republishes the resource record, every memory region and the desired topology.
/// Connections are kept: endpoints do not depend on Redis.
fn reregister(inner: &Arc<Inner>) {
    let ip = inner.address.clone();
    match register_once(
        &inner.http,
        Some(&inner.alias),
        inner.scope.as_deref(),
        &ip,
        &inner.host_id,
        inner.opts.heartbeat_interval,
    ) {
        Ok(_) => {}
        Err(e) => {
            warn_log!("PeerAgent {}: re-registration failed: {e}", inner.alias);
            return;
        }
    }
    inner.stats.reregistrations.fetch_add(1, Ordering::Relaxed);
    let mut ok = inner.publish_record().is_ok();
    let regions: Vec<_> = inner
        .regions
        .lock()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (name, rec) in regions {
        ok &= inner.publish_region(&name, &rec).is_ok();
    }
    if !inner.desired.lock().is_empty() {
        inner.post_topology();
    }
    if ok {
        info_log!("PeerAgent {}: registered again", inner.alias);
    }
}

/// Re-dials connections whose retry time came (after a failed connect or XADD).
fn retries(inner: &Arc<Inner>) {
    let now = Instant::now();
    let mut work = Work::default();
    {
        let mut peers = inner.peers.lock();
        for (peer, slot) in peers.iter_mut() {
            let Some(at) = slot.retry_at else { continue };
            if at > now {
                continue;
            }
            slot.retry_at = None;
            if matches!(slot.state, ConnState::Connected | ConnState::Failed) {
                continue;
            }
            slot.state = ConnState::Connecting;
            inner.dial(peer, slot, &mut work);
        }
    }
    if !work.dead.is_empty() || !work.sends.is_empty() || !work.connects.is_empty() {
        inner.run_work(work);
    }
}

/// Connected endpoints whose peer the transport saw go are marked disconnected (their
/// pending operations already failed), so `connect_to` re-dials.
fn probe(inner: &Arc<Inner>) {
    let eps: Vec<(String, Arc<dyn crate::transport::Endpoint>)> = inner
        .peers
        .lock()
        .iter()
        .filter(|(_, s)| s.state == ConnState::Connected)
        .filter_map(|(k, s)| s.ep.as_ref().map(|e| (k.clone(), e.ep.clone())))
        .collect();
    for (peer, ep) in eps {
        if !ep_alive(&*ep) {
            info_log!("PeerAgent {}: connection to {peer} lost", inner.alias);
            inner.mark_lost(&peer, &ep);
        }
    }
}
