//! Where a serving endpoint comes from: a directly connected endpoint, or a PeerAgent
//! connection by alias (re-dialled after the peer restarts).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result, Status};
use crate::peer::{ConnState, PeerAgent, PeerConnection};
use crate::transport::Endpoint;

/// Produces the connected endpoint of one route (client side) or one serving loop
/// (server side).
pub trait Connector: Send + Sync {
    /// A connected endpoint, waiting at most `timeout` for one.
    fn endpoint(&self, timeout: Duration) -> Result<Arc<dyn Endpoint>>;
    /// Whether a dead endpoint can be replaced by a new one later.
    fn redials(&self) -> bool;
    /// For messages: what this route is.
    fn describe(&self) -> String;
}

/// One endpoint the caller connected (both sides called `connect`). Once it is dead, the
/// route is dead.
pub struct FixedEndpoint(pub Arc<dyn Endpoint>);

impl Connector for FixedEndpoint {
    fn endpoint(&self, _timeout: Duration) -> Result<Arc<dyn Endpoint>> {
        Ok(self.0.clone())
    }
    fn redials(&self) -> bool {
        false
    }
    fn describe(&self) -> String {
        format!("{} endpoint", self.0.transport())
    }
}

/// The PeerAgent connection to an alias: `connect_to(alias, transport)` now, waited for
/// when an endpoint is needed, dialled again after a disconnect.
pub struct PeerRoute {
    conn: PeerConnection,
    transport: String,
}

impl PeerRoute {
    /// Starts connecting `agent` to `alias` (`transport`: `"auto"`, `"shm"`, `"tcp"`).
    pub fn new(agent: &PeerAgent, alias: &str, transport: &str) -> Result<PeerRoute> {
        let conn = agent.connect_to(alias, transport)?;
        Ok(PeerRoute {
            conn,
            transport: transport.to_string(),
        })
    }

    pub fn alias(&self) -> &str {
        self.conn.peer()
    }
}

impl Connector for PeerRoute {
    fn endpoint(&self, timeout: Duration) -> Result<Arc<dyn Endpoint>> {
        let until = Instant::now() + timeout;
        let mut redialled = false;
        loop {
            if let Ok(ep) = self.conn.endpoint() {
                return Ok(ep);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::new(
                    Status::Timeout,
                    format!(
                        "PeerAgent connection to '{}' not up within {timeout:?} (state {})",
                        self.alias(),
                        self.conn.state().as_str()
                    ),
                ));
            }
            match self.conn.state() {
                ConnState::Disconnected | ConnState::Failed | ConnState::Idle if !redialled => {
                    self.conn.redial(&self.transport)?;
                    redialled = true;
                }
                _ => {}
            }
            match self.conn.wait(left.min(Duration::from_millis(200))) {
                Ok(_) => {}
                Err(e) if e.status() == Status::ShutDown => return Err(e),
                Err(_) => {}
            }
        }
    }
    fn redials(&self) -> bool {
        true
    }
    fn describe(&self) -> String {
        format!("PeerAgent '{}'", self.alias())
    }
}
