//! Remote memory regions: what a peer published as `{addr, length, rkey}`.

use std::collections::HashMap;

use parking_lot::RwLock;
use serde_json::Value;

use super::check_range;
use crate::error::{Error, Result, Status};

pub type RemoteHandle = u32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteRegion {
    pub addr: u64,
    pub len: u64,
    pub key: u64,
}

impl RemoteRegion {
    /// Parses the original's `{"addr", "length", "rkey"}` (also accepts `"key"`).
    pub fn from_json(v: &Value) -> Result<RemoteRegion> {
        let field = |k: &str| v.get(k).and_then(Value::as_u64);
        let addr = field("addr").ok_or_else(|| {
            Error::new(
                Status::InvalidEndpointInfo,
                "memory region info lacks \"addr\"",
            )
        })?;
        let len = field("length").ok_or_else(|| {
            Error::new(
                Status::InvalidEndpointInfo,
                "memory region info lacks \"length\"",
            )
        })?;
        let key = field("rkey").or_else(|| field("key")).ok_or_else(|| {
            Error::new(
                Status::InvalidEndpointInfo,
                "memory region info lacks a numeric \"rkey\" (64-bit unsigned)",
            )
        })?;
        Ok(RemoteRegion { addr, len, key })
    }
}

#[derive(Default)]
struct Tables {
    slots: Vec<Option<RemoteRegion>>,
    names: HashMap<String, RemoteHandle>,
}

/// The peer's regions as this side knows them. A name registered again is updated in
/// place and keeps its handle.
#[derive(Default)]
pub struct RemotePool {
    t: RwLock<Tables>,
}

impl RemotePool {
    pub fn register(&self, name: &str, region: RemoteRegion) -> Result<RemoteHandle> {
        let mut t = self.t.write();
        if let Some(&h) = t.names.get(name) {
            t.slots[h as usize] = Some(region);
            return Ok(h);
        }
        let h = RemoteHandle::try_from(t.slots.len())
            .map_err(|_| Error::new(Status::ResourceExhausted, "remote handle space exhausted"))?;
        t.slots.push(Some(region));
        t.names.insert(name.to_string(), h);
        Ok(h)
    }

    pub fn register_json(&self, name: &str, info: &Value) -> Result<RemoteHandle> {
        self.register(name, RemoteRegion::from_json(info)?)
    }

    pub fn unregister(&self, handle: RemoteHandle) -> Result<()> {
        let mut t = self.t.write();
        t.slots
            .get_mut(handle as usize)
            .and_then(Option::take)
            .ok_or_else(|| {
                Error::new(
                    Status::UnknownHandle,
                    format!("no live remote region with handle {handle}"),
                )
            })?;
        t.names.retain(|_, h| *h != handle);
        Ok(())
    }

    pub fn handle(&self, name: &str) -> Option<RemoteHandle> {
        self.t.read().names.get(name).copied()
    }

    pub fn get(&self, handle: RemoteHandle) -> Result<RemoteRegion> {
        self.t
            .read()
            .slots
            .get(handle as usize)
            .copied()
            .flatten()
            .ok_or_else(|| {
                Error::new(
                    Status::UnknownHandle,
                    format!("no live remote region with handle {handle}"),
                )
            })
    }

    /// Remote address and key for `[offset, offset+len)`, checked against the length the
    /// peer published (the target checks again against what it really registered).
    pub fn remote_range(&self, handle: RemoteHandle, offset: u64, len: u64) -> Result<(u64, u64)> {
        let r = self.get(handle)?;
        check_range(format_args!("remote region {handle}"), offset, len, r.len)?;
        Ok((r.addr + offset, r.key))
    }
}
