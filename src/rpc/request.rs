//! The server side of a call: a received [`Request`] and the ways to answer it (a
//! payload, one built in place, the request's own buffer, an exception).
//!
//! A request may announce the caller's reply buffer for the call (`PLACE_BIT`, see
//! [`wire`]). Where the transport maps the caller's memory and the caller's region table
//! permits the announced range, a reply that fits it is written there (the handler's
//! writer gets that memory itself) and the message carries only its length; otherwise
//! the reply takes the ordinary path (the mailbox slot or a bulk buffer of ours).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::bulk::BulkUse;
use super::inbound::Inbound;
use super::outbound::check_written;
use super::remote_error::RemoteError;
use super::session::Inner;
use super::wire::{self, BulkDesc, Header, BULK_DESC_LEN, HEADER_LEN, PLACED_LEN};
use crate::error::{Error, Result, Status};
use crate::transport::PeerView;

/// A request received by the server side. Its payload stays valid until it is answered.
/// Dropping it unanswered sends an exception reply, so the caller never hangs.
pub struct Request {
    sess: Arc<Inner>,
    slot: usize,
    header: Header,
    data: *const u8,
    len: usize,
    answered: bool,
    /// A bulk payload read where it lies in the peer's memory: keeps it mapped.
    view: Option<PeerView>,
    /// The caller's reply buffer for this call (`addr`, capacity, key), if announced.
    reply_to: Option<BulkDesc>,
}

// SAFETY: `data` points into the session's memory (the slot's mailbox or bulk buffer) or
// the peer's bulk buffer kept mapped by `view`, none of which is rewritten before this
// request is answered (the peer reuses its buffer once the reply arrived), whatever
// thread it moves to.
unsafe impl Send for Request {}

impl Request {
    /// Turns an inbound message into a Request, or answers it at once (`None`: a chunked
    /// request, a bad bulk descriptor, a payload over `max_payload`, a failed bulk read).
    pub(super) fn from_inbound(sess: &Arc<Inner>, m: Inbound) -> Result<Option<Request>> {
        let h = m.header;
        // SAFETY: slot < slot_count (checked on arrival); the payload follows the header.
        let p = unsafe { sess.mem.mbox_ptr(wire::IMM_REQUEST, m.slot).add(HEADER_LEN) };
        let mut n = h.total_len as usize - HEADER_LEN;
        if h.tag & wire::CHUNK_BIT != 0 {
            sess.reply_exception(m.slot, h, "RuntimeError", "Chunked transfers are disabled")?;
            return Ok(None);
        }
        let mut reply_to = None;
        if h.tag & wire::PLACE_BIT != 0 {
            if n < BULK_DESC_LEN {
                sess.reply_exception(m.slot, h, "RuntimeError", "malformed reply buffer")?;
                return Ok(None);
            }
            n -= BULK_DESC_LEN;
            // SAFETY: total_len <= slot_size (checked on arrival): the descriptor is the
            // last BULK_DESC_LEN of the `n + BULK_DESC_LEN` bytes after the header.
            reply_to =
                BulkDesc::decode(unsafe { std::slice::from_raw_parts(p.add(n), BULK_DESC_LEN) });
        }
        let mut view = None;
        let (data, len) = if h.tag & wire::BULK_BIT != 0 {
            // SAFETY: total_len <= slot_size (checked on arrival): the `n` bytes after the
            // header lie in our request mailbox slot.
            let d = BulkDesc::decode(unsafe { std::slice::from_raw_parts(p, n) });
            let Some(d) = d else {
                sess.reply_exception(m.slot, h, "RuntimeError", "malformed bulk descriptor")?;
                return Ok(None);
            };
            if d.len > sess.cfg.max_payload {
                let msg = format!(
                    "RPC request of {} bytes exceeds the server's max_payload ({} bytes)",
                    d.len, sess.cfg.max_payload
                );
                sess.reply_exception(m.slot, h, "RuntimeError", &msg)?;
                return Ok(None);
            }
            if let Some(v) = sess.bulk_view(d) {
                let p = v.as_ptr() as *const u8;
                view = Some(v);
                (p, d.len as usize)
            } else {
                match sess.bulk_read(BulkUse::RequestIn, m.slot, d) {
                    Ok(p) => (p, d.len as usize),
                    Err(e) => {
                        sess.check_alive()?;
                        let _ = sess.reply_exception(m.slot, h, "RuntimeError", e.message());
                        return Ok(None);
                    }
                }
            }
        } else {
            (p as *const u8, n)
        };
        Ok(Some(Request {
            sess: sess.clone(),
            slot: m.slot,
            header: h,
            data,
            len,
            answered: false,
            view,
            reply_to,
        }))
    }

