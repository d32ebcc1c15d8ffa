//! Bounds on HTTP connections, so that a flood of connections cannot take the server's
//! file descriptors or wedge it: at most `max` open at once and `per_ip` from one
//! address, and a connection that moves no byte for `idle` is closed (silent and
//! half-sent requests included; axum's server has no header deadline of its own).
//! A connection over a cap is closed as soon as it is accepted: the client sees the
//! connection end and retries (the PeerAgent moves to the next replica), and one noisy
//! address cannot starve the others.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

use crate::throttle::{suppressed_note, Throttle};

static REFUSED: Throttle = Throttle::new(Duration::from_secs(10));
static ACCEPT_ERRORS: Throttle = Throttle::new(Duration::from_secs(10));

/// File descriptors kept for everything but HTTP connections (Redis, logs, runtime).
const SPARE_FDS: usize = 128;

#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    pub max: usize,
    pub per_ip: usize,
    pub idle: Duration,
}

#[derive(Default)]
struct Counts {
    open: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// A listener that admits connections within [`ConnLimits`].
pub struct LimitedListener {
    inner: TcpListener,
    limits: ConnLimits,
    counts: Arc<Mutex<Counts>>,
}

impl LimitedListener {
    pub fn new(inner: TcpListener, limits: ConnLimits) -> LimitedListener {
        LimitedListener {
            inner,
            limits,
            counts: Arc::default(),
        }
    }

    /// A slot for a connection from `ip`, or why there is none.
    fn admit(&self, ip: IpAddr) -> Result<Slot, &'static str> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.open >= self.limits.max {
            return Err("the server's connection limit (--max-connections) is reached");
        }
        let n = c.per_ip.entry(ip).or_insert(0);
        if *n >= self.limits.per_ip {
            return Err("the per-address limit (--max-connections-per-ip) is reached");
        }
        *n += 1;
        c.open += 1;
        Ok(Slot {
            counts: self.counts.clone(),
            ip,
        })
    }
}

impl Listener for LimitedListener {
    type Io = LimitedConn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (LimitedConn, SocketAddr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(x) => x,
                Err(e) => {
                    if let Some(n) = ACCEPT_ERRORS.admit() {
                        tracing::warn!("accept failed: {e}{}", suppressed_note(n));
                    }
                    // Out of descriptors and the like: give closing connections a moment
                    // instead of spinning on the error.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match self.admit(addr.ip()) {
                Ok(slot) => {
                    // Small JSON replies must not wait on Nagle.
                    let _ = stream.set_nodelay(true);
                    return (LimitedConn::new(stream, slot, self.limits.idle), addr);
                }
                Err(why) => {
                    if let Some(n) = REFUSED.admit() {
                        tracing::warn!(
                            "closed a connection from {}: {why}{}",
                            addr.ip(),
                            suppressed_note(n)
                        );
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// One admitted connection's place in the counts, given back when it closes.
struct Slot {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.open -= 1;
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

/// An accepted connection that fails its pending read or write once no byte has moved
/// for the idle time (hyper then closes it).
pub struct LimitedConn {
    stream: TcpStream,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    _slot: Slot,
}

impl LimitedConn {
    fn new(stream: TcpStream, slot: Slot, idle: Duration) -> LimitedConn {
        LimitedConn {
            stream,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            _slot: slot,
        }
    }

    /// The outcome of an I/O call: progress restarts the idle time; pending I/O stays
    /// pending, or fails once the connection has been idle too long.
    fn track<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.deadline.as_mut().reset(Instant::now() + self.idle);
            return r;
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "idle connection closed",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for LimitedConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_read(cx, buf);
        this.track(cx, r)
    }
}

impl AsyncWrite for LimitedConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.track(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.track(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Raises the soft limit on open files toward what `max` connections need, and returns
/// the connection limit the process can actually keep (lower than `max` when the hard
/// limit does not allow it), so that the cap, not EMFILE, is what a flood meets.
pub fn fit_fd_limit(max: usize) -> usize {
    let want = (max + SPARE_FDS) as libc::rlim_t;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return max;
    }
    if lim.rlim_cur < want {
        let raised = libc::rlimit {
            rlim_cur: want.min(lim.rlim_max),
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit that only moves the soft limit up to the
        // hard one, which an unprivileged process may do.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = raised.rlim_cur;
        }
    }
    let room = (lim.rlim_cur as usize).saturating_sub(SPARE_FDS).max(1);
    if room < max {
        tracing::warn!(
            "open-file limit {} allows {room} HTTP connections, not --max-connections {max}",
            lim.rlim_cur
        );
    }
    max.min(room)
}
