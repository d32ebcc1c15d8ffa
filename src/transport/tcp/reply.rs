//! The target's way back to the initiator: the write half of an accepted connection,
//! and the deferred reply (`Ack`) a message's sender waits for.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;

use parking_lot::Mutex;

use super::staging;
use super::wire::Header;
use crate::error::Status;
use crate::transport::auth::PublicKey;

/// The write half of an accepted connection; replies may be sent later from other
/// threads (a message acknowledged once its receive is posted and pulled).
pub struct ServerConn {
    writer: Mutex<TcpStream>,
    /// The key the initiator proved it holds in the handshake.
    pub peer_key: PublicKey,
}

impl ServerConn {
    pub fn new(writer: TcpStream, peer_key: PublicKey) -> ServerConn {
        ServerConn {
            writer: Mutex::new(writer),
            peer_key,
        }
    }

    pub fn reply(&self, req_id: u64, status: Status) {
        let h = Header::reply(req_id, status, 0).encode();
        let _ = self.writer.lock().write_all(&h);
    }

    /// Reply carrying `len` bytes read from `ptr`; a bare `REMOTE_ACCESS` reply instead
    /// when the range is not mapped (a region unmapped under its registration, a send
    /// buffer freed before its completion), which keeps the connection in step.
    ///
    /// # Safety
    /// The range must not be unmapped during the call.
    pub unsafe fn reply_with(
        &self,
        req_id: u64,
        ptr: *const u8,
        len: usize,
    ) -> std::io::Result<()> {
        if !staging::readable(ptr as usize, len) {
            self.reply(req_id, Status::RemoteAccess);
            return Ok(());
        }
        let h = Header::reply(req_id, Status::Ok, len as u64).encode();
        // SAFETY: the range is readable for the call (this function's contract).
        unsafe { staging::write_frame(&mut self.writer.lock(), &h, ptr, len) }
    }
}

/// The reply a sender waits for. Sent once; an ack dropped unsent (its message was
/// discarded at shutdown) tells the sender `CANCELLED` rather than leaving it waiting.
pub struct Ack {
    conn: Option<Arc<ServerConn>>,
    req_id: u64,
}

impl Ack {
    pub fn new(conn: Arc<ServerConn>, req_id: u64) -> Ack {
        Ack {
            conn: Some(conn),
            req_id,
        }
    }

    pub fn send(mut self, status: Status) {
        if let Some(c) = self.conn.take() {
            c.reply(self.req_id, status);
        }
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            c.reply(self.req_id, Status::Cancelled);
        }
    }
}
