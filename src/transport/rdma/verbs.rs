//! The verbs entry points, resolved at run time.
//!
//! `libdlslime.so` must load, and serve TCP and shared memory, on hosts without rdma-core,
//! so it never links against libibverbs: the first RDMA call `dlopen`s
//! `libibverbs.so.1` once and resolves the exported functions it needs with `dlsym` (the
//! approach of NCCL's ibvwrap). What fails there is kept and reported by every later RDMA
//! call as [`Status::RdmaUnavailable`], naming what is missing.
//!
//! The data path (post send/recv, poll and arm the CQ) is `static inline` in
//! `<infiniband/verbs.h>`: it calls through the provider's ops table in the context, so
//! it needs no symbol; the helpers at the end of this file do the same.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};

use rdma_sys::*;

use crate::error::{Error, Result, Status};
use crate::runtime_lib::RuntimeLib;

/// The library dlopen'd, by its soname (the ABI rdma-sys was built against).
pub const LIBIBVERBS: &str = "libibverbs.so.1";

macro_rules! entry_points {
    (required { $($name:ident: fn($($arg:ty),*) -> $ret:ty;)* }
     optional { $($oname:ident: fn($($oarg:ty),*) -> $oret:ty;)* }) => {
        /// The exported verbs functions this crate calls, resolved once; the optional
        /// ones are `None` where this libibverbs is too old to have them.
        #[allow(non_snake_case)]
        pub struct Verbs {
            $(pub $name: unsafe extern "C" fn($($arg),*) -> $ret,)*
            $(pub $oname: Option<unsafe extern "C" fn($($oarg),*) -> $oret>,)*
        }

        impl Verbs {
            /// # Safety
            /// `lib` must be a live handle from `dlopen` of libibverbs.
            unsafe fn resolve(lib: *mut c_void) -> std::result::Result<Verbs, String> {
                Ok(Verbs {
                    $($name: {
                        let name = concat!(stringify!($name), "\0");
                        // SAFETY: `name` is NUL-terminated; `lib` is live (caller).
                        let sym = unsafe { libc::dlsym(lib, name.as_ptr().cast()) };
                        if sym.is_null() {
                            return Err(format!(
                                "{LIBIBVERBS} lacks the symbol {}", stringify!($name)
                            ));
                        }
                        // SAFETY: the symbol has this C signature in <infiniband/verbs.h>
                        // (the default symbol version, which dlsym returns, is the
                        // current ABI that rdma-sys's bindings describe).
                        unsafe {
                            std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($arg),*) -> $ret>(sym)
                        }
                    },)*
                    $($oname: {
                        let name = concat!(stringify!($oname), "\0");
                        // SAFETY: as above.
                        let sym = unsafe { libc::dlsym(lib, name.as_ptr().cast()) };
                        // SAFETY: as above, when present.
                        (!sym.is_null()).then(|| unsafe {
                            std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($oarg),*) -> $oret>(sym)
                        })
                    },)*
                })
            }
        }
    };
}

entry_points! {
    required {
    ibv_get_device_list: fn(*mut c_int) -> *mut *mut ibv_device;
    ibv_free_device_list: fn(*mut *mut ibv_device) -> ();
    ibv_get_device_name: fn(*mut ibv_device) -> *const c_char;
    ibv_open_device: fn(*mut ibv_device) -> *mut ibv_context;
    ibv_close_device: fn(*mut ibv_context) -> c_int;
    ibv_query_device: fn(*mut ibv_context, *mut ibv_device_attr) -> c_int;
    ibv_query_port: fn(*mut ibv_context, u8, *mut ibv_port_attr) -> c_int;
    ibv_query_gid: fn(*mut ibv_context, u8, c_int, *mut ibv_gid) -> c_int;
    ibv_alloc_pd: fn(*mut ibv_context) -> *mut ibv_pd;
    ibv_dealloc_pd: fn(*mut ibv_pd) -> c_int;
    ibv_reg_mr: fn(*mut ibv_pd, *mut c_void, usize, c_int) -> *mut ibv_mr;
    ibv_dereg_mr: fn(*mut ibv_mr) -> c_int;
    ibv_create_comp_channel: fn(*mut ibv_context) -> *mut ibv_comp_channel;
    ibv_destroy_comp_channel: fn(*mut ibv_comp_channel) -> c_int;
    ibv_create_cq: fn(*mut ibv_context, c_int, *mut c_void, *mut ibv_comp_channel, c_int) -> *mut ibv_cq;
    ibv_destroy_cq: fn(*mut ibv_cq) -> c_int;
    ibv_get_cq_event: fn(*mut ibv_comp_channel, *mut *mut ibv_cq, *mut *mut c_void) -> c_int;
    ibv_ack_cq_events: fn(*mut ibv_cq, c_uint) -> ();
    ibv_create_qp: fn(*mut ibv_pd, *mut ibv_qp_init_attr) -> *mut ibv_qp;
    ibv_modify_qp: fn(*mut ibv_qp, *mut ibv_qp_attr, c_int) -> c_int;
    ibv_destroy_qp: fn(*mut ibv_qp) -> c_int;
    ibv_wc_status_str: fn(ibv_wc_status::Type) -> *const c_char;
    ibv_get_async_event: fn(*mut ibv_context, *mut AsyncEvent) -> c_int;
    ibv_ack_async_event: fn(*mut AsyncEvent) -> ();
    ibv_event_type_str: fn(u32) -> *const c_char;
    }
    optional {
        // rdma-core >= 34 (GPUDirect RDMA through dma-buf, docs/gpu.md).
        ibv_reg_dmabuf_mr: fn(*mut ibv_pd, u64, usize, u64, c_int, c_int) -> *mut ibv_mr;
    }
}

