//! Device (CUDA) and other staged regions over shared memory.
//!
//! A staged region is one the CPU may not address directly (device memory; host memory
//! registered through a copier in the tests). Each side announces its staged regions on
//! the Unix socket (frames counted like the allocation announcements, so a region seen in
//! the published table has been announced): `{"dev": [{"h", "addr", "len", "dev", "ipc",
//! "off"}], "dev_freed": [[h, len]]}`, where `ipc` is the CUDA IPC handle (hex) of the
//! allocation holding a device region and `off` the region's offset in it, or null when
//! the region could not be exported (or is not device memory).
//!
//! The initiator moves a part that touches a staged region:
//! * remote region exported: the peer's allocation is opened here (`cuIpcOpenMemHandle`)
//!   and the part is one `cuMemcpy` (device to device, or host to device);
//! * remote host memory the peer shares (memfd) and a local device region: one copy by
//!   the local copier straight into or out of the mapping;
//! * otherwise (no CUDA IPC: no driver, a handle the driver refuses, plain host memory
//!   on the other side): bounce slots, each side copying through its own copier.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, OnceLock};

use serde_json::{json, Value};

use super::conn::Conn;
use super::state::Inner;
use crate::error::{Error, Result, Status};
use crate::memory::device::ipc::{self, IpcExport, IpcMapping, IPC_HANDLE_LEN};
use crate::memory::device::{Copier, Location};
use crate::memory::Region;

/// A staged region of the peer, as announced.
pub(super) struct PeerDevice {
    /// The peer's handle of the region and its length (its identity in announcements).
    handle: u32,
    addr: u64,
    len: u64,
    export: Option<IpcExport>,
    /// The peer's allocation opened here (on first use); `None` when it cannot be.
    opened: OnceLock<Option<IpcMapping>>,
}

impl PeerDevice {
    /// This process's pointer to the peer's `addr` through CUDA IPC, opened on device
    /// `ordinal` the first time; `None` when the region was not exported or cannot be
    /// opened here (then the part takes the bounce slots).
    fn ipc_ptr(&self, addr: u64, ordinal: i32) -> Option<usize> {
        let m = self.opened.get_or_init(|| {
            let e = self.export.as_ref()?;
            IpcMapping::open(ordinal, e)
                .map_err(|e| {
                    crate::warn_log!(
                        "shm: the peer's CUDA IPC handle cannot be opened, staging instead: {e}"
                    )
                })
                .ok()
        });
        m.as_ref().map(|m| m.ptr() + (addr - self.addr) as usize)
    }
}

/// The peer's staged regions, by peer address.
#[derive(Default)]
pub(super) struct PeerDevices {
    by_addr: BTreeMap<u64, Vec<Arc<PeerDevice>>>,
}

impl PeerDevices {
    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }

    /// The staged region holding the peer's `[addr, addr+len)`, if any.
    pub fn find(&self, addr: u64, len: u64) -> Option<Arc<PeerDevice>> {
        let end = addr.checked_add(len)?;
        self.by_addr
            .range(..=addr)
            .rev()
            .flat_map(|(_, v)| v.iter())
            .find(|d| end <= d.addr.saturating_add(d.len))
            .cloned()
    }

    /// Applies one announcement frame's `dev_freed` then `dev` lists (malformed entries
    /// are ignored: the part then takes the host path and the target checks it).
    pub fn apply(&mut self, v: &Value) {
        for f in v
            .get("dev_freed")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (Some(h), Some(len)) = (
                f.get(0).and_then(Value::as_u64),
                f.get(1).and_then(Value::as_u64),
            ) else {
                continue;
            };
            self.by_addr.retain(|_, list| {
                list.retain(|d| !(u64::from(d.handle) == h && d.len == len));
                !list.is_empty()
            });
        }
        for d in v.get("dev").and_then(Value::as_array).into_iter().flatten() {
            let field = |k: &str| d.get(k).and_then(Value::as_u64);
            let (Some(h), Some(addr), Some(len)) = (field("h"), field("addr"), field("len")) else {
                continue;
            };
            let Ok(handle) = u32::try_from(h) else {
                continue;
            };
            let export = d
                .get("ipc")
                .and_then(Value::as_str)
                .and_then(parse_handle)
                .map(|handle| IpcExport {
                    handle,
                    offset: field("off").unwrap_or(0) as usize,
                });
            let list = self.by_addr.entry(addr).or_default();
            // A region at the same address (re-registered, or freed and reused) replaces
            // the old one.
            list.retain(|o| o.handle != handle);
            list.push(Arc::new(PeerDevice {
                handle,
                addr,
                len,
                export,
                opened: OnceLock::new(),
            }));
        }
    }
}

