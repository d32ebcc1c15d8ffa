//! Handshake and liveness socket: a Unix SOCK_SEQPACKET socket (message boundaries for
//! free, so a readable socket always yields one whole frame at once) bound in a directory
//! only this user can enter (see [`socket_dir`]), so other users cannot even reach it.
//! Frames are JSON, with memfds attached through SCM_RIGHTS. The connection stays open
//! for the endpoint's life: its hang-up is how a peer's death is seen.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::engine::Deadline;
use crate::error::{Error, Result, Status};

/// Most fds one frame carries (the kernel's SCM_MAX_FD is 253).
pub const MAX_FDS: usize = 250;
const MAX_FRAME: usize = 1 << 20;
/// Overrides the socket directory (`DLSLIME_SHM_SOCKET_DIR`), e.g. a directory shared by
/// two users who want shared memory between their processes.
pub const DIR_ENV: &str = "DLSLIME_SHM_SOCKET_DIR";

fn os_err(ctx: &str) -> Error {
    Error::io(ctx, std::io::Error::last_os_error())
}

fn sockaddr(path: &str) -> Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain old data (an integer and a byte array), for which
    // all-zero bytes are a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_bytes();
    if bytes.is_empty() || bytes.len() + 1 > addr.sun_path.len() || bytes.contains(&0) {
        return Err(Error::new(
            Status::InvalidEndpointInfo,
            format!("bad shared-memory socket path {path:?}"),
        ));
    }
    for (i, b) in bytes.iter().enumerate() {
        addr.sun_path[i] = *b as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

fn socket() -> Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; it returns a new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(os_err("socket(AF_UNIX)"));
    }
    // SAFETY: fd >= 0 was just returned by socket(2): open, and owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Where listeners are bound: `$DLSLIME_SHM_SOCKET_DIR` as given; else
/// `$XDG_RUNTIME_DIR/dlslime` or `/tmp/dlslime-<uid>`, created 0700 and checked to be
/// ours, a real directory and closed to others (so nobody else can connect, or plant a
/// socket or a link there).
pub fn socket_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os(DIR_ENV) {
        return Ok(PathBuf::from(d));
    }
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(x) if Path::new(&x).is_dir() => Path::new(&x).join("dlslime"),
        _ => PathBuf::from(format!("/tmp/dlslime-{uid}")),
    };
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(&format!("create {}", dir.display()), e)),
    }
    let m = std::fs::symlink_metadata(&dir).map_err(|e| Error::io("socket directory", e))?;
    if !m.is_dir() || m.uid() != uid {
        return Err(Error::new(
            Status::Io,
            format!(
                "{} is not a directory owned by this user (uid {uid}); set {DIR_ENV}",
                dir.display()
            ),
        ));
    }
    if m.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("chmod 0700 socket directory", e))?;
    }
    Ok(dir)
}

/// Removes sockets left by processes that no longer exist (SIGKILLed before connect).
fn sweep_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".sock"))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A bound listener; its socket file is removed when it is dropped.
pub struct Listener {
    fd: OwnedFd,
    path: String,
}

