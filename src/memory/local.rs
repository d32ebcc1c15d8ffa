//! Local memory regions: registered `(ptr, len)` ranges with names and access keys.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::{json, Map, Value};

use super::check_range;
use super::device::{self, Copier, CudaCopier, Location, StagedRange};
use crate::error::{Error, Result, Status};

pub type MrHandle = u32;

/// One registered range. `key` is the access key a peer must present: a random 64-bit
/// key (too many to guess, and a connection that presents wrong ones is closed, see
/// [`crate::transport::strikes`]), or the 32-bit RDMA rkey when the pool registers its
/// regions with a device (see [`Registrar`]; the NIC checks it, see docs/security.md).
#[derive(Debug)]
pub struct Region {
    pub handle: MrHandle,
    pub addr: usize,
    pub len: usize,
    pub key: u64,
    /// The device registration, when the pool has a [`Registrar`].
    pub device: Option<DeviceMr>,
    /// Where the bytes live (learned from the pointer at registration).
    pub location: Location,
    /// For regions the CPU cannot address (device memory): the entry in the staged-range
    /// table through which transports that stage (TCP) reach the bytes.
    pub staged: Option<StagedRange>,
}

/// How a register call places its region.
#[derive(Clone)]
enum Placement {
    /// Ask the pointer: device memory when the CUDA driver says so, host otherwise.
    Detect,
    /// The caller says it is device memory (`__cuda_array_interface__`): the driver must
    /// confirm it (`DeviceUnavailable` without one).
    Device,
    /// Reached only through this copier (device memory; host memory in the staging tests).
    Staged(Arc<dyn Copier>),
    /// Device memory the caller exported as a dma-buf: the NIC registers the fd (from
    /// `offset`), the region's address is the device pointer (the iova).
    DmaBuf { fd: i32, offset: u64 },
}

impl Placement {
    /// The region's location and, for memory the CPU cannot address, its copier.
    fn resolve(&self, addr: usize) -> Result<(Location, Option<Arc<dyn Copier>>)> {
        let loc = match self {
            Placement::Staged(c) => return Ok((c.location(), Some(c.clone()))),
            Placement::Detect => device::locate(addr),
            Placement::Device | Placement::DmaBuf { .. } => {
                Location::Device(device::require_device(addr)?)
            }
        };
        match loc {
            Location::Host => Ok((loc, None)),
            Location::Device(n) => Ok((loc, Some(Arc::new(CudaCopier::new(n)?)))),
        }
    }

    /// What re-registering an existing region (growth, a new registrar) keeps.
    fn of(region: &Region) -> Placement {
        match &region.staged {
            Some(s) => Placement::Staged(s.copier().clone()),
            None => Placement::Detect,
        }
    }
}

/// Registers regions with a device (RDMA: `ibv_reg_mr` on one protection domain), so
/// every region of a pool is usable by that device, including regions registered later.
pub trait Registrar: Send + Sync {
    /// Registers `[addr, addr+len)`; the returned rkey becomes the region's key.
    fn register(&self, addr: usize, len: usize) -> Result<DeviceMr>;
    /// Registers memory of CUDA device `ordinal` (GPUDirect); `Unsupported` where the
    /// platform cannot, the default.
    fn register_device(&self, addr: usize, len: usize, ordinal: i32) -> Result<DeviceMr> {
        let _ = (addr, len);
        Err(Error::new(
            Status::Unsupported,
            format!("{} cannot register cuda:{ordinal} memory", self.domain()),
        ))
    }
    /// What the registrations belong to (the protection domain), for messages and to
    /// refuse attaching a pool to a second one.
    fn domain(&self) -> String;
    /// Registers `len` bytes of dma-buf `fd` from `offset`, addressed as `iova`;
    /// `Unsupported` where the platform cannot, the default.
    fn register_dmabuf(&self, fd: i32, offset: u64, len: usize, iova: u64) -> Result<DeviceMr> {
        let _ = (fd, offset, len, iova);
        Err(Error::new(
            Status::Unsupported,
            format!("{} cannot register dma-bufs", self.domain()),
        ))
    }
}

