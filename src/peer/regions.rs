//! The agent's memory regions: registered in the agent's pool (shared by every
//! endpoint of the agent) and published in Redis at `mr:{alias}:{name}`, where peers
//! look up the names they do not know yet; and the look-up of a peer's regions.

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use super::agent::{Inner, PeerAgent};
use super::registry::now_ms;
use crate::error::{Error, Result, Status};
use crate::memory::device::alloc::{DeviceAlloc, MemoryKind};
use crate::memory::{MemoryPool, MrHandle};

/// One of this agent's published regions.
#[derive(Clone)]
pub(super) struct RegionRec {
    handle: MrHandle,
    addr: u64,
    length: u64,
}

impl PeerAgent {
    /// Registers `[ptr, ptr + offset + length)` as region `name` (the original's
    /// semantics: the region starts at `ptr`, not `ptr + offset`) and publishes it at
    /// `mr:{alias}:{name}`. Peers connected before can use it at once: they look names
    /// they do not know up in Redis.
    ///
    /// # Safety
    /// The memory must stay valid until the region is unregistered and every operation
    /// using it has completed.
    pub unsafe fn register_memory_region(
        &self,
        name: &str,
        ptr: *mut u8,
        offset: usize,
        length: usize,
    ) -> Result<MrHandle> {
        let len = offset
            .checked_add(length)
            .ok_or_else(|| Error::new(Status::OutOfRange, "offset + length overflows"))?;
        // SAFETY: the caller keeps `[ptr, ptr + len)` valid while it is registered (this
        // function's contract), which is what `MemoryPool::register` requires.
        self.add_region(name, |pool| unsafe { pool.register(Some(name), ptr, len) })
    }

    /// The original's `register_dmabuf_memory_region`: registers `length` bytes of the
    /// dma-buf `fd` from `offset` with the agent's RDMA NIC as region `name` at `iova`
    /// (the CUDA device pointer the dma-buf exports) and publishes it.
    /// `DeviceUnavailable` without a CUDA driver, `InvalidArgument` when `iova` is not
    /// device memory, `Unsupported` without an RDMA NIC (or dma-buf support).
    ///
    /// # Safety
    /// `fd` must be a dma-buf of `[iova, iova+length)`, device memory that stays valid
    /// until the region is unregistered and every operation using it has completed.
    pub unsafe fn register_dmabuf_memory_region(
        &self,
        name: &str,
        fd: i32,
        offset: u64,
        length: usize,
        iova: u64,
    ) -> Result<MrHandle> {
        // SAFETY: forwarded contract.
        self.add_region(name, |pool| unsafe {
            pool.register_dmabuf(Some(name), fd, offset, length, iova)
        })
    }

    /// The original's `allocate_memory_region`: allocates `length` bytes of device memory
    /// (`kind`) on CUDA device `device`, owned by the agent (freed when it goes), and
    /// registers and publishes it as region `name`. Returns the handle and the device
    /// pointer. `DeviceUnavailable` without a CUDA driver; `Unsupported` for
    /// `cuda_fabric` (docs/gpu.md).
    pub fn allocate_memory_region(
        &self,
        name: &str,
        length: usize,
        kind: MemoryKind,
        device: i32,
    ) -> Result<(MrHandle, usize)> {
        self.inner.check_live()?;
        let mem = DeviceAlloc::new(kind, device, length)?;
        let ptr = mem.ptr();
        // SAFETY: the agent owns the allocation until it is dropped, after every endpoint
        // (and so every operation) of the agent.
        let h = self.add_region(name, |pool| unsafe {
            pool.register_device(Some(name), ptr as *mut u8, length)
        })?;
        self.inner.allocations.lock().push(mem);
        Ok((h, ptr))
    }

