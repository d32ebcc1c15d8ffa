//! `dlslime_rdma_options_t`, `dlslime_rdma_context_t`, `dlslime_rdma_endpoint_new` and
//! `dlslime_rdma_available_nics`.
//!
//! Where RDMA cannot work (libibverbs not installed, no device, port down) every function
//! here fails with `DLSLIME_STATUS_RDMA_UNAVAILABLE` and a last-error message naming what
//! is missing; the rest of the library is unaffected.

use std::ffi::c_char;

use super::args::handle_out;
use super::args::{endpoint_out, opt_text, string_out};
use super::endpoint::dlslime_endpoint_t;
use super::memory::dlslime_memory_pool_t;
use super::options::ms;
use super::status::dlslime_status_t;
use crate::transport::rdma::{
    available_nics, RdmaConfig, RdmaContext, RdmaEndpoint, RdmaEndpointConfig,
};

/// Options of an RDMA context. Initialise with `dlslime_rdma_options_init` (or set `size`
/// to `sizeof(dlslime_rdma_options_t)` and zero the rest): every zero/NULL/false field
/// means "the library default". Later versions only append fields.
#[repr(C)]
pub struct dlslime_rdma_options_t {
    /// `sizeof(dlslime_rdma_options_t)` as the caller was compiled.
    pub size: usize,
    /// Device name (see `dlslime_rdma_available_nics`). NULL or "": the first visible
    /// device. Borrowed for the duration of the call.
    pub device: *const c_char,
    /// Port number, from 1. 0: default (1).
    pub ib_port: u32,
    /// "RoCE" or "IB": refuse a port of another link layer. NULL: whatever the port is.
    pub link_type: *const c_char,
    /// Use `gid_index` (RoCE ports; 0 is a valid index). false: `SLIME_GID_INDEX` from
    /// the environment when set, else the first RoCE v2 IPv4-mapped GID.
    pub gid_index_set: bool,
    pub gid_index: u32,
    /// Completion-queue entries (clamped to the device). 0: default (32768).
    pub cq_depth: u32,
    /// Deadline of every operation that passes `timeout_ms = 0`. 0: default (30 s, or
    /// `DLSLIME_TIMEOUT_MS` from the environment).
    pub default_timeout_ms: u64,
}

/// An RDMA context: one port of one NIC opened (protection domain, completion queue and
/// its completion thread), shared by the endpoints created over it.
///
/// Ownership: created by `dlslime_rdma_context_new`, released by
/// `dlslime_rdma_context_free`. Reference-counted: endpoints keep their own reference.
///
/// Thread safety: thread-safe.
///
/// Methods: `dlslime_rdma_context_new`, `dlslime_rdma_context_free`,
/// `dlslime_rdma_context_device`, `dlslime_rdma_context_bind_pool`,
/// `dlslime_rdma_endpoint_new`.
pub struct dlslime_rdma_context_t {
    _private: [u8; 0],
}

castable!(dlslime_rdma_context_t => Arc<RdmaContext>);

/// Fills `*opts` with the defaults: `size = sizeof(dlslime_rdma_options_t)`, every other
/// field zero/NULL/false. NULL is a no-op.
#[no_mangle]
pub extern "C" fn dlslime_rdma_options_init(opts: *mut dlslime_rdma_options_t) {
    options_init_body!(opts)
}

/// # Safety
/// The string fields are NULL or NUL-terminated.
unsafe fn to_config(o: &dlslime_rdma_options_t) -> crate::Result<RdmaConfig> {
    let mut c = RdmaConfig {
        // SAFETY: the string fields are NULL or NUL-terminated (this function's contract).
        device: unsafe { opt_text(o.device, "dlslime_rdma_options_t.device") }?
            .filter(|d| !d.is_empty()),
        ..Default::default()
    };
    if o.ib_port != 0 {
        c.ib_port = u8::try_from(o.ib_port)
            .map_err(|_| crate::Error::invalid(format!("ib_port {} is out of range", o.ib_port)))?;
    }
    // SAFETY: as above.
    if let Some(l) = unsafe { opt_text(o.link_type, "dlslime_rdma_options_t.link_type") }? {
        c.link_type = Some(l.parse()?);
    }
    if o.gid_index_set {
        c.gid_index = Some(o.gid_index);
    }
    if o.cq_depth != 0 {
        c.cq_depth = o.cq_depth;
    }
    c.engine.default_timeout = ms(o.default_timeout_ms, c.engine.default_timeout);
    Ok(c)
}