/// A device registration: its keys, and what deregisters it when the region is dropped
/// (after unregister, once no operation holds the region any more).
pub struct DeviceMr {
    pub lkey: u32,
    pub rkey: u32,
    pub guard: Box<dyn Send + Sync>,
}

impl std::fmt::Debug for DeviceMr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceMr")
            .field("lkey", &self.lkey)
            .field("rkey", &self.rkey)
            .finish()
    }
}

impl Region {
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        let start = self.addr as u64;
        addr >= start
            && addr
                .checked_add(len)
                .is_some_and(|end| end <= start + self.len as u64)
    }
}

#[derive(Default)]
struct Tables {
    /// Indexed by handle; `None` once unregistered. Never shrinks.
    slots: Vec<Option<Arc<Region>>>,
    names: HashMap<String, MrHandle>,
    by_ptr: HashMap<usize, MrHandle>,
    /// Start address → handles starting there, for validating remote accesses.
    by_start: BTreeMap<usize, Vec<MrHandle>>,
    registrar: Option<Arc<dyn Registrar>>,
}

impl Tables {
    /// A region with its key: registered with the device when there is a registrar.
    fn make_region(
        &self,
        handle: MrHandle,
        addr: usize,
        len: usize,
        placement: &Placement,
    ) -> Result<Region> {
        let (location, copier) = placement.resolve(addr)?;
        let (key, device) = match (&self.registrar, placement) {
            (Some(r), Placement::DmaBuf { fd, offset }) => {
                let mr = r.register_dmabuf(*fd, *offset, len, addr as u64)?;
                (u64::from(mr.rkey), Some(mr))
            }
            (None, Placement::DmaBuf { .. }) => {
                return Err(Error::new(
                    Status::Unsupported,
                    "register_dmabuf: a dma-buf is registered with an RDMA NIC, and no NIC \
                     registers this pool's regions (no RDMA device)",
                ))
            }
            (Some(r), _) if copier.is_some() => {
                let Location::Device(n) = location else {
                    return Err(Error::new(
                        Status::Unsupported,
                        format!(
                            "register: a region reached only through a copier cannot be \
                             registered with {}",
                            r.domain()
                        ),
                    ));
                };
                let mr = r.register_device(addr, len, n)?;
                (u64::from(mr.rkey), Some(mr))
            }
            (Some(r), _) => {
                let mr = r.register(addr, len)?;
                (u64::from(mr.rkey), Some(mr))
            }
            (None, _) => (new_key(), None),
        };
        Ok(Region {
            handle,
            addr,
            len,
            key,
            device,
            location,
            staged: copier.map(|c| StagedRange::add(addr, len, c)),
        })
    }
}

/// The table of local regions. Thread-safe; shared by the endpoints created over it.
#[derive(Default)]
pub struct MemoryPool {
    t: RwLock<Tables>,
    /// Bumped by every change of the table (a transport republishes its regions when it
    /// sees a new value).
    generation: AtomicU64,
}

/// The refusal of a transport that cannot reach a staged region.
fn unreachable_region(handle: MrHandle, location: Location) -> Error {
    Error::new(
        Status::Unsupported,
        format!(
            "region {handle} is {location} memory, which this transport cannot reach \
             directly (TCP and shared memory stage it or use CUDA IPC; RDMA registers it \
             with dma-buf or nvidia-peermem: docs/gpu.md)"
        ),
    )
}

fn new_key() -> u64 {
    loop {
        let k: u64 = rand::random();
        if k != 0 {
            return k;
        }
    }
}

impl MemoryPool {
    pub fn new() -> Arc<MemoryPool> {
        Arc::new(MemoryPool::default())
    }

