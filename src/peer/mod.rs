//! PeerAgent: discovery, connection and named transfers through NanoCtrl and Redis.
//!
//! An agent registers with NanoCtrl (`/start_peer_agent`), publishes its resource record
//! and memory regions in Redis, and connects to peers through the original's stream
//! mailbox: `connect_peer` (written by NanoCtrl on `/v1/desired_topology`) and
//! `qp_ready` (written by agents, carrying `endpoint_info` as `qp_info` and a
//! `conn_meta`). See `docs/peer-agent.md` for the protocol, including what this
//! implementation adds to `conn_meta` (instance and endpoint nonces) to fix the
//! original's races.
//!
//! Threads: one control thread per agent multiplexes the stream mailbox (XREAD BLOCK),
//! the cleanup inbox (RPOP) and the heartbeat; `endpoint.connect` runs on a short-lived
//! worker per attempt, because a shared-memory connect blocks until the peer connects
//! too and must not stall the mailbox.
//!
//! Where things are:
//!
//! * `agent` — [`PeerAgent`]: start-up, accessors, shutdown; the state the parts share.
//! * `options`, `stats` — its knobs and counters.
//! * `registry` — identity, registration with NanoCtrl (and taking over a dead
//!   holder's alias), the agent record, heartbeats, the desired topology, clean-up.
//! * `owner` — the alias's owner token, and its file for a successor on this host.
//! * `regions` — memory regions: registered in the pool, published at `mr:`.
//! * `negotiate` — which transport (and how many RDMA QPs) a connection runs over.
//! * `nic` — the agent's RDMA NIC port, opened at start-up and bound to its pool.
//! * `links` — the connection-slot state machine (dial, connect, retry, teardown).
//! * `handshake` — how a slot reacts to `connect_peer`, `qp_ready` and cleanup notices.
//! * `message` — the mailbox messages and cleanup notices, decoded and checked.
//! * `control` — the control thread: reads the mailbox, runs the timers.
//! * `obs_report` — publishes the observability snapshot at `obs:peer:{alias}`.
//! * `endpoints` — the endpoints a connection runs over (one per peer incarnation).
//! * `named` — named I/O: region names resolved per connection, cached.
//! * `lookup` — the original's look-ups: resource records, region names, handles.
//! * `connection` — [`PeerConnection`], the handle on one peer's connection.
//! * [`store`], [`http`] — the only code that talks to Redis and to NanoCtrl.

mod agent;
mod connection;
mod control;
mod endpoints;
mod handshake;
pub mod http;
mod links;
mod lookup;
pub(crate) mod message;
mod named;
mod negotiate;
mod nic;
mod obs_report;
mod options;
mod owner;
mod regions;
mod registry;
mod stats;
pub mod store;

pub use agent::PeerAgent;
pub use connection::PeerConnection;
pub use links::ConnState;
pub use named::NamedAssignment;
pub use negotiate::{agree, Agreement, Side, Transport, TransportRequest};
pub use options::{ConnectOptions, PeerAgentOptions};
pub use registry::host_id;
pub use stats::AgentStats;
