//! The ring's remote-fetch protocol, carried by SlimeRPC requests and replies (one RPC
//! session per serving endpoint; the payload itself never travels in RPC messages).
//!
//! ```text
//! request  (tag FETCH | COMMIT | ABORT), little-endian:
//!   u32 version | u32 token | u64 generation | u64 aux | u32 slot | u16 name_len | u16 0
//!   | name bytes (the producer)
//!   FETCH:  token 0, aux = requested lease in ms
//!   COMMIT: the grant's token, aux = payload length
//!   ABORT:  the grant's token, aux = 0
//! reply, one fixed header, then an optional UTF-8 message:
//!   i32 status | u32 token | u64 generation | u64 length | u64 region_addr
//!   | u64 region_len | u64 region_key | u32 lease_ms | u32 0 | u64 payload_offset
//! ```
//!
//! A fetch reply carries status, payload length and generation together (spec A.8 §5):
//! an error can never be mistaken for payload, because the payload is not in the reply
//! at all; the client reads it one-sided from `region_addr + payload_offset` (a region
//! of the serving endpoint's memory pool, checked by the target with `region_key`).

use crate::error::{Error, Result, Status};

pub const RING_WIRE_VERSION: u32 = 2;

/// Grant a payload: `READY → READING` with a token and a lease.
pub const TAG_FETCH: u32 = 0;
/// The client has the bytes: `READING → FREE` (idempotent; any serving endpoint of the
/// ring may execute it, the token is the capability).
pub const TAG_COMMIT: u32 = 1;
/// The client's read failed: `READING → READY` now instead of at the lease's end.
pub const TAG_ABORT: u32 = 2;