    /// Registers `[ptr, ptr+len)` under `name` (default `mr_<handle>`).
    ///
    /// Same semantics as the original: a pointer registered again with a length that
    /// fits returns the same handle (the name becomes an alias); with a larger length the
    /// same handle is re-registered with the new length and a new key. A name already
    /// bound to another region is a `NameConflict`, and nothing is registered.
    ///
    /// # Safety
    /// The memory must stay valid and unaliased by Rust references that assume no
    /// mutation until the region is unregistered and every operation using it is done.
    pub unsafe fn register(
        &self,
        name: Option<&str>,
        ptr: *mut u8,
        len: usize,
    ) -> Result<MrHandle> {
        // SAFETY: forwarded contract.
        unsafe { self.register_placed(name, ptr, len, Placement::Detect) }
    }

    /// Registers CUDA device memory the caller vouches for (a `__cuda_array_interface__`
    /// or DLPack pointer): as [`MemoryPool::register`], but `DeviceUnavailable` when there
    /// is no CUDA driver, and `InvalidArgument` when the driver says `ptr` is not device
    /// memory.
    ///
    /// # Safety
    /// As [`MemoryPool::register`].
    pub unsafe fn register_device(
        &self,
        name: Option<&str>,
        ptr: *mut u8,
        len: usize,
    ) -> Result<MrHandle> {
        // SAFETY: forwarded contract.
        unsafe { self.register_placed(name, ptr, len, Placement::Device) }
    }

    /// Registers a region whose bytes are reached only through `copier` (staged): what
    /// device memory is, and what the staging tests make of host memory. Transports that
    /// stage (TCP) move it through the staging pool; the others refuse it.
    ///
    /// # Safety
    /// As [`MemoryPool::register`], for the memory `copier` reaches.
    pub unsafe fn register_staged(
        &self,
        name: Option<&str>,
        ptr: *mut u8,
        len: usize,
        copier: Arc<dyn Copier>,
    ) -> Result<MrHandle> {
        // SAFETY: forwarded contract.
        unsafe { self.register_placed(name, ptr, len, Placement::Staged(copier)) }
    }

    /// Registers CUDA device memory exported as dma-buf `fd` (from `offset`) with the RDMA
    /// NIC this pool registers with, as the region `[iova, iova+len)` (`iova` is the
    /// device pointer, so TCP and shared memory stage the region as any device region).
    /// `DeviceUnavailable` without a CUDA driver, `InvalidArgument` when `iova` is not
    /// device memory, `Unsupported` without an RDMA registrar (or dma-buf support). The
    /// NIC takes its own reference to the dma-buf: the caller may close `fd` after.
    ///
    /// # Safety
    /// As [`MemoryPool::register`] for `[iova, iova+len)`; `fd` must be a dma-buf of that
    /// memory.
    pub unsafe fn register_dmabuf(
        &self,
        name: Option<&str>,
        fd: i32,
        offset: u64,
        len: usize,
        iova: u64,
    ) -> Result<MrHandle> {
        if fd < 0 {
            return Err(Error::invalid(format!("register_dmabuf: bad fd {fd}")));
        }
        let ptr = usize::try_from(iova)
            .map_err(|_| Error::new(Status::OutOfRange, "register_dmabuf: iova out of range"))?;
        // SAFETY: forwarded contract.
        unsafe { self.register_placed(name, ptr as *mut u8, len, Placement::DmaBuf { fd, offset }) }
    }

