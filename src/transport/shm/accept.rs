//! The two halves of the authenticated shared-memory handshake (the mechanism is
//! [`crate::transport::auth`]): the dialer's, and the acceptor's, which serves every
//! connection to its listener at once, each with its own deadline, so a silent or slow
//! connection cannot hold up the peer's.
//!
//! ```text
//! dialer   -> acceptor   {"socket", "peer_socket", "host", "challenge"}
//! acceptor -> dialer     {"response"}
//! dialer   -> acceptor   {"proof", "pid", "probe", "allocs", "host"} + memfds
//! acceptor -> dialer     {"pid", "probe", "allocs", "host"} + memfds      (connect.rs)
//! ```
//!
//! The dialer sends its memfds only to an acceptor that proved its key, and the acceptor
//! maps them only once the proof in the same frame holds.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::handshake;
use crate::engine::Deadline;
use crate::error::{Error, Result, Status};
use crate::info_log;
use crate::transport::auth::{
    self, Acceptor, Challenge, Dialer, Identity, Proof, PublicKey, Response, CHALLENGE_LEN,
    PROOF_LEN, RESPONSE_LEN,
};

const LABEL: &str = "shm";
/// Connections in their handshake at once; a newcomer beyond this replaces the oldest.
const MAX_PENDING: usize = 64;

/// Both socket paths, bound into the tags.
fn bind(dialer: &str, acceptor: &str) -> Vec<u8> {
    let mut b = dialer.as_bytes().to_vec();
    b.push(0);
    b.extend_from_slice(acceptor.as_bytes());
    b
}

fn field<const N: usize>(v: &Value, k: &str) -> Result<[u8; N]> {
    v.get(k)
        .and_then(Value::as_str)
        .and_then(auth::from_hex::<N>)
        .ok_or_else(|| {
            Error::new(
                Status::Protocol,
                format!("shared-memory handshake: bad or missing {k:?}"),
            )
        })
}

/// The names and keys of one handshake.
pub(super) struct Sides<'a> {
    pub me: &'a str,
    pub peer: &'a str,
    pub peer_key: &'a PublicKey,
    pub id: &'a Identity,
    pub host: &'a str,
}

/// Dialer: authenticates both ways, then sends `hello` with `fds`.
pub(super) fn dial(
    s: &Sides<'_>,
    hello: &mut Value,
    fds: &[RawFd],
    deadline: Deadline,
) -> Result<OwnedFd> {
    let sock = handshake::connect(s.peer, deadline)?;
    let d = Dialer::new(s.id, s.peer_key, LABEL)?;
    let first = json!({
        "socket": s.me, "peer_socket": s.peer, "host": s.host,
        "challenge": auth::to_hex(&d.challenge().encode()),
    });
    handshake::send_frame(sock.as_raw_fd(), &first, &[])?;
    let (r, _) = handshake::recv_frame(sock.as_raw_fd(), deadline)?;
    let r = Response::decode(&field::<RESPONSE_LEN>(&r, "response")?);
    let proof = d.check_response(&r, &bind(s.me, s.peer))?;
    hello["proof"] = auth::to_hex(&proof.encode()).into();
    handshake::send_frame(sock.as_raw_fd(), hello, fds)?;
    Ok(sock)
}

/// The dialer, authenticated: its socket, its hello and the memfds that came with it.
pub(super) struct Accepted {
    pub sock: OwnedFd,
    pub hello: Value,
    pub fds: Vec<OwnedFd>,
}

struct Pending {
    sock: OwnedFd,
    until: Instant,
    /// Set once the challenge was answered.
    acceptor: Option<Acceptor>,
}

/// Acceptor: serves every connection to `listener` concurrently until the expected peer
/// has authenticated (or `deadline` passes). Each connection has `per_conn` for its
/// whole handshake; strangers, impostors and silent connections are dropped.
pub(super) fn accept(
    listener: RawFd,
    s: &Sides<'_>,
    per_conn: Duration,
    deadline: Deadline,
) -> Result<Accepted> {
    let mut pending: Vec<Pending> = Vec::new();
    loop {
        let now = Instant::now();
        pending.retain(|p| {
            let live = p.until > now;
            if !live {
                info_log!("shm: dropped a connection that did not finish its handshake in time");
            }
            live
        });
        if deadline.expired() {
            return Err(Error::new(
                Status::Timeout,
                "shared-memory handshake: the peer did not connect in time",
            ));
        }
        let mut wait = deadline.remaining().unwrap_or(Duration::from_secs(3600));
        for p in &pending {
            wait = wait.min(p.until.saturating_duration_since(now));
        }
        let mut fds: Vec<libc::pollfd> = std::iter::once(listener)
            .chain(pending.iter().map(|p| p.sock.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = wait.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: `fds` is a live array of `fds.len()` pollfds.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(Error::io("poll(shm handshake)", e));
        }
        // Connections first (in reverse, so removals keep the indices of the rest).
        for i in (1..fds.len()).rev() {
            if fds[i].revents == 0 {
                continue;
            }
            match step(&mut pending[i - 1], s) {
                Ok(None) => {}
                Ok(Some((hello, fds))) => {
                    let sock = pending.swap_remove(i - 1).sock;
                    return Ok(Accepted { sock, hello, fds });
                }
                Err(e) => {
                    info_log!("shm: refused a handshake: {e}");
                    pending.swap_remove(i - 1);
                }
            }
        }
        if fds[0].revents != 0 {
            while let Some(sock) = handshake::accept(listener)? {
                if pending.len() >= MAX_PENDING {
                    pending.remove(0);
                }
                pending.push(Pending {
                    sock,
                    until: Instant::now() + per_conn,
                    acceptor: None,
                });
            }
        }
    }
}

/// One frame from a pending connection (it is readable, so the frame is whole and there
/// now). `Some` once the dialer is the expected peer and proved it.
fn step(p: &mut Pending, s: &Sides<'_>) -> Result<Option<(Value, Vec<OwnedFd>)>> {
    let (msg, fds) = handshake::recv_frame(p.sock.as_raw_fd(), Deadline::after(Duration::ZERO))?;
    let bound = bind(s.peer, s.me);
    match &p.acceptor {
        None => {
            // Only the peer named in the info we were given: its socket, and its key.
            if msg.get("socket").and_then(Value::as_str) != Some(s.peer)
                || msg.get("peer_socket").and_then(Value::as_str) != Some(s.me)
            {
                return Err(Error::new(
                    Status::RemoteAccess,
                    "a handshake from an unexpected peer",
                ));
            }
            let c = Challenge::decode(&field::<CHALLENGE_LEN>(&msg, "challenge")?);
            if c.key != *s.peer_key {
                return Err(Error::new(
                    Status::RemoteAccess,
                    "the dialer's key is not the one in the peer's endpoint_info",
                ));
            }
            let (a, r) = Acceptor::respond(s.id, &c, LABEL, &bound)?;
            handshake::send_frame(
                p.sock.as_raw_fd(),
                &json!({"response": auth::to_hex(&r.encode())}),
                &[],
            )?;
            p.acceptor = Some(a);
            Ok(None)
        }
        Some(a) => {
            let proof = Proof::decode(&field::<PROOF_LEN>(&msg, "proof")?);
            a.check_proof(&proof, &bound)?;
            Ok(Some((msg, fds)))
        }
    }
}
