//! SlimeRPC: request / reply over an endpoint. A session (`dlslime_rpc_session_t`,
//! configured by `dlslime_rpc_options_t`, optionally over `dlslime_rpc_memory_t` made
//! before connect) sends calls (`dlslime_rpc_call_t`, the future of one call) and
//! receives requests (`dlslime_rpc_request_t`), in both directions at once if wanted.

use std::ffi::{c_char, c_void};
use std::time::Duration;

use parking_lot::Mutex;

use super::args::handle_out;
use super::args::{timeout, Out};
use super::endpoint::dlslime_endpoint_t;
use super::memory::dlslime_memory_pool_t;
use super::options::ms;
use super::status::{dlslime_status_t, fail, status_of};
use crate::error::{Error, Status};
use crate::rpc::{CallFuture, Request, RpcConfig, RpcMemory, RpcProgress, RpcSession};

/// Who receives messages (`dlslime_rpc_options_t.progress`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum dlslime_rpc_progress {
    /// A receive thread when `slot_count > 1`, else inline.
    Auto = 0,
    /// No thread: the thread that waits (a call's wait, a poll) receives for everyone.
    Inline = 1,
    /// A receive thread per session.
    Pump = 2,
}

/// Options of an RPC session. Initialise with `dlslime_rpc_options_init`: zero fields
/// mean the library default. Both sides must use the same `slot_size` and `slot_count`.
/// Later versions only append fields.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct dlslime_rpc_options_t {
    /// `sizeof(dlslime_rpc_options_t)` as the caller was compiled.
    pub size: usize,
    /// Bytes per slot, the 16-byte header included (>= 64). 0: 64 KiB + 64 (a slot holds
    /// a 64 KiB payload and its header). Larger payloads take the bulk path (no size cap).
    pub slot_size: u64,
    /// Slots per direction, the most calls in flight (1..65536). 0: 16.
    pub slot_count: u32,
    /// A `DLSLIME_RPC_PROGRESS_*` value.
    pub progress: u32,
    /// Deadline of waits that pass `timeout_ms = 0`, of slot acquisition and of bulk
    /// reads. 0: 60 s.
    pub default_timeout_ms: u64,
    /// How long session creation waits for the peer's session. 0: 30 s.
    pub handshake_timeout_ms: u64,
    /// Largest payload either way. 0: 1 TiB.
    pub max_payload: u64,
    /// How long a waiting thread spins before parking, in microseconds. 0: the engine
    /// default (50 µs, `DLSLIME_SPIN_US`).
    pub spin_us: u64,
    /// Bytes of pre-allocated bulk buffer per slot and use (see `dlslime_rpc_memory_new`:
    /// made before connect on shared memory, bulk payloads up to this size are one
    /// memcpy). 0: none, bulk buffers are allocated on demand.
    pub bulk_arena: u64,
}

/// Fills `*opts` with the defaults (`size` set, every other field zero). NULL is a no-op.
#[no_mangle]
pub extern "C" fn dlslime_rpc_options_init(opts: *mut dlslime_rpc_options_t) {
    options_init_body!(opts)
}

fn to_config(o: &dlslime_rpc_options_t) -> crate::Result<RpcConfig> {
    let mut c = RpcConfig::default();
    if o.slot_size != 0 {
        c.slot_size =
            usize::try_from(o.slot_size).map_err(|_| Error::invalid("slot_size too large"))?;
    }
    if o.slot_count != 0 {
        c.slot_count = o.slot_count as usize;
    }
    c.progress = match o.progress {
        0 => RpcProgress::Auto,
        1 => RpcProgress::Inline,
        2 => RpcProgress::Pump,
        p => return Err(Error::invalid(format!("unknown progress mode {p}"))),
    };
    c.default_timeout = ms(o.default_timeout_ms, c.default_timeout);
    c.handshake_timeout = ms(o.handshake_timeout_ms, c.handshake_timeout);
    if o.max_payload != 0 {
        c.max_payload = o.max_payload;
    }
    if o.spin_us != 0 {
        c.spin = Duration::from_micros(o.spin_us);
    }
    c.bulk_arena =
        usize::try_from(o.bulk_arena).map_err(|_| Error::invalid("bulk_arena too large"))?;
    c.validate()?;
    Ok(c)
}