    /// # Safety
    /// As [`MemoryPool::register`].
    unsafe fn register_placed(
        &self,
        name: Option<&str>,
        ptr: *mut u8,
        len: usize,
        placement: Placement,
    ) -> Result<MrHandle> {
        if ptr.is_null() {
            return Err(Error::new(Status::NullParameter, "register: null pointer"));
        }
        if len == 0 {
            return Err(Error::invalid("register: zero-length region"));
        }
        if (ptr as usize).checked_add(len).is_none() {
            return Err(Error::new(
                Status::OutOfRange,
                "register: region wraps the address space",
            ));
        }
        let addr = ptr as usize;
        if let Placement::Device | Placement::DmaBuf { .. } = placement {
            // Before any table lookup: a pointer already registered must not skip it.
            device::require_device(addr)?;
        }
        let mut t = self.t.write();
        if let Some(n) = name {
            if let Some(&h) = t.names.get(n) {
                let same_ptr = t.slots[h as usize].as_ref().is_some_and(|r| r.addr == addr);
                if !same_ptr {
                    return Err(Error::new(
                        Status::NameConflict,
                        format!("register: name {n:?} is already bound to handle {h} at another address"),
                    ));
                }
            }
        }
        if let Some(&h) = t.by_ptr.get(&addr) {
            let old = t.slots[h as usize]
                .clone()
                .expect("by_ptr names a live handle");
            if !matches!(placement, Placement::Detect) && old.staged.is_none() {
                return Err(Error::invalid(format!(
                    "register: {addr:#x} is already registered as directly addressable \
                     memory (handle {h}); unregister it first"
                )));
            }
            if old.len < len {
                let placement = match placement {
                    Placement::Detect => Placement::of(&old),
                    p => p,
                };
                let grown = Arc::new(t.make_region(h, addr, len, &placement)?);
                t.slots[h as usize] = Some(grown);
                self.generation.fetch_add(1, Ordering::Release);
            }
            if let Some(n) = name {
                t.names.insert(n.to_string(), h);
            }
            return Ok(h);
        }
        let h = MrHandle::try_from(t.slots.len()).map_err(|_| {
            Error::new(
                Status::ResourceExhausted,
                "register: handle space exhausted",
            )
        })?;
        let region = t.make_region(h, addr, len, &placement)?;
        t.slots.push(Some(Arc::new(region)));
        let n = name.map_or_else(|| format!("mr_{h}"), str::to_string);
        t.names.insert(n, h);
        t.by_ptr.insert(addr, h);
        t.by_start.entry(addr).or_default().push(h);
        self.generation.fetch_add(1, Ordering::Release);
        Ok(h)
    }

    /// Registers every region of this pool with `registrar`'s device, now and from now
    /// on; the regions' keys become their rkeys (publish `mr_info` after this). Attaching
    /// the same domain again is a no-op; another domain is refused.
    pub fn attach_registrar(&self, registrar: Arc<dyn Registrar>) -> Result<()> {
        let mut t = self.t.write();
        if let Some(cur) = &t.registrar {
            if cur.domain() == registrar.domain() {
                return Ok(());
            }
            return Err(Error::invalid(format!(
                "this memory pool registers its regions with {}, not {}",
                cur.domain(),
                registrar.domain()
            )));
        }
        t.registrar = Some(registrar);
        // Register everything first; commit only if all succeed.
        let mut redone = Vec::new();
        for r in t.slots.iter().flatten() {
            match t.make_region(r.handle, r.addr, r.len, &Placement::of(r)) {
                Ok(n) => redone.push(n),
                Err(e) => {
                    t.registrar = None;
                    return Err(e);
                }
            }
        }
        for n in redone {
            let h = n.handle as usize;
            t.slots[h] = Some(Arc::new(n));
        }
        Ok(())
    }

    /// The live region that contains `[addr, addr+len)`, if any (send/recv buffers that
    /// happen to be registered).
    pub fn region_containing(&self, addr: usize, len: usize) -> Option<Arc<Region>> {
        let t = self.t.read();
        for (_, handles) in t.by_start.range(..=addr).rev() {
            for &h in handles {
                if let Some(r) = &t.slots[h as usize] {
                    if r.contains(addr as u64, len as u64) {
                        return Some(r.clone());
                    }
                }
            }
        }
        None
    }

