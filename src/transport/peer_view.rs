//! [`PeerView`]: a range of the peer's registered memory that this process has mapped
//! (shared memory), handed out so a service reads or writes it where it lies instead of
//! copying it through a one-sided operation first.

use std::sync::Arc;

use crate::memory::Span;

/// The peer's bytes `[addr, addr+len)` as memory of this process (see
/// [`Endpoint::peer_view`](super::Endpoint::peer_view)). The mapping stays valid while
/// the view lives, whatever the peer does meanwhile; the bytes are the peer's, so they
/// may change under the reader: treat them as untrusted input.
pub struct PeerView {
    span: Span,
    _mapping: Arc<dyn Send + Sync>,
}

// SAFETY: the pointer is into a mapping owned (shared) by `_mapping`, which is Send and
// Sync; the view only hands out the address.
unsafe impl Send for PeerView {}
// SAFETY: as for Send: `&PeerView` gives out the address and length only.
unsafe impl Sync for PeerView {}

impl PeerView {
    /// # Safety
    /// `[ptr, ptr+len)` lies in a readable and writable mapping that stays mapped while
    /// `mapping` lives.
    pub unsafe fn new(ptr: *mut u8, len: usize, mapping: Arc<dyn Send + Sync>) -> PeerView {
        PeerView {
            span: Span::new(ptr, len),
            _mapping: mapping,
        }
    }
}

/// Where the range lies here (valid for `len()` bytes while the view lives).
impl std::ops::Deref for PeerView {
    type Target = Span;
    fn deref(&self) -> &Span {
        &self.span
    }
}
