//! The server: one thread per accepted connection reads requests, checks every
//! `(address, length, key)` against the target endpoint's registered regions, applies
//! them straight to/from region memory, and replies with a status. Anything that is
//! not the protocol drops that connection only.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::reply::{Ack, ServerConn};
use super::sockio;
use super::target::{Early, EpCore, Targets};
use super::wire::{read_header, Header, Hello, Opcode, FLAG_PAYLOAD, HELLO_LEN, WIRE_VERSION};
use crate::error::{Error, Result, Status};
use crate::{info_log, warn_log};

/// Time an accepted connection has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub fn serve(targets: Weak<Targets>, mut stream: TcpStream) {
    sockio::tune(&stream);
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    match handshake(&mut stream) {
        Ok(context_id) => {
            let writer = match stream.try_clone() {
                Ok(w) => w,
                Err(_) => return,
            };
            let conn = Arc::new(ServerConn::new(writer, context_id));
            if let Some(t) = targets.upgrade() {
                t.track_server_conn(&stream);
            }
            if let Err(e) = serve_requests(&targets, &conn, &mut stream) {
                warn_log!("dropping connection from {peer}: {e}");
            }
        }
        Err(e) => warn_log!("refusing connection from {peer}: {e}"),
    }
    let _ = stream.shutdown(Shutdown::Both);
}

fn handshake(stream: &mut TcpStream) -> Result<u64> {
    let io = |e: std::io::Error| Error::io("handshake", e);
    stream.set_read_timeout(Some(HELLO_TIMEOUT)).map_err(io)?;
    let mut b = [0u8; HELLO_LEN];
    stream.read_exact(&mut b).map_err(io)?;
    let hello = Hello::decode(&b)
        .ok_or_else(|| Error::new(Status::Protocol, "bad magic: not a dlslime peer"))?;
    if hello.version != WIRE_VERSION {
        let no = Hello {
            version: WIRE_VERSION,
            status: Status::VersionMismatch.code() as u16,
            context_id: 0,
        };
        let _ = stream.write_all(&no.encode());
        return Err(Error::new(
            Status::VersionMismatch,
            format!("peer wire version {}, ours {WIRE_VERSION}", hello.version),
        ));
    }
    stream
        .write_all(
            &Hello {
                version: WIRE_VERSION,
                status: 0,
                context_id: 0,
            }
            .encode(),
        )
        .map_err(io)?;
    stream.set_read_timeout(None).map_err(io)?;
    Ok(hello.context_id)
}

fn serve_requests(
    targets: &Weak<Targets>,
    conn: &Arc<ServerConn>,
    rs: &mut TcpStream,
) -> Result<()> {
    let io = |e: std::io::Error| Error::io("connection", e);
    loop {
        let Some(h) = read_header(rs).map_err(io)? else {
            info_log!("peer closed a connection");
            return Ok(());
        };
        let op = h
            .op()
            .ok_or_else(|| Error::new(Status::Protocol, format!("unknown opcode {}", h.opcode)))?;
        let ep = targets.upgrade().and_then(|t| t.endpoint(h.endpoint));
        match op {
            Opcode::Read => {
                let target = ep
                    .as_ref()
                    .ok_or(Status::UnknownHandle)
                    .and_then(|e| access(e, &h));
                match target {
                    // SAFETY: the range lies inside a live registered region with the right key.
                    Ok(addr) => unsafe {
                        conn.reply_with(h.req_id, addr as *const u8, h.size as usize)
                            .map_err(io)?
                    },
                    Err(s) => conn.reply(h.req_id, s),
                }
            }
            Opcode::Write | Opcode::WriteImm => {
                let target = ep.as_ref().ok_or(Status::UnknownHandle).and_then(|e| {
                    if op == Opcode::WriteImm {
                        check_peer(e, conn)?;
                    }
                    access(e, &h)
                });
                match target {
                    Ok(addr) => {
                        // SAFETY: validated as above; the bytes land directly in the region.
                        unsafe {
                            sockio::read_into(rs, addr as *mut u8, h.size as usize).map_err(io)?
                        };
                        if op == Opcode::WriteImm {
                            ep.as_ref().unwrap().imm.deliver(h.imm);
                        }
                        conn.reply(h.req_id, Status::Ok);
                    }
                    Err(s) => {
                        sockio::drain(rs, h.size).map_err(io)?;
                        conn.reply(h.req_id, s);
                    }
                }
            }
            Opcode::Imm => {
                let st = ep
                    .as_ref()
                    .ok_or(Status::UnknownHandle)
                    .and_then(|e| check_peer(e, conn))
                    .map(|_| ());
                if st.is_ok() {
                    ep.as_ref().unwrap().imm.deliver(h.imm);
                }
                conn.reply(h.req_id, st.err().unwrap_or(Status::Ok));
            }
            Opcode::Send => {
                let has_payload = h.flags & FLAG_PAYLOAD != 0;
                match ep
                    .as_ref()
                    .ok_or(Status::UnknownHandle)
                    .and_then(|e| check_peer(e, conn).map(|_| e))
                {
                    Ok(e) => receive_message(e, conn, rs, &h, has_payload)?,
                    Err(s) => {
                        if has_payload {
                            sockio::drain(rs, h.size).map_err(io)?;
                        }
                        conn.reply(h.req_id, s);
                    }
                }
            }
            Opcode::Pull => match ep.as_ref().and_then(|e| e.pending_send(h.addr)) {
                Some(send) if send.len as u64 == h.size && send.op.begin_io() => {
                    // SAFETY: the send buffer stays valid until its op completes, which
                    // begin_io holds off.
                    let r = unsafe { conn.reply_with(h.req_id, send.ptr as *const u8, send.len) };
                    send.op.end_io();
                    r.map_err(io)?;
                }
                _ => conn.reply(h.req_id, Status::Cancelled),
            },
            Opcode::Reply => {
                return Err(Error::new(
                    Status::Protocol,
                    "unexpected reply on a request connection",
                ))
            }
        }
    }
}

