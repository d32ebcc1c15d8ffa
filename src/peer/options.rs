//! The knobs of a PeerAgent.

use std::time::Duration;

use crate::transport::rdma::RdmaConfig;
use crate::transport::shm::ShmConfig;
use crate::transport::tcp::TcpConfig;

/// Knobs of an agent.
#[derive(Clone, Debug)]
pub struct PeerAgentOptions {
    /// Heartbeat period (NanoCtrl's TTL is 60 s; the original beats every 15 s).
    pub heartbeat_interval: Duration,
    /// Registration attempts on connection errors / 5xx, with doubling backoff.
    pub register_attempts: u32,
    pub register_backoff: Duration,
    /// Redis URL (`redis://[user:password@]host:port`) to use instead of the address
    /// NanoCtrl hands out, or several separated by commas (a primary and its replicas:
    /// the agent uses whichever is the primary and looks again after a failover).
    pub redis_url: Option<String>,
    /// NanoCtrl's bearer token. None: `$NANOCTRL_TOKEN` if set, else none (or the one
    /// in the URL, `http://:<token>@host:port`).
    pub nanoctrl_token: Option<String>,
    /// Host peers reach this agent's TCP listener at (default: the local address of the
    /// route to NanoCtrl).
    pub advertise_host: Option<String>,
    /// Knobs of the agent's TCP context (bind, lanes, chunk size, engine).
    pub tcp: TcpConfig,
    /// Knobs of the agent's shared-memory endpoints.
    pub shm: ShmConfig,
    /// The agent's RDMA NIC port (the original's `PeerAgent(device=...)`): `device`
    /// `None` takes the first visible device whose port `ib_port` is ACTIVE, or none
    /// (no RDMA); a named device that cannot be opened fails `PeerAgent::new`.
    pub rdma: RdmaConfig,
    /// Connect attempts per handshake before the connection is marked failed.
    pub connect_attempts: u32,
    /// How long a connection `connect_to` asked for is re-dialled on its own after a
    /// transport error took it down (a link down, the peer's process killed): pending
    /// operations fail, the state is `Disconnected`, and the agent dials again until the
    /// peer answers or this much time passed. Zero: never (`connect_to` re-dials).
    pub reconnect_timeout: Duration,
    /// Deadline of each HTTP call to NanoCtrl.
    pub http_timeout: Duration,
    /// How long the control thread blocks in XREAD (also the inbox polling period).
    pub poll_interval: Duration,
    /// Period of the observability snapshot published at `obs:peer:{alias}` while
    /// [`crate::obs`] records (the original's `DLSLIME_OBS_TIME_STEP_MS`, default 1 s).
    pub obs_interval: Duration,
    /// Time to live of that snapshot: a dead agent's entry expires after it. `None`
    /// (unless `DLSLIME_OBS_TTL_MS` sets it): the original's `max(3 * obs_interval, 180 s)`.
    pub obs_ttl: Option<Duration>,
}

/// A positive number of milliseconds from the environment variable `name`.
fn ms_from_env(name: &str) -> Option<Duration> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
}

impl Default for PeerAgentOptions {
    fn default() -> Self {
        PeerAgentOptions {
            heartbeat_interval: Duration::from_secs(15),
            register_attempts: 5,
            register_backoff: Duration::from_secs(1),
            redis_url: None,
            nanoctrl_token: None,
            advertise_host: None,
            tcp: TcpConfig::default(),
            shm: ShmConfig::default(),
            rdma: RdmaConfig::default(),
            connect_attempts: 5,
            reconnect_timeout: Duration::from_secs(120),
            http_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(50),
            obs_interval: ms_from_env("DLSLIME_OBS_TIME_STEP_MS").unwrap_or(Duration::from_secs(1)),
            obs_ttl: ms_from_env("DLSLIME_OBS_TTL_MS"),
        }
    }
}

/// What one `connect_to` asks for (the original's `connect_to(peer, local_device,
/// peer_device, ib_port, qp_num)` plus the transport).
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// `"auto"`, `"shm"`, `"tcp"` or `"rdma"`.
    pub transport: String,
    /// RDMA data QPs (1..=16); the connection uses the larger of the two sides' values.
    pub qp_num: usize,
    /// RDMA: this side's device and port; when set they must be the agent's NIC port.
    pub local_device: Option<String>,
    pub ib_port: Option<u8>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            transport: "auto".into(),
            qp_num: 1,
            local_device: None,
            ib_port: None,
        }
    }
}
