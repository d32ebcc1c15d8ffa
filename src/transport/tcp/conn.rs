//! One outgoing connection: requests go out (inline from the caller when the lane is
//! idle, else through the lane's writer thread, keeping submission order), replies come
//! back on a reader thread that writes read data straight into the caller's region and
//! completes the operation's part.

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use parking_lot::Mutex;

use super::handshake;
use super::wire::{read_header, Header, Opcode};
use super::{sockio, staging};
use crate::error::{Error, Result, Status};
use crate::future::OpState;
use crate::transport::auth::{Identity, PublicKey};

/// Frames up to this payload size are written by the submitting thread when the lane is
/// idle; bigger ones go to the writer thread so `write()` returns at once.
const INLINE_MAX: usize = 256 * 1024;

/// A connection idle at least this long is peeked for a close by the peer before use
/// (the peer's janitor closes idle connections after `idle_timeout`, at least 50 ms).
const PEEK_AFTER_IDLE: Duration = Duration::from_millis(10);

/// Called once the reply to a request is in (used to acknowledge pulled messages).
pub type Then = Box<dyn FnOnce(Status) + Send>;

/// A request waiting for its reply.
pub struct Pending {
    pub op: Arc<OpState>,
    /// Where the reply's payload goes (0 = none expected).
    pub sink: usize,
    /// Exact payload length a successful reply must carry.
    pub expect: u64,
    pub then: Option<Then>,
}

impl Pending {
    /// A request whose reply carries no payload: only its status completes `op`.
    pub fn status_only(op: &Arc<OpState>) -> Pending {
        Pending {
            op: op.clone(),
            sink: 0,
            expect: 0,
            then: None,
        }
    }
}

struct TxJob {
    header: Header,
    payload: (usize, usize),
    /// The operation whose memory the payload is read from (guards against a concurrent
    /// abort returning control of the buffer to the caller).
    reads_from: Option<Arc<OpState>>,
}

pub struct Conn {
    pub peer: SocketAddr,
    /// The key the peer proved it holds.
    pub key: PublicKey,
    stream: TcpStream,
    writer: Mutex<TcpStream>,
    queue: Sender<TxJob>,
    queued: AtomicUsize,
    pending: Mutex<HashMap<u64, Pending>>,
    next_req: AtomicU64,
    dead: AtomicBool,
    /// Set when we close it on purpose (eviction, shutdown): not a sign of peer death.
    closing: AtomicBool,
    born: Instant,
    last_used_ms: AtomicU64,
}

/// What the reader does when the connection dies without us closing it.
pub type OnLost = Arc<dyn Fn(SocketAddr, PublicKey) + Send + Sync>;

