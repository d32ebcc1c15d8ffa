//! The TCP wire format: a per-connection hello with the authentication handshake
//! ([`crate::transport::auth`]), then frames of a fixed 48-byte little-endian header
//! optionally followed by payload. Byte layouts are documented, with an example, in
//! `docs/tcp-wire-format.md` (a test checks that example).

use std::io::{self, Read};

use crate::error::Status;

/// First bytes on every connection, both ways.
pub const MAGIC: [u8; 8] = *b"DLSLIMEt";
pub const WIRE_VERSION: u16 = 2;
/// The plain part of a hello; the same in every version, so a version mismatch can
/// always be answered.
pub const HELLO_LEN: usize = 24;
pub const HEADER_LEN: usize = 48;

/// `magic[8] | version u16 | status u16 | reserved u32 | context_id u64`. The dialer's is
/// followed by its auth challenge, the acceptor's (status 0) by its auth response, and
/// then the dialer sends its proof.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    /// 0 from the dialer; the acceptor answers with a `Status` number (0 = accepted).
    pub status: u16,
    /// The sender's context id (informational: who a connection is, is its auth key).
    pub context_id: u64,
}

impl Hello {
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        b[10..12].copy_from_slice(&self.status.to_le_bytes());
        b[16..24].copy_from_slice(&self.context_id.to_le_bytes());
        b
    }

    /// `None` when the magic is wrong: the bytes are not ours at all.
    pub fn decode(b: &[u8; HELLO_LEN]) -> Option<Hello> {
        if b[0..8] != MAGIC {
            return None;
        }
        Some(Hello {
            version: u16::from_le_bytes([b[8], b[9]]),
            status: u16::from_le_bytes([b[10], b[11]]),
            context_id: u64::from_le_bytes(b[16..24].try_into().unwrap()),
        })
    }
}

named_enum! {
    /// What a frame asks for; the name appears in messages.
    pub enum Opcode: u8 {
        /// Target streams `size` bytes at `addr` back in a Reply.
        Read = 1 => "read",
        /// `size` payload bytes follow, to be stored at `addr`.
        Write = 2 => "write",
        /// Write, then deliver `imm` to the target endpoint's imm_recv queue.
        WriteImm = 3 => "write_imm",
        /// Deliver `imm` only (write_with_imm of an empty list).
        Imm = 4 => "imm",
        /// A message of `size` bytes for the target's next recv; payload follows when
        /// `FLAG_PAYLOAD` is set, otherwise the target pulls it later. `addr` = message id.
        Send = 5 => "send",
        /// Asks for the payload of message `addr` (sent without payload); answered by a Reply.
        Pull = 6 => "pull",
        /// Answer to any request, matched by `req_id`; `status` says how it went.
        Reply = 7 => "reply",
    }
}

/// Set on a Send whose payload follows the header.
pub const FLAG_PAYLOAD: u8 = 1;

/// `size u64 | addr u64 | opcode u8 | flags u8 | status u16 | endpoint u32 | key u64 |
/// req_id u64 | imm i32 | reserved u32`. The first three fields are the shape of the
/// original DLSlime TCP header (size, address, opcode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub size: u64,
    pub addr: u64,
    pub opcode: u8,
    pub flags: u8,
    pub status: u16,
    pub endpoint: u32,
    pub key: u64,
    pub req_id: u64,
    pub imm: i32,
}

impl Header {
    pub fn new(op: Opcode) -> Header {
        Header {
            opcode: op as u8,
            ..Header::default()
        }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&self.size.to_le_bytes());
        b[8..16].copy_from_slice(&self.addr.to_le_bytes());
        b[16] = self.opcode;
        b[17] = self.flags;
        b[18..20].copy_from_slice(&self.status.to_le_bytes());
        b[20..24].copy_from_slice(&self.endpoint.to_le_bytes());
        b[24..32].copy_from_slice(&self.key.to_le_bytes());
        b[32..40].copy_from_slice(&self.req_id.to_le_bytes());
        b[40..44].copy_from_slice(&self.imm.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; HEADER_LEN]) -> Header {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        Header {
            size: u64_at(0),
            addr: u64_at(8),
            opcode: b[16],
            flags: b[17],
            status: u16::from_le_bytes([b[18], b[19]]),
            endpoint: u32_at(20),
            key: u64_at(24),
            req_id: u64_at(32),
            imm: u32_at(40) as i32,
        }
    }

    pub fn op(&self) -> Option<Opcode> {
        Opcode::from_repr(self.opcode)
    }

    pub fn reply(req_id: u64, status: Status, size: u64) -> Header {
        Header {
            size,
            req_id,
            status: status.code() as u16,
            ..Header::new(Opcode::Reply)
        }
    }

    pub fn status(&self) -> Status {
        Status::from_code(self.status as i32)
    }
}

/// Reads one header; `Ok(None)` on a clean end of stream before any byte.
pub fn read_header(r: &mut impl Read) -> io::Result<Option<Header>> {
    let mut b = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut b[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(Header::decode(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = Header {
            size: 1,
            addr: 2,
            opcode: 3,
            flags: 4,
            status: 5,
            endpoint: 8,
            key: 0x0600_0000_0000_0006,
            req_id: 7,
            imm: -9,
        };
        assert_eq!(Header::decode(&h.encode()), h);
    }

    #[test]
    fn hello_rejects_foreign_bytes() {
        let h = Hello {
            version: WIRE_VERSION,
            status: 0,
            context_id: 42,
        };
        assert_eq!(Hello::decode(&h.encode()), Some(h));
        assert_eq!(Hello::decode(&[0x47; HELLO_LEN]), None);
    }
}
