//! The original PeerAgent's look-ups (`get_resource`, `list_mem_keys`, `get_handle`):
//! an agent's resource record and region names, its own or a peer's from Redis, and the
//! handle of a region by name.

use serde_json::{json, Value};

use super::agent::PeerAgent;
use super::registry::resource_record;
use crate::error::{Error, Result, Status};

impl PeerAgent {
    /// This agent's resource record (`peer` = `None`) or the one `peer` published (its
    /// agent record's `resource` field, else `topology`, else a record built from the
    /// record's `device`/`ib_port`/`link_type`, as the original does).
    ///
    /// Errors: `UnknownHandle` when `peer` is not registered in this scope; `Io`.
    pub fn get_resource(&self, peer: Option<&str>) -> Result<Value> {
        let i = &self.inner;
        let Some(peer) = peer else {
            return Ok(resource_record(
                &i.host_id,
                &i.address,
                i.regions.lock().keys().cloned().collect(),
                &i.nics_record(),
                i.opts.heartbeat_interval,
            ));
        };
        let key = i.keys.agent(peer);
        for field in ["resource", "topology"] {
            if let Some(t) = i.store.hget(&key, field)? {
                if let Ok(v) = serde_json::from_str::<Value>(&t) {
                    if v.is_object() {
                        return Ok(v);
                    }
                }
            }
        }
        if !i.store.exists(&key)? {
            return Err(Error::new(
                Status::UnknownHandle,
                format!("no agent '{peer}' is registered in this scope"),
            ));
        }
        let dev = i.store.hget(&key, "device")?.unwrap_or_default();
        let port: u64 = i
            .store
            .hget(&key, "ib_port")?
            .and_then(|p| p.parse().ok())
            .unwrap_or(1);
        let link = i.store.hget(&key, "link_type")?.unwrap_or_default();
        let addr = i.store.hget(&key, "addr")?.unwrap_or_default();
        let nics = if dev.is_empty() {
            json!([])
        } else {
            json!([{"name": dev, "health": "AVAILABLE",
                    "ports": [{"port": port, "state": "ACTIVE", "link_type": link}]}])
        };
        Ok(json!({"schema_version": 1, "host": {"address": addr}, "nics": nics}))
    }

    /// Region names: this agent's (`peer` = `None`, sorted) or the ones `peer`
    /// published (its record's `memory_keys`, else its `mr:` keys).
    pub fn list_mem_keys(&self, peer: Option<&str>) -> Result<Vec<String>> {
        let i = &self.inner;
        let Some(peer) = peer else {
            return Ok(i.regions.lock().keys().cloned().collect());
        };
        if let Some(t) = i.store.hget(&i.keys.agent(peer), "memory_keys")? {
            if let Ok(v) = serde_json::from_str::<Vec<String>>(&t) {
                let mut v = v;
                v.sort();
                return Ok(v);
            }
        }
        i.store.scan_names(&i.keys.mrs(peer), &i.keys.mr(peer, ""))
    }

    /// The handle of region `name`: this agent's local handle (`peer` = `None`), or the
    /// remote handle of `peer`'s region on the connection's endpoint (looked up in Redis
    /// and registered on first use).
    ///
    /// Errors: `UnknownHandle` (no such region), `NotConnected`/`PeerDisconnected` (no
    /// connection to `peer`), `Io`.
    pub fn get_handle(&self, name: &str, peer: Option<&str>) -> Result<u32> {
        let i = &self.inner;
        i.check_live()?;
        let Some(peer) = peer else {
            return i.pool.handle(name).ok_or_else(|| {
                Error::new(
                    Status::UnknownHandle,
                    format!("no local memory region named {name:?}"),
                )
            });
        };
        let ep = i.endpoint(peer)?;
        if let Some(h) = ep.remote_pool().handle(name) {
            return Ok(h);
        }
        let info = i.get_mr_info(peer, name)?.ok_or_else(|| {
            Error::new(
                Status::UnknownHandle,
                format!("Remote MR {name:?} of '{peer}' is not published yet"),
            )
        })?;
        ep.register_remote_memory_region(name, &info)
    }
}