/// The registered memory of one session side (its mailboxes and send slots). Make it
/// before `dlslime_endpoint_connect` on shared memory, so the peer maps it and each
/// message is a single memcpy; over TCP (or when it does not matter) pass NULL to
/// `dlslime_rpc_session_new` instead.
///
/// Ownership: reference-counted; a session keeps its own reference, so it may be freed
/// right after `dlslime_rpc_session_new`. Thread safety: thread-safe (immutable).
pub struct dlslime_rpc_memory_t {
    _private: [u8; 0],
}

castable!(dlslime_rpc_memory_t => Arc<RpcMemory>);

/// Allocates and registers session memory in `pool` (the pool of the endpoint the
/// session will use) for the slot configuration in `opts` (NULL: defaults).
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_INVALID_ARGUMENT` (bad
/// options), `DLSLIME_STATUS_IO` (allocation failed).
#[no_mangle]
pub extern "C" fn dlslime_rpc_memory_new(
    pool: *const dlslime_memory_pool_t,
    opts: *const dlslime_rpc_options_t,
    out: *mut *mut dlslime_rpc_memory_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let pool = try_arc!(pool);
        let out = try_out!(out);
        let cfg = try_options!(opts, to_config);
        let m = try_res!(RpcMemory::new(&pool, &cfg));
        handle_out(m, out)
    }
}

/// Like `dlslime_rpc_memory_new`, in the memory pool of a PeerAgent (the pool its
/// endpoints use). Call it before `dlslime_peer_agent_connect_to` on shared memory, then
/// pass it to `dlslime_rpc_session_new_peer`.
#[no_mangle]
pub extern "C" fn dlslime_rpc_memory_new_peer(
    agent: *const super::peer::dlslime_peer_agent_t,
    opts: *const dlslime_rpc_options_t,
    out: *mut *mut dlslime_rpc_memory_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let agent = try_ref!(agent);
        let out = try_out!(out);
        let cfg = try_options!(opts, to_config);
        let m = try_res!(RpcMemory::new(agent.memory_pool(), &cfg));
        handle_out(m, out)
    }
}

/// Drops the caller's reference. NULL is a no-op.
#[no_mangle]
pub extern "C" fn dlslime_rpc_memory_free(mem: *mut dlslime_rpc_memory_t) {
    free_body!(mem)
}

/// One side of an RPC connection over an endpoint: calls (client) and requests (server),
/// in both directions at once if wanted.
///
/// Ownership: owned by the caller; `dlslime_rpc_session_free` closes and releases it.
/// Calls and requests it handed out stay valid (and fail with
/// `DLSLIME_STATUS_SHUT_DOWN` if pending) after it is freed.
///
/// Thread safety: thread-safe; only `dlslime_rpc_session_free` must not race with other
/// calls on it. The session owns its endpoint's immediate-data stream: do not call
/// `dlslime_endpoint_imm_recv` on that endpoint while the session lives.
pub struct dlslime_rpc_session_t {
    _private: [u8; 0],
}

castable!(dlslime_rpc_session_t => Box<RpcSession>);

/// Creates a session over a connected endpoint. `memory` may be NULL (allocated now).
/// Blocks until the peer creates its session too (a handshake over one send/recv pair
/// of the endpoint), at most `handshake_timeout_ms`.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_INVALID_ARGUMENT` (bad
/// options, memory of another pool or slot configuration, or the peer's slot
/// configuration differs), `DLSLIME_STATUS_NOT_CONNECTED`, `DLSLIME_STATUS_TIMEOUT`
/// (the peer did not create its session), `DLSLIME_STATUS_VERSION_MISMATCH`,
/// `DLSLIME_STATUS_PROTOCOL`.
#[no_mangle]
pub extern "C" fn dlslime_rpc_session_new(
    ep: *const dlslime_endpoint_t,
    memory: *const dlslime_rpc_memory_t,
    opts: *const dlslime_rpc_options_t,
    out: *mut *mut dlslime_rpc_session_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let ep = try_ref!(ep).clone();
        let out = try_out!(out);
        let cfg = try_options!(opts, to_config);
        // SAFETY: `memory` is NULL (optional) or a live `dlslime_rpc_memory_t` handle, by
        // the header's contract; the session takes its own reference.
        let s = match unsafe { super::cast::try_clone_arc(memory) } {
            Some(m) => try_res!(RpcSession::with_memory(ep, m, cfg)),
            None => try_res!(RpcSession::new(ep, cfg)),
        };
        handle_out(s, out)
    }
}