    /// The method tag (flags removed).
    pub fn tag(&self) -> u32 {
        wire::base_tag(self.header.tag)
    }

    pub fn raw_tag(&self) -> u32 {
        self.header.tag
    }

    pub fn request_id(&self) -> u64 {
        self.header.request_id
    }

    pub fn slot(&self) -> usize {
        self.slot
    }

    pub fn payload(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the slot (or bulk cache) is not rewritten before we answer.
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }

    pub fn payload_ptr(&self) -> *const u8 {
        self.data
    }

    /// Answers with `data` (any size: large replies take the bulk path). A reply larger
    /// than `max_payload` is turned into an exception reply and reported as an error.
    pub fn reply(self, data: &[u8]) -> Result<()> {
        self.reply_inplace(data.len(), false, |b| {
            b[..data.len()].copy_from_slice(data);
            Ok(data.len())
        })
    }

    /// The payload, writable: a handler may build its reply in place of the request and
    /// answer with [`Request::reply_from_payload`].
    #[allow(clippy::mut_from_ref)]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: the payload buffer is ours until we answer; `&mut self` keeps this the
        // only live view.
        unsafe { std::slice::from_raw_parts_mut(self.data as *mut u8, self.len) }
    }

    /// Answers with the first `n` bytes of the request's own payload buffer (possibly
    /// modified through [`Request::payload_mut`]). A bulk request's buffer of ours is
    /// sent back as it is (no copy: the caller reads it from there); a small one, or one
    /// read where it lies in the caller's memory, is copied into the reply.
    pub fn reply_from_payload(mut self, n: usize) -> Result<()> {
        if n > self.len {
            return Err(Error::invalid(format!(
                "reply_from_payload: {n} bytes requested from a {}-byte payload",
                self.len
            )));
        }
        self.answered = true;
        let i = self.sess.clone();
        let tag = wire::base_tag(self.header.tag) | wire::REPLY_BIT;
        if let Some(v) = self.placed(n) {
            // SAFETY: `n` payload bytes, ours until answered, into the caller's reply
            // buffer, mapped for at least `n` bytes while `v` lives; `placed` refused a
            // buffer overlapping the payload.
            unsafe { std::ptr::copy_nonoverlapping(self.data, v.as_ptr(), n) };
            return self.send_placed(n as u64);
        }
        if self.header.tag & wire::BULK_BIT != 0 && self.view.is_none() && n > i.cfg.slot_capacity()
        {
            let d = {
                let g = i.bulk.get(BulkUse::RequestIn, self.slot).lock();
                let b = g
                    .as_ref()
                    .ok_or_else(|| Error::new(Status::Internal, "bulk request buffer gone"))?;
                b.desc(n)
            };
            i.post_desc(
                wire::IMM_REPLY,
                self.slot,
                tag,
                self.header.request_id,
                d,
                None,
            )?;
        } else {
            let src = self.data;
            i.post(
                wire::IMM_REPLY,
                self.slot,
                tag,
                self.header.request_id,
                n,
                None,
                |b| {
                    // SAFETY: the payload is ours until answered; the send slot is distinct.
                    unsafe { std::ptr::copy_nonoverlapping(src, b.as_mut_ptr(), n) };
                    Ok(n)
                },
            )?;
        }
        i.stats.replies_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Answers with an exception (`type_name`, `message`, `traceback`).
    pub fn reply_error(self, type_name: &str, message: &str, traceback: &str) -> Result<()> {
        let e = RemoteError {
            type_name: type_name.into(),
            message: message.into(),
            traceback: traceback.into(),
        }
        .to_json(self.sess.cfg.slot_capacity());
        self.reply_inplace(e.len(), true, |b| {
            b[..e.len()].copy_from_slice(&e);
            Ok(e.len())
        })
    }

    /// Answers with a payload `writer` builds in place in a buffer of `max_len` bytes.
    /// If `writer` fails, an exception reply carries its message.
    pub fn reply_inplace(
        mut self,
        max_len: usize,
        exception: bool,
        writer: impl FnOnce(&mut [u8]) -> Result<usize>,
    ) -> Result<()> {
        self.answered = true;
        let i = self.sess.clone();
        let base = wire::base_tag(self.header.tag);
        if max_len as u64 > i.cfg.max_payload {
            let msg = format!(
                "RPC reply exceeds max_payload. Reply is {max_len} B, limit is {} B.",
                i.cfg.max_payload
            );
            i.reply_exception(self.slot, self.header, "RuntimeError", &msg)?;
            return Err(Error::invalid(msg));
        }
        if !exception {
            if let Some(v) = self.placed(max_len) {
                // SAFETY: the view is at least max_len bytes of the caller's reply buffer,
                // mapped while `v` lives, and no other part of this request's memory
                // (`placed`).
                let buf = unsafe { std::slice::from_raw_parts_mut(v.as_ptr(), max_len) };
                return match writer(buf).and_then(|n| check_written(n, max_len)) {
                    Ok(n) => self.send_placed(n as u64),
                    Err(e) => {
                        i.reply_exception(self.slot, self.header, "RuntimeError", e.message())?;
                        Err(e)
                    }
                };
            }
        }
        let flags = wire::REPLY_BIT | if exception { wire::EXC_BIT } else { 0 };
        let mut werr = None;
        let r = i.post(
            wire::IMM_REPLY,
            self.slot,
            base | flags,
            self.header.request_id,
            max_len,
            None,
            |b| writer(b).inspect_err(|e| werr = Some(e.clone())),
        );
        match (r, werr) {
            (Ok(_), _) => {
                i.stats.replies_sent.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            (Err(_), Some(e)) => {
                i.reply_exception(self.slot, self.header, "RuntimeError", e.message())?;
                Err(e)
            }
            (Err(e), None) => Err(e),
        }
    }
}

impl Request {
    /// The caller's reply buffer for a reply of up to `max_len` bytes, mapped here:
    /// `None` when the call announced none, the reply does not fit it, the transport does
    /// not map it or the caller's table does not permit the range with its key (the
    /// reply then takes the ordinary path), or it overlaps the request's payload.
    fn placed(&self, max_len: usize) -> Option<PeerView> {
        let d = self.reply_to?;
        if max_len == 0 || max_len as u64 > d.len {
            return None;
        }
        let v = self.sess.ep.peer_view(d.addr, max_len as u64, d.key)?;
        let (r, p) = (v.as_ptr() as usize, self.data as usize);
        if r < p + self.len && p < r + max_len {
            return None;
        }
        Some(v)
    }

    /// Sends the reply written into the caller's reply buffer: its length only.
    fn send_placed(&self, n: u64) -> Result<()> {
        let i = &self.sess;
        let tag = wire::base_tag(self.header.tag) | wire::REPLY_BIT | wire::PLACE_BIT;
        i.post(
            wire::IMM_REPLY,
            self.slot,
            tag,
            self.header.request_id,
            PLACED_LEN,
            None,
            |b| {
                b[..PLACED_LEN].copy_from_slice(&n.to_le_bytes());
                Ok(PLACED_LEN)
            },
        )?;
        i.stats.placed_sent.fetch_add(1, Ordering::Relaxed);
        i.stats.replies_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Tests only: answers with a placed reply that claims `claimed` bytes and writes
    /// none, as a faulty or hostile server could (the caller must refuse more than it
    /// announced).
    #[doc(hidden)]
    pub fn reply_placed_claiming(mut self, claimed: u64) -> Result<()> {
        self.answered = true;
        self.send_placed(claimed)
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if !self.answered {
            let _ = self.sess.reply_exception(
                self.slot,
                self.header,
                "RuntimeError",
                "the server dropped the request without a reply",
            );
        }
    }
}

impl Inner {
    /// Answers the request `h` in `slot` with an exception (no traceback).
    fn reply_exception(
        &self,
        slot: usize,
        h: Header,
        type_name: &str,
        message: &str,
    ) -> Result<()> {
        let e = RemoteError {
            type_name: type_name.into(),
            message: message.into(),
            traceback: String::new(),
        }
        .to_json(self.cfg.slot_capacity());
        let tag = wire::base_tag(h.tag) | wire::REPLY_BIT | wire::EXC_BIT;
        self.post(
            wire::IMM_REPLY,
            slot,
            tag,
            h.request_id,
            e.len(),
            None,
            |b| {
                b[..e.len()].copy_from_slice(&e);
                Ok(e.len())
            },
        )
        .map(|_| ())
    }
}
