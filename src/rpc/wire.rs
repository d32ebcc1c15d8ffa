//! SlimeRPC wire format: the original's 16-byte header and flag bits, the immediate-data
//! encoding, and the bulk descriptor.
//!
//! ```text
//! header (little-endian, packed): u32 tag | u32 total_len | u64 request_id
//! tag = base_tag (low 26 bits) | flags
//!   EXC_BIT   1<<27  reply payload is an exception (JSON {"type","message","traceback"})
//!   ACK_BIT   1<<28  reserved (unused, as in the original)
//!   REPLY_BIT 1<<29  the message is a reply (same request_id, same slot index)
//!   CHUNK_BIT 1<<30  reserved; a request carrying it gets an exception reply
//!   LAST_BIT  1<<31  reserved
//!   BULK_BIT  1<<26  (extension) the payload is a BulkDesc: the real payload stays in
//!                    the sender's registered region and the receiver reads it one-sided
//!   PLACE_BIT 1<<25  (extension, version 5) on a request: the last BULK_DESC_LEN bytes
//!                    of the slot message are a BulkDesc of the caller's reply buffer
//!                    for this call (addr, capacity, key); on a reply: the reply lies in
//!                    that buffer, the slot carries only its length (u64 LE)
//! total_len = 16 + payload bytes in the slot (for BULK: 16 + BULK_DESC_LEN; a request
//!             with PLACE_BIT: + BULK_DESC_LEN; a placed reply: 16 + PLACED_LEN)
//! imm = slot (bits 0..16) | kind << 16 (2 bits: 0 request, 1 reply, 2 close notice)
//!       | fence << 18 (14 bits: the receiving session's, see below; a close notice has
//!       slot 0)
//! ```
//!
//! **Fence.** Sessions follow one another over an endpoint pair, and a message of an
//! earlier session can still be on its way when the next one starts (the late reply of
//! an abandoned call, a request sent as the peer closed). Its notification names only a
//! slot, which in the next session holds something else; so every notification carries
//! the fence of the session it is for, the low 14 bits of that session's id, and a
//! session drops notifications with another fence. A process gives its sessions
//! consecutive fences (from a random start, skipping 0), so one repeats only after
//! 16383 sessions of that process.
//!
//! **Reply buffers** (version 5). Where the server maps the caller's memory (shared
//! memory), a caller expecting a large reply announces a buffer of its own for the call
//! in the request (PLACE_BIT); the server writes the reply there, through its mapping of
//! exactly the announced range (checked against the caller's region table), and only if
//! it fits; a larger reply takes the ordinary path. The caller accepts a placed reply
//! only up to the capacity it announced (else the call fails with `Truncated`).
//!
//! The original's base tag has 27 bits; here bits 26 and 25 are taken by BULK_BIT and
//! PLACE_BIT, which leaves 2^25 method tags.

pub const HEADER_LEN: usize = 16;
pub const WIRE_VERSION: u32 = 5;

pub const PLACE_BIT: u32 = 1 << 25;
pub const BULK_BIT: u32 = 1 << 26;
pub const EXC_BIT: u32 = 1 << 27;
pub const ACK_BIT: u32 = 1 << 28;
pub const REPLY_BIT: u32 = 1 << 29;
pub const CHUNK_BIT: u32 = 1 << 30;
pub const LAST_BIT: u32 = 1 << 31;
/// The original's flag mask (bits 27..31).
pub const FLAG_MASK: u32 = 0xF800_0000;
/// Flags including the bulk and reply-buffer extensions.
pub const ALL_FLAGS: u32 = FLAG_MASK | BULK_BIT | PLACE_BIT;
/// Largest method tag.
pub const MAX_TAG: u32 = PLACE_BIT - 1;
/// Slot payload of a placed reply: the reply's length, u64 LE.
pub const PLACED_LEN: usize = 8;
pub const MAX_SLOT_COUNT: usize = 65536;

pub const IMM_REQUEST: u32 = 0;
pub const IMM_REPLY: u32 = 1;
pub const IMM_CLOSE: u32 = 2;

/// Bits of a session id that are its fence.
pub const FENCE_BITS: u32 = 14;
pub const FENCE_MASK: u32 = (1 << FENCE_BITS) - 1;

/// The fence of the session with id `id` (the notifications meant for it carry it).
pub fn fence(id: u64) -> u32 {
    id as u32 & FENCE_MASK
}

pub fn base_tag(tag: u32) -> u32 {
    tag & !ALL_FLAGS
}

/// The immediate of a message of `kind` in `slot` for the session with fence `fence`.
pub fn encode_imm(slot: usize, kind: u32, fence: u32) -> i32 {
    (slot as u32 | (kind & 3) << 16 | (fence & FENCE_MASK) << 18) as i32
}