/// Like `dlslime_rpc_session_new`, over the endpoint a PeerAgent holds towards `peer`
/// (the agent must be connected to it: `dlslime_peer_connection_wait`).
///
/// Errors: those of `dlslime_rpc_session_new`, plus `DLSLIME_STATUS_NOT_CONNECTED` (no
/// connection to `peer`).
#[no_mangle]
pub extern "C" fn dlslime_rpc_session_new_peer(
    agent: *const super::peer::dlslime_peer_agent_t,
    peer: *const c_char,
    memory: *const dlslime_rpc_memory_t,
    opts: *const dlslime_rpc_options_t,
    out: *mut *mut dlslime_rpc_session_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let agent = try_ref!(agent);
        let peer = try_str!(peer);
        let out = try_out!(out);
        let cfg = try_options!(opts, to_config);
        let ep = try_res!(agent.endpoint(peer));
        // SAFETY: `memory` is NULL (optional) or a live `dlslime_rpc_memory_t` handle, by
        // the header's contract; the session takes its own reference.
        let s = match unsafe { super::cast::try_clone_arc(memory) } {
            Some(m) => try_res!(RpcSession::with_memory(ep, m, cfg)),
            None => try_res!(RpcSession::new(ep, cfg)),
        };
        handle_out(s, out)
    }
}

/// Closes the session: tells the peer, fails pending calls with
/// `DLSLIME_STATUS_SHUT_DOWN`, ends `dlslime_rpc_poll_request`. Idempotent; the endpoint
/// stays open.
#[no_mangle]
pub extern "C" fn dlslime_rpc_session_close(s: *const dlslime_rpc_session_t) -> dlslime_status_t {
    ffi_boundary! {
        try_ref!(s).close();
        dlslime_status_t::Ok
    }
}

/// Closes and releases the session. NULL is a no-op.
#[no_mangle]
pub extern "C" fn dlslime_rpc_session_free(s: *mut dlslime_rpc_session_t) {
    free_body!(s)
}

/// Payload bytes that travel inside one slot (larger ones take the bulk path). 0 for NULL.
#[no_mangle]
pub extern "C" fn dlslime_rpc_session_slot_capacity(s: *const dlslime_rpc_session_t) -> usize {
    ffi_boundary! {
        try_ref!(s).slot_capacity()
    }
}

/// True once the session is closed or its peer is gone. False for NULL.
#[no_mangle]
pub extern "C" fn dlslime_rpc_session_closed(s: *const dlslime_rpc_session_t) -> bool {
    ffi_boundary! {
        try_ref!(s).is_closed()
    }
}

