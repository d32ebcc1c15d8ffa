//! Outbound posting: a message (request or reply) is staged in our send slot `s` and
//! sent with one write-with-immediate into the peer's mailbox slot `s` (imm = `s | kind
//! << 16 | fence << 18`, the fence of the peer's session). Where the transport maps the
//! peer's mailbox (shared memory) the message is built in the peer's slot itself and
//! only the notification is sent: one copy fewer. A payload larger than the slot is
//! built in the slot's bulk buffer and the message carries its [`BulkDesc`] instead. A
//! request may announce the caller's reply buffer after its payload (`PLACE_BIT`).

use std::sync::atomic::Ordering;

use super::bulk::BulkUse;
use super::session::Inner;
use super::wire::{self, BulkDesc, Header, BULK_DESC_LEN, HEADER_LEN};
use crate::error::{Error, Result};
use crate::future::Future;
use crate::transport::{Assignment, PeerView};

/// Fails when a writer claims more bytes than the buffer it was given.
pub(super) fn check_written(n: usize, max_len: usize) -> Result<usize> {
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
    /// `reply_to` (a request's reply buffer, see [`wire`]) is announced after the payload
    /// or the bulk descriptor; a payload that fits the slot only without it goes bulk.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn post(
        &self,
        kind: u32,
        slot: usize,
        tag: u32,
        request_id: u64,
        max_len: usize,
        reply_to: Option<BulkDesc>,
        writer: impl FnOnce(&mut [u8]) -> Result<usize>,
    ) -> Result<Future> {
        self.check_alive()?;
        let cap = self.cfg.slot_capacity() - if reply_to.is_some() { BULK_DESC_LEN } else { 0 };
        let (sp, mapped) = self.stage(kind, slot);
        let (tag, payload_len) = if max_len <= cap {
            // SAFETY: our send slot or the peer's mailbox slot (stage), not in use by
            // anyone else until this message's answer; header + max_len <= slot_size.
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
                return self.post_desc(kind, slot, tag, request_id, d, reply_to);
            }
            // SAFETY: n <= slot capacity: the bytes fit after the header of the staging
            // slot (stage), a different allocation from the bulk buffer.
            unsafe { std::ptr::copy_nonoverlapping(b.ptr, sp.add(HEADER_LEN), n) };
            (tag, n)
        };
        self.send_slot(
            kind,
            slot,
            (sp, mapped),
            tag,
            request_id,
            payload_len,
            reply_to,
        )
    }

    /// Sends a bulk message whose payload already lies in a registered buffer of ours,
    /// announcing `reply_to` after the descriptor.
    pub(super) fn post_desc(
        &self,
        kind: u32,
        slot: usize,
        tag: u32,
        request_id: u64,
        d: BulkDesc,
        reply_to: Option<BulkDesc>,
    ) -> Result<Future> {
        self.check_alive()?;
        let e = d.encode();
        let (sp, mapped) = self.stage(kind, slot);
        // SAFETY: the staging slot (see `post`); slot_size >= 64 holds header + descriptor
        // (and the reply-buffer descriptor after it: see `send_slot`).
        unsafe { std::ptr::copy_nonoverlapping(e.as_ptr(), sp.add(HEADER_LEN), e.len()) };
        self.stats.bulk_sent.fetch_add(1, Ordering::Relaxed);
        let tag = tag | wire::BULK_BIT;
        self.send_slot(kind, slot, (sp, mapped), tag, request_id, e.len(), reply_to)
    }

    /// Where a message for slot `slot` of `kind` is built, and whether that is the
    /// peer's mailbox slot (when the transport maps it: then nothing but the
    /// notification is sent) rather than our send slot (copied to the peer's by the
    /// write). Decided once per message.
    fn stage(&self, kind: u32, slot: usize) -> (*mut u8, bool) {
        match self.peer_mbox() {
            // SAFETY: the view is the peer's whole mailbox (2 * slot_count slots of
            // slot_size, checked at the handshake), and slot < slot_count.
            Some(v) => (
                unsafe { v.as_ptr().add(self.mem.slot_off(kind, slot)) },
                true,
            ),
            None => (self.mem.send_ptr(kind, slot), false),
        }
    }

    /// The peer's mailbox where it lies, when the transport maps it (kept once found).
    pub(super) fn peer_mbox(&self) -> Option<&PeerView> {
        if let Some(v) = self.peer_mbox.get() {
            return Some(v);
        }
        let len = (2 * self.cfg.slot_size * self.cfg.slot_count) as u64;
        let (addr, key) = self
            .ep
            .remote_pool()
            .remote_range(self.remote_mbox, 0, len)
            .ok()?;
        let v = self.ep.peer_view(addr, len, key)?;
        Some(self.peer_mbox.get_or_init(|| v))
    }

    /// Writes the header of the message staged by `post` at `staged` (from `stage`: the
    /// slot, and whether it is the peer's mailbox slot), and the reply-buffer
    /// announcement `reply_to` after its payload, and sends it with one
    /// write-with-immediate (only the notification, when it is in the peer's mailbox).
    #[allow(clippy::too_many_arguments)]
    fn send_slot(
        &self,
        kind: u32,
        slot: usize,
        (sp, mapped): (*mut u8, bool),
        mut tag: u32,
        request_id: u64,
        mut payload_len: usize,
        reply_to: Option<BulkDesc>,
    ) -> Result<Future> {
        if let Some(r) = reply_to {
            let e = r.encode();
            // SAFETY: the caller left room for it: payload_len + BULK_DESC_LEN fits the
            // slot after the header (`post` reserves it; a bulk descriptor is 24
            // bytes and slot_size >= 64 holds header + two descriptors).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    e.as_ptr(),
                    sp.add(HEADER_LEN + payload_len),
                    BULK_DESC_LEN,
                )
            };
            payload_len += BULK_DESC_LEN;
            tag |= wire::PLACE_BIT;
        }
        let h = Header {
            tag,
            total_len: (HEADER_LEN + payload_len) as u32,
            request_id,
        };
        // SAFETY: the staging slot of this message (stage), at least HEADER_LEN bytes.
        unsafe { h.write(sp) };
        let imm = wire::encode_imm(slot, kind, wire::fence(self.peer_id));
        if mapped {
            return self
                .ep
                .write_with_imm(&[], imm, Some(self.cfg.default_timeout));
        }
        // The peer's mailbox has our slot layout (checked at the handshake).
        let off = self.mem.slot_off(kind, slot) as u64;
        let a = Assignment::new(
            self.mem.send_h,
            self.remote_mbox,
            off,
            off,
            (HEADER_LEN + payload_len) as u64,
        );
        self.ep
            .write_with_imm(&[a], imm, Some(self.cfg.default_timeout))
    }
}
