//! Shared-memory transport (peers on the same host): shared allocations
//! (`dlslime_alloc_shared` / `dlslime_free_shared`), which a connected peer maps so a
//! one-sided operation is a single copy, and the endpoint (`dlslime_shm_endpoint_new`,
//! configured by `dlslime_shm_options_t`).

use std::ffi::c_void;
use std::sync::Arc;
use std::time::Duration;

use super::args::endpoint_out;
use super::endpoint::dlslime_endpoint_t;
use super::memory::dlslime_memory_pool_t;
use super::options::ms;
use super::status::dlslime_status_t;
use crate::engine::ProgressMode;
use crate::memory::{alloc_shared, free_shared};
use crate::transport::shm::{ShmConfig, ShmEndpoint};

/// Bits of `dlslime_shm_options_t.flags`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum dlslime_shm_flag {
    /// Move every byte through bounce slots in the control segment even where
    /// cross-memory attach works (what the EPERM fallback uses).
    ForceStaged = 1,
    /// Waiters park at once instead of spinning first (the right choice when both
    /// processes share one core).
    NoSpin = 2,
    /// The thread that waits on a future drives the transport itself (inline progress;
    /// the default unless `DLSLIME_PROGRESS=background`).
    InlineProgress = 4,
    /// A background completion thread completes operations; waiters only wait
    /// (`DLSLIME_PROGRESS=background`). Wins over `INLINE_PROGRESS`.
    BackgroundProgress = 8,
}

const FORCE_STAGED: u32 = dlslime_shm_flag::ForceStaged as u32;
const NO_SPIN: u32 = dlslime_shm_flag::NoSpin as u32;
const INLINE_PROGRESS: u32 = dlslime_shm_flag::InlineProgress as u32;
const BACKGROUND_PROGRESS: u32 = dlslime_shm_flag::BackgroundProgress as u32;

/// Options of a shared-memory endpoint. Initialise with `dlslime_shm_options_init` (or
/// set `size` and zero the rest): zero fields mean the library default, which the
/// environment (`DLSLIME_SPIN_US`, `DLSLIME_TIMEOUT_MS`, `DLSLIME_PROGRESS`,
/// `DLSLIME_SHM_FORCE_STAGED`) may set. Later versions only append fields.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct dlslime_shm_options_t {
    /// `sizeof(dlslime_shm_options_t)` as the caller was compiled.
    pub size: usize,
    /// `DLSLIME_SHM_FLAG_*` bits, OR-ed.
    pub flags: u32,
    /// How long a waiter spins before parking, in microseconds. 0: default (50 µs).
    pub spin_us: u64,
    /// Deadline of every operation that passes `timeout_ms = 0`. 0: default (30 s).
    pub default_timeout_ms: u64,
}

/// Fills `*opts` with the defaults: `size = sizeof(dlslime_shm_options_t)`, every other
/// field zero. NULL is a no-op.
#[no_mangle]
pub extern "C" fn dlslime_shm_options_init(opts: *mut dlslime_shm_options_t) {
    options_init_body!(opts)
}

fn to_config(o: &dlslime_shm_options_t) -> crate::Result<ShmConfig> {
    let known = FORCE_STAGED | NO_SPIN | INLINE_PROGRESS | BACKGROUND_PROGRESS;
    if o.flags & !known != 0 {
        return Err(crate::Error::new(
            crate::Status::Unsupported,
            format!(
                "dlslime_shm_options_t.flags has unknown bits {:#x}",
                o.flags & !known
            ),
        ));
    }
    let mut c = ShmConfig::default();
    c.force_staged |= o.flags & FORCE_STAGED != 0;
    if o.flags & NO_SPIN != 0 {
        c.engine.spin = Duration::ZERO;
    } else if o.spin_us != 0 {
        c.engine.spin = Duration::from_micros(o.spin_us);
    }
    if o.flags & INLINE_PROGRESS != 0 {
        c.engine.progress = ProgressMode::Inline;
    }
    if o.flags & BACKGROUND_PROGRESS != 0 {
        c.engine.progress = ProgressMode::Background;
    }
    c.engine.default_timeout = ms(o.default_timeout_ms, c.engine.default_timeout);
    Ok(c)
}

/// Creates a shared-memory endpoint over a memory pool (the endpoint keeps its own
/// reference) and writes it to `*out`. `opts` may be NULL for the defaults. Publish
/// `dlslime_endpoint_info` to a peer process on the same host and call
/// `dlslime_endpoint_connect` on both sides; a peer on another host is refused.
///
/// Regions from `dlslime_alloc_shared` are mapped by the peer, so one-sided operations
/// on them are a single memcpy; other memory moves by cross-memory attach, or through
/// bounce slots where the kernel refuses attach.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_INVALID_ARGUMENT` (bad
/// `size`), `DLSLIME_STATUS_UNSUPPORTED` (unknown flags or newer fields),
/// `DLSLIME_STATUS_IO` (the handshake socket could not be created).
#[no_mangle]
pub extern "C" fn dlslime_shm_endpoint_new(
    pool: *const dlslime_memory_pool_t,
    opts: *const dlslime_shm_options_t,
    out: *mut *mut dlslime_endpoint_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let pool = try_arc!(pool);
        let out = try_out!(out);
        let config = try_options!(opts, to_config);
        endpoint_out(Arc::new(try_res!(ShmEndpoint::new(pool, config))), out)
    }
}

/// Allocates `len` bytes of zeroed, page-aligned memory backed by a memfd, which a
/// connected shared-memory peer maps. Register it in a memory pool as usual; free it with
/// `dlslime_free_shared`. Writes the address to `*out_ptr`.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_INVALID_ARGUMENT` (`len` is
/// 0), `DLSLIME_STATUS_IO` (memfd_create / mmap failed).
#[no_mangle]
pub extern "C" fn dlslime_alloc_shared(len: usize, out_ptr: *mut *mut c_void) -> dlslime_status_t {
    ffi_boundary! {
        let out_ptr = try_out!(out_ptr);
        let p = try_res!(alloc_shared(len));
        out_ptr.write(p.cast());
        dlslime_status_t::Ok
    }
}

/// Frees memory from `dlslime_alloc_shared`. Unregister it from its pools first. Peers
/// that mapped it keep their own mapping until they disconnect.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_UNKNOWN_HANDLE` (`ptr` is not
/// a live shared allocation: nothing is freed).
#[no_mangle]
pub extern "C" fn dlslime_free_shared(ptr: *mut c_void) -> dlslime_status_t {
    ffi_boundary! {
        if ptr.is_null() {
            null_arg!("ptr");
        }
        // SAFETY: the header says `ptr` is not used after this call. `free_shared` looks it
        // up among the live shared allocations first, so any other pointer fails with
        // UNKNOWN_HANDLE and nothing is unmapped.
        try_res!(unsafe { free_shared(ptr.cast()) });
        dlslime_status_t::Ok
    }
}
