//! Knobs of a TCP context.

use std::net::SocketAddr;
use std::time::Duration;

use crate::engine;
use crate::error::{Error, Result};

/// Most connections per peer: each lane is a socket and a reader thread here and a
/// server thread at the peer, so a mistyped `lanes` must not start hundreds of threads.
pub const MAX_LANES: usize = 64;

/// Knobs of a TCP context.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// Address the listener binds; port 0 picks an ephemeral port.
    pub bind: SocketAddr,
    /// Host name or IP published in `endpoint_info`; default: the bind IP, or the first
    /// non-loopback IPv4 address when bound to 0.0.0.0.
    pub advertise_host: Option<String>,
    /// Connections per peer (1..=[`MAX_LANES`]); large transfers are striped over them.
    pub lanes: usize,
    /// Transfers larger than this are split into chunks striped over the lanes.
    pub chunk_size: usize,
    /// Pooled connections unused this long are closed; so are accepted connections that
    /// carried no frame this long and serve no connected endpoint.
    pub idle_timeout: Duration,
    /// An accepted connection must finish the hello and authentication within this.
    pub handshake_timeout: Duration,
    /// A request for an endpoint that has not called `connect()` yet waits this long for
    /// it (then fails with `NOT_CONNECTED`); both sides connect concurrently.
    pub connect_grace: Duration,
    /// Accepted connections at most, in all and from one IP address. At a cap the
    /// oldest connection serving nobody is closed to make room.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
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
            handshake_timeout: Duration::from_secs(5),
            connect_grace: Duration::from_secs(10),
            max_connections: 1024,
            max_connections_per_ip: 256,
            engine: engine::Config::from_env(),
        }
    }
}

impl TcpConfig {
    /// `InvalidArgument` for knobs out of range.
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_LANES).contains(&self.lanes) {
            return Err(Error::invalid(format!(
                "lanes must be 1..={MAX_LANES}, got {}",
                self.lanes
            )));
        }
        if self.chunk_size == 0 {
            return Err(Error::invalid("chunk_size must be positive"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;

    #[test]
    fn lanes_are_capped() {
        let mut c = TcpConfig::default();
        assert!(c.validate().is_ok());
        for bad in [0, MAX_LANES + 1, 1000] {
            c.lanes = bad;
            assert_eq!(c.validate().unwrap_err().status(), Status::InvalidArgument);
        }
        c.lanes = MAX_LANES;
        assert!(c.validate().is_ok());
    }
}
