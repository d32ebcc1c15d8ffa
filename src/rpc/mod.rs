//! SlimeRPC: request/reply over any [`Endpoint`](crate::Endpoint).
//!
//! A session has a mailbox of `slot_count` slots of `slot_size` bytes per direction in
//! registered memory; a message is one write-with-immediate from our send slot `s` into
//! the peer's mailbox slot `s`, and a reply goes to the same slot of the caller's reply
//! mailbox. Payloads larger than a slot take the bulk path (no size cap).
//!
//! * [`wire`] — the original's 16-byte header `{tag, total_len, request_id}`, its flag
//!   bits, the immediate encoding and the bulk descriptor.
//! * [`config`] — [`RpcConfig`], [`RpcProgress`].
//! * [`mailbox`] — [`RpcMemory`]: the send slots, the mailboxes and the bulk arena of one
//!   side, and where each slot lies.
//! * [`session`] — [`RpcSession`]: creation, close, the peer's end; [`RpcStats`].
//! * `handshake` — the mailbox and slot-configuration exchange at session creation.
//! * [`call`] — the client side: slot acquisition, the per-slot state machine, the
//!   reply's arrival, the call's reply buffer, [`CallFuture`].
//! * `client_obs` — the client side's per-method counters (calls, errors, timeouts,
//!   latency) for [`crate::obs`].
//! * [`request`] — the server side: [`Request`] and its replies.
//! * [`remote_error`] — [`RemoteError`], the JSON content of an exception reply.
//! * `progress` — who receives (inline receiver or pump thread) and how threads wait
//!   (the engine's spin-then-park on the session's event count).
//! * `inbound` — what a received notification means (request, reply, close notice).
//! * `outbound` — posting a message: staged in the send slot or as a bulk descriptor.
//! * `bulk` — the bulk path: per-slot bulk buffers and arena segments, one-sided reads
//!   of the peer's payloads.
//! * [`service`] — [`Service`]: methods by sorted name, `serve` / `serve_once`.
//!
//! Differences from the original, on purpose: calls in both directions over one pair are
//! safe (separate request and reply mailboxes); a peer's death or close fails pending
//! calls and ends `poll_request`; every wait has a deadline and `wait(timeout)` times out
//! in every mode; payloads have no 16 MB cap; the slot configuration is checked at the
//! handshake; exception payloads are JSON `{"type","message","traceback"}` so any
//! language can read them.

mod bulk;
pub mod call;
mod client_obs;
pub mod config;
pub(crate) mod handshake;
mod inbound;
pub mod mailbox;
mod outbound;
mod progress;
pub mod remote_error;
pub mod request;
pub mod service;
pub mod session;
pub mod wire;

pub use call::CallFuture;
pub use client_obs::MAX_METHOD_NAMES;
pub use config::{RpcConfig, RpcProgress};
pub use mailbox::RpcMemory;
pub use remote_error::RemoteError;
pub use request::Request;
pub use service::{HandlerError, Service};
pub use session::{RpcSession, RpcStats};
