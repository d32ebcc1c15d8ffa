//! The start of every TCP connection, both sides: the plain hello (magic, version,
//! status, context id) and the authentication handshake of [`crate::transport::auth`],
//! all within one deadline. Afterwards the acceptor knows which key the connection is
//! authenticated as, and the dialer knows it reached the holder of the key it expected.
//!
//! ```text
//! dialer   -> acceptor   hello(status 0, dialer context) | Challenge         24 + 64
//! acceptor -> dialer     hello(status 0, acceptor context) | Response        24 + 96
//!                        (or hello(status != 0) alone, then close)
//! dialer   -> acceptor   Proof                                               32
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use super::wire::{Hello, HELLO_LEN, WIRE_VERSION};
use crate::error::{Error, Result, Status};
use crate::transport::auth::{
    Acceptor, Challenge, Dialer, Identity, Proof, PublicKey, Response, CHALLENGE_LEN, PROOF_LEN,
    RESPONSE_LEN,
};

/// The transport label bound into every tag.
const LABEL: &str = "tcp";

fn timed_out(what: &str) -> Error {
    Error::new(
        Status::Timeout,
        format!("handshake: {what} did not arrive in time"),
    )
}

/// Reads exactly `buf.len()` bytes before `deadline` (however slowly they trickle in).
fn read_by(s: &mut TcpStream, buf: &mut [u8], deadline: Instant, what: &str) -> Result<()> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out(what));
        }
        s.set_read_timeout(Some(left))
            .map_err(|e| Error::io("handshake", e))?;
        match s.read(&mut buf[got..]) {
            Ok(0) => {
                return Err(Error::new(
                    Status::PeerDisconnected,
                    format!("handshake: connection closed before the {what}"),
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timed_out(what))
            }
            Err(e) => return Err(Error::io("handshake", e)),
        }
    }
    Ok(())
}

fn write_by(s: &mut TcpStream, bytes: &[u8], deadline: Instant) -> Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(timed_out("write"));
    }
    s.set_write_timeout(Some(left))
        .map_err(|e| Error::io("handshake", e))?;
    s.write_all(bytes).map_err(|e| Error::io("handshake", e))
}

/// Back to blocking without timeouts, for the frames that follow.
fn untimed(s: &TcpStream) -> Result<()> {
    s.set_read_timeout(None)
        .and_then(|_| s.set_write_timeout(None))
        .map_err(|e| Error::io("handshake", e))
}

fn hello(status: Status, context_id: u64) -> [u8; HELLO_LEN] {
    Hello {
        version: WIRE_VERSION,
        status: status.code() as u16,
        context_id,
    }
    .encode()
}

/// Both plain hellos, bound into the tags.
fn bind(dialer: &[u8; HELLO_LEN], acceptor: &[u8; HELLO_LEN]) -> [u8; 2 * HELLO_LEN] {
    let mut b = [0u8; 2 * HELLO_LEN];
    b[..HELLO_LEN].copy_from_slice(dialer);
    b[HELLO_LEN..].copy_from_slice(acceptor);
    b
}

/// The refusal an acceptor sends instead of a response (then it closes).
pub fn refusal(status: Status) -> [u8; HELLO_LEN] {
    hello(status, 0)
}