/// `struct ibv_async_event` with the event type as a plain number (the C enum may carry
/// values rdma-sys's Rust enum does not know).
#[repr(C)]
pub struct AsyncEvent {
    /// The union of `cq`, `qp`, `srq`, `wq` pointers and `port_num`.
    pub element: *mut c_void,
    pub event_type: u32,
}

pub const EVENT_CQ_ERR: u32 = 0;
pub const EVENT_QP_FATAL: u32 = 1;
pub const EVENT_QP_REQ_ERR: u32 = 2;
pub const EVENT_QP_ACCESS_ERR: u32 = 3;
pub const EVENT_DEVICE_FATAL: u32 = 8;
pub const EVENT_PORT_ERR: u32 = 10;

/// The name of an async event type.
pub fn event_type_str(t: u32) -> String {
    match verbs() {
        // SAFETY: ibv_event_type_str returns a static string for any value.
        Ok(v) => unsafe { CStr::from_ptr((v.ibv_event_type_str)(t)) }
            .to_string_lossy()
            .into_owned(),
        Err(_) => format!("event {t}"),
    }
}

/// The entry points, loading libibverbs on first use. Every call after a failed load
/// gets the same error.
pub fn verbs() -> Result<&'static Verbs> {
    static VERBS: RuntimeLib<Verbs> = RuntimeLib::new(load, Status::RdmaUnavailable);
    VERBS.get()
}

fn load() -> std::result::Result<Verbs, String> {
    let name = format!("{LIBIBVERBS}\0");
    // SAFETY: a NUL-terminated name; the handle is kept for the life of the process (the
    // resolved function pointers point into it).
    let lib = unsafe { libc::dlopen(name.as_ptr().cast(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if lib.is_null() {
        // SAFETY: dlerror returns a thread-local message or NULL.
        let err = unsafe { libc::dlerror() };
        let why = if err.is_null() {
            "unknown error".to_string()
        } else {
            // SAFETY: non-NULL dlerror strings are NUL-terminated.
            unsafe { CStr::from_ptr(err) }
                .to_string_lossy()
                .into_owned()
        };
        return Err(format!(
            "RDMA is unavailable: cannot load {LIBIBVERBS} ({why}); install rdma-core \
             (Debian: libibverbs1 and ibverbs-providers)"
        ));
    }
    // SAFETY: `lib` is a live dlopen handle of libibverbs.
    unsafe { Verbs::resolve(lib) }
}

/// `errno` of the last failed call, as an error with context.
pub fn os_error(status: Status, what: &str) -> Error {
    let e = std::io::Error::last_os_error();
    Error::new(status, format!("{what}: {e}"))
}

/// A human-readable completion status.
pub fn wc_status_str(status: ibv_wc_status::Type) -> String {
    match verbs() {
        // SAFETY: ibv_wc_status_str returns a static string for any value.
        Ok(v) => unsafe { CStr::from_ptr((v.ibv_wc_status_str)(status)) }
            .to_string_lossy()
            .into_owned(),
        Err(_) => format!("status {status}"),
    }
}

// ---- the inline data path (through the provider's ops table; no symbol needed) ----

/// `ibv_post_send`.
///
/// # Safety
/// `qp` is a live QP; `wr` a valid chain whose SGEs name registered memory.
#[inline]
pub unsafe fn post_send(
    qp: *mut ibv_qp,
    wr: *mut ibv_send_wr,
    bad: *mut *mut ibv_send_wr,
) -> c_int {
    // SAFETY: a live QP's context has the provider's ops table filled in (caller).
    unsafe { ((*(*qp).context).ops.post_send.unwrap_unchecked())(qp, wr, bad) }
}

/// `ibv_post_recv`.
///
/// # Safety
/// As [`post_send`].
#[inline]
pub unsafe fn post_recv(
    qp: *mut ibv_qp,
    wr: *mut ibv_recv_wr,
    bad: *mut *mut ibv_recv_wr,
) -> c_int {
    // SAFETY: as post_send.
    unsafe { ((*(*qp).context).ops.post_recv.unwrap_unchecked())(qp, wr, bad) }
}

/// `ibv_poll_cq`.
///
/// # Safety
/// `cq` is a live CQ and `wc` has room for `n` entries.
#[inline]
pub unsafe fn poll_cq(cq: *mut ibv_cq, n: c_int, wc: *mut ibv_wc) -> c_int {
    // SAFETY: as post_send.
    unsafe { ((*(*cq).context).ops.poll_cq.unwrap_unchecked())(cq, n, wc) }
}

/// `ibv_req_notify_cq` (all completions, not only solicited ones).
///
/// # Safety
/// `cq` is a live CQ created with a completion channel.
#[inline]
pub unsafe fn req_notify_cq(cq: *mut ibv_cq) -> c_int {
    // SAFETY: as post_send.
    unsafe { ((*(*cq).context).ops.req_notify_cq.unwrap_unchecked())(cq, 0) }
}