/// Names this session's calls in the per-method counters (`dlslime_obs_snapshot`, the
/// `rpc` rows of side `"client"`): `names[i]` is the name of method `i`, i.e. the
/// service's method names in sorted order (the tags the server numbers them by). The
/// names are copied; `count` 0 forgets them. Calls of an unnamed tag count as `tag:N`.
/// The Python typed layer (`dlslime.rpc.proxy`) calls it with its class's names.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER` (`s`; `names` or one of its entries while
/// `count > 0`), `DLSLIME_STATUS_INVALID_ARGUMENT` (`count` over 65536, a name that is
/// not UTF-8). On error the session's names are unchanged.
#[no_mangle]
pub extern "C" fn dlslime_rpc_session_set_method_names(
    s: *const dlslime_rpc_session_t,
    names: *const *const c_char,
    count: usize,
) -> dlslime_status_t {
    ffi_boundary! {
        let s = try_ref!(s);
        if count > crate::rpc::MAX_METHOD_NAMES {
            return fail(Error::invalid(format!(
                "count {count} is over {} method names",
                crate::rpc::MAX_METHOD_NAMES
            )));
        }
        if count > 0 && names.is_null() {
            null_arg!("names");
        }
        let mut v: Vec<&str> = Vec::with_capacity(count);
        for i in 0..count {
            // SAFETY: `names` holds `count` entries (the header's contract; non-NULL here).
            let name = unsafe { *names.add(i) };
            if name.is_null() {
                null_arg!("names[i]");
            }
            v.push(try_str!(name));
        }
        s.set_method_names(&v);
        dlslime_status_t::Ok
    }
}

/// Builds a payload in place: write at most `cap` bytes at `buf` and return how many, or a
/// negative number to fail (the call is then not sent / an exception reply is sent).
pub type dlslime_rpc_writer_t =
    Option<unsafe extern "C" fn(user: *mut c_void, buf: *mut u8, cap: usize) -> i64>;

/// The future of one call.
///
/// Ownership: owned by the caller; release it with `dlslime_rpc_call_free`. The reply
/// bytes live in the call's slot until then (so keep calls short-lived: a session has
/// `slot_count` slots). Freeing a pending call detaches it; its late reply frees the slot.
///
/// Thread safety: one thread at a time (do not use one call from two threads at once).
pub struct dlslime_rpc_call_t {
    _private: [u8; 0],
}

castable!(dlslime_rpc_call_t => Box<Mutex<CallFuture>>);

fn call_out(r: crate::Result<CallFuture>, out: Out<*mut dlslime_rpc_call_t>) -> dlslime_status_t {
    match r {
        Ok(f) => handle_out(Mutex::new(f), out),
        Err(e) => fail(e),
    }
}

/// Sends a request of method `tag` with `len` bytes at `data` (copied before return) and
/// writes its future to `*out`. Blocks only while every slot is in flight (a slot is
/// freed when its reply arrives, not when the call is freed), at most the session's
/// default deadline.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_INVALID_ARGUMENT` (tag with
/// flag bits, payload over `max_payload`), `DLSLIME_STATUS_SHUT_DOWN`,
/// `DLSLIME_STATUS_PEER_DISCONNECTED`, `DLSLIME_STATUS_TIMEOUT` (no slot freed in time).
#[no_mangle]
pub extern "C" fn dlslime_rpc_call(
    s: *const dlslime_rpc_session_t,
    tag: u32,
    data: *const u8,
    len: usize,
    out: *mut *mut dlslime_rpc_call_t,
) -> dlslime_status_t {
    dlslime_rpc_call_timeout(s, tag, data, len, 0, out)
}

/// Like `dlslime_rpc_call`, waiting for a free slot at most `timeout_ms` (0: the
/// session's default deadline). A slot is freed as soon as its reply arrives (a reply
/// larger than a slot: once read or freed), so any number of calls may be held.
///
/// Errors: as `dlslime_rpc_call`; `DLSLIME_STATUS_TIMEOUT` when no slot freed in time.
#[no_mangle]
pub extern "C" fn dlslime_rpc_call_timeout(
    s: *const dlslime_rpc_session_t,
    tag: u32,
    data: *const u8,
    len: usize,
    timeout_ms: u64,
    out: *mut *mut dlslime_rpc_call_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let s = try_ref!(s);
        let out = try_out!(out);
        let payload = try_slice!(data, len);
        call_out(s.call_with_timeout(tag, payload, timeout(timeout_ms)), out)
    }
}