    /// Unregisters a handle and every name bound to it. The handle is never reused.
    pub fn unregister(&self, handle: MrHandle) -> Result<()> {
        let mut t = self.t.write();
        let region = t
            .slots
            .get_mut(handle as usize)
            .and_then(Option::take)
            .ok_or_else(|| {
                Error::new(
                    Status::UnknownHandle,
                    format!("unregister: no live region with handle {handle}"),
                )
            })?;
        t.names.retain(|_, h| *h != handle);
        t.by_ptr.remove(&region.addr);
        if let Some(v) = t.by_start.get_mut(&region.addr) {
            v.retain(|h| *h != handle);
            if v.is_empty() {
                t.by_start.remove(&region.addr);
            }
        }
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Changes with every registration, growth and unregistration.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn unregister_name(&self, name: &str) -> Result<()> {
        let h = self.handle(name).ok_or_else(|| {
            Error::new(
                Status::UnknownHandle,
                format!("unregister: no region named {name:?}"),
            )
        })?;
        self.unregister(h)
    }

    pub fn handle(&self, name: &str) -> Option<MrHandle> {
        self.t.read().names.get(name).copied()
    }

    pub fn region(&self, handle: MrHandle) -> Result<Arc<Region>> {
        self.t
            .read()
            .slots
            .get(handle as usize)
            .and_then(Clone::clone)
            .ok_or_else(|| {
                Error::new(
                    Status::UnknownHandle,
                    format!("no live local region with handle {handle}"),
                )
            })
    }

    /// Address of `[offset, offset+len)` inside a local region, bounds-checked. A staged
    /// region (device memory) is `Unsupported`: the caller would touch it directly.
    pub fn local_range(
        &self,
        handle: MrHandle,
        offset: u64,
        len: u64,
    ) -> Result<(Arc<Region>, *mut u8)> {
        let (r, ptr) = self.local_range_or_staged(handle, offset, len)?;
        if r.staged.is_some() {
            return Err(unreachable_region(handle, r.location));
        }
        Ok((r, ptr))
    }

    /// As [`MemoryPool::local_range`], staged regions included: for transports that reach
    /// them through the staged-range table (TCP).
    pub fn local_range_or_staged(
        &self,
        handle: MrHandle,
        offset: u64,
        len: u64,
    ) -> Result<(Arc<Region>, *mut u8)> {
        let r = self.region(handle)?;
        check_range(
            format_args!("local region {handle}"),
            offset,
            len,
            r.len as u64,
        )?;
        let ptr = (r.addr + offset as usize) as *mut u8;
        Ok((r, ptr))
    }

    /// Target-side check of a peer's access: `[addr, addr+len)` must lie inside one live
    /// region whose key is `key`. Returns that region. A staged region (device memory)
    /// is `Unsupported`: the caller would touch it directly.
    pub fn validate_access(&self, addr: u64, len: u64, key: u64) -> Result<Arc<Region>> {
        let r = self.validate_access_or_staged(addr, len, key)?;
        if r.staged.is_some() {
            return Err(unreachable_region(r.handle, r.location));
        }
        Ok(r)
    }

    /// As [`MemoryPool::validate_access`], staged regions included (TCP).
    pub fn validate_access_or_staged(&self, addr: u64, len: u64, key: u64) -> Result<Arc<Region>> {
        let t = self.t.read();
        let Ok(a) = usize::try_from(addr) else {
            return Err(Error::new(Status::RemoteAccess, "address out of range"));
        };
        let mut key_mismatch = false;
        for (_, handles) in t.by_start.range(..=a).rev() {
            for &h in handles {
                if let Some(r) = &t.slots[h as usize] {
                    if r.contains(addr, len) {
                        if r.key == key {
                            return Ok(r.clone());
                        }
                        key_mismatch = true;
                    }
                }
            }
        }
        Err(Error::new(
            Status::RemoteAccess,
            if key_mismatch {
                format!("access to {addr:#x}+{len} presented a wrong key")
            } else {
                format!("{addr:#x}+{len} is not inside any registered region")
            },
        ))
    }

    /// `{name: {"handle", "addr", "rkey", "length"}}` for every live name, the original's
    /// `mr_info` shape.
    pub fn mr_info(&self) -> Value {
        let t = self.t.read();
        let mut m = Map::new();
        let mut names: Vec<_> = t.names.iter().collect();
        names.sort_by_key(|(n, h)| (**h, (*n).clone()));
        for (name, &h) in names {
            if let Some(r) = &t.slots[h as usize] {
                let mut v = json!({"handle": h, "addr": r.addr as u64, "rkey": r.key, "length": r.len as u64});
                if let Location::Device(n) = r.location {
                    v["device"] = n.into();
                }
                m.insert(name.clone(), v);
            }
        }
        Value::Object(m)
    }

    /// Live regions, in handle order.
    pub fn regions(&self) -> Vec<Arc<Region>> {
        self.t.read().slots.iter().flatten().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(n: usize) -> Vec<u8> {
        vec![0u8; n]
    }

    #[test]
    fn register_alias_grow_conflict_unregister() {
        let pool = MemoryPool::new();
        let mut a = buf(64);
        let mut b = buf(64);
        // SAFETY: `a` and `b` outlive `pool`'s use of them (no operation ever touches the
        // regions here) and no Rust reference into them is alive while registered.
        unsafe {
            let h = pool.register(Some("a"), a.as_mut_ptr(), 32).unwrap();
            assert_eq!(h, 0);
            // same ptr, smaller: same handle, alias
            assert_eq!(pool.register(Some("a2"), a.as_mut_ptr(), 16).unwrap(), h);
            let k1 = pool.region(h).unwrap().key;
            // same ptr, larger: same handle, new key
            assert_eq!(pool.register(None, a.as_mut_ptr(), 64).unwrap(), h);
            assert_eq!(pool.region(h).unwrap().len, 64);
            assert_ne!(pool.region(h).unwrap().key, k1);
            // name bound elsewhere
            assert_eq!(
                pool.register(Some("a"), b.as_mut_ptr(), 8)
                    .unwrap_err()
                    .status(),
                Status::NameConflict
            );
            let hb = pool.register(Some("b"), b.as_mut_ptr(), 64).unwrap();
            assert_eq!(hb, 1);
            let info = pool.mr_info();
            assert_eq!(info["a"]["handle"], 0);
            assert_eq!(info["a2"]["handle"], 0);
            assert_eq!(info["b"]["length"], 64);
            pool.unregister(h).unwrap();
            assert_eq!(
                pool.unregister(h).unwrap_err().status(),
                Status::UnknownHandle
            );
            assert!(pool.handle("a").is_none());
            // never reused
            let hc = pool.register(Some("a"), a.as_mut_ptr(), 8).unwrap();
            assert_eq!(hc, 2);
            pool.unregister_name("b").unwrap();
            assert_eq!(
                pool.unregister_name("b").unwrap_err().status(),
                Status::UnknownHandle
            );
        }
    }

    #[test]
    fn staged_regions_are_refused_where_touched_directly() {
        let pool = MemoryPool::new();
        let mut a = buf(100);
        let copier = Arc::new(device::HostCopier::new());
        // SAFETY: `a` outlives the pool's use of it; nothing touches it here.
        let h = unsafe { pool.register_staged(Some("s"), a.as_mut_ptr(), 100, copier) }.unwrap();
        let r = pool.region(h).unwrap();
        assert!(r.staged.is_some());
        assert_eq!(
            pool.local_range(h, 0, 10).unwrap_err().status(),
            Status::Unsupported
        );
        assert!(pool.local_range_or_staged(h, 0, 10).is_ok());
        let e = pool.validate_access(r.addr as u64, 10, r.key).unwrap_err();
        assert_eq!(e.status(), Status::Unsupported);
        assert!(e.message().contains("docs/gpu.md"), "{}", e.message());
        assert!(pool
            .validate_access_or_staged(r.addr as u64, 10, r.key)
            .is_ok());
        assert!(device::staged::find(r.addr, 100).is_some());
        // Registering the pointer again keeps the region staged.
        // SAFETY: as above.
        unsafe { pool.register(None, a.as_mut_ptr(), 50) }.unwrap();
        assert!(pool.region(h).unwrap().staged.is_some());
        drop(r);
        pool.unregister(h).unwrap();
        assert!(device::staged::find(a.as_ptr() as usize, 100).is_none());
    }

    #[test]
    fn device_claim_without_driver_is_typed_and_registers_nothing() {
        if device::available() {
            return; // make test-gpu covers real device pointers
        }
        let pool = MemoryPool::new();
        let mut a = buf(64);
        // SAFETY: refused before anything is registered.
        let e = unsafe { pool.register_device(Some("d"), a.as_mut_ptr(), 64) }.unwrap_err();
        assert_eq!(e.status(), Status::DeviceUnavailable);
        assert!(pool.handle("d").is_none());
        assert!(pool.regions().is_empty());
        // The plain call, without a driver, takes any pointer as host memory.
        // SAFETY: `a` outlives the pool's use.
        let h = unsafe { pool.register(Some("h"), a.as_mut_ptr(), 64) }.unwrap();
        assert_eq!(pool.region(h).unwrap().location, Location::Host);
        // A pointer already registered as host memory does not skip the device check,
        // and cannot become staged under the same handle.
        // SAFETY: refused before anything is registered.
        let e = unsafe { pool.register_device(Some("d"), a.as_mut_ptr(), 64) }.unwrap_err();
        assert_eq!(e.status(), Status::DeviceUnavailable);
        let c = Arc::new(device::HostCopier::new());
        // SAFETY: refused before anything is registered.
        let e = unsafe { pool.register_staged(Some("s"), a.as_mut_ptr(), 64, c) }.unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument);
        assert!(pool.handle("d").is_none() && pool.handle("s").is_none());
    }

    #[test]
    fn dmabuf_without_driver_is_typed_and_registers_nothing() {
        if device::available() {
            return; // make test-gpu covers real dma-bufs
        }
        let pool = MemoryPool::new();
        // SAFETY: refused before anything is registered.
        let e =
            unsafe { pool.register_dmabuf(Some("d"), 3, 0, 4096, 0x7000_0000_0000) }.unwrap_err();
        assert_eq!(e.status(), Status::DeviceUnavailable);
        // SAFETY: as above.
        let e =
            unsafe { pool.register_dmabuf(Some("d"), -1, 0, 4096, 0x7000_0000_0000) }.unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument);
        assert!(pool.regions().is_empty());
    }

