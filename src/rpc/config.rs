//! The knobs of a session ([`RpcConfig`]) and who receives messages ([`RpcProgress`]).

use std::time::Duration;

use super::wire::{self, HEADER_LEN};
use crate::error::{Error, Result};

/// The default slot: a 64 KiB payload and its header fit (the header plus a cache line,
/// so slots stay 64-byte aligned).
pub const DEFAULT_SLOT_SIZE: usize = (64 << 10) + 64;

/// Who receives messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpcProgress {
    /// The default: `Inline` (the waiting thread receives; no thread hand-off).
    Auto,
    /// No thread: whichever thread waits (a call's `wait`, `poll_request`) receives for
    /// everyone, one at a time.
    Inline,
    /// A receive thread per session (every message is handed from it to the waiter).
    Pump,
}

/// Knobs of a session. Both sides must use the same `slot_size` and `slot_count`
/// (checked at the handshake).
#[derive(Clone, Debug)]
pub struct RpcConfig {
    /// Bytes per slot, header included (>= 64, <= 4 GiB - 1). Default [`DEFAULT_SLOT_SIZE`].
    pub slot_size: usize,
    /// Slots per direction: the most calls in flight (1..=65536).
    pub slot_count: usize,
    pub progress: RpcProgress,
    /// Deadline of a wait that names none, of slot acquisition and of bulk reads.
    pub default_timeout: Duration,
    /// How long session creation waits for the peer's session.
    pub handshake_timeout: Duration,
    /// Largest payload accepted either way (requests refused at the call, replies turned
    /// into an error reply).
    pub max_payload: u64,
    /// How long a waiting thread spins before it parks.
    pub spin: Duration,
    /// Cached bulk buffers larger than this are freed when a smaller payload reuses the
    /// slot.
    pub bulk_cache_max: usize,
    /// Bytes of pre-allocated bulk buffer per slot and use (request out, reply out,
    /// request in, reply in), part of [`RpcMemory`](super::RpcMemory): bulk payloads up
    /// to this size use it. Made before connect on shared memory, the peer maps it, so a
    /// bulk transfer is one memcpy instead of a cross-memory read. Pages are only
    /// touched when used. 0: none (bulk buffers are allocated on demand).
    pub bulk_arena: usize,
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            slot_size: DEFAULT_SLOT_SIZE,
            slot_count: 16,
            progress: RpcProgress::Auto,
            default_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(30),
            max_payload: 1 << 40,
            spin: crate::engine::Config::from_env().spin,
            bulk_cache_max: 64 << 20,
            bulk_arena: 0,
        }
    }
}

impl RpcConfig {
    pub fn validate(&self) -> Result<()> {
        if self.slot_count == 0 || self.slot_count > wire::MAX_SLOT_COUNT {
            return Err(Error::invalid(format!(
                "slot_count must be in 1..={}, got {}",
                wire::MAX_SLOT_COUNT,
                self.slot_count
            )));
        }
        if self.slot_size < 64 || self.slot_size > u32::MAX as usize {
            return Err(Error::invalid(format!(
                "slot_size must be in 64..=4294967295, got {}",
                self.slot_size
            )));
        }
        if self
            .slot_size
            .checked_mul(self.slot_count)
            .and_then(|v| v.checked_mul(4))
            .is_none()
            || self
                .bulk_arena
                .checked_add(4095)
                .and_then(|v| v.checked_mul(self.slot_count))
                .and_then(|v| v.checked_mul(4))
                .is_none()
        {
            return Err(Error::invalid("slot_size * slot_count overflows"));
        }
        Ok(())
    }

    /// Whether the session runs a receive thread.
    pub(super) fn pump(&self) -> bool {
        match self.progress {
            RpcProgress::Auto | RpcProgress::Inline => false,
            RpcProgress::Pump => true,
        }
    }

    /// Payload bytes that fit in a slot.
    pub fn slot_capacity(&self) -> usize {
        self.slot_size - HEADER_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_are_valid() {
        let c = RpcConfig::default();
        c.validate().unwrap();
        assert_eq!(
            c.slot_capacity(),
            (64 << 10) + 48,
            "a 64 KiB payload fits a slot"
        );
        assert!(!c.pump(), "the waiting thread receives");
        assert!(RpcConfig {
            progress: RpcProgress::Pump,
            ..c
        }
        .pump());
    }
}
