//! Inbound dispatch: what one received notification means. A request goes to the inbox
//! for `poll_request`, a reply to its call, a close notice ends the session; one with
//! another session's fence (an earlier session's, still in flight when it ended) is
//! counted as stale and dropped; anything malformed is counted and dropped.

use std::sync::atomic::Ordering;

use super::session::Inner;
use super::wire::{self, Header};
use crate::error::{Error, Status};

/// A request waiting in the inbox: its mailbox slot and header.
#[derive(Clone, Copy)]
pub(super) struct Inbound {
    pub slot: usize,
    pub header: Header,
}

impl Inner {
    /// Handles the notification with immediate data `imm` (the peer's message is in our
    /// mailbox by now).
    pub(super) fn dispatch(&self, imm: i32) {
        let (slot, kind, fence) = wire::decode_imm(imm);
        if fence != wire::fence(self.id) {
            // For an earlier session over this endpoint: its slot means nothing here.
            self.stats.stale_dropped.fetch_add(1, Ordering::Relaxed);
            crate::info_log!(
                "RPC: a message (slot {slot}, kind {kind}) of an earlier session over this endpoint arrived late; dropped"
            );
            return;
        }
        if kind == wire::IMM_CLOSE {
            self.mark_dead(Error::new(
                Status::PeerDisconnected,
                "the RPC peer closed its session",
            ));
            return;
        }
        if slot >= self.cfg.slot_count || kind > wire::IMM_CLOSE {
            self.protocol_error(format!(
                "incoming slot_id {slot} (kind {kind}) out of range; dropped"
            ));
            return;
        }
        // SAFETY: slot < slot_count; the peer wrote the header before the notification.
        let h = unsafe { Header::read(self.mem.mbox_ptr(kind, slot)) };
        if kind == wire::IMM_REPLY {
            self.on_reply(slot, h);
            return;
        }
        if !self.fits_slot(&h) || h.tag & wire::REPLY_BIT != 0 {
            self.protocol_error(format!(
                "malformed request in slot {slot} (tag {:#x}, total_len {}); dropped",
                h.tag, h.total_len
            ));
            return;
        }
        self.stats.requests_received.fetch_add(1, Ordering::Relaxed);
        self.inbox.lock().push_back(Inbound { slot, header: h });
        self.events.notify();
    }

    /// Whether a message's `total_len` fits the slot it arrived in.
    pub(super) fn fits_slot(&self, h: &Header) -> bool {
        wire::fits_slot(h, self.cfg.slot_size)
    }

    /// Counts and logs a message that breaks the protocol (it is dropped).
    pub(super) fn protocol_error(&self, what: String) {
        self.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
        crate::warn_log!("RPC: {what}");
    }
}
