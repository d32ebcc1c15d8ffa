//! The session handshake: both sides exchange their mailbox and slot configuration over
//! send/recv of the endpoint (`{"slime_rpc", "session", "ack", "slot_size",
//! "slot_count", "mailbox": {addr, length, rkey}}`); a different configuration or wire
//! version is refused on both sides.
//!
//! Each session has a random id whose low bits are its fence (see [`wire`]). A side
//! sends its hello (`ack` null), answers every peer session it has not answered yet with
//! a hello acknowledging it, and is done when a hello acknowledging its own id arrives:
//! then both sides hold each other's current info. Messages left in the endpoint by a session that failed or closed (its hello,
//! its acknowledgements) are consumed on the way and never bind a new session to a dead
//! mailbox. In the usual case each side sends two messages and receives two.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use serde_json::{json, Value};

use super::config::RpcConfig;
use super::mailbox::RpcMemory;
use super::wire;
use crate::engine::Deadline;
use crate::error::{Error, Result, Status};
use crate::future::Future;
use crate::memory::{RemoteHandle, RemoteRegion};
use crate::transport::Endpoint;

/// What the handshake agreed on.
pub(super) struct Agreed {
    /// The peer's mailbox.
    pub remote_mbox: RemoteHandle,
    /// This session's id and the peer session's id.
    pub id: u64,
    pub peer_id: u64,
}

/// Largest handshake message accepted.
const MAX_HELLO: usize = 4096;

/// A new session id: random, with this process's next fence in its low bits (see
/// [`wire`]: consecutive sessions never share a fence). Never 0 (the fence is not).
fn new_id() -> u64 {
    static NEXT_FENCE: OnceLock<AtomicU32> = OnceLock::new();
    let next = NEXT_FENCE.get_or_init(|| AtomicU32::new(rand::random()));
    let fence = loop {
        let f = wire::fence(next.fetch_add(1, Ordering::Relaxed) as u64);
        if f != 0 {
            break f;
        }
    };
    rand::random::<u64>() & !(wire::FENCE_MASK as u64) | fence as u64
}

fn failed(e: Error) -> Error {
    Error::new(
        e.status(),
        format!(
            "RPC handshake: the peer's session did not answer: {}",
            e.message()
        ),
    )
}

/// Sends one hello, waiting for it to be delivered (at most `deadline`).
fn send_hello(ep: &dyn Endpoint, msg: &str, deadline: Deadline) -> Result<()> {
    // SAFETY: `msg` outlives the send: it is waited on here, and a failed wait has ended
    // the operation (deadline or abort), after which the transport no longer reads it.
    let f = unsafe { ep.send(msg.as_ptr(), msg.len(), deadline.remaining())? };
    f.wait().map_err(failed)
}

/// A posted receive for the next hello. The transport may complete a send only once
/// the peer has a receive posted, so each side keeps one posted before it sends.
struct HelloRecv<'a> {
    ep: &'a dyn Endpoint,
    buf: Vec<u8>,
    f: Option<Future>,
}

impl<'a> HelloRecv<'a> {
    fn new(ep: &'a dyn Endpoint) -> HelloRecv<'a> {
        HelloRecv {
            ep,
            buf: vec![0u8; MAX_HELLO],
            f: None,
        }
    }

    /// Posts the receive for the next hello, unless one is posted.
    fn post(&mut self, deadline: Deadline) -> Result<()> {
        if self.f.is_none() {
            // SAFETY: `buf` is owned by `self` and outlives the receive: it is waited on
            // in `take`, or withdrawn with `abort` (which returns once the transport no
            // longer touches it) in Drop, before the buffer is freed.
            self.f = Some(unsafe {
                self.ep
                    .recv(self.buf.as_mut_ptr(), self.buf.len(), deadline.remaining())?
            });
        }
        Ok(())
    }

    /// Waits for the hello of the posted receive (posting one if needed).
    fn take(&mut self, deadline: Deadline) -> Result<Value> {
        self.post(deadline)?;
        let f = self.f.take().expect("a receive is posted");
        if let Err(e) = f.wait() {
            f.state().abort(Status::Cancelled, "RPC handshake failed");
            return Err(failed(e));
        }
        let n = (f.nbytes() as usize).min(self.buf.len());
        serde_json::from_slice(&self.buf[..n]).map_err(|e| {
            Error::new(
                Status::Protocol,
                format!("RPC handshake: bad session info from peer: {e}"),
            )
        })
    }
}

impl Drop for HelloRecv<'_> {
    fn drop(&mut self) {
        if let Some(f) = self.f.take() {
            f.state().abort(Status::Cancelled, "RPC handshake over");
        }
    }
}

