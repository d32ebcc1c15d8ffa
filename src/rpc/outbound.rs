//! Outbound posting: a message (request or reply) is staged in our send slot `s` and
//! sent with one write-with-immediate into the peer's mailbox slot `s` (imm = `s | kind
//! << 16 | fence << 18`, the fence of the peer's session). A payload larger than the
//! slot is built in the slot's bulk buffer and the message carries its [`BulkDesc`]
//! instead.

use std::sync::atomic::Ordering;

use super::bulk::BulkUse;
use super::session::Inner;
use super::wire::{self, BulkDesc, Header, HEADER_LEN};
use crate::error::{Error, Result};
use crate::future::Future;
use crate::transport::Assignment;

/// Fails when a writer claims more bytes than the buffer it was given.
fn check_written(n: usize, max_len: usize) -> Result<usize> {
    if n > max_len {
        return Err(Error::invalid(format!(
            "RPC writer returned {n} bytes, more than its {max_len}-byte buffer"
        )));
    }
    Ok(n)
}

impl Inner {
    /// Writes one message (`kind` request or reply) to the peer's mailbox slot; `writer`
    /// builds the payload in place in a buffer of `max_len` bytes and returns its length.
    pub(super) fn post(
        &self,
        kind: u32,
        slot: usize,
        tag: u32,
        request_id: u64,
        max_len: usize,
        writer: impl FnOnce(&mut [u8]) -> Result<usize>,
    ) -> Result<Future> {
        self.check_alive()?;
        let cap = self.cfg.slot_capacity();
        let sp = self.mem.send_ptr(kind, slot);
        let (tag, payload_len) = if max_len <= cap {
            // SAFETY: our send slot, not in use by anyone else until this message's answer;
            // header + max_len <= slot_size.
            let buf = unsafe { std::slice::from_raw_parts_mut(sp.add(HEADER_LEN), max_len) };
            (tag, check_written(writer(buf)?, max_len)?)
        } else {
            let g = self.bulk_buf(BulkUse::outgoing(kind), slot, max_len)?;
            let b = g.as_ref().expect("bulk_buf fills the cache");
            // SAFETY: the cached buffer is this slot's and at least max_len bytes; the
            // peer finished reading the previous payload from it (see `bulk`).
            let buf = unsafe { std::slice::from_raw_parts_mut(b.ptr, max_len) };
            let n = check_written(writer(buf)?, max_len)?;
            if n > cap {
                let d = b.desc(n);
                drop(g);
                return self.post_desc(kind, slot, tag, request_id, d);
            }
            // SAFETY: n <= slot capacity: the bytes fit after the header of our send slot,
            // a different allocation from the bulk buffer.
            unsafe { std::ptr::copy_nonoverlapping(b.ptr, sp.add(HEADER_LEN), n) };
            (tag, n)
        };
        self.send_slot(kind, slot, tag, request_id, payload_len)
    }

    /// Sends a bulk message whose payload already lies in a registered buffer of ours.
    pub(super) fn post_desc(
        &self,
        kind: u32,
        slot: usize,
        tag: u32,
        request_id: u64,
        d: BulkDesc,
    ) -> Result<Future> {
        self.check_alive()?;
        let e = d.encode();
        // SAFETY: our send slot (see `post`); slot_size >= 64 holds header + descriptor.
        unsafe {
            std::ptr::copy_nonoverlapping(
                e.as_ptr(),
                self.mem.send_ptr(kind, slot).add(HEADER_LEN),
                e.len(),
            )
        };
        self.stats.bulk_sent.fetch_add(1, Ordering::Relaxed);
        self.send_slot(kind, slot, tag | wire::BULK_BIT, request_id, e.len())
    }

    /// Writes the header of the message staged in our send slot and sends slot and
    /// notification with one write-with-immediate.
    fn send_slot(
        &self,
        kind: u32,
        slot: usize,
        tag: u32,
        request_id: u64,
        payload_len: usize,
    ) -> Result<Future> {
        let h = Header {
            tag,
            total_len: (HEADER_LEN + payload_len) as u32,
            request_id,
        };
        // SAFETY: our send slot (see `post`), at least HEADER_LEN bytes.
        unsafe { h.write(self.mem.send_ptr(kind, slot)) };
        // The peer's mailbox has our slot layout (checked at the handshake).
        let off = self.mem.slot_off(kind, slot) as u64;
        let a = Assignment::new(
            self.mem.send_h,
            self.remote_mbox,
            off,
            off,
            (HEADER_LEN + payload_len) as u64,
        );
        self.ep.write_with_imm(
            &[a],
            wire::encode_imm(slot, kind, wire::fence(self.peer_id)),
            Some(self.cfg.default_timeout),
        )
    }
}
