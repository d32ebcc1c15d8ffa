//! The server: one thread per accepted connection authenticates the dialer (the
//! handshake), then reads requests, checks that the connection may act on the target
//! endpoint (its connected peer's key) and every `(address, length, key)` against that
//! endpoint's registered regions, applies them straight to/from region memory, and
//! replies with a status. Anything that is not the protocol drops that connection only,
//! and so do repeated refusals (see [`crate::transport::strikes`]).

use std::io::Read;
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::accepted::Ticket;
use super::handshake;
use super::reply::{Ack, ServerConn};
use super::target::{Early, EpCore, Targets};
use super::wire::{read_header, Header, Opcode, FLAG_PAYLOAD};
use super::{sockio, staging};
use crate::error::{Error, Result, Status};
use crate::transport::auth::Identity;
use crate::transport::strikes::Strikes;
use crate::{info_log, warn_log};

/// What every server thread of a context needs besides its connection.
pub struct ServerCtx {
    pub identity: Arc<Identity>,
    pub context_id: u64,
    /// The whole handshake must be done within this.
    pub handshake_timeout: Duration,
    /// How long a frame for an endpoint that has not called `connect()` yet waits.
    pub connect_grace: Duration,
}

pub fn serve(targets: Weak<Targets>, ctx: Arc<ServerCtx>, ticket: Ticket, mut stream: TcpStream) {
    sockio::tune(&stream);
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let deadline = Instant::now() + ctx.handshake_timeout;
    match handshake::accept(&mut stream, &ctx.identity, ctx.context_id, deadline) {
        Ok(who) => {
            ticket.authenticated(who.key);
            let writer = match stream.try_clone() {
                Ok(w) => w,
                Err(_) => return,
            };
            let conn = Arc::new(ServerConn::new(writer, who.key));
            if let Err(e) = serve_requests(&targets, &ctx, &ticket, &conn, &mut stream) {
                warn_log!(
                    "dropping connection from {peer} (context {:016x}): {e}",
                    who.context_id
                );
            }
        }
        Err(e) => info_log!("refusing connection from {peer}: {e}"),
    }
    let _ = stream.shutdown(Shutdown::Both);
}

fn serve_requests(
    targets: &Weak<Targets>,
    ctx: &ServerCtx,
    ticket: &Ticket,
    conn: &Arc<ServerConn>,
    rs: &mut TcpStream,
) -> Result<()> {
    let io = |e: std::io::Error| Error::io("connection", e);
    let strikes = Strikes::default();
    // A refused request counts; too many close the connection (logged once, by the caller).
    let refused = |s: Status| -> Result<Status> {
        if strikes.hit() {
            return Err(Error::new(
                Status::RemoteAccess,
                format!(
                    "closed after {} refused requests (last: {s})",
                    strikes.count()
                ),
            ));
        }
        Ok(s)
    };
    loop {
        let Some(h) = read_header(rs).map_err(io)? else {
            info_log!("peer closed a connection");
            return Ok(());
        };
        ticket.touch();
        let op = h
            .op()
            .ok_or_else(|| Error::new(Status::Protocol, format!("unknown opcode {}", h.opcode)))?;
        if op == Opcode::Reply {
            return Err(Error::new(
                Status::Protocol,
                "unexpected reply on a request connection",
            ));
        }
        // Who may act on the target: only its connected peer, proven by the handshake.
        let ep = match targets.upgrade().and_then(|t| t.endpoint(h.endpoint)) {
            None => Err(Status::UnknownHandle),
            Some(e) => match e.authorize(&conn.peer_key, ctx.connect_grace) {
                Ok(()) => Ok(e),
                Err(s) => Err(s),
            },
        };
        let ep = match ep {
            Ok(e) => e,
            Err(s) => {
                let s = refused(s)?;
                if op == Opcode::Write
                    || op == Opcode::WriteImm
                    || (op == Opcode::Send && h.flags & FLAG_PAYLOAD != 0)
                {
                    sockio::drain(rs, h.size).map_err(io)?;
                }
                conn.reply(h.req_id, s);
                continue;
            }
        };
        match op {
            Opcode::Read => {
                let target = access(&ep, &h);
                match target {
                    // SAFETY: the range lies inside a live registered region with the right key.
                    Ok(addr) => unsafe {
                        conn.reply_with(h.req_id, addr as *const u8, h.size as usize)
                            .map_err(io)?
                    },
                    Err(s) => conn.reply(h.req_id, refused(s)?),
                }
            }
            Opcode::Write | Opcode::WriteImm => {
                let target = access(&ep, &h);
                match target {
                    Ok(addr) => {
                        // SAFETY: validated as above; the bytes land directly in the region.
                        match unsafe { staging::read_into(rs, addr as *mut u8, h.size as usize) } {
                            Ok(()) => {
                                if op == Opcode::WriteImm {
                                    ep.imm.deliver(h.imm);
                                }
                                conn.reply(h.req_id, Status::Ok);
                            }
                            // the region is registered but no longer mapped (the frame
                            // was consumed: the connection stays in step)
                            Err(e) if sockio::is_efault(&e) => {
                                conn.reply(h.req_id, Status::RemoteAccess)
                            }
                            Err(e) => return Err(io(e)),
                        }
                    }
                    Err(s) => {
                        sockio::drain(rs, h.size).map_err(io)?;
                        conn.reply(h.req_id, refused(s)?);
                    }
                }
            }
            Opcode::Imm => {
                ep.imm.deliver(h.imm);
                conn.reply(h.req_id, Status::Ok);
            }
            Opcode::Send => {
                let has_payload = h.flags & FLAG_PAYLOAD != 0;
                receive_message(&ep, conn, rs, &h, has_payload)?;
            }
            Opcode::Pull => match ep.pending_send(h.addr) {
                Some(send) if send.len as u64 == h.size && send.op.begin_io() => {
                    // SAFETY: the send buffer stays valid until its op completes, which
                    // begin_io holds off.
                    let r = unsafe { conn.reply_with(h.req_id, send.ptr as *const u8, send.len) };
                    send.op.end_io();
                    r.map_err(io)?;
                }
                _ => conn.reply(h.req_id, Status::Cancelled),
            },
            Opcode::Reply => unreachable!("refused above"),
        }
    }
}

/// The peer's range must be inside one of this endpoint's regions, with its key.
fn access(ep: &EpCore, h: &Header) -> std::result::Result<usize, Status> {
    ep.pool
        .validate_access_or_staged(h.addr, h.size, h.key)
        .map(|_| h.addr as usize)
        .map_err(|e| e.status())
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
            let res = unsafe { staging::read_into(rs, r.ptr as *mut u8, h.size as usize) };
            r.op.end_io();
            match res {
                Ok(()) => {}
                // the receive buffer is not writable memory (the frame was consumed)
                Err(e) if sockio::is_efault(&e) => {
                    ack.send(Status::RemoteAccess);
                    r.op.finish(
                        Status::InvalidArgument,
                        Some(format!(
                            "receive buffer [{:#x}, +{}) is not writable memory of this process",
                            r.ptr, h.size
                        )),
                    );
                    return Ok(());
                }
                Err(e) => return Err(io(e)),
            }
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