fn run_writer(w: dlslime_rpc_writer_t, user: *mut c_void, b: &mut [u8]) -> crate::Result<usize> {
    let f = w.ok_or_else(|| Error::new(Status::NullParameter, "argument `writer` is NULL"))?;
    // SAFETY: the header's writer contract: the callback writes at most `cap` bytes at
    // `buf`, here `b`, which is that many writable bytes, and `user` is the caller's own
    // pointer, passed through untouched. A negative or too large count is refused below.
    let n = unsafe { f(user, b.as_mut_ptr(), b.len()) };
    if n < 0 {
        return Err(Error::invalid(format!("RPC writer returned {n}")));
    }
    if n as u64 > b.len() as u64 {
        return Err(Error::invalid("RPC writer overflowed its buffer"));
    }
    Ok(n as usize)
}

/// Like `dlslime_rpc_call`, with the payload built in place by `writer` in a buffer of
/// `max_len` bytes (inside the slot when it fits, else a bulk buffer): no extra copy.
/// `writer` runs before this function returns.
#[no_mangle]
pub extern "C" fn dlslime_rpc_call_inplace(
    s: *const dlslime_rpc_session_t,
    tag: u32,
    max_len: usize,
    writer: dlslime_rpc_writer_t,
    user: *mut c_void,
    out: *mut *mut dlslime_rpc_call_t,
) -> dlslime_status_t {
    dlslime_rpc_call_inplace_timeout(s, tag, max_len, writer, user, 0, out)
}

/// `dlslime_rpc_call_inplace` with a deadline for taking a slot, as in
/// `dlslime_rpc_call_timeout`.
#[no_mangle]
pub extern "C" fn dlslime_rpc_call_inplace_timeout(
    s: *const dlslime_rpc_session_t,
    tag: u32,
    max_len: usize,
    writer: dlslime_rpc_writer_t,
    user: *mut c_void,
    timeout_ms: u64,
    out: *mut *mut dlslime_rpc_call_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let s = try_ref!(s);
        let out = try_out!(out);
        if writer.is_none() {
            null_arg!("writer");
        }
        let t = timeout(timeout_ms);
        call_out(s.call_inplace_with_timeout(tag, max_len, t, |b| run_writer(writer, user, b)), out)
    }
}

/// Waits for the reply, at most `timeout_ms` (0: the session's default deadline).
/// `DLSLIME_STATUS_OK` when a reply arrived (then check `dlslime_rpc_call_is_exception`);
/// `DLSLIME_STATUS_TIMEOUT` leaves the call pending (wait again, or free it); other
/// statuses are final (`DLSLIME_STATUS_PEER_DISCONNECTED`, `DLSLIME_STATUS_SHUT_DOWN`,
/// `DLSLIME_STATUS_PROTOCOL`, ...).
#[no_mangle]
pub extern "C" fn dlslime_rpc_call_wait(
    c: *const dlslime_rpc_call_t,
    timeout_ms: u64,
) -> dlslime_status_t {
    ffi_boundary! {
        let c = try_ref!(c);
        let t = timeout(timeout_ms);
        status_of(c.lock().wait(t))
    }
}

/// True once the reply arrived (or the call failed). False for NULL.
#[no_mangle]
pub extern "C" fn dlslime_rpc_call_done(c: *const dlslime_rpc_call_t) -> bool {
    ffi_boundary! {
        try_ref!(c).lock().done()
    }
}

