//! SlimeRPC: request/reply over any [`Endpoint`](crate::Endpoint).
//!
//! * [`wire`] — the original's 16-byte header `{tag, total_len, request_id}`, its flag
//!   bits, the immediate encoding and the bulk descriptor.
//! * [`session`] — [`RpcSession`]: a mailbox of `slot_count` slots of `slot_size` bytes per
//!   direction in registered memory, one write-with-immediate per message, replies in
//!   the request's slot; client [`RpcSession::call`] / [`RpcSession::call_inplace`]
//!   returning a [`CallFuture`]; server [`RpcSession::poll_request`] and
//!   [`Request::reply`] / [`Request::reply_inplace`]; inline progress or a receive pump;
//!   a bulk path (one-sided read of the sender's registered buffer) for payloads larger
//!   than a slot, with no size cap.
//! * [`service`] — [`Service`]: methods by sorted name, `serve` / `serve_once`.
//!
//! Differences from the original, on purpose: calls in both directions over one pair are
//! safe (separate request and reply mailboxes); a peer's death or close fails pending
//! calls and ends `poll_request`; every wait has a deadline and `wait(timeout)` times out
//! in every mode; payloads have no 16 MB cap; the slot configuration is checked at the
//! handshake; exception payloads are JSON `{"type","message","traceback"}` so any
//! language can read them.

pub mod service;
pub mod session;
pub mod wire;

pub use service::{HandlerError, Service};
pub use session::{
    CallFuture, RemoteError, Request, RpcConfig, RpcMemory, RpcProgress, RpcSession, RpcStats,
};
