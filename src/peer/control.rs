//! The agent's one control thread: the stream mailbox (XREAD BLOCK from `0-0`), the
//! cleanup inbox, the heartbeat (re-registering on `not_found`, and early when Redis's
//! view of the record contradicts it: a jump of Redis's clock), connect retries and
//! liveness probes of connected endpoints, all in one loop. `message` decodes and
//! checks what it reads; `handshake` reacts to it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::agent::Inner;
use super::message::{parse_message, parse_notice, Message};
use super::registry::RECORD_CHECK;
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
    // when the last heartbeat Redis accepted was sent (registration counts as one)
    let mut last_beat = Instant::now();
    let mut next_check = Instant::now() + RECORD_CHECK;
    let mut next_probe = Instant::now() + PROBE_EVERY;
    let mut next_obs = Instant::now();
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
        let due = now >= next_hb
            || (now >= next_check && {
                next_check = now + RECORD_CHECK;
                inner.record_contradicts(now - last_beat)
            });
        if due {
            let sent = Instant::now();
            if inner.heartbeat(&mut hb_failing) {
                last_beat = sent;
            }
            next_hb = Instant::now() + hb;
        }
        inner.retry_due();
        if now >= next_probe {
            inner.probe_connected();
            next_probe = Instant::now() + PROBE_EVERY;
        }
        if now >= next_obs {
            inner.publish_obs(false);
            next_obs = Instant::now() + inner.opts.obs_interval;
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
    match parse_message(&inner.alias, map) {
        Ok(Message::ConnectPeer { peer }) => inner.on_connect_peer(peer),
        Ok(Message::QpReady {
            peer,
            view,
            dst_instance,
            dst_nonce,
        }) => inner.on_qp_ready(peer, view, dst_instance, dst_nonce),
        // The original DLSlime agent's qp_ready: well formed, but its endpoints cannot
        // talk to ours. Its connection fails at once, saying why.
        Ok(Message::OriginalPeer { peer, offers_tcp }) => inner.on_original_peer(peer, offers_tcp),
        Err(why) => malformed(inner, id, &why),
    }
}

/// Cleanup notices (`{"type":"cleanup","peer":X}`, LPUSHed by NanoCtrl): X shut down.
fn drain_inbox(inner: &Arc<Inner>, mbox: &Store, inbox: &str) {
    for _ in 0..INBOX_BATCH {
        let Ok(Some(msg)) = mbox.rpop(inbox) else {
            return;
        };
        let peer = match parse_notice(&msg) {
            Ok(p) => p,
            Err(why) => {
                malformed(inner, "inbox", why);
                continue;
            }
        };
        inner.stats.cleanup_notices.fetch_add(1, Ordering::Relaxed);
        info_log!(
            "PeerAgent {}: {peer} shut down (cleanup notice)",
            inner.alias
        );
        inner.on_cleanup_notice(&peer);
    }
}