impl Listener {
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The path published in `endpoint_info`.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds a non-blocking listener under a fresh unguessable name in [`socket_dir`].
pub fn listen() -> Result<Listener> {
    let dir = socket_dir()?;
    sweep_stale(&dir);
    for _ in 0..8 {
        let path = dir
            .join(format!(
                "{}-{:016x}{:016x}.sock",
                std::process::id(),
                rand::random::<u64>(),
                rand::random::<u64>()
            ))
            .to_string_lossy()
            .into_owned();
        let fd = socket()?;
        let (addr, len) = sockaddr(&path)?;
        // SAFETY: `addr` is an initialised sockaddr_un that outlives the call, and `len`
        // (from sockaddr) is at most its size; `fd` is our open socket.
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
        let l = Listener { fd, path };
        // SAFETY: fcntl(2) and listen(2) take no pointers; `l.fd()` is our open socket,
        // kept open by `l` for the duration.
        unsafe {
            let fl = libc::fcntl(l.fd(), libc::F_GETFL);
            libc::fcntl(l.fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
            if libc::listen(l.fd(), 64) != 0 {
                return Err(os_err("listen(shm socket)"));
            }
        }
        return Ok(l);
    }
    Err(Error::new(
        Status::Io,
        "could not find a free shared-memory socket name",
    ))
}

/// Connects to a peer's listener; gives up at `deadline` (a full backlog blocks connect).
pub fn connect(path: &str, deadline: Deadline) -> Result<OwnedFd> {
    let fd = socket()?;
    let (addr, len) = sockaddr(path)?;
    let left = deadline.remaining().unwrap_or(Duration::from_secs(3600));
    let tv = libc::timeval {
        tv_sec: left.as_secs() as libc::time_t,
        tv_usec: left.subsec_micros().max(1) as libc::suseconds_t,
    };
    // SAFETY: `tv` and `addr` are initialised locals that outlive both calls, passed with
    // their exact sizes (`len` is at most sizeof(sockaddr_un)); `fd` is our open socket.
    // SO_SNDTIMEO bounds a blocking AF_UNIX connect by the deadline.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
        libc::connect(
            fd.as_raw_fd(),
            &addr as *const _ as *const libc::sockaddr,
            len,
        )
    };
    if rc != 0 {
        return Err(Error::new(
            Status::Io,
            format!(
                "connect to shared-memory peer socket {path:?}: {}",
                std::io::Error::last_os_error()
            ),
        ));
    }
    Ok(fd)
}

/// The pid of the process at the other end (0 when the kernel cannot say, e.g. another
/// pid namespace).
pub fn peer_pid(sock: RawFd) -> i32 {
    // SAFETY: ucred is plain integers, valid when zeroed; getsockopt(2) writes at most
    // `len` (= sizeof(ucred)) bytes into `c`, which outlives the call. A bad `sock` only
    // makes it fail.
    unsafe {
        let mut c: libc::ucred = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        let rc = libc::getsockopt(
            sock,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut c as *mut _ as *mut libc::c_void,
            &mut len,
        );
        if rc == 0 {
            c.pid
        } else {
            0
        }
    }
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
        // SAFETY: `p` is one initialised pollfd that outlives the call (nfds = 1).
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

/// Accepts one pending connection, if any (the listener is non-blocking).
pub fn accept(listener: RawFd) -> Result<Option<OwnedFd>> {
    // SAFETY: accept4(2) with null address pointers writes nothing back; a bad
    // `listener` only makes it fail.
    let fd = unsafe {
        libc::accept4(
            listener,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::ECONNABORTED) | Some(libc::EINTR) => Ok(None),
            _ => Err(Error::io("accept(shm socket)", e)),
        };
    }
    // SAFETY: fd >= 0 was just returned by accept4(2): open, and owned by nothing else.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Sends one frame: JSON plus up to MAX_FDS descriptors. Never blocks on a peer that
/// does not read (a full socket is an error).
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
    // SAFETY: CMSG_SPACE is pure arithmetic on its argument (it is `unsafe` only as a
    // libc macro binding); fds.len() <= MAX_FDS keeps it small.
    let space = unsafe { libc::CMSG_SPACE((fds.len() * 4) as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8).max(1)];
    // SAFETY: msghdr is plain data, valid when zeroed. It points at `iov` (over `body`)
    // and `cbuf`, all alive until sendmsg returns. `cbuf` holds `space` bytes, 8-aligned
    // as cmsghdr requires, so CMSG_FIRSTHDR is non-null and the header plus
    // fds.len() * 4 bytes of CMSG_DATA fit in it; the descriptors are copied from `fds`
    // (a different allocation). sendmsg only reads the buffers.
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
        if libc::sendmsg(sock, &m, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) < 0 {
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
    // SAFETY: `p` is one initialised pollfd that outlives the call; zero timeout (a cheap
    // check before allocating a buffer).
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
    // The buffer is the waiting record's size, not `max`: a zeroed `max` (1 MiB) per
    // frame, on the thread that connects, left holes in a long-running process's heap
    // (`make soak`). Too big a record still gets `max + 1` bytes, so it is refused as
    // truncated; an error or EOF gets one byte and recvmsg reports it.
    let mut body = vec![0u8; record_len(sock, flags).map_or(1, |n| n.clamp(1, max + 1))];
    let mut iov = libc::iovec {
        iov_base: body.as_mut_ptr() as *mut libc::c_void,
        iov_len: body.len(),
    };
    // SAFETY: pure arithmetic, as in send_frame (253 = SCM_MAX_FD).
    let space = unsafe { libc::CMSG_SPACE((253 * 4) as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    let mut fds = Vec::new();
    // SAFETY: msghdr is plain data, valid when zeroed; it points at `iov` (over `body`,
    // `max` bytes) and `cbuf` (`space` bytes, 8-aligned), both alive and writable
    // for the whole block, and recvmsg writes within those lengths. The kernel walks only
    // control messages it wrote (CMSG_FIRSTHDR/CMSG_NXTHDR stay inside msg_controllen,
    // which it set), and an SCM_RIGHTS message's data is `cnt` descriptors it installed
    // in this process for us: each is open and owned by nothing else, so taking it into
    // an OwnedFd at once is sound (and closes it on every error path below).
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
        if m.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 || n as usize > max {
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

/// The length of the record waiting on the SOCK_SEQPACKET socket, without reading it
/// (`MSG_PEEK | MSG_TRUNC` answers the full length); None on an error (recvmsg will
/// report it), Some(0) at EOF.
fn record_len(sock: RawFd, flags: libc::c_int) -> Option<usize> {
    // SAFETY: a zero-length peek: the kernel stores nothing (the buffer is never
    // written with a length of 0).
    let n = unsafe {
        libc::recv(
            sock,
            std::ptr::null_mut(),
            0,
            libc::MSG_PEEK | libc::MSG_TRUNC | flags,
        )
    };
    usize::try_from(n).ok()
}

pub fn sleep_briefly() {
    std::thread::sleep(Duration::from_micros(50));
}