    #[test]
    fn ranges_and_access_validation() {
        let pool = MemoryPool::new();
        let mut a = buf(100);
        // SAFETY: `a` outlives the pool and is only reached through the pool's checks.
        let h = unsafe { pool.register(Some("a"), a.as_mut_ptr(), 100).unwrap() };
        assert!(pool.local_range(h, 90, 10).is_ok());
        assert_eq!(
            pool.local_range(h, 91, 10).unwrap_err().status(),
            Status::OutOfRange
        );
        assert_eq!(
            pool.local_range(h, u64::MAX, 2).unwrap_err().status(),
            Status::OutOfRange
        );
        assert_eq!(
            pool.local_range(7, 0, 1).unwrap_err().status(),
            Status::UnknownHandle
        );
        let r = pool.region(h).unwrap();
        let base = r.addr as u64;
        assert!(pool.validate_access(base + 10, 90, r.key).is_ok());
        assert_eq!(
            pool.validate_access(base + 10, 91, r.key)
                .unwrap_err()
                .status(),
            Status::RemoteAccess
        );
        assert_eq!(
            pool.validate_access(base, 1, r.key ^ 1)
                .unwrap_err()
                .status(),
            Status::RemoteAccess
        );
        assert_eq!(
            pool.validate_access(u64::MAX, 1, r.key)
                .unwrap_err()
                .status(),
            Status::RemoteAccess
        );
        assert_eq!(
            pool.validate_access(1, 1, r.key).unwrap_err().status(),
            Status::RemoteAccess
        );
    }
}
