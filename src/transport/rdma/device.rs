//! Device discovery: which NICs there are, opening one, its port, and the GID to use.

use std::ffi::CStr;
use std::ptr;

use rdma_sys::*;

use super::verbs::{os_error, verbs};
use super::LinkType;
use crate::engine::config::comma_list;
use crate::error::{Error, Result, Status};

// <infiniband/verbs.h> #defines, which bindgen does not carry.
const IBV_LINK_LAYER_INFINIBAND: u8 = 1;

/// Names of the RDMA devices, in `ibv_get_device_list` order, filtered by
/// `SLIME_VISIBLE_DEVICES` (comma-separated names) when it is set. Empty when libibverbs
/// is installed but there is no device; `RdmaUnavailable` when libibverbs is missing.
pub fn available_nics() -> Result<Vec<String>> {
    let mut names = all_devices()?;
    if let Some(visible) = visible_filter() {
        names.retain(|n| visible.iter().any(|v| v == n));
    }
    Ok(names)
}

fn visible_filter() -> Option<Vec<String>> {
    let v = std::env::var("SLIME_VISIBLE_DEVICES").ok()?;
    let list: Vec<String> = comma_list(&v).map(String::from).collect();
    (!list.is_empty()).then_some(list)
}

fn all_devices() -> Result<Vec<String>> {
    let v = verbs()?;
    let mut n = 0;
    // SAFETY: ibv_get_device_list writes the count and returns a NULL-terminated array
    // (or NULL), freed below with ibv_free_device_list.
    let list = unsafe { (v.ibv_get_device_list)(&mut n) };
    if list.is_null() {
        // ENOSYS when the kernel has no RDMA support at all: "no device" too.
        return Ok(Vec::new());
    }
    let mut names = Vec::new();
    for i in 0..n.max(0) as usize {
        // SAFETY: `list` has `n` valid entries; names are NUL-terminated static strings.
        let name = unsafe { CStr::from_ptr((v.ibv_get_device_name)(*list.add(i))) };
        names.push(name.to_string_lossy().into_owned());
    }
    // SAFETY: the list came from ibv_get_device_list and is freed once.
    unsafe { (v.ibv_free_device_list)(list) };
    Ok(names)
}

/// An open device (`ibv_context`), closed on drop.
pub struct Device {
    pub name: String,
    pub raw: *mut ibv_context,
    pub attr: ibv_device_attr,
}

// SAFETY: an ibv_context is safe to use from any thread (libibverbs is thread-safe).
unsafe impl Send for Device {}
// SAFETY: as above.
unsafe impl Sync for Device {}

impl Device {
    /// Opens the device named `name`, or the first visible one for `None`/`""`.
    pub fn open(name: Option<&str>) -> Result<Device> {
        let v = verbs()?;
        let visible = available_nics()?;
        let want = match name.filter(|n| !n.is_empty()) {
            Some(n) => {
                if !visible.iter().any(|d| d == n) {
                    return Err(Error::new(
                        Status::RdmaUnavailable,
                        format!(
                            "no RDMA device named {n:?} (available: {})",
                            list_or_none(&visible)
                        ),
                    ));
                }
                n.to_string()
            }
            None => visible.first().cloned().ok_or_else(|| {
                Error::new(
                    Status::RdmaUnavailable,
                    "RDMA is unavailable: libibverbs found no RDMA device \
                     (no NIC, or its kernel driver is not loaded)",
                )
            })?,
        };
        let mut n = 0;
        // SAFETY: as in all_devices.
        let list = unsafe { (v.ibv_get_device_list)(&mut n) };
        if list.is_null() {
            return Err(os_error(Status::RdmaUnavailable, "ibv_get_device_list"));
        }
        let mut raw = ptr::null_mut();
        for i in 0..n.max(0) as usize {
            // SAFETY: as in all_devices.
            let dev = unsafe { *list.add(i) };
            // SAFETY: as in all_devices.
            let dn = unsafe { CStr::from_ptr((v.ibv_get_device_name)(dev)) };
            if dn.to_string_lossy() == want {
                // SAFETY: `dev` is a live entry of the list; the context outlives it.
                raw = unsafe { (v.ibv_open_device)(dev) };
                if raw.is_null() {
                    let e = os_error(Status::RdmaUnavailable, &format!("ibv_open_device({want})"));
                    // SAFETY: freed once.
                    unsafe { (v.ibv_free_device_list)(list) };
                    return Err(e);
                }
                break;
            }
        }
        // SAFETY: freed once; an open context does not need the list.
        unsafe { (v.ibv_free_device_list)(list) };
        if raw.is_null() {
            return Err(Error::new(
                Status::RdmaUnavailable,
                format!("RDMA device {want:?} disappeared"),
            ));
        }
        // SAFETY: zeroed POD filled by ibv_query_device.
        let mut attr: ibv_device_attr = unsafe { std::mem::zeroed() };
        // SAFETY: `raw` is a live context.
        if unsafe { (v.ibv_query_device)(raw, &mut attr) } != 0 {
            let e = os_error(
                Status::RdmaUnavailable,
                &format!("ibv_query_device({want})"),
            );
            // SAFETY: closed once.
            unsafe { (v.ibv_close_device)(raw) };
            return Err(e);
        }
        Ok(Device {
            name: want,
            raw,
            attr,
        })
    }

