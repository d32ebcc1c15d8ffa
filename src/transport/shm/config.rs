//! Configuration of a shared-memory endpoint, with the environment variables behind its
//! defaults.

use std::time::Duration;

use crate::engine;

/// Knobs of a shared-memory endpoint.
#[derive(Clone, Debug)]
pub struct ShmConfig {
    pub engine: engine::Config,
    /// Use the staged (bounce-slot) path even where cross-memory attach works
    /// (`DLSLIME_SHM_FORCE_STAGED=1`); what the EPERM fallback uses.
    pub force_staged: bool,
    /// Test-only: pretend to run on another host (`DLSLIME_SHM_HOST_ID`).
    pub host_id_override: Option<String>,
    /// Each connection to our listener must finish its handshake within this; others
    /// are served meanwhile.
    pub handshake_timeout: Duration,
}

impl Default for ShmConfig {
    fn default() -> Self {
        ShmConfig {
            engine: engine::Config::from_env(),
            force_staged: std::env::var("DLSLIME_SHM_FORCE_STAGED").is_ok_and(|v| v == "1"),
            host_id_override: std::env::var("DLSLIME_SHM_HOST_ID").ok(),
            handshake_timeout: Duration::from_secs(5),
        }
    }
}