pub const REQUEST_HEADER_LEN: usize = 32;
pub const REPLY_HEADER_LEN: usize = 64;
/// Longest reply message kept.
pub const MAX_MESSAGE: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub token: u32,
    pub generation: u64,
    pub aux: u64,
    pub slot: u32,
    pub producer: String,
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        let name = self.producer.as_bytes();
        let mut b = Vec::with_capacity(REQUEST_HEADER_LEN + name.len());
        b.extend_from_slice(&RING_WIRE_VERSION.to_le_bytes());
        b.extend_from_slice(&self.token.to_le_bytes());
        b.extend_from_slice(&self.generation.to_le_bytes());
        b.extend_from_slice(&self.aux.to_le_bytes());
        b.extend_from_slice(&self.slot.to_le_bytes());
        b.extend_from_slice(&(name.len() as u16).to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(name);
        b
    }

    pub fn decode(b: &[u8]) -> Result<Request> {
        let bad = |m: &str| Error::new(Status::Protocol, format!("ring request: {m}"));
        if b.len() < REQUEST_HEADER_LEN {
            return Err(bad("shorter than its header"));
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        if u32_at(0) != RING_WIRE_VERSION {
            return Err(Error::new(
                Status::VersionMismatch,
                format!(
                    "ring request of version {} (this side: {RING_WIRE_VERSION})",
                    u32_at(0)
                ),
            ));
        }
        let name_len = u16::from_le_bytes([b[28], b[29]]) as usize;
        if b.len() != REQUEST_HEADER_LEN + name_len {
            return Err(bad("length does not match its name length"));
        }
        let producer = std::str::from_utf8(&b[REQUEST_HEADER_LEN..])
            .map_err(|_| bad("producer name is not UTF-8"))?
            .to_string();
        Ok(Request {
            token: u32_at(4),
            generation: u64_at(8),
            aux: u64_at(16),
            slot: u32_at(24),
            producer,
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    pub status: i32,
    pub token: u32,
    pub generation: u64,
    pub length: u64,
    pub region_addr: u64,
    pub region_len: u64,
    pub region_key: u64,
    pub lease_ms: u32,
    pub payload_offset: u64,
    pub message: String,
}

impl Reply {
    /// An error reply carrying the error's status and message.
    pub fn error(e: &Error, generation: u64) -> Reply {
        Reply {
            status: e.status().code(),
            generation,
            message: e.message().to_string(),
            ..Default::default()
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let msg = self.message.as_bytes();
        let msg = &msg[..msg.len().min(MAX_MESSAGE)];
        let mut b = Vec::with_capacity(REPLY_HEADER_LEN + msg.len());
        b.extend_from_slice(&self.status.to_le_bytes());
        b.extend_from_slice(&self.token.to_le_bytes());
        b.extend_from_slice(&self.generation.to_le_bytes());
        b.extend_from_slice(&self.length.to_le_bytes());
        b.extend_from_slice(&self.region_addr.to_le_bytes());
        b.extend_from_slice(&self.region_len.to_le_bytes());
        b.extend_from_slice(&self.region_key.to_le_bytes());
        b.extend_from_slice(&self.lease_ms.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&self.payload_offset.to_le_bytes());
        b.extend_from_slice(msg);
        b
    }

    pub fn decode(b: &[u8]) -> Result<Reply> {
        if b.len() < REPLY_HEADER_LEN {
            return Err(Error::new(
                Status::Protocol,
                format!("ring reply of {} bytes is shorter than its header", b.len()),
            ));
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        Ok(Reply {
            status: u32_at(0) as i32,
            token: u32_at(4),
            generation: u64_at(8),
            length: u64_at(16),
            region_addr: u64_at(24),
            region_len: u64_at(32),
            region_key: u64_at(40),
            lease_ms: u32_at(48),
            payload_offset: u64_at(56),
            message: String::from_utf8_lossy(&b[REPLY_HEADER_LEN..]).into_owned(),
        })
    }

    /// `Ok(())` for status 0, else the error the reply carries.
    pub fn result(&self) -> Result<()> {
        if self.status == Status::Ok.code() {
            return Ok(());
        }
        let s = Status::from_code(self.status);
        let s = if s == Status::Ok || s == Status::Pending {
            Status::Protocol
        } else {
            s
        };
        Err(Error::new(s, self.message.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip_and_refusals() {
        let r = Request {
            token: 7,
            generation: 1 << 40,
            aux: 5000,
            slot: 3,
            producer: "rollouts-0".into(),
        };
        let b = r.encode();
        assert_eq!(b.len(), REQUEST_HEADER_LEN + 10);
        assert_eq!(Request::decode(&b).unwrap(), r);
        assert_eq!(
            Request::decode(&b[..20]).unwrap_err().status(),
            Status::Protocol
        );
        let mut longer = b.clone();
        longer.push(0);
        assert_eq!(
            Request::decode(&longer).unwrap_err().status(),
            Status::Protocol
        );
        let mut other = b.clone();
        other[0] = RING_WIRE_VERSION as u8 + 1;
        assert_eq!(
            Request::decode(&other).unwrap_err().status(),
            Status::VersionMismatch
        );
        let mut not_utf8 = b;
        not_utf8[REQUEST_HEADER_LEN] = 0xff;
        assert!(Request::decode(&not_utf8).is_err());
    }

    #[test]
    fn reply_round_trip_and_status() {
        let r = Reply {
            status: 0,
            token: 9,
            generation: 12,
            length: 1 << 30,
            region_addr: 0xdead_0000,
            region_len: 1 << 31,
            region_key: 0x8000_0000_0000_0077,
            lease_ms: 6000,
            payload_offset: 4096,
            message: String::new(),
        };
        let b = r.encode();
        assert_eq!(b.len(), REPLY_HEADER_LEN);
        assert_eq!(Reply::decode(&b).unwrap(), r);
        assert!(r.result().is_ok());
        let e = Reply::error(&Error::new(Status::StaleSlot, "gone"), 12);
        let d = Reply::decode(&e.encode()).unwrap();
        assert_eq!(d.result().unwrap_err().status(), Status::StaleSlot);
        assert_eq!(d.result().unwrap_err().message(), "gone");
        assert!(Reply::decode(&[0u8; 10]).is_err());
        let pending = Reply {
            status: 1,
            ..Default::default()
        };
        assert_eq!(pending.result().unwrap_err().status(), Status::Protocol);
        let garbage = Reply {
            status: 12345,
            ..Default::default()
        };
        assert_eq!(garbage.result().unwrap_err().status(), Status::Internal);
    }
}