/// Exchanges mailbox descriptions with the peer's current session.
pub(super) fn handshake(ep: &dyn Endpoint, mem: &RpcMemory, cfg: &RpcConfig) -> Result<Agreed> {
    let region = mem.pool.region(mem.mbox_h)?;
    let id = new_id();
    let hello = |ack: Option<u64>| {
        json!({
            "slime_rpc": wire::WIRE_VERSION,
            "session": id,
            "ack": ack,
            "slot_size": cfg.slot_size,
            "slot_count": cfg.slot_count,
            "mailbox": {"addr": region.addr as u64, "length": region.len as u64, "rkey": region.key},
        })
        .to_string()
    };
    let deadline = Deadline::after(cfg.handshake_timeout);
    let mut rx = HelloRecv::new(ep);
    rx.post(deadline)?;
    send_hello(ep, &hello(None), deadline)?;
    // The peer session this side has acknowledged.
    let mut acked: Option<u64> = None;
    loop {
        let peer = rx.take(deadline)?;
        let peer_id = check_hello(&peer, cfg)?;
        let acks_us = peer.get("ack").and_then(Value::as_u64) == Some(id);
        if acked != Some(peer_id) {
            rx.post(deadline)?;
            send_hello(ep, &hello(Some(peer_id)), deadline)?;
            acked = Some(peer_id);
        }
        if acks_us {
            let r = peer_mailbox(&peer, cfg)?;
            // A name of this session's own: a write of an earlier session, late, must
            // never land in this session's mailbox.
            let remote_mbox = ep
                .remote_pool()
                .register(&format!("rpc:peer-mailbox:{id:x}"), r)?;
            return Ok(Agreed {
                remote_mbox,
                id,
                peer_id,
            });
        }
    }
}

/// The peer's mailbox from its hello: large enough for both parts of its slots.
pub(crate) fn peer_mailbox(peer: &Value, cfg: &RpcConfig) -> Result<RemoteRegion> {
    let mbox = peer
        .get("mailbox")
        .ok_or_else(|| Error::new(Status::Protocol, "RPC handshake: peer info lacks mailbox"))?;
    let r = RemoteRegion::from_json(mbox)?;
    if r.len < 2 * (cfg.slot_size * cfg.slot_count) as u64 {
        return Err(Error::new(
            Status::Protocol,
            "RPC handshake: peer mailbox too small",
        ));
    }
    Ok(r)
}

/// Checks a peer hello's version and slot configuration; returns its session id.
pub(crate) fn check_hello(peer: &Value, cfg: &RpcConfig) -> Result<u64> {
    let field = |k: &str| peer.get(k).and_then(Value::as_u64);
    if field("slime_rpc") != Some(wire::WIRE_VERSION as u64) {
        let theirs = peer
            .get("slime_rpc")
            .map_or_else(|| "none".to_string(), Value::to_string);
        return Err(Error::new(
            Status::VersionMismatch,
            format!(
                "RPC handshake: the peer speaks SlimeRPC wire version {theirs}, this side {}; both sides need a dlslime release with the same RPC wire version",
                wire::WIRE_VERSION
            ),
        ));
    }
    let (ps, pc) = (field("slot_size"), field("slot_count"));
    if ps != Some(cfg.slot_size as u64) || pc != Some(cfg.slot_count as u64) {
        return Err(Error::invalid(format!(
            "RPC handshake: slot configuration differs: this side {} x {} B, peer {:?} x {:?} B; both sides must use the same slot_size and slot_count",
            cfg.slot_count, cfg.slot_size, pc, ps
        )));
    }
    field("session").filter(|&s| s != 0).ok_or_else(|| {
        Error::new(
            Status::VersionMismatch,
            "RPC handshake: the peer's session info has no session id (an older dlslime?)",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_wire_version_is_refused_with_a_clear_error() {
        let cfg = RpcConfig::default();
        let hello = |v: Value| {
            json!({"slime_rpc": v, "session": 7, "ack": null, "slot_size": cfg.slot_size,
                   "slot_count": cfg.slot_count,
                   "mailbox": {"addr": 4096, "length": 1 << 30, "rkey": 1}})
        };
        for (v, shown) in [(json!(4), "version 4,"), (json!(null), "version null,")] {
            let e = check_hello(&hello(v), &cfg).unwrap_err();
            assert_eq!(e.status(), Status::VersionMismatch);
            assert!(e.message().contains(shown), "{e}");
            assert!(e.message().contains("this side 5"), "{e}");
        }
        assert_eq!(
            check_hello(&hello(json!(wire::WIRE_VERSION)), &cfg).unwrap(),
            7
        );
    }
}
