//! The agent's RDMA NIC port: chosen and opened at start-up, so that its memory pool is
//! bound to the NIC's protection domain before the first region is registered (a
//! region's key is then its rkey from the start, and the records published in Redis
//! stay valid when an RDMA connection comes). One agent uses one NIC port: a memory
//! pool registers its regions with one protection domain.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::info_log;
use crate::memory::MemoryPool;
use crate::transport::rdma::{available_nics, RdmaConfig, RdmaContext};

/// The NIC port an agent's RDMA endpoints run on.
pub(super) struct Nic {
    pub ctx: Arc<RdmaContext>,
}

impl Nic {
    /// Opens the configured device and port (an error if it cannot be used), or without
    /// a configured device the first visible one whose port is ACTIVE; `Ok(None)` when
    /// there is none (no libibverbs, no device, no active port): the agent then has no
    /// RDMA and "auto" never picks it. Binds `pool` to the port's protection domain.
    pub fn open(cfg: &RdmaConfig, pool: &MemoryPool) -> Result<Option<Nic>> {
        let ctx = match cfg.device.as_deref().filter(|d| !d.is_empty()) {
            Some(_) => RdmaContext::open(cfg.clone())?,
            None => match first_active(cfg) {
                Some(c) => c,
                None => return Ok(None),
            },
        };
        pool.attach_registrar(ctx.registrar())?;
        Ok(Some(Nic { ctx }))
    }

    pub fn device(&self) -> &str {
        self.ctx.device_name()
    }

    pub fn ib_port(&self) -> u8 {
        self.ctx.domain().port
    }

    pub fn link_type(&self) -> String {
        self.ctx.domain().link.to_string()
    }

    /// Refuses a connection that asks for another device or port than this one.
    pub fn check(&self, device: Option<&str>, ib_port: Option<u8>) -> Result<()> {
        let dev_ok = device.is_none_or(|d| d.is_empty() || d == self.device());
        let port_ok = ib_port.is_none_or(|p| p == self.ib_port());
        if dev_ok && port_ok {
            return Ok(());
        }
        Err(Error::invalid(format!(
            "this agent's RDMA NIC is {} port {} (one agent registers its memory with one NIC \
             port; choose it with the agent's device option), not {} port {}",
            self.device(),
            self.ib_port(),
            device.unwrap_or(self.device()),
            ib_port.unwrap_or(self.ib_port()),
        )))
    }

    /// The resource record's `nics` entry: the original's `discover_topology` shape.
    pub fn record(&self) -> Value {
        json!({
            "name": self.device(), "health": "AVAILABLE", "numa_node": numa_node(self.device()),
            "pci_bus_id": "",
            "ports": [{"port": self.ib_port(), "state": "ACTIVE", "link_type": self.link_type()}],
        })
    }
}

fn first_active(cfg: &RdmaConfig) -> Option<Arc<RdmaContext>> {
    let nics = match available_nics() {
        Ok(n) => n,
        Err(e) => {
            info_log!("PeerAgent: no RDMA ({e})");
            return None;
        }
    };
    for name in nics {
        let c = RdmaConfig {
            device: Some(name.clone()),
            ..cfg.clone()
        };
        match RdmaContext::open(c) {
            Ok(ctx) => return Some(ctx),
            Err(e) => info_log!("PeerAgent: RDMA device {name} not usable: {e}"),
        }
    }
    None
}

fn numa_node(dev: &str) -> i64 {
    std::fs::read_to_string(format!("/sys/class/infiniband/{dev}/device/numa_node"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(-1)
}