    /// The port's attributes; the port must exist.
    pub fn port(&self, port: u8) -> Result<ibv_port_attr> {
        let v = verbs()?;
        if port == 0 || port > self.attr.phys_port_cnt {
            return Err(Error::invalid(format!(
                "{} has {} port(s); ib_port {port} does not exist",
                self.name, self.attr.phys_port_cnt
            )));
        }
        // SAFETY: zeroed POD; the exported ibv_query_port fills at least the compat
        // prefix of ibv_port_attr, the rest stays zero (as the inline wrapper does).
        let mut attr: ibv_port_attr = unsafe { std::mem::zeroed() };
        // SAFETY: live context, valid out pointer.
        if unsafe { (v.ibv_query_port)(self.raw, port, &mut attr) } != 0 {
            return Err(os_error(
                Status::RdmaUnavailable,
                &format!("ibv_query_port({}, {port})", self.name),
            ));
        }
        Ok(attr)
    }

    /// The port's link: InfiniBand, or Ethernet (RoCE).
    pub fn link_type(attr: &ibv_port_attr) -> LinkType {
        if attr.link_layer == IBV_LINK_LAYER_INFINIBAND {
            LinkType::Ib
        } else {
            LinkType::RoCE
        }
    }

    pub fn gid(&self, port: u8, index: i32) -> Result<[u8; 16]> {
        let v = verbs()?;
        // SAFETY: zeroed union of bytes.
        let mut gid: ibv_gid = unsafe { std::mem::zeroed() };
        // SAFETY: live context, valid out pointer.
        if unsafe { (v.ibv_query_gid)(self.raw, port, index, &mut gid) } != 0 {
            return Err(os_error(
                Status::RdmaUnavailable,
                &format!("ibv_query_gid({}, port {port}, index {index})", self.name),
            ));
        }
        // SAFETY: every bit pattern of the union is a valid byte array.
        Ok(unsafe { gid.raw })
    }

    /// The GID index to use on a RoCE port: `requested` if given (0 included), else
    /// `SLIME_GID_INDEX` if set to a number ≥ 0, else the first RoCE v2 GID that is an
    /// IPv4-mapped address (routable over IPv4, what RoCE deployments use), else the first
    /// RoCE v2 GID, else the first non-zero GID.
    pub fn select_gid(
        &self,
        port: u8,
        attr: &ibv_port_attr,
        requested: Option<u32>,
    ) -> Result<(i32, [u8; 16])> {
        let from_env = std::env::var("SLIME_GID_INDEX")
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .filter(|i| *i >= 0);
        if let Some(i) = requested.map(i64::from).or(from_env) {
            if i >= attr.gid_tbl_len as i64 {
                return Err(Error::invalid(format!(
                    "GID index {i} is outside {}'s table of {} on port {port}",
                    self.name, attr.gid_tbl_len
                )));
            }
            let gid = self.gid(port, i as i32)?;
            if gid == [0; 16] {
                return Err(Error::new(
                    Status::RdmaUnavailable,
                    format!("GID index {i} of {} port {port} is empty", self.name),
                ));
            }
            return Ok((i as i32, gid));
        }
        let mut v2 = None;
        let mut any = None;
        for i in 0..attr.gid_tbl_len.max(0) {
            let Ok(gid) = self.gid(port, i) else { continue };
            if gid == [0; 16] {
                continue;
            }
            any.get_or_insert((i, gid));
            if gid_type(&self.name, port, i).as_deref() == Some("RoCE v2") {
                if is_ipv4_mapped(&gid) {
                    return Ok((i, gid));
                }
                v2.get_or_insert((i, gid));
            }
        }
        v2.or(any).ok_or_else(|| {
            Error::new(
                Status::RdmaUnavailable,
                format!(
                    "{} port {port} has no GID (no IP address on its network device?)",
                    self.name
                ),
            )
        })
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Ok(v) = verbs() {
            // SAFETY: opened by ibv_open_device, closed once, after everything on it.
            unsafe { (v.ibv_close_device)(self.raw) };
        }
    }
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// `::ffff:a.b.c.d`.
fn is_ipv4_mapped(gid: &[u8; 16]) -> bool {
    gid[..10].iter().all(|b| *b == 0) && gid[10] == 0xff && gid[11] == 0xff
}

/// The GID's type from sysfs ("IB/RoCE v1" or "RoCE v2"), if readable.
fn gid_type(dev: &str, port: u8, index: i32) -> Option<String> {
    let p = format!("/sys/class/infiniband/{dev}/ports/{port}/gid_attrs/types/{index}");
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_mapped_gids() {
        let mut g = [0u8; 16];
        g[10] = 0xff;
        g[11] = 0xff;
        g[12..].copy_from_slice(&[192, 0, 2, 1]);
        assert!(is_ipv4_mapped(&g));
        g[0] = 0xfe;
        assert!(!is_ipv4_mapped(&g));
    }
}