fn parse_handle(hex: &str) -> Option<[u8; IPC_HANDLE_LEN]> {
    if hex.len() != 2 * IPC_HANDLE_LEN {
        return None;
    }
    let mut h = [0u8; IPC_HANDLE_LEN];
    for (i, b) in h.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(h)
}

/// What we announced of our staged regions: `(handle, len)` pairs.
pub(super) type SentDevices = HashSet<(u32, usize)>;

/// The announcement of our staged regions not yet told to the peer and of those gone,
/// or `None` when nothing changed. Device regions are exported for CUDA IPC here.
pub(super) fn announcement(regions: &[Arc<Region>], sent: &mut SentDevices) -> Option<Value> {
    let live: SentDevices = regions
        .iter()
        .filter(|r| r.staged.is_some())
        .map(|r| (r.handle, r.len))
        .collect();
    let freed: Vec<Value> = sent.difference(&live).map(|(h, l)| json!([h, l])).collect();
    let mut new = Vec::new();
    for r in regions.iter().filter(|r| r.staged.is_some()) {
        if sent.contains(&(r.handle, r.len)) {
            continue;
        }
        let export = match r.location {
            Location::Device(n) => ipc::export(n, r.addr)
                .map_err(|e| {
                    crate::warn_log!(
                        "shm: region {} cannot be exported for CUDA IPC, the peer stages it: {e}",
                        r.handle
                    )
                })
                .ok(),
            Location::Host => None,
        };
        let hex = export.map(|e| {
            e.handle
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        });
        new.push(json!({
            "h": r.handle, "addr": r.addr as u64, "len": r.len as u64,
            "ipc": hex, "off": export.map_or(0, |e| e.offset as u64),
        }));
    }
    if new.is_empty() && freed.is_empty() {
        return None;
    }
    *sent = live;
    Some(json!({"dev": new, "dev_freed": freed}))
}

/// One checked part of a one-sided operation on the initiator's side.
pub(super) struct Part {
    pub lptr: *mut u8,
    pub raddr: u64,
    pub key: u64,
    pub len: u64,
    /// The local region's copier when it is staged (device memory).
    pub local: Option<Arc<dyn Copier>>,
}

impl Inner {
    /// Whether the part touches a staged region on either side (after reading the
    /// peer's pending announcements).
    pub(super) fn staged_part(&self, c: &Conn, p: &Part) -> bool {
        if p.local.is_some() {
            return true;
        }
        let devs = c.peer_devs.read();
        !devs.is_empty() && devs.find(p.raddr, p.len).is_some()
    }

    /// A permitted part touching staged memory, in one copy when possible: `Ok(true)`
    /// when done, `Ok(false)` when it must take the bounce slots.
    pub(super) fn staged_direct(&self, c: &Conn, p: &Part, write: bool) -> Result<bool> {
        let local_dev = p.local.as_ref().and_then(|c| match c.location() {
            Location::Device(n) => Some(n),
            Location::Host => None,
        });
        let remote = c.peer_devs.read().find(p.raddr, p.len);
        if let Some(d) = remote {
            // Open on the local region's device (peer access is enabled lazily), else on
            // device 0: with unified addressing the pointer is valid in every context.
            let Some(rptr) = d.ipc_ptr(p.raddr, local_dev.unwrap_or(0)) else {
                return Ok(false);
            };
            if p.local.is_some() && local_dev.is_none() {
                return Ok(false); // a host copier's region: only its copier may touch it
            }
            let (dst, src) = if write {
                (rptr, p.lptr as usize)
            } else {
                (p.lptr as usize, rptr)
            };
            // SAFETY: the local range was checked against our pool, the remote one is
            // inside the peer's exported region (find) and inside a region its table
            // permits with this key; cuMemcpy resolves both through unified addressing.
            unsafe { ipc::copy_device(dst, src, p.len as usize, 0) }?;
            self.stats
                .ipc
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(true);
        }
        let Some(copier) = &p.local else {
            return Ok(false);
        };
        let maps = c.peer_maps.read();
        let Some(hp) = maps.translate(p.raddr, p.len) else {
            return Ok(false);
        };
        // SAFETY: the local range was checked against our pool (reached through its
        // copier); the remote one lies inside our mapping of the peer's allocation, kept
        // mapped by the read lock, and inside a region its table permits with this key.
        unsafe {
            if write {
                copier.copy_to_host(p.lptr as usize, hp, p.len as usize)?;
            } else {
                copier.copy_from_host(hp, p.lptr as usize, p.len as usize)?;
            }
        }
        Ok(true)
    }
}

/// The error of a copier failing on the target's side.
pub(super) fn copy_failed(e: &Error) -> Status {
    crate::warn_log!("shm: staged copy failed: {e}");
    Status::Io
}
