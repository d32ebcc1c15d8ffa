//! Knobs of a TCP context.

use std::net::SocketAddr;
use std::time::Duration;

use crate::engine;

/// Knobs of a TCP context.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// Address the listener binds; port 0 picks an ephemeral port.
    pub bind: SocketAddr,
    /// Host name or IP published in `endpoint_info`; default: the bind IP, or the first
    /// non-loopback IPv4 address when bound to 0.0.0.0.
    pub advertise_host: Option<String>,
    /// Connections per peer; large transfers are striped over them.
    pub lanes: usize,
    /// Transfers larger than this are split into chunks striped over the lanes.
    pub chunk_size: usize,
    /// Pooled connections unused this long are closed.
    pub idle_timeout: Duration,
    pub engine: engine::Config,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            bind: "0.0.0.0:0".parse().unwrap(),
            advertise_host: None,
            lanes: 2,
            chunk_size: 4 << 20,
            idle_timeout: Duration::from_secs(60),
            engine: engine::Config::from_env(),
        }
    }
}