/// Writes the names of the RDMA devices, as a JSON array of strings (in
/// `ibv_get_device_list` order, filtered by `SLIME_VISIBLE_DEVICES`), to `*out_json`; free
/// it with `dlslime_string_free`. `[]` when libibverbs is installed but there is no
/// device.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_RDMA_UNAVAILABLE` (libibverbs
/// is not installed).
#[no_mangle]
pub extern "C" fn dlslime_rdma_available_nics(out_json: *mut *mut c_char) -> dlslime_status_t {
    ffi_boundary! {
        let out_json = try_out!(out_json);
        let nics = try_res!(available_nics());
        string_out(serde_json::Value::from(nics).to_string(), out_json)
    }
}

/// Opens an RDMA context (device, port, GID, protection domain, completion queue and
/// thread) and writes it to `*out`. `opts` may be NULL for the defaults.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER` (`out`), `DLSLIME_STATUS_INVALID_ARGUMENT`
/// (bad `size`, port or link type), `DLSLIME_STATUS_UNSUPPORTED` (unknown newer fields
/// set), `DLSLIME_STATUS_RDMA_UNAVAILABLE` (no libibverbs, no such device, port not
/// active, no GID), `DLSLIME_STATUS_RESOURCE_EXHAUSTED` (the device refused a resource).
#[no_mangle]
pub extern "C" fn dlslime_rdma_context_new(
    opts: *const dlslime_rdma_options_t,
    out: *mut *mut dlslime_rdma_context_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let out = try_out!(out);
        let config = try_options!(opts, to_config);
        handle_out(try_res!(RdmaContext::open(config)), out)
    }
}

/// Releases the caller's reference to a context; endpoints keep theirs. NULL is a no-op.
#[no_mangle]
pub extern "C" fn dlslime_rdma_context_free(ctx: *mut dlslime_rdma_context_t) {
    free_body!(ctx)
}

/// Writes the context's device name as an owned string to `*out_name`; free it with
/// `dlslime_string_free`.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`.
#[no_mangle]
pub extern "C" fn dlslime_rdma_context_device(
    ctx: *const dlslime_rdma_context_t,
    out_name: *mut *mut c_char,
) -> dlslime_status_t {
    string_getter_body!(ctx, out_name, |ctx| ctx.device_name().to_string())
}

/// Binds a memory pool to the context's device (what `dlslime_rdma_endpoint_new` does
/// too): every region of the pool, present and future, is registered with the device,
/// and its key in `mr_info` becomes its rkey. Binding to the same device again is a
/// no-op.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_INVALID_ARGUMENT` (the pool is
/// bound to another device), `DLSLIME_STATUS_RESOURCE_EXHAUSTED` (a registration failed;
/// the pool is left unbound).
#[no_mangle]
pub extern "C" fn dlslime_rdma_context_bind_pool(
    ctx: *const dlslime_rdma_context_t,
    pool: *const dlslime_memory_pool_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let ctx = try_ref!(ctx);
        let pool = try_ref!(pool);
        try_res!(pool.attach_registrar(ctx.registrar()));
        dlslime_status_t::Ok
    }
}

/// Creates an RDMA endpoint with `num_qp` data QPs (1..=16; 0: 1) over a context and a
/// memory pool and writes it to `*out`. The pool is bound to the context's device: its
/// regions (present and future) are registered with it and their keys become rkeys; a
/// pool bound to another device is refused. The endpoint keeps its own references.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_INVALID_ARGUMENT` (`num_qp`
/// above 16, pool bound to another device), `DLSLIME_STATUS_RESOURCE_EXHAUSTED`.
#[no_mangle]
pub extern "C" fn dlslime_rdma_endpoint_new(
    ctx: *const dlslime_rdma_context_t,
    pool: *const dlslime_memory_pool_t,
    num_qp: u32,
    out: *mut *mut dlslime_endpoint_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let ctx = try_arc!(ctx);
        let pool = try_arc!(pool);
        let out = try_out!(out);
        let cfg = RdmaEndpointConfig {
            num_qp: num_qp.max(1) as usize,
            ..Default::default()
        };
        endpoint_out(try_res!(RdmaEndpoint::new(&ctx, pool, cfg)), out)
    }
}