    /// Registers a region with `register` and publishes it under `name`.
    fn add_region(
        &self,
        name: &str,
        register: impl FnOnce(&MemoryPool) -> Result<MrHandle>,
    ) -> Result<MrHandle> {
        let i = &self.inner;
        i.check_live()?;
        if name.is_empty() {
            return Err(Error::invalid("memory region name is empty"));
        }
        let h = register(&i.pool)?;
        i.regions_epoch.fetch_add(1, Ordering::AcqRel);
        let region = i.pool.region(h)?;
        let rec = RegionRec {
            handle: h,
            addr: region.addr as u64,
            length: region.len as u64,
        };
        if let Err(e) = i.publish_region(name, &rec) {
            let _ = i.pool.unregister_name(name);
            return Err(e);
        }
        i.regions.lock().insert(name.to_string(), rec);
        i.publish_memory_keys()?;
        Ok(h)
    }

    /// Unregisters region `name` and removes its Redis key. `Ok(false)` if unknown.
    pub fn unregister_memory_region(&self, name: &str) -> Result<bool> {
        let i = &self.inner;
        let Some(rec) = i.regions.lock().get(name).cloned() else {
            return Ok(false);
        };
        // The pool may hold other names for the same handle, and it has no per-name
        // removal: keep the handle alive for the others.
        let others = i
            .regions
            .lock()
            .iter()
            .any(|(n, r)| n != name && r.handle == rec.handle);
        if !others {
            i.pool.unregister(rec.handle)?;
        }
        i.regions.lock().remove(name);
        i.regions_epoch.fetch_add(1, Ordering::AcqRel);
        i.store.delete(&[i.keys.mr(&i.alias, name)])?;
        i.publish_memory_keys()?;
        Ok(true)
    }

    /// Names of this agent's regions (sorted).
    pub fn list_memory_regions(&self) -> Vec<String> {
        self.inner.regions.lock().keys().cloned().collect()
    }

    /// The record `peer` published for region `name` (`{"agent_name", "mr_name",
    /// "addr", "length", "rkey", ...}`), or `None`.
    pub fn get_mr_info(&self, peer: &str, name: &str) -> Result<Option<Value>> {
        self.inner.get_mr_info(peer, name)
    }
}

impl Inner {
    fn publish_region(&self, name: &str, r: &RegionRec) -> Result<()> {
        let region = self.pool.region(r.handle)?;
        let v = json!({
            "agent_name": self.alias, "mr_name": name, "device": "", "ib_port": 1,
            "link_type": "", "addr": r.addr, "length": r.length, "rkey": region.key, "lkey": 0,
            "handle": r.handle, "instance": self.instance,
        });
        self.store
            .set(&self.keys.mr(&self.alias, name), &v.to_string())
    }

    /// Publishes every region again (after Redis lost them); whether all succeeded.
    pub(super) fn publish_regions(&self) -> bool {
        let regions: Vec<_> = self
            .regions
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut ok = true;
        for (name, rec) in regions {
            ok &= self.publish_region(&name, &rec).is_ok();
        }
        ok
    }

    /// The `memory_keys` field of the agent record: the region names, a JSON list.
    pub(super) fn memory_keys_json(&self) -> String {
        serde_json::to_string(&self.regions.lock().keys().collect::<Vec<_>>()).unwrap()
    }

    fn publish_memory_keys(&self) -> Result<()> {
        let fields = [
            ("memory_keys", self.memory_keys_json()),
            ("updated_at", (now_ms() / 1000).to_string()),
        ];
        self.store
            .hset_existing(&self.keys.agent(&self.alias), &fields)?;
        Ok(())
    }

    pub(super) fn get_mr_info(&self, peer: &str, name: &str) -> Result<Option<Value>> {
        let key = self.keys.mr(peer, name);
        match self.store.get(&key)? {
            None => Ok(None),
            Some(t) => serde_json::from_str(&t).map(Some).map_err(|e| {
                Error::new(
                    Status::InvalidEndpointInfo,
                    format!("{key} is not valid JSON: {e}"),
                )
            }),
        }
    }
}