/// The peer's range must be inside one of this endpoint's regions, with its key.
fn access(ep: &EpCore, h: &Header) -> std::result::Result<usize, Status> {
    ep.pool
        .validate_access(h.addr, h.size, h.key)
        .map(|_| h.addr as usize)
        .map_err(|e| e.status())
}

/// Messages and notifications are only accepted from the connected peer's context.
fn check_peer(ep: &EpCore, conn: &ServerConn) -> std::result::Result<(), Status> {
    match ep.peer_context() {
        Some(c) if c != conn.peer_context => Err(Status::RemoteAccess),
        _ => Ok(()),
    }
}

/// A message for `ep`: straight into the oldest posted receive when there is one and
/// nothing is queued before it; otherwise buffered (within budget) or noted so the
/// receiver pulls it when a receive is posted.
fn receive_message(
    ep: &Arc<EpCore>,
    conn: &Arc<ServerConn>,
    rs: &mut TcpStream,
    h: &Header,
    has_payload: bool,
) -> Result<()> {
    let io = |e: std::io::Error| Error::io("connection", e);
    let ack = Ack::new(conn.clone(), h.req_id);
    if let Some(r) = ep.msgs.take_posted() {
        if !has_payload {
            ep.pull(r, h.addr, h.size, ack);
            return Ok(());
        }
        if h.size > r.cap as u64 {
            sockio::drain(rs, h.size).map_err(io)?;
            ack.send(Status::Truncated);
            r.op.finish(
                Status::Truncated,
                Some(format!(
                    "message of {} bytes does not fit the {}-byte receive buffer",
                    h.size, r.cap
                )),
            );
            return Ok(());
        }
        if r.op.begin_io() {
            // SAFETY: a posted receive buffer of at least h.size bytes, held by begin_io.
            let res = unsafe { sockio::read_into(rs, r.ptr as *mut u8, h.size as usize) };
            r.op.end_io();
            res.map_err(io)?;
            r.op.set_nbytes(h.size);
            // ack first: the receiver may shut down as soon as it sees its data
            ack.send(Status::Ok);
            r.op.part_done(Status::Ok, None);
            return Ok(());
        }
        // The receive was cancelled meanwhile: treat the message as early.
    }
    let early = if has_payload && ep.reserve_early(h.size) {
        let mut buf = vec![0u8; h.size as usize];
        rs.read_exact(&mut buf).map_err(io)?;
        // acked on delivery, so the sender learns whether the receive truncated it
        Early::Data { buf, ack }
    } else {
        if has_payload {
            sockio::drain(rs, h.size).map_err(io)?;
        }
        Early::Pull {
            msg_id: h.addr,
            len: h.size,
            ack,
        }
    };
    if let Some((r, e)) = ep.msgs.arrive(early) {
        ep.deliver_early(r, e);
    }
    Ok(())
}
