//! The session handshake: both sides exchange their mailbox and slot configuration over
//! one send/recv pair of the endpoint (`{"slime_rpc", "slot_size", "slot_count",
//! "mailbox": {addr, length, rkey}}`); a different configuration or wire version is
//! refused on both sides.

use serde_json::{json, Value};

use super::config::RpcConfig;
use super::mailbox::RpcMemory;
use super::wire;
use crate::error::{Error, Result, Status};
use crate::memory::{RemoteHandle, RemoteRegion};
use crate::transport::Endpoint;

/// Exchanges mailbox descriptions with the peer; returns the peer's mailbox.
pub(super) fn handshake(
    ep: &dyn Endpoint,
    mem: &RpcMemory,
    cfg: &RpcConfig,
) -> Result<RemoteHandle> {
    let region = mem.pool.region(mem.mbox_h)?;
    let mine = json!({
        "slime_rpc": wire::WIRE_VERSION,
        "slot_size": cfg.slot_size,
        "slot_count": cfg.slot_count,
        "mailbox": {"addr": region.addr as u64, "length": region.len as u64, "rkey": region.key},
    })
    .to_string();
    let mut buf = vec![0u8; 4096];
    let t = Some(cfg.handshake_timeout);
    // SAFETY: `buf` outlives the receive: it is waited on below, or withdrawn with
    // `abort` (which returns once the transport no longer touches it) before returning.
    let rf = unsafe { ep.recv(buf.as_mut_ptr(), buf.len(), t)? };
    let withdraw = |e: Error| {
        rf.state().abort(Status::Cancelled, "RPC handshake failed");
        e
    };
    // SAFETY: `mine` outlives the send: it is waited on below, and a failed wait has
    // ended the operation (deadline or abort), after which the transport no longer reads
    // it.
    let sf = unsafe { ep.send(mine.as_ptr(), mine.len(), t) }.map_err(withdraw)?;
    let hs = |e: Error| {
        Error::new(
            e.status(),
            format!(
                "RPC handshake: the peer's session did not answer: {}",
                e.message()
            ),
        )
    };
    sf.wait().map_err(hs).map_err(withdraw)?;
    rf.wait().map_err(hs)?;
    let n = rf.nbytes() as usize;
    let peer: Value = serde_json::from_slice(&buf[..n.min(buf.len())]).map_err(|e| {
        Error::new(
            Status::Protocol,
            format!("RPC handshake: bad session info from peer: {e}"),
        )
    })?;
    let field = |k: &str| peer.get(k).and_then(Value::as_u64);
    if field("slime_rpc") != Some(wire::WIRE_VERSION as u64) {
        return Err(Error::new(
            Status::VersionMismatch,
            format!(
                "RPC handshake: peer speaks RPC wire version {:?}, this side {}",
                peer.get("slime_rpc"),
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
    ep.remote_pool().register("rpc:peer-mailbox", r)
}