/// `(slot, kind, fence)` of an immediate.
pub fn decode_imm(imm: i32) -> (usize, u32, u32) {
    let v = imm as u32;
    ((v & 0xFFFF) as usize, (v >> 16) & 3, v >> 18)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub tag: u32,
    pub total_len: u32,
    pub request_id: u64,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.tag.to_le_bytes());
        b[4..8].copy_from_slice(&self.total_len.to_le_bytes());
        b[8..16].copy_from_slice(&self.request_id.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; HEADER_LEN]) -> Header {
        Header {
            tag: u32::from_le_bytes(b[0..4].try_into().unwrap()),
            total_len: u32::from_le_bytes(b[4..8].try_into().unwrap()),
            request_id: u64::from_le_bytes(b[8..16].try_into().unwrap()),
        }
    }

    /// Reads a header from raw memory (a mailbox slot the peer wrote).
    ///
    /// # Safety
    /// `p` points at 16 readable bytes.
    pub unsafe fn read(p: *const u8) -> Header {
        let mut b = [0u8; HEADER_LEN];
        // SAFETY: `p` has 16 readable bytes (this function's contract); `b` is a local.
        unsafe { std::ptr::copy_nonoverlapping(p, b.as_mut_ptr(), HEADER_LEN) };
        Header::decode(&b)
    }

    /// # Safety
    /// `p` points at 16 writable bytes.
    pub unsafe fn write(&self, p: *mut u8) {
        let b = self.encode();
        // SAFETY: `p` has 16 writable bytes (this function's contract); `b` is a local.
        unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), p, HEADER_LEN) };
    }
}

/// Whether a message's `total_len` fits a slot of `slot_size` bytes (and holds its
/// header).
pub fn fits_slot(h: &Header, slot_size: usize) -> bool {
    (HEADER_LEN..=slot_size).contains(&(h.total_len as usize))
}

/// Where a bulk payload lies in the sender's memory: `u64 addr | u64 len | u64 rkey`,
/// little-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BulkDesc {
    pub addr: u64,
    pub len: u64,
    pub key: u64,
}

pub const BULK_DESC_LEN: usize = 24;

impl BulkDesc {
    pub fn encode(&self) -> [u8; BULK_DESC_LEN] {
        let mut b = [0u8; BULK_DESC_LEN];
        b[0..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..16].copy_from_slice(&self.len.to_le_bytes());
        b[16..24].copy_from_slice(&self.key.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<BulkDesc> {
        if b.len() != BULK_DESC_LEN {
            return None;
        }
        Some(BulkDesc {
            addr: u64::from_le_bytes(b[0..8].try_into().unwrap()),
            len: u64::from_le_bytes(b[8..16].try_into().unwrap()),
            key: u64::from_le_bytes(b[16..24].try_into().unwrap()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes_are_little_endian_and_16_long() {
        let h = Header {
            tag: 5 | REPLY_BIT,
            total_len: 16 + 3,
            request_id: 1,
        };
        let b = h.encode();
        assert_eq!(
            b,
            [5, 0, 0, 0x20, 19, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
            "tag LE with REPLY_BIT in the top byte, total_len, request_id"
        );
        assert_eq!(Header::decode(&b), h);
    }

    #[test]
    fn flags_match_the_original() {
        assert_eq!(EXC_BIT, 0x0800_0000);
        assert_eq!(REPLY_BIT, 0x2000_0000);
        assert_eq!(FLAG_MASK, 0xF800_0000);
        assert_eq!(
            FLAG_MASK,
            EXC_BIT | ACK_BIT | REPLY_BIT | CHUNK_BIT | LAST_BIT
        );
        assert_eq!(base_tag(7 | REPLY_BIT | EXC_BIT | BULK_BIT | PLACE_BIT), 7);
        assert_eq!(MAX_TAG, (1 << 25) - 1);
    }

    #[test]
    fn imm_round_trip() {
        for (s, k, f) in [
            (0, IMM_REQUEST, 1),
            (65535, IMM_REPLY, FENCE_MASK),
            (0, IMM_CLOSE, 0x2A5),
        ] {
            assert_eq!(decode_imm(encode_imm(s, k, f)), (s, k, f));
        }
        assert_eq!(
            encode_imm(7, IMM_REPLY, 3) as u32,
            7 | 1 << 16 | 3 << 18,
            "slot, kind, fence"
        );
        assert_eq!(fence(0xFFFF_0000_0000_4001), 1, "the low 14 bits of the id");
    }

    #[test]
    fn bulk_desc_round_trip() {
        let d = BulkDesc {
            addr: 0x1234_5678_9abc,
            len: 1 << 30,
            key: 0xdead_beef_0bad_cafe,
        };
        assert_eq!(BulkDesc::decode(&d.encode()), Some(d));
        assert_eq!(BulkDesc::decode(&[0u8; 3]), None);
    }
}