/// Dialer side: proves `id` and checks that the acceptor holds `peer`'s secret.
pub fn dial(
    s: &mut TcpStream,
    id: &Identity,
    context_id: u64,
    peer: &PublicKey,
    deadline: Instant,
) -> Result<()> {
    let d = Dialer::new(id, peer, LABEL)?;
    let mine = hello(Status::Ok, context_id);
    let mut first = [0u8; HELLO_LEN + CHALLENGE_LEN];
    first[..HELLO_LEN].copy_from_slice(&mine);
    first[HELLO_LEN..].copy_from_slice(&d.challenge().encode());
    write_by(s, &first, deadline)?;
    let mut theirs = [0u8; HELLO_LEN];
    read_by(s, &mut theirs, deadline, "peer's hello")?;
    let h = Hello::decode(&theirs)
        .ok_or_else(|| Error::new(Status::Protocol, "not a dlslime TCP endpoint (bad magic)"))?;
    if h.version != WIRE_VERSION || h.status == Status::VersionMismatch.code() as u16 {
        return Err(Error::new(
            Status::VersionMismatch,
            format!(
                "the peer speaks TCP wire version {}, this library {WIRE_VERSION}",
                h.version
            ),
        ));
    }
    if h.status != 0 {
        let st = Status::from_code(h.status as i32);
        return Err(Error::new(
            st,
            format!("the peer refused the connection: {st}"),
        ));
    }
    let mut r = [0u8; RESPONSE_LEN];
    read_by(s, &mut r, deadline, "peer's auth response")?;
    let proof = d.check_response(&Response::decode(&r), &bind(&mine, &theirs))?;
    write_by(s, &proof.encode(), deadline)?;
    untimed(s)
}

/// The dialer of an accepted connection, once authenticated.
pub struct Accepted {
    pub key: PublicKey,
    pub context_id: u64,
}

/// Acceptor side: answers the challenge and checks the dialer's proof, all before
/// `deadline`. A dialer of another version gets a refusal naming ours.
pub fn accept(
    s: &mut TcpStream,
    id: &Identity,
    context_id: u64,
    deadline: Instant,
) -> Result<Accepted> {
    let mut theirs = [0u8; HELLO_LEN];
    read_by(s, &mut theirs, deadline, "hello")?;
    let h = match check_hello(&theirs) {
        Ok(h) => h,
        Err(e) => {
            if e.status() == Status::VersionMismatch {
                let _ = write_by(s, &refusal(Status::VersionMismatch), deadline);
            }
            return Err(e);
        }
    };
    let mut c = [0u8; CHALLENGE_LEN];
    read_by(s, &mut c, deadline, "auth challenge")?;
    let (acceptor, bound, answer) = respond(id, context_id, &theirs, &c)?;
    write_by(s, &answer, deadline)?;
    let mut p = [0u8; PROOF_LEN];
    read_by(s, &mut p, deadline, "auth proof")?;
    let key = acceptor.check_proof(&Proof::decode(&p), &bound)?;
    untimed(s)?;
    Ok(Accepted {
        key,
        context_id: h.context_id,
    })
}

/// The acceptor's check of a dialer's hello (the fuzz target `tcp_hello` runs it too).
pub(crate) fn check_hello(theirs: &[u8; HELLO_LEN]) -> Result<Hello> {
    let h = Hello::decode(theirs)
        .ok_or_else(|| Error::new(Status::Protocol, "bad magic: not a dlslime peer"))?;
    if h.version != WIRE_VERSION {
        return Err(Error::new(
            Status::VersionMismatch,
            format!("peer wire version {}, ours {WIRE_VERSION}", h.version),
        ));
    }
    Ok(h)
}

/// The acceptor's answer to a dialer's challenge: the state that checks the proof, the
/// bound hellos, and the bytes to send (our hello | response).
pub(crate) fn respond(
    id: &Identity,
    context_id: u64,
    theirs: &[u8; HELLO_LEN],
    challenge: &[u8; CHALLENGE_LEN],
) -> Result<(
    Acceptor,
    [u8; 2 * HELLO_LEN],
    [u8; HELLO_LEN + RESPONSE_LEN],
)> {
    let mine = hello(Status::Ok, context_id);
    let bound = bind(theirs, &mine);
    let (acceptor, r): (Acceptor, Response) =
        Acceptor::respond(id, &Challenge::decode(challenge), LABEL, &bound)?;
    let mut answer = [0u8; HELLO_LEN + RESPONSE_LEN];
    answer[..HELLO_LEN].copy_from_slice(&mine);
    answer[HELLO_LEN..].copy_from_slice(&r.encode());
    Ok((acceptor, bound, answer))
}