impl Conn {
    /// Dials `peer`, which must prove it holds the secret of `key`, and proves `id`.
    pub fn dial(
        peer: SocketAddr,
        key: PublicKey,
        id: &Identity,
        context_id: u64,
        timeout: Duration,
        on_lost: OnLost,
    ) -> Result<Arc<Conn>> {
        let deadline = Instant::now() + timeout;
        let mut stream = TcpStream::connect_timeout(&peer, timeout).map_err(|e| {
            Error::new(
                Status::PeerDisconnected,
                format!("cannot connect to {peer}: {e}"),
            )
        })?;
        sockio::tune(&stream);
        handshake::dial(&mut stream, id, context_id, &key, deadline).map_err(|e| {
            let st = match e.status() {
                Status::Io | Status::Timeout => Status::PeerDisconnected,
                s => s,
            };
            Error::new(st, format!("handshake with {peer}: {}", e.message()))
        })?;
        let io_err = |e: std::io::Error| {
            Error::new(
                Status::PeerDisconnected,
                format!("handshake with {peer}: {e}"),
            )
        };
        let (tx, rx) = unbounded();
        let conn = Arc::new(Conn {
            peer,
            key,
            writer: Mutex::new(stream.try_clone().map_err(io_err)?),
            stream: stream.try_clone().map_err(io_err)?,
            queue: tx,
            queued: AtomicUsize::new(0),
            pending: Mutex::new(HashMap::new()),
            next_req: AtomicU64::new(1),
            dead: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            born: Instant::now(),
            last_used_ms: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&conn);
        std::thread::Builder::new()
            .name("dlslime-tcp-tx".into())
            .spawn(move || writer_loop(weak, rx))
            .map_err(|e| Error::io("spawn writer thread", e))?;
        let c = conn.clone();
        std::thread::Builder::new()
            .name("dlslime-tcp-rx".into())
            .spawn(move || reader_loop(c, stream, on_lost))
            .map_err(|e| Error::io("spawn reader thread", e))?;
        Ok(conn)
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Dead, or closed by the peer while idle (seen before the reader noticed). The
    /// peek costs a syscall, so a connection used within [`PEEK_AFTER_IDLE`] skips it:
    /// a peer closes a connection for idleness only after a far longer silence.
    pub fn is_usable(&self) -> bool {
        if self.is_dead() {
            return false;
        }
        if self.idle_for(Instant::now()) >= PEEK_AFTER_IDLE
            && self.pending.lock().is_empty()
            && sockio::peer_closed(&self.stream)
        {
            self.dead.store(true, Ordering::Release);
            return false;
        }
        true
    }

    pub fn idle_for(&self, now: Instant) -> Duration {
        let used = Duration::from_millis(self.last_used_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(self.born + used)
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.lock().is_empty() || self.queued.load(Ordering::Acquire) > 0
    }

    /// Closes on purpose: pending requests fail with `status`, no peer-lost signal.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.dead.store(true, Ordering::Release);
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Sends a request; its reply completes one part of `pending.op`. `payload` is read
    /// from the caller's memory (guarded by `reads_from`) while the frame is written.
    pub fn request(
        &self,
        mut header: Header,
        payload: (usize, usize),
        reads_from: Option<Arc<OpState>>,
        pending: Pending,
    ) {
        let id = self.next_req.fetch_add(1, Ordering::Relaxed);
        header.req_id = id;
        self.last_used_ms
            .store(self.born.elapsed().as_millis() as u64, Ordering::Relaxed);
        {
            let mut p = self.pending.lock();
            if self.is_dead() {
                drop(p);
                fail(
                    pending,
                    Status::PeerDisconnected,
                    &format!("connection to {} is closed", self.peer),
                );
                return;
            }
            p.insert(id, pending);
        }
        let job = TxJob {
            header,
            payload,
            reads_from,
        };
        if payload.1 <= INLINE_MAX && self.queued.load(Ordering::Acquire) == 0 {
            if let Some(mut w) = self.writer.try_lock() {
                if self.queued.load(Ordering::Acquire) == 0 {
                    self.write_job(&mut w, job);
                    return;
                }
            }
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        if self.queue.send(job).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Sends a reply-less frame is never needed: every request has a reply.
    fn write_job(&self, w: &mut TcpStream, job: TxJob) {
        let guard = job.reads_from.as_ref();
        if let Some(op) = guard {
            if !op.begin_io() {
                // Aborted before a byte went out: forget the request.
                self.pending.lock().remove(&job.header.req_id);
                return;
            }
        }
        let hdr = job.header.encode();
        // SAFETY: the payload range was validated against a registered region (or is a
        // send buffer the caller keeps valid until completion) and `begin_io` holds off
        // an abort from handing it back to the caller during the write.
        let res =
            unsafe { staging::write_frame(w, &hdr, job.payload.0 as *const u8, job.payload.1) };
        if let Some(op) = guard {
            op.end_io();
        }
        if let Err(e) = res {
            // The op is failed before the shutdown, whose EOF makes the endpoint fail
            // everything pending with `PeerDisconnected`.
            if let Some(p) = self.pending.lock().remove(&job.header.req_id) {
                // A payload the kernel could not read is the caller's error, not the
                // peer's. Sources are checked before submission (`check_source`), so
                // this is memory without read permission or unmapped since: the header
                // is out by then, so the connection cannot go on; it is closed and the
                // next operation opens a new one.
                let (status, why) = if e.raw_os_error() == Some(libc::EFAULT) {
                    (
                        Status::InvalidArgument,
                        format!(
                            "payload [{:#x}, +{}) is not readable memory of this process; \
                             the connection to {} was reset",
                            job.payload.0, job.payload.1, self.peer
                        ),
                    )
                } else {
                    (
                        Status::PeerDisconnected,
                        format!("write to {} failed: {e}", self.peer),
                    )
                };
                fail(p, status, &why);
            }
            self.dead.store(true, Ordering::Release);
            let _ = self.stream.shutdown(Shutdown::Both);
        }
    }
}

fn fail(p: Pending, status: Status, msg: &str) {
    if let Some(then) = p.then {
        then(status);
    }
    p.op.part_done(status, Some(msg));
}

fn writer_loop(conn: Weak<Conn>, rx: Receiver<TxJob>) {
    while let Ok(job) = rx.recv() {
        let Some(c) = conn.upgrade() else { return };
        let mut w = c.writer.lock();
        c.write_job(&mut w, job);
        c.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

fn reader_loop(conn: Arc<Conn>, mut rs: TcpStream, on_lost: OnLost) {
    let why = loop {
        let h = match read_header(&mut rs) {
            Ok(Some(h)) => h,
            Ok(None) => break "connection closed by peer".to_string(),
            Err(e) => break format!("connection error: {e}"),
        };
        if h.op() != Some(Opcode::Reply) {
            break format!("protocol error: expected a reply, got opcode {}", h.opcode);
        }
        let Some(p) = conn.pending.lock().remove(&h.req_id) else {
            // A reply for a request we gave up on: discard its bytes.
            if let Err(e) = sockio::drain(&mut rs, h.size) {
                break format!("connection error: {e}");
            }
            continue;
        };
        let mut status = h.status();
        if h.size > 0 {
            let wanted = status.is_ok() && p.sink != 0 && h.size == p.expect;
            let res = if wanted && p.op.begin_io() {
                // SAFETY: sink/expect come from a range validated against a registered
                // region or a posted receive buffer; begin_io keeps the caller from
                // getting it back until end_io.
                let r = unsafe { staging::read_into(&mut rs, p.sink as *mut u8, h.size as usize) };
                p.op.end_io();
                r
            } else {
                if status.is_ok() && !wanted {
                    status = Status::Protocol;
                }
                sockio::drain(&mut rs, h.size)
            };
            match res {
                Ok(()) => {}
                // The destination could not take the bytes (a region unmapped under
                // its registration, a receive buffer freed before its completion):
                // read_into consumed the frame, so only this operation fails.
                Err(e) if sockio::is_efault(&e) => {
                    let why = format!(
                        "[{:#x}, +{}) is not writable memory of this process",
                        p.sink, h.size
                    );
                    fail(p, Status::InvalidArgument, &why);
                    continue;
                }
                Err(e) => {
                    fail(
                        p,
                        Status::PeerDisconnected,
                        &format!("connection to {} broke mid-reply: {e}", conn.peer),
                    );
                    break format!("connection error: {e}");
                }
            }
        } else if status.is_ok() && p.expect > 0 {
            status = Status::Protocol;
        }
        let msg = (!status.is_ok()).then(|| format!("{} answered: {}", conn.peer, status));
        // `then` (the sender's ack of a pulled message) goes out before the receive
        // completes: once the receiver's thread sees its data it may exit the process.
        if let Some(then) = p.then {
            then(status);
        }
        p.op.part_done(status, msg.as_deref());
    };
    conn.dead.store(true, Ordering::Release);
    let _ = rs.shutdown(Shutdown::Both);
    let closing = conn.closing.load(Ordering::Acquire);
    let (status, msg) = if closing {
        (
            Status::Cancelled,
            format!("connection to {} closed locally", conn.peer),
        )
    } else {
        (
            Status::PeerDisconnected,
            format!("peer {}: {why}", conn.peer),
        )
    };
    let pending: Vec<Pending> = conn.pending.lock().drain().map(|(_, p)| p).collect();
    for p in pending {
        fail(p, status, &msg);
    }
    if !closing {
        on_lost(conn.peer, conn.key);
    }
}