/// After a successful wait: the reply payload (the call's own copy, valid until the call
/// is freed).
/// `*data` may be NULL when `*len` is 0.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_PENDING` (no successful wait
/// yet).
#[no_mangle]
pub extern "C" fn dlslime_rpc_call_reply(
    c: *const dlslime_rpc_call_t,
    data: *mut *const u8,
    len: *mut usize,
) -> dlslime_status_t {
    ffi_boundary! {
        let c = try_ref!(c);
        let data = try_out!(data);
        let len = try_out!(len);
        let g = c.lock();
        if !g.is_ready() {
            super::status::set_last_error_message("the call has no reply yet: wait first".into());
            return Status::Pending;
        }
        let r = g.reply();
        data.write(if r.is_empty() { std::ptr::null() } else { r.as_ptr() });
        len.write(r.len());
        dlslime_status_t::Ok
    }
}

/// True when the reply is an exception: its payload is JSON
/// `{"type","message","traceback"}`. False for NULL or before a reply.
#[no_mangle]
pub extern "C" fn dlslime_rpc_call_is_exception(c: *const dlslime_rpc_call_t) -> bool {
    ffi_boundary! {
        try_ref!(c).lock().is_exception()
    }
}

/// Releases the call (detaching it if still pending). NULL is a no-op.
#[no_mangle]
pub extern "C" fn dlslime_rpc_call_free(c: *mut dlslime_rpc_call_t) {
    free_body!(c)
}

/// A request the server side received. Answer it with one of the `dlslime_rpc_request_reply*`
/// functions, then free it; freeing it unanswered sends an exception reply, so the caller
/// never hangs. Its payload stays valid until it is answered.
///
/// Thread safety: thread-safe (answer it from any thread), except `_free`.
pub struct dlslime_rpc_request_t {
    _private: [u8; 0],
}

castable!(dlslime_rpc_request_t => Box<Mutex<(Option<Request>, u32, u64, usize, usize)>>);

/// Waits at most `timeout_ms` (0: the session's default) for the next request and writes
/// it to `*out`.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_TIMEOUT` (nothing arrived),
/// `DLSLIME_STATUS_SHUT_DOWN` (this session was closed), `DLSLIME_STATUS_PEER_DISCONNECTED`
/// (the peer closed its session or died).
#[no_mangle]
pub extern "C" fn dlslime_rpc_poll_request(
    s: *const dlslime_rpc_session_t,
    timeout_ms: u64,
    out: *mut *mut dlslime_rpc_request_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let s = try_ref!(s);
        let out = try_out!(out);
        let t = timeout(timeout_ms);
        match s.poll_request(t) {
            Ok(Some(r)) => {
                let meta = (r.tag(), r.request_id(), r.payload_ptr() as usize, r.payload().len());
                let b = Mutex::new((Some(r), meta.0, meta.1, meta.2, meta.3));
                handle_out(b, out)
            }
            Ok(None) => fail(Error::new(Status::Timeout, "no RPC request arrived before the timeout")),
            Err(e) => fail(e),
        }
    }
}

/// The request's method tag (flags removed). 0 for NULL.
#[no_mangle]
pub extern "C" fn dlslime_rpc_request_tag(r: *const dlslime_rpc_request_t) -> u32 {
    ffi_boundary! {
        try_ref!(r).lock().1
    }
}

/// The request's id (per calling session, from 1). 0 for NULL.
#[no_mangle]
pub extern "C" fn dlslime_rpc_request_id(r: *const dlslime_rpc_request_t) -> u64 {
    ffi_boundary! {
        try_ref!(r).lock().2
    }
}

