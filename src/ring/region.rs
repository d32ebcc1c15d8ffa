//! The ring's memory: one shared allocation (a memfd from `alloc_shared`), created by
//! the producer and mapped by any other process of the host through a [`RingHandle`].
//!
//! Both are entries of the process's shared-allocation table, so a shared-memory
//! endpoint connected after the ring exists maps it on the peer's side too: a remote
//! fetch over shared memory is one memcpy out of the slot.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result, Status};
use crate::host;
use crate::memory::shared::{find_allocation, SharedBuf};

/// What another process of the host needs to map a ring: JSON with the fields of the
/// original's `get_handle()` that apply (`buffer_name`, `max_entries`, `entry_size`,
/// `node_id`) plus where the memory is (`pid`, `fd`, `len`) and the host identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingHandle {
    #[serde(rename = "type")]
    pub kind: String,
    pub buffer_name: String,
    pub max_entries: u64,
    pub entry_size: u64,
    pub node_id: String,
    pub host_id: String,
    pub pid: u32,
    pub fd: i32,
    pub len: u64,
}

pub const HANDLE_TYPE: &str = "dlslime_ring";

impl RingHandle {
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a handle serialises")
    }

    pub fn from_json(v: &Value) -> Result<RingHandle> {
        let h: RingHandle = serde_json::from_value(v.clone())
            .map_err(|e| Error::invalid(format!("not a ring handle: {e}")))?;
        if h.kind != HANDLE_TYPE {
            return Err(Error::invalid(format!(
                "not a ring handle (type {:?}, expected {HANDLE_TYPE:?})",
                h.kind
            )));
        }
        Ok(h)
    }

    pub fn parse(text: &str) -> Result<RingHandle> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("ring handle is not JSON: {e}")))?;
        RingHandle::from_json(&v)
    }
}

/// A mapping of a ring's memory; unmapped on drop (the memory lives on while any process
/// maps it).
pub struct RingRegion {
    buf: SharedBuf,
    /// The allocation's length (at least what was asked for).
    len: usize,
    fd: i32,
}

impl RingRegion {
    /// A fresh zeroed shared allocation of at least `len` bytes.
    pub fn create(len: usize) -> Result<RingRegion> {
        let buf = SharedBuf::new(len)?;
        let info = find_allocation(buf.as_ptr() as usize, len)
            .ok_or_else(|| Error::new(Status::Internal, "shared allocation not in its table"))?;
        Ok(RingRegion {
            buf,
            len: info.len,
            fd: info.fd.as_raw_fd(),
        })
    }

    /// Maps the memory a handle names (`/proc/<pid>/fd/<fd>` of a process that maps it).
    pub fn open(h: &RingHandle) -> Result<RingRegion> {
        let here = host::identity();
        if h.host_id != here {
            return Err(Error::invalid(format!(
                "ring {:?} lives on another host ({}), this is {here}: fetch it through a RingClient",
                h.buffer_name, h.host_id
            )));
        }
        let path = format!("/proc/{}/fd/{}", h.pid, h.fd);
        let c = CString::new(path.clone()).expect("no NUL in a path of numbers");
        // SAFETY: open(2) on a NUL-terminated path; the result is checked.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            let status = if e.raw_os_error() == Some(libc::ENOENT) {
                Status::UnknownHandle
            } else {
                Status::Io
            };
            return Err(Error::new(
                status,
                format!(
                    "ring {:?}: cannot open {path} ({e}); the process that shared it must be alive",
                    h.buffer_name
                ),
            ));
        }
        // SAFETY: a descriptor we just opened and own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let raw = fd.as_raw_fd();
        let buf = SharedBuf::adopt(fd)?;
        Ok(RingRegion {
            len: buf.len(),
            buf,
            fd: raw,
        })
    }

    pub fn base(&self) -> *mut u8 {
        self.buf.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The descriptor number of the memfd in this process (for handles).
    pub fn fd(&self) -> i32 {
        self.fd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_json_round_trip_and_refusals() {
        let h = RingHandle {
            kind: HANDLE_TYPE.into(),
            buffer_name: "r".into(),
            max_entries: 4,
            entry_size: 100,
            node_id: host::name(),
            host_id: host::identity(),
            pid: 1,
            fd: 3,
            len: 8192,
        };
        let v = h.to_json();
        assert_eq!(v["type"], HANDLE_TYPE);
        assert_eq!(RingHandle::from_json(&v).unwrap(), h);
        assert_eq!(RingHandle::parse(&v.to_string()).unwrap(), h);
        assert!(RingHandle::parse("{").is_err());
        let mut other = v.clone();
        other["type"] = "cpu_shm".into();
        assert!(RingHandle::from_json(&other).is_err());
        let mut far = h.clone();
        far.host_id = "elsewhere".into();
        assert_eq!(
            RingRegion::open(&far).err().unwrap().status(),
            Status::InvalidArgument
        );
        let mut gone = h;
        gone.pid = (1 << 22) + 77;
        assert_eq!(
            RingRegion::open(&gone).err().unwrap().status(),
            Status::UnknownHandle
        );
    }

    #[test]
    fn open_maps_the_same_memory() {
        let r = RingRegion::create(10_000).unwrap();
        assert_eq!(r.len(), 12288);
        let h = RingHandle {
            kind: HANDLE_TYPE.into(),
            buffer_name: "r".into(),
            max_entries: 1,
            entry_size: 1,
            node_id: host::name(),
            host_id: host::identity(),
            pid: std::process::id(),
            fd: r.fd(),
            len: r.len() as u64,
        };
        let o = RingRegion::open(&h).unwrap();
        assert_ne!(o.base(), r.base());
        // SAFETY: both mappings are live for the test and cover byte 5000.
        unsafe {
            *r.base().add(5000) = 42;
            assert_eq!(*o.base().add(5000), 42);
        }
    }
}
