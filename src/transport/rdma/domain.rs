//! A protection domain on one port of an open device, with the addressing the port's QPs
//! use (GID or LID, MTU). Memory regions and QPs hold it, so it is freed after them.

use rdma_sys::*;

use super::device::Device;
use super::verbs::{os_error, verbs};
use super::{LinkType, RdmaConfig};
use crate::error::{Error, Result, Status};

pub struct Domain {
    pub device: Device,
    pub pd: *mut ibv_pd,
    pub port: u8,
    pub link: LinkType,
    /// −1 on InfiniBand ports (addressed by LID), the GID index on RoCE ports.
    pub gid_index: i32,
    pub gid: [u8; 16],
    pub lid: u16,
    pub active_mtu: ibv_mtu::Type,
}

// SAFETY: a PD and its device are usable from any thread (libibverbs is thread-safe);
// the struct is immutable after construction.
unsafe impl Send for Domain {}
// SAFETY: as above.
unsafe impl Sync for Domain {}

impl Domain {
    pub fn open(cfg: &RdmaConfig) -> Result<Domain> {
        let v = verbs()?;
        let device = Device::open(cfg.device.as_deref())?;
        let attr = device.port(cfg.ib_port)?;
        if attr.state != ibv_port_state::IBV_PORT_ACTIVE {
            return Err(Error::new(
                Status::RdmaUnavailable,
                format!(
                    "{} port {} is not ACTIVE (state {}): link down or no address",
                    device.name, cfg.ib_port, attr.state
                ),
            ));
        }
        let link = Device::link_type(&attr);
        if let Some(want) = cfg.link_type {
            if want != link {
                return Err(Error::invalid(format!(
                    "{} port {} is {link}, not {want}",
                    device.name, cfg.ib_port
                )));
            }
        }
        let (gid_index, gid) = match link {
            LinkType::Ib => (-1, [0u8; 16]),
            LinkType::RoCE => device.select_gid(cfg.ib_port, &attr, cfg.gid_index)?,
        };
        // SAFETY: live context.
        let pd = unsafe { (v.ibv_alloc_pd)(device.raw) };
        if pd.is_null() {
            return Err(os_error(
                Status::ResourceExhausted,
                &format!("ibv_alloc_pd({})", device.name),
            ));
        }
        Ok(Domain {
            pd,
            port: cfg.ib_port,
            link,
            gid_index,
            gid,
            lid: attr.lid,
            active_mtu: attr.active_mtu,
            device,
        })
    }

    pub fn ctx(&self) -> *mut ibv_context {
        self.device.raw
    }

    /// `device:port`, for messages.
    pub fn label(&self) -> String {
        format!("{}:{}", self.device.name, self.port)
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        if let Ok(v) = verbs() {
            // SAFETY: allocated in open; every MR and QP on it holds the domain, so none
            // is left. The device closes after (field drop order).
            unsafe { (v.ibv_dealloc_pd)(self.pd) };
        }
    }
}
