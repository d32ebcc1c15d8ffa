//! Handshake and liveness socket: a Unix SOCK_SEQPACKET socket in the abstract namespace
//! (nothing to clean up on disk, and message boundaries for free). Frames are JSON, with
//! memfds attached through SCM_RIGHTS. The connection stays open for the endpoint's life:
//! its hang-up is how a peer's death is seen.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use serde_json::Value;

use crate::engine::Deadline;
use crate::error::{Error, Result, Status};

/// Most fds one frame carries (the kernel's SCM_MAX_FD is 253).
pub const MAX_FDS: usize = 250;
const MAX_FRAME: usize = 1 << 20;

fn os_err(ctx: &str) -> Error {
    Error::io(ctx, std::io::Error::last_os_error())
}

fn sockaddr(name: &str) -> Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: zeroed sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() + 1 > addr.sun_path.len() || bytes.contains(&0) {
        return Err(Error::new(
            Status::InvalidEndpointInfo,
            format!("bad shared-memory socket name {name:?}"),
        ));
    }
    // Abstract namespace: a leading NUL byte.
    for (i, b) in bytes.iter().enumerate() {
        addr.sun_path[i + 1] = *b as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + bytes.len();
    Ok((addr, len as libc::socklen_t))
}

fn socket() -> Result<OwnedFd> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(os_err("socket(AF_UNIX)"));
    }
    // SAFETY: `fd` is a new descriptor (checked non-negative above) that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Binds a listener under a fresh unique abstract name; returns (fd, name).
pub fn listen() -> Result<(OwnedFd, String)> {
    for _ in 0..8 {
        let name = format!(
            "dlslime-shm-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        );
        let fd = socket()?;
        let (addr, len) = sockaddr(&name)?;
        // SAFETY: addr is a valid sockaddr_un of `len` bytes.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const _ as *const libc::sockaddr,
                len,
            )
        };
        if rc != 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EADDRINUSE) {
                continue;
            }
            return Err(os_err("bind(shm socket)"));
        }
        // SAFETY: `fd` is an open socket this function owns; `listen` takes no pointers.
        if unsafe { libc::listen(fd.as_raw_fd(), 8) } != 0 {
            return Err(os_err("listen(shm socket)"));
        }
        return Ok((fd, name));
    }
    Err(Error::new(
        Status::Io,
        "could not find a free shared-memory socket name",
    ))
}

pub fn connect(name: &str) -> Result<OwnedFd> {
    let fd = socket()?;
    let (addr, len) = sockaddr(name)?;
    // SAFETY: as in listen.
    if unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &addr as *const _ as *const libc::sockaddr,
            len,
        )
    } != 0
    {
        return Err(Error::new(
            Status::Io,
            format!(
                "connect to shared-memory peer socket {name:?}: {}",
                std::io::Error::last_os_error()
            ),
        ));
    }
    Ok(fd)
}

/// Waits until `fd` is readable (or hung up) or the deadline passes.
pub fn wait_readable(fd: RawFd, deadline: Deadline) -> Result<()> {
    loop {
        let ms = deadline
            .remaining()
            .map_or(-1, |d| d.as_millis().min(i32::MAX as u128) as i32);
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut p, 1, ms) };
        if rc > 0 {
            return Ok(());
        }
        if rc == 0 {
            return Err(Error::new(
                Status::Timeout,
                "shared-memory handshake: peer did not answer in time",
            ));
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Err(os_err("poll"));
        }
    }
}

