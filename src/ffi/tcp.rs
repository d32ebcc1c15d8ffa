//! TCP transport: a context (`dlslime_tcp_context_t`: a listener and a pool of
//! connections per peer, configured by `dlslime_tcp_options_t`) and the endpoints made
//! over it (`dlslime_tcp_endpoint_new`).

use std::ffi::c_char;
use std::net::SocketAddr;

use super::args::handle_out;
use super::args::{endpoint_out, opt_text};
use super::endpoint::dlslime_endpoint_t;
use super::memory::dlslime_memory_pool_t;
use super::options::ms;
use super::status::dlslime_status_t;
use crate::error::Error;
use crate::transport::tcp::{TcpConfig, TcpContext, TcpEndpoint};

/// Options of a TCP context. Initialise with `dlslime_tcp_options_init` (or set `size`
/// to `sizeof(dlslime_tcp_options_t)` and zero the rest): every zero/NULL field means
/// "the library default". Later versions only append fields; `size` tells the library
/// which version the caller was compiled against.
#[repr(C)]
pub struct dlslime_tcp_options_t {
    /// `sizeof(dlslime_tcp_options_t)` as the caller was compiled.
    pub size: usize,
    /// Numeric "IP:port" the listener binds (port 0: an ephemeral port).
    /// NULL: "0.0.0.0:0". Borrowed for the duration of the call.
    pub bind: *const c_char,
    /// Host name or IP published in `endpoint_info`. NULL: the bind IP, or the first
    /// non-loopback IPv4 address when bound to 0.0.0.0. Borrowed for the call.
    pub advertise_host: *const c_char,
    /// Connections per peer, at most 64 (the Rust `tcp::MAX_LANES`); large transfers
    /// are striped over them. 0: default (2).
    pub lanes: u32,
    /// Transfers larger than this are split into chunks striped over the lanes.
    /// 0: default (4 MiB).
    pub chunk_size: u64,
    /// Pooled connections idle this long are closed. 0: default (60 s).
    pub idle_timeout_ms: u64,
    /// Deadline of every operation that passes `timeout_ms = 0`. 0: default (30 s, or
    /// `DLSLIME_TIMEOUT_MS` from the environment).
    pub default_timeout_ms: u64,
}

/// A TCP transport context: a listener plus a pool of outgoing connections keyed by
/// peer, shared by the endpoints created over it.
///
/// Ownership: created by `dlslime_tcp_context_new`, released by
/// `dlslime_tcp_context_free`. Reference-counted: endpoints keep their own reference, so
/// the context may be freed before its endpoints.
///
/// Thread safety: thread-safe.
///
/// Methods: `dlslime_tcp_context_new`, `dlslime_tcp_context_free`,
/// `dlslime_tcp_context_local_addr`, `dlslime_tcp_endpoint_new`.
pub struct dlslime_tcp_context_t {
    _private: [u8; 0],
}

castable!(dlslime_tcp_context_t => Arc<TcpContext>);

/// Fills `*opts` with the defaults: `size = sizeof(dlslime_tcp_options_t)`, every other
/// field zero/NULL. NULL is a no-op.
#[no_mangle]
pub extern "C" fn dlslime_tcp_options_init(opts: *mut dlslime_tcp_options_t) {
    options_init_body!(opts)
}

/// Converts C options to a `TcpConfig` (zero fields keep the defaults).
///
/// # Safety
/// The string fields are NULL or NUL-terminated.
unsafe fn to_config(o: &dlslime_tcp_options_t) -> crate::Result<TcpConfig> {
    let mut c = TcpConfig::default();
    // SAFETY: the string fields are NULL or NUL-terminated (this function's contract).
    if let Some(b) = unsafe { opt_text(o.bind, "dlslime_tcp_options_t.bind") }? {
        c.bind = b.parse::<SocketAddr>().map_err(|e| {
            Error::invalid(format!(
                "dlslime_tcp_options_t.bind {b:?} is not a numeric IP:port: {e}"
            ))
        })?;
    }
    // SAFETY: as above.
    c.advertise_host =
        unsafe { opt_text(o.advertise_host, "dlslime_tcp_options_t.advertise_host") }?;
    if o.lanes != 0 {
        c.lanes = o.lanes as usize;
    }
    if o.chunk_size != 0 {
        c.chunk_size = usize::try_from(o.chunk_size)
            .map_err(|_| Error::invalid("chunk_size does not fit in size_t"))?;
    }
    c.idle_timeout = ms(o.idle_timeout_ms, c.idle_timeout);
    c.engine.default_timeout = ms(o.default_timeout_ms, c.engine.default_timeout);
    Ok(c)
}

/// Creates a TCP context (binds its listener) and writes it to `*out`. `opts` may be
/// NULL for the defaults; it is only read during the call.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER` (`out`), `DLSLIME_STATUS_INVALID_ARGUMENT`
/// (bad `size`, unparsable `bind`, non-UTF-8 strings, `lanes` above 64),
/// `DLSLIME_STATUS_UNSUPPORTED` (unknown newer fields set), `DLSLIME_STATUS_IO` (the bind failed).
#[no_mangle]
pub extern "C" fn dlslime_tcp_context_new(
    opts: *const dlslime_tcp_options_t,
    out: *mut *mut dlslime_tcp_context_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let out = try_out!(out);
        let config = try_options!(opts, to_config);
        handle_out(try_res!(TcpContext::new(config)), out)
    }
}

/// Releases the caller's reference to a context; endpoints keep theirs. NULL is a no-op.
#[no_mangle]
pub extern "C" fn dlslime_tcp_context_free(ctx: *mut dlslime_tcp_context_t) {
    free_body!(ctx)
}

/// Writes the listener's bound address ("IP:port") as an owned string to `*out_addr`;
/// free it with `dlslime_string_free`.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`.
#[no_mangle]
pub extern "C" fn dlslime_tcp_context_local_addr(
    ctx: *const dlslime_tcp_context_t,
    out_addr: *mut *mut c_char,
) -> dlslime_status_t {
    string_getter_body!(ctx, out_addr, |ctx| ctx.local_addr().to_string())
}

/// Creates a TCP endpoint over a context and a memory pool and writes it to `*out`. The
/// endpoint keeps its own references to both.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, and whatever the transport reports.
#[no_mangle]
pub extern "C" fn dlslime_tcp_endpoint_new(
    ctx: *const dlslime_tcp_context_t,
    pool: *const dlslime_memory_pool_t,
    out: *mut *mut dlslime_endpoint_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let ctx = try_arc!(ctx);
        let pool = try_arc!(pool);
        let out = try_out!(out);
        endpoint_out(try_res!(TcpEndpoint::new(&ctx, pool)), out)
    }
}