/// The request payload, valid until the request is answered. `*data` may be NULL when
/// `*len` is 0.
#[no_mangle]
pub extern "C" fn dlslime_rpc_request_payload(
    r: *const dlslime_rpc_request_t,
    data: *mut *const u8,
    len: *mut usize,
) -> dlslime_status_t {
    ffi_boundary! {
        let r = try_ref!(r);
        let data = try_out!(data);
        let len = try_out!(len);
        let g = r.lock();
        if g.0.is_none() {
            return fail(Error::invalid("the request was already answered"));
        }
        data.write(if g.4 == 0 { std::ptr::null() } else { g.3 as *const u8 });
        len.write(g.4);
        dlslime_status_t::Ok
    }
}

fn take(r: &Mutex<(Option<Request>, u32, u64, usize, usize)>) -> crate::Result<Request> {
    r.lock()
        .0
        .take()
        .ok_or_else(|| Error::invalid("the request was already answered"))
}

/// Answers with `len` bytes at `data` (any size; copied before return).
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_INVALID_ARGUMENT` (already
/// answered; reply over `max_payload`, which sends an exception reply instead),
/// `DLSLIME_STATUS_PEER_DISCONNECTED`, `DLSLIME_STATUS_SHUT_DOWN`.
#[no_mangle]
pub extern "C" fn dlslime_rpc_request_reply(
    r: *const dlslime_rpc_request_t,
    data: *const u8,
    len: usize,
) -> dlslime_status_t {
    ffi_boundary! {
        let r = try_ref!(r);
        let d = try_slice!(data, len);
        let req = try_res!(take(r));
        status_of(req.reply(d))
    }
}

/// Answers with a payload `writer` builds in place in a buffer of `max_len` bytes. If
/// `writer` returns a negative number, an exception reply is sent and
/// `DLSLIME_STATUS_INVALID_ARGUMENT` returned.
#[no_mangle]
pub extern "C" fn dlslime_rpc_request_reply_inplace(
    r: *const dlslime_rpc_request_t,
    max_len: usize,
    writer: dlslime_rpc_writer_t,
    user: *mut c_void,
) -> dlslime_status_t {
    ffi_boundary! {
        let r = try_ref!(r);
        if writer.is_none() {
            null_arg!("writer");
        }
        let req = try_res!(take(r));
        status_of(req.reply_inplace(max_len, false, |b| run_writer(writer, user, b)))
    }
}

/// Answers with the first `len` bytes of the request's own payload buffer, which the
/// handler may have rewritten in place (through the pointer of
/// `dlslime_rpc_request_payload`, writable until the request is answered). A payload
/// that came by the bulk path is sent back from where it lies (no copy).
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_INVALID_ARGUMENT` (already
/// answered; `len` larger than the payload), `DLSLIME_STATUS_PEER_DISCONNECTED`,
/// `DLSLIME_STATUS_SHUT_DOWN`.
#[no_mangle]
pub extern "C" fn dlslime_rpc_request_reply_from_payload(
    r: *const dlslime_rpc_request_t,
    len: usize,
) -> dlslime_status_t {
    ffi_boundary! {
        let r = try_ref!(r);
        let req = try_res!(take(r));
        status_of(req.reply_from_payload(len))
    }
}

/// Answers with an exception: `type_name`, `message` and `traceback` (NULL: empty) are
/// sent as JSON `{"type","message","traceback"}`; the traceback is truncated if all
/// would not fit in a slot.
#[no_mangle]
pub extern "C" fn dlslime_rpc_request_reply_error(
    r: *const dlslime_rpc_request_t,
    type_name: *const c_char,
    message: *const c_char,
    traceback: *const c_char,
) -> dlslime_status_t {
    ffi_boundary! {
        let r = try_ref!(r);
        let t = try_str!(type_name);
        let m = try_str!(message);
        let tb = try_opt_str!(traceback).unwrap_or("");
        let req = try_res!(take(r));
        status_of(req.reply_error(t, m, tb))
    }
}

/// Releases the request; an unanswered one gets an exception reply first. NULL is a no-op.
#[no_mangle]
pub extern "C" fn dlslime_rpc_request_free(r: *mut dlslime_rpc_request_t) {
    free_body!(r)
}
