//! [`Span`]: the address and length of a byte range of this process's memory that its
//! holder keeps mapped: what [`SharedBuf`](super::SharedBuf) and
//! [`PeerView`](crate::transport::PeerView) hand out.

/// `[ptr, ptr+len)`, valid while its holder lives (the holder says how).
#[derive(Debug)]
pub struct Span {
    ptr: *mut u8,
    len: usize,
}

impl Span {
    pub(crate) fn new(ptr: *mut u8, len: usize) -> Span {
        Span { ptr, len }
    }

    /// Where the range starts.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