pub fn accept(listener: RawFd, deadline: Deadline) -> Result<OwnedFd> {
    wait_readable(listener, deadline)?;
    // SAFETY: plain syscall.
    let fd = unsafe {
        libc::accept4(
            listener,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(os_err("accept(shm socket)"));
    }
    // SAFETY: `fd` is a new descriptor (checked non-negative above) that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends one frame: JSON plus up to MAX_FDS descriptors.
pub fn send_frame(sock: RawFd, msg: &Value, fds: &[RawFd]) -> Result<()> {
    let body = serde_json::to_vec(msg).expect("json");
    if fds.len() > MAX_FDS || body.len() > MAX_FRAME {
        return Err(Error::new(
            Status::ResourceExhausted,
            "handshake frame too large",
        ));
    }
    let mut iov = libc::iovec {
        iov_base: body.as_ptr() as *mut libc::c_void,
        iov_len: body.len(),
    };
    // SAFETY: `CMSG_SPACE` is arithmetic on its argument; it touches no memory.
    let space = unsafe { libc::CMSG_SPACE((fds.len() * 4) as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8).max(1)];
    // SAFETY: msghdr points at live buffers for the duration of sendmsg.
    unsafe {
        let mut m: libc::msghdr = std::mem::zeroed();
        m.msg_iov = &mut iov;
        m.msg_iovlen = 1;
        if !fds.is_empty() {
            m.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
            m.msg_controllen = space as _;
            let c = libc::CMSG_FIRSTHDR(&m);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN((fds.len() * 4) as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(c) as *mut RawFd,
                fds.len(),
            );
        }
        if libc::sendmsg(sock, &m, libc::MSG_NOSIGNAL) < 0 {
            return Err(os_err("sendmsg(shm handshake)"));
        }
    }
    Ok(())
}

/// Receives one frame within the deadline. EOF is `PeerDisconnected`.
pub fn recv_frame(sock: RawFd, deadline: Deadline) -> Result<(Value, Vec<OwnedFd>)> {
    wait_readable(sock, deadline)?;
    recv_frame_flags(sock, 0, MAX_FRAME)?.ok_or_else(|| {
        Error::new(
            Status::Protocol,
            "shared-memory handshake: no frame to read",
        )
    })
}

/// Largest frame after the handshake (allocation announcements).
const MAX_LATE_FRAME: usize = 64 << 10;

/// Receives one frame if one is waiting (`None` otherwise), without blocking. EOF (the
/// peer hung up) is `PeerDisconnected`.
pub fn recv_frame_nowait(sock: RawFd) -> Result<Option<(Value, Vec<OwnedFd>)>> {
    let mut p = libc::pollfd {
        fd: sock,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout: a cheap check before allocating a buffer.
    if unsafe { libc::poll(&mut p, 1, 0) } <= 0 {
        return Ok(None);
    }
    recv_frame_flags(sock, libc::MSG_DONTWAIT, MAX_LATE_FRAME)
}

fn recv_frame_flags(
    sock: RawFd,
    flags: libc::c_int,
    max: usize,
) -> Result<Option<(Value, Vec<OwnedFd>)>> {
    let mut body = vec![0u8; max];
    let mut iov = libc::iovec {
        iov_base: body.as_mut_ptr() as *mut libc::c_void,
        iov_len: body.len(),
    };
    // SAFETY: CMSG_SPACE is pure arithmetic on its argument.
    let space = unsafe { libc::CMSG_SPACE((253 * 4) as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    let mut fds = Vec::new();
    // SAFETY: the msghdr points at `body` and `cbuf`, both alive and at least as large as
    // the lengths given; the kernel writes only within them. Every fd the kernel passed
    // (SCM_RIGHTS) is a fresh fd of this process that we take ownership of exactly once.
    let n = unsafe {
        let mut m: libc::msghdr = std::mem::zeroed();
        m.msg_iov = &mut iov;
        m.msg_iovlen = 1;
        m.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        m.msg_controllen = space as _;
        let n = libc::recvmsg(sock, &mut m, libc::MSG_CMSG_CLOEXEC | flags);
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if flags & libc::MSG_DONTWAIT != 0
                && matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR))
            {
                return Ok(None);
            }
            if e.raw_os_error() == Some(libc::ECONNRESET) {
                return Err(Error::new(
                    Status::PeerDisconnected,
                    "shared-memory peer closed the socket",
                ));
            }
            return Err(Error::io("recvmsg(shm socket)", e));
        }
        let mut c = libc::CMSG_FIRSTHDR(&m);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let cnt = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                let p = libc::CMSG_DATA(c) as *const RawFd;
                for i in 0..cnt {
                    fds.push(OwnedFd::from_raw_fd(*p.add(i)));
                }
            }
            c = libc::CMSG_NXTHDR(&m, c);
        }
        if m.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
            return Err(Error::new(
                Status::Protocol,
                "shared-memory frame truncated",
            ));
        }
        n as usize
    };
    if n == 0 {
        return Err(Error::new(
            Status::PeerDisconnected,
            "shared-memory peer closed the socket",
        ));
    }
    let v = serde_json::from_slice(&body[..n]).map_err(|e| {
        Error::new(
            Status::Protocol,
            format!("shared-memory frame is not JSON: {e}"),
        )
    })?;
    Ok(Some((v, fds)))
}

pub fn sleep_briefly() {
    std::thread::sleep(Duration::from_micros(50));
}
