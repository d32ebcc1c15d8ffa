//! The slot ring: `dlslime_ring_t` (a ring in shared memory: producer and local
//! readers), `dlslime_ring_view_t` (a payload held in place), `dlslime_ring_server_t`
//! (serves rings over endpoints), `dlslime_ring_client_t` (fetches by reference) and
//! `dlslime_ring_payload_t` (a fetched payload).

use std::ffi::{c_char, c_void};
use std::sync::Arc;
use std::time::Duration;

use super::args::buffer_ptr;
use super::args::handle_out;
use super::cast::box_into_ptr;
use super::endpoint::dlslime_endpoint_t;
use super::options::ms;
use super::peer::dlslime_peer_agent_t;
use super::status::{dlslime_status_t, fail, status_of};
use crate::error::{Error, Status};
use crate::ring::{
    ClientCounters, Payload, Ring, RingClient, RingClientConfig, RingConfig, RingHandle,
    RingMetrics, RingServer, RingServerConfig, ServerCounters, SlotRef, SlotState, SlotView,
};

/// A reference to one payload: `slot == generation % slot_count`; the generation is
/// unique for the life of the ring, so a reference whose payload is gone fails with
/// `DLSLIME_STATUS_STALE_SLOT` instead of reading a newer one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct dlslime_slot_ref_t {
    pub slot: u32,
    pub generation: u64,
}

impl super::panic::Fallback for dlslime_slot_ref_t {
    fn null_parameter() -> Self {
        Self::default()
    }
    fn panicked() -> Self {
        Self::default()
    }
}

impl super::panic::Fallback for *const c_void {
    fn null_parameter() -> Self {
        std::ptr::null()
    }
    fn panicked() -> Self {
        std::ptr::null()
    }
}

impl From<dlslime_slot_ref_t> for SlotRef {
    fn from(r: dlslime_slot_ref_t) -> SlotRef {
        SlotRef::new(r.slot, r.generation)
    }
}

impl From<SlotRef> for dlslime_slot_ref_t {
    fn from(r: SlotRef) -> dlslime_slot_ref_t {
        dlslime_slot_ref_t {
            slot: r.slot,
            generation: r.generation,
        }
    }
}

/// A slot's state (`dlslime_ring_slot_state`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum dlslime_slot_state {
    Free = 0,
    Writing = 1,
    Ready = 2,
    Reading = 3,
}

/// Bits of `dlslime_ring_options_t.flags` and of `dlslime_ring_write`'s `flags`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum dlslime_ring_flag {
    /// A write that meets an unconsumed READY slot fails with `DLSLIME_STATUS_SLOT_BUSY`
    /// instead of overwriting it (and counting a drop).
    NoOverwrite = 1,
    /// (`dlslime_ring_write` only) overwrite even if the ring was made with
    /// `NO_OVERWRITE`.
    Overwrite = 2,
}

const NO_OVERWRITE: u32 = dlslime_ring_flag::NoOverwrite as u32;
const OVERWRITE: u32 = dlslime_ring_flag::Overwrite as u32;

/// Options of a new ring. Initialise with `dlslime_ring_options_init`; zero fields mean
/// the defaults. Later versions only append fields.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct dlslime_ring_options_t {
    /// `sizeof(dlslime_ring_options_t)` as the caller was compiled.
    pub size: usize,
    /// The producer's name (1..64 bytes) clients address it by; NULL: `ring-<pid>-<n>`.
    pub name: *const c_char,
    /// Slots. 0: 64.
    pub slot_count: u64,
    /// Payload bytes per slot. 0: 64 KiB.
    pub slot_capacity: u64,
    /// `DLSLIME_RING_FLAG_NO_OVERWRITE` or 0.
    pub flags: u32,
}

/// Fills `*opts` with the defaults (`size` set, every other field zero). NULL is a no-op.
#[no_mangle]
pub extern "C" fn dlslime_ring_options_init(opts: *mut dlslime_ring_options_t) {
    options_init_body!(opts)
}

/// A ring of fixed-size slots in shared memory, written by a producer and read by local
/// readers, or served to remote ones by a `dlslime_ring_server_t`.
///
/// Ownership: reference-counted; servers and views keep their own reference, so it may
/// be freed while they live. Thread safety: thread-safe; any number of processes of the
/// host may map the same ring (`dlslime_ring_attach`).
pub struct dlslime_ring_t {
    _private: [u8; 0],
}

castable!(dlslime_ring_t => Arc<Ring>);

/// # Safety
/// `name` is NULL or NUL-terminated.
unsafe fn ring_config(o: &dlslime_ring_options_t) -> crate::Result<RingConfig> {
    let mut c = RingConfig::default();
    if o.flags & !NO_OVERWRITE != 0 {
        return Err(Error::new(
            Status::Unsupported,
            format!(
                "dlslime_ring_options_t.flags has unknown bits {:#x}",
                o.flags & !NO_OVERWRITE
            ),
        ));
    }
    // SAFETY: `name` is NULL or a NUL-terminated string (this function's contract).
    if let Some(n) = unsafe { super::args::opt_text(o.name, "dlslime_ring_options_t.name")? } {
        c.name = n;
    }
    if o.slot_count != 0 {
        c.slot_count =
            usize::try_from(o.slot_count).map_err(|_| Error::invalid("slot_count too large"))?;
    }
    if o.slot_capacity != 0 {
        c.slot_capacity = usize::try_from(o.slot_capacity)
            .map_err(|_| Error::invalid("slot_capacity too large"))?;
    }
    c.overwrite = o.flags & NO_OVERWRITE == 0;
    Ok(c)
}

/// Creates a ring in a new shared allocation (every slot FREE).
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_INVALID_ARGUMENT` (a name
/// longer than 64 bytes, zero-sized geometry), `DLSLIME_STATUS_UNSUPPORTED` (unknown
/// flags), `DLSLIME_STATUS_IO` (the allocation failed).
#[no_mangle]
pub extern "C" fn dlslime_ring_new(
    opts: *const dlslime_ring_options_t,
    out: *mut *mut dlslime_ring_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let out = try_out!(out);
        let cfg = try_options!(opts, ring_config);
        let r = try_res!(Ring::create(&cfg));
        handle_out(r, out)
    }
}

/// Maps a ring another process of this host created, from the JSON of its
/// `dlslime_ring_handle`. The process named in the handle must be alive.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_INVALID_ARGUMENT` (not a
/// ring handle, another host, not a ring), `DLSLIME_STATUS_UNKNOWN_HANDLE` (that process
/// or descriptor is gone), `DLSLIME_STATUS_VERSION_MISMATCH`, `DLSLIME_STATUS_IO`.
#[no_mangle]
pub extern "C" fn dlslime_ring_attach(
    handle_json: *const c_char,
    out: *mut *mut dlslime_ring_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let text = try_str!(handle_json);
        let out = try_out!(out);
        let h = try_res!(RingHandle::parse(text));
        let r = try_res!(Ring::attach(&h));
        handle_out(r, out)
    }
}

/// The ring's handle as JSON (`type`, `buffer_name`, `max_entries`, `entry_size`,
/// `node_id`, `host_id`, `pid`, `fd`, `len`): what `dlslime_ring_attach` needs. Free it
/// with `dlslime_string_free`.
#[no_mangle]
pub extern "C" fn dlslime_ring_handle(
    ring: *const dlslime_ring_t,
    out_json: *mut *mut c_char,
) -> dlslime_status_t {
    string_getter_body!(ring, out_json, |r| r.handle().to_json().to_string())
}

/// Drops the caller's reference. NULL is a no-op.
#[no_mangle]
pub extern "C" fn dlslime_ring_free(ring: *mut dlslime_ring_t) {
    free_body!(ring)
}

/// Slots of the ring (0 for NULL).
#[no_mangle]
pub extern "C" fn dlslime_ring_slot_count(ring: *const dlslime_ring_t) -> u64 {
    ffi_boundary! {
        try_ref!(ring).slot_count() as u64
    }
}

/// Payload bytes per slot (0 for NULL).
#[no_mangle]
pub extern "C" fn dlslime_ring_slot_capacity(ring: *const dlslime_ring_t) -> u64 {
    ffi_boundary! {
        try_ref!(ring).slot_capacity() as u64
    }
}

/// Slots in READY now: a counter every transition keeps (0 for NULL).
#[no_mangle]
pub extern "C" fn dlslime_ring_ready_count(ring: *const dlslime_ring_t) -> u64 {
    ffi_boundary! {
        try_ref!(ring).ready_count()
    }
}

fn write_policy(ring: &Ring, flags: u32) -> crate::Result<bool> {
    match flags {
        0 => Ok(ring.overwrite()),
        NO_OVERWRITE => Ok(false),
        OVERWRITE => Ok(true),
        f => Err(Error::invalid(format!(
            "dlslime_ring_write: bad flags {f:#x}"
        ))),
    }
}

/// Writes `len` bytes (at most the slot capacity) into the next slot (`write_idx % N`,
/// never skipping ahead) and writes its reference to `*out_ref`. `flags`: 0 (the ring's
/// policy), `DLSLIME_RING_FLAG_NO_OVERWRITE` or `DLSLIME_RING_FLAG_OVERWRITE`.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_INVALID_ARGUMENT` (too large,
/// bad flags), `DLSLIME_STATUS_SLOT_BUSY` (the slot at the write index is being read or
/// written, or holds an unconsumed payload and overwriting is off: the original's
/// `SlotError`; nothing was written).
#[no_mangle]
pub extern "C" fn dlslime_ring_write(
    ring: *const dlslime_ring_t,
    data: *const c_void,
    len: usize,
    flags: u32,
    out_ref: *mut dlslime_slot_ref_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let r = try_ref!(ring);
        let out_ref = try_out!(out_ref);
        let src = try_slice!(data, len);
        let overwrite = try_res!(write_policy(r, flags));
        let got = try_res!(r.write_with_policy(len, overwrite, |b| {
            b.copy_from_slice(src);
            Ok(())
        }));
        out_ref.write(got.into());
        dlslime_status_t::Ok
    }
}

/// Like `dlslime_ring_write`, with the payload gathered from `n` parts written back to
/// back (a schema's tensors): part `i` is `lens[i]` bytes at `parts[i]`.
#[no_mangle]
pub extern "C" fn dlslime_ring_write_parts(
    ring: *const dlslime_ring_t,
    parts: *const *const c_void,
    lens: *const usize,
    n: usize,
    flags: u32,
    out_ref: *mut dlslime_slot_ref_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let r = try_ref!(ring);
        let out_ref = try_out!(out_ref);
        if n > 0 && (parts.is_null() || lens.is_null()) {
            null_arg!(if parts.is_null() { "parts" } else { "lens" });
        }
        let overwrite = try_res!(write_policy(r, flags));
        let mut v: Vec<&[u8]> = Vec::with_capacity(n);
        for i in 0..n {
            // SAFETY: `parts` and `lens` hold `n` entries each (checked non-NULL above).
            let (p, l) = unsafe { (*parts.add(i), *lens.add(i)) };
            let Some(p) = buffer_ptr(p.cast_mut(), l) else { null_arg!("parts[i]") };
            // SAFETY: part `i` is `l` readable bytes for the call (or dangling with `l == 0`).
            v.push(unsafe { std::slice::from_raw_parts(p as *const u8, l) });
        }
        let total = try_res!(v.iter().try_fold(0usize, |a, p| a.checked_add(p.len())).ok_or_else(|| Error::invalid("payload length overflows")));
        let got = try_res!(r.write_with_policy(total, overwrite, |b| {
            let mut at = 0;
            for p in &v {
                b[at..at + p.len()].copy_from_slice(p);
                at += p.len();
            }
            Ok(())
        }));
        out_ref.write(got.into());
        dlslime_status_t::Ok
    }
}

/// Reads and consumes payload `r` into `dst` (`cap` bytes) and writes its length to
/// `*out_len`.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_INVALID_ARGUMENT` (a
/// reference that cannot belong to this ring), `DLSLIME_STATUS_STALE_SLOT` (overwritten,
/// consumed, never written), `DLSLIME_STATUS_SLOT_BUSY` (another reader holds it),
/// `DLSLIME_STATUS_OUT_OF_RANGE` (`cap` too small; the payload stays READY).
#[no_mangle]
pub extern "C" fn dlslime_ring_read(
    ring: *const dlslime_ring_t,
    r: dlslime_slot_ref_t,
    dst: *mut c_void,
    cap: usize,
    out_len: *mut usize,
) -> dlslime_status_t {
    ffi_boundary! {
        let ring = try_arc!(ring);
        let out_len = try_out!(out_len);
        let d = try_slice!(mut dst, cap);
        let n = try_res!(ring.read_into(r.into(), d));
        out_len.write(n);
        dlslime_status_t::Ok
    }
}

/// Like `dlslime_ring_read`, but another reader holding the slot is not an error:
/// `*out_ready` is false and nothing is read (the original's `try_read`). On success
/// `*out_ready` is true and `*out_len` the length.
#[no_mangle]
pub extern "C" fn dlslime_ring_try_read(
    ring: *const dlslime_ring_t,
    r: dlslime_slot_ref_t,
    dst: *mut c_void,
    cap: usize,
    out_len: *mut usize,
    out_ready: *mut bool,
) -> dlslime_status_t {
    ffi_boundary! {
        let ring = try_arc!(ring);
        let out_len = try_out!(out_len);
        let out_ready = try_out!(out_ready);
        let d = try_slice!(mut dst, cap);
        match ring.read_into(r.into(), d) {
            Ok(n) => {
                out_len.write(n);
                out_ready.write(true);
            }
            Err(e) if e.status() == Status::SlotBusy => {
                out_len.write(0);
                out_ready.write(false);
            }
            Err(e) => return fail(e),
        }
        dlslime_status_t::Ok
    }
}

/// The state of slot `slot` (a `DLSLIME_SLOT_STATE_*` value) in `*out_state`.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_OUT_OF_RANGE`.
#[no_mangle]
pub extern "C" fn dlslime_ring_slot_state(
    ring: *const dlslime_ring_t,
    slot: u32,
    out_state: *mut u32,
) -> dlslime_status_t {
    ffi_boundary! {
        let ring = try_ref!(ring);
        let out_state = try_out!(out_state);
        let s = try_res!(ring.slot_state(slot));
        let v = match s {
            SlotState::Free => dlslime_slot_state::Free,
            SlotState::Writing => dlslime_slot_state::Writing,
            SlotState::Ready => dlslime_slot_state::Ready,
            SlotState::Reading => dlslime_slot_state::Reading,
        };
        out_state.write(v as u32);
        dlslime_status_t::Ok
    }
}

/// The references of the READY payloads, oldest first (the original's
/// `get_ready_indices`): up to `cap` into `out`, the number written to `*out_n`.
#[no_mangle]
pub extern "C" fn dlslime_ring_ready_slots(
    ring: *const dlslime_ring_t,
    out: *mut dlslime_slot_ref_t,
    cap: usize,
    out_n: *mut usize,
) -> dlslime_status_t {
    ffi_boundary! {
        let ring = try_ref!(ring);
        let out_n = try_out!(out_n);
        if out.is_null() && cap > 0 {
            null_arg!("out");
        }
        let v = ring.ready_slots();
        let n = v.len().min(cap);
        for (i, r) in v.into_iter().take(n).enumerate() {
            // SAFETY: `out` holds `cap` entries (non-NULL when `cap > 0`) and `i < cap`.
            unsafe { out.add(i).write(r.into()) };
        }
        out_n.write(n);
        dlslime_status_t::Ok
    }
}

/// Writes the ring's counters to `*out`.
#[no_mangle]
pub extern "C" fn dlslime_ring_metrics(
    ring: *const dlslime_ring_t,
    out: *mut RingMetrics,
) -> dlslime_status_t {
    value_getter_body!(ring, out, |ring| ring.metrics())
}

/// A payload held in place (READING) by a local reader: `dlslime_ring_view_data`
/// points into the slot, valid until `dlslime_ring_view_consume` (FREE),
/// `dlslime_ring_view_release` (READY again) or `dlslime_ring_view_free` (releases if
/// neither was called). The producer cannot overwrite the slot meanwhile.
///
/// Ownership: owned by the caller. Thread safety: not to be used from two threads at once.
pub struct dlslime_ring_view_t {
    _private: [u8; 0],
}

castable!(dlslime_ring_view_t => Box<std::sync::Mutex<Option<SlotView>>>);

/// Takes payload `r` in place and writes a view of it to `*out`.
///
/// Errors: as `dlslime_ring_read`, without `OUT_OF_RANGE`.
#[no_mangle]
pub extern "C" fn dlslime_ring_read_view(
    ring: *const dlslime_ring_t,
    r: dlslime_slot_ref_t,
    out: *mut *mut dlslime_ring_view_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let ring = try_arc!(ring);
        let out = try_out!(out);
        let v = try_res!(ring.read_view(r.into()));
        handle_out(std::sync::Mutex::new(Some(v)), out)
    }
}

/// The payload's address and length (`*out_data`, `*out_len`) while the view holds it.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_STALE_SLOT` (the view was
/// consumed or released).
#[no_mangle]
pub extern "C" fn dlslime_ring_view_data(
    view: *const dlslime_ring_view_t,
    out_data: *mut *const c_void,
    out_len: *mut usize,
) -> dlslime_status_t {
    ffi_boundary! {
        let v = try_ref!(view);
        let out_data = try_out!(out_data);
        let out_len = try_out!(out_len);
        let g = v.lock().unwrap_or_else(|e| e.into_inner());
        let Some(v) = g.as_ref() else {
            return fail(Error::new(Status::StaleSlot, "the view was consumed or released"));
        };
        out_data.write(v.as_ptr().cast());
        out_len.write(v.len());
        dlslime_status_t::Ok
    }
}

/// The reference the view holds (zeroed for NULL).
#[no_mangle]
pub extern "C" fn dlslime_ring_view_ref(view: *const dlslime_ring_view_t) -> dlslime_slot_ref_t {
    ffi_boundary! {
        let v = try_ref!(view);
        let g = v.lock().unwrap_or_else(|e| e.into_inner());
        g.as_ref().map(|v| v.slot_ref().into()).unwrap_or_default()
    }
}

/// Marks the payload consumed (READING → FREE; the original's `mark_consumed`). The view
/// no longer points at it.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_STALE_SLOT` (already
/// consumed or released, or the slot was taken from this process).
#[no_mangle]
pub extern "C" fn dlslime_ring_view_consume(view: *const dlslime_ring_view_t) -> dlslime_status_t {
    ffi_boundary! {
        let v = try_ref!(view);
        let taken = v.lock().unwrap_or_else(|e| e.into_inner()).take();
        match taken {
            Some(v) => status_of(v.consume()),
            None => fail(Error::new(Status::StaleSlot, "the view was consumed or released")),
        }
    }
}

/// Gives the payload back unconsumed (READING → READY; the original's
/// `release_reading`). Idempotent.
#[no_mangle]
pub extern "C" fn dlslime_ring_view_release(view: *const dlslime_ring_view_t) -> dlslime_status_t {
    ffi_boundary! {
        let v = try_ref!(view);
        if let Some(v) = v.lock().unwrap_or_else(|e| e.into_inner()).take() {
            v.release();
        }
        dlslime_status_t::Ok
    }
}

/// Frees the view (releasing the payload if it was neither consumed nor released). NULL
/// is a no-op.
#[no_mangle]
pub extern "C" fn dlslime_ring_view_free(view: *mut dlslime_ring_view_t) {
    free_body!(view)
}

/// Options of a ring server. Initialise with `dlslime_ring_server_options_init`; zero
/// fields mean the defaults. Later versions only append fields.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct dlslime_ring_server_options_t {
    pub size: usize,
    /// The longest lease granted to a read. 0: 60 s.
    pub max_lease_ms: u64,
    /// The lease of a request that names none. 0: 10 s.
    pub default_lease_ms: u64,
    /// A session idle this long (no request, no open read) is closed. 0: 120 s. Keep
    /// it above the clients' `max_idle_ms`.
    pub idle_timeout_ms: u64,
    /// Fault injection for tests: a pause between a grant and its reply. 0: none.
    pub grant_delay_ms: u64,
}

/// Fills `*opts` with the defaults. NULL is a no-op.
#[no_mangle]
pub extern "C" fn dlslime_ring_server_options_init(opts: *mut dlslime_ring_server_options_t) {
    options_init_body!(opts)
}

/// Serves rings to remote readers over endpoints: one thread and one SlimeRPC session
/// per served endpoint (the server owns that endpoint's immediate-data stream).
///
/// Ownership: owned by the caller; `dlslime_ring_server_free` stops it. Thread safety:
/// thread-safe.
pub struct dlslime_ring_server_t {
    _private: [u8; 0],
}

castable!(dlslime_ring_server_t => Box<RingServer>);

fn server_config(o: &dlslime_ring_server_options_t) -> crate::Result<RingServerConfig> {
    let mut c = RingServerConfig::default();
    c.max_lease = ms(o.max_lease_ms, c.max_lease);
    c.default_lease = ms(o.default_lease_ms, c.default_lease);
    c.idle_timeout = ms(o.idle_timeout_ms, c.idle_timeout);
    c.grant_delay = Duration::from_millis(o.grant_delay_ms);
    Ok(c)
}

/// Creates a server (`opts` may be NULL for the defaults).
#[no_mangle]
pub extern "C" fn dlslime_ring_server_new(
    opts: *const dlslime_ring_server_options_t,
    out: *mut *mut dlslime_ring_server_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let out = try_out!(out);
        let c = try_options!(opts, server_config);
        let s = try_res!(RingServer::new(c));
        handle_out(s, out)
    }
}

/// Serves `ring` under its name on every endpoint of this server.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_NAME_CONFLICT` (a ring of
/// that name is served already).
#[no_mangle]
pub extern "C" fn dlslime_ring_server_add_ring(
    server: *const dlslime_ring_server_t,
    ring: *const dlslime_ring_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let s = try_ref!(server);
        let r = try_arc!(ring);
        status_of(s.add_ring(r))
    }
}

/// Serves the rings over a connected endpoint (a direct pair) on a new thread, until the
/// endpoint dies or the server stops. `dlslime_endpoint_free` shuts the endpoint down:
/// keep it until the server is stopped.
#[no_mangle]
pub extern "C" fn dlslime_ring_server_serve_endpoint(
    server: *const dlslime_ring_server_t,
    ep: *const dlslime_endpoint_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let s = try_ref!(server);
        let ep: Arc<dyn crate::Endpoint> = try_ref!(ep).clone();
        status_of(s.serve_endpoint(ep))
    }
}

/// Serves the rings to the PeerAgent peer `alias` (dialled now with `transport`:
/// `"auto"`, `"shm"`, `"tcp"`), across the peer's reconnects, until the server stops.
#[no_mangle]
pub extern "C" fn dlslime_ring_server_serve_peer(
    server: *const dlslime_ring_server_t,
    agent: *const dlslime_peer_agent_t,
    alias: *const c_char,
    transport: *const c_char,
) -> dlslime_status_t {
    ffi_boundary! {
        let s = try_ref!(server);
        let a = try_ref!(agent);
        let alias = try_str!(alias);
        let transport = try_opt_str!(transport).unwrap_or("auto");
        status_of(s.serve_peer(a, alias, transport))
    }
}

/// Writes the server's counters to `*out`.
#[no_mangle]
pub extern "C" fn dlslime_ring_server_counters(
    server: *const dlslime_ring_server_t,
    out: *mut ServerCounters,
) -> dlslime_status_t {
    value_getter_body!(server, out, |s| s.counters())
}

/// Stops serving (open reads are finished as failed; pending operations of the served
/// endpoints are cancelled). Idempotent.
#[no_mangle]
pub extern "C" fn dlslime_ring_server_stop(
    server: *const dlslime_ring_server_t,
) -> dlslime_status_t {
    ffi_boundary! {
        try_ref!(server).stop();
        dlslime_status_t::Ok
    }
}

/// Stops and frees the server. NULL is a no-op.
#[no_mangle]
pub extern "C" fn dlslime_ring_server_free(server: *mut dlslime_ring_server_t) {
    free_body!(server)
}

/// Options of a ring client. Initialise with `dlslime_ring_client_options_init`; zero
/// fields mean the defaults. Later versions only append fields.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct dlslime_ring_client_options_t {
    pub size: usize,
    /// The deadline of one attempt, end to end. 0: 5000.
    pub timeout_ms: u64,
    /// Attempts per fetch, each on the next healthy route. 0: 2.
    pub max_attempts: u32,
    /// Fetches a batch runs at once. 0: 4.
    pub concurrency: u32,
    /// How long a route that failed retryably is skipped. 0: 30000.
    pub quarantine_ms: u64,
    /// A session unused this long is replaced (keep it below the servers'
    /// `idle_timeout_ms`). 0: 100000.
    pub max_idle_ms: u64,
    /// Rounds of a batch fetch. 0: 3.
    pub max_rounds: u32,
    /// Pause between batch rounds. 0: 50.
    pub round_backoff_ms: u32,
    /// How long past an attempt's deadline its commit may still be confirmed. 0: 1000.
    pub commit_grace_ms: u64,
}

/// Fills `*opts` with the defaults. NULL is a no-op.
#[no_mangle]
pub extern "C" fn dlslime_ring_client_options_init(opts: *mut dlslime_ring_client_options_t) {
    options_init_body!(opts)
}

/// Fetches payloads by reference `(producer, slot, generation)` from the producers'
/// serving endpoints, with rotation over healthy routes, quarantine of failing ones and
/// bounded retries.
///
/// Ownership: owned by the caller; `dlslime_ring_client_free` closes its sessions.
/// Thread safety: thread-safe (any number of threads may fetch at once).
pub struct dlslime_ring_client_t {
    _private: [u8; 0],
}

castable!(dlslime_ring_client_t => Box<RingClient>);

fn client_config(o: &dlslime_ring_client_options_t) -> crate::Result<RingClientConfig> {
    let mut c = RingClientConfig::default();
    c.timeout = ms(o.timeout_ms, c.timeout);
    c.quarantine = ms(o.quarantine_ms, c.quarantine);
    c.max_idle = ms(o.max_idle_ms, c.max_idle);
    c.round_backoff = ms(u64::from(o.round_backoff_ms), c.round_backoff);
    c.commit_grace = ms(o.commit_grace_ms, c.commit_grace);
    if o.max_attempts != 0 {
        c.max_attempts = o.max_attempts;
    }
    if o.max_rounds != 0 {
        c.max_rounds = o.max_rounds;
    }
    if o.concurrency != 0 {
        c.concurrency = o.concurrency as usize;
    }
    Ok(c)
}

/// Creates a client (`opts` may be NULL for the defaults).
#[no_mangle]
pub extern "C" fn dlslime_ring_client_new(
    opts: *const dlslime_ring_client_options_t,
    out: *mut *mut dlslime_ring_client_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let out = try_out!(out);
        let c = try_options!(opts, client_config);
        let cl = try_res!(RingClient::new(c));
        handle_out(cl, out)
    }
}

/// Adds a connected endpoint (a direct pair) serving `producer`. `dlslime_endpoint_free`
/// shuts the endpoint down: keep it while the client uses it.
#[no_mangle]
pub extern "C" fn dlslime_ring_client_add_endpoint(
    client: *const dlslime_ring_client_t,
    producer: *const c_char,
    ep: *const dlslime_endpoint_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let c = try_ref!(client);
        let producer = try_str!(producer);
        let ep: Arc<dyn crate::Endpoint> = try_ref!(ep).clone();
        c.add_endpoint(producer, ep);
        dlslime_status_t::Ok
    }
}

/// Adds the PeerAgent connection to `alias` (dialled now with `transport`, NULL:
/// `"auto"`) as a serving endpoint of `producer`; it is dialled again after the peer
/// restarts.
#[no_mangle]
pub extern "C" fn dlslime_ring_client_add_peer(
    client: *const dlslime_ring_client_t,
    producer: *const c_char,
    agent: *const dlslime_peer_agent_t,
    alias: *const c_char,
    transport: *const c_char,
) -> dlslime_status_t {
    ffi_boundary! {
        let c = try_ref!(client);
        let producer = try_str!(producer);
        let a = try_ref!(agent);
        let alias = try_str!(alias);
        let transport = try_opt_str!(transport).unwrap_or("auto");
        status_of(c.add_peer(producer, a, alias, transport))
    }
}

/// A fetched payload in a buffer the client pools: read it with
/// `dlslime_ring_payload_data` / `dlslime_ring_payload_len`; `dlslime_ring_payload_free`
/// gives the buffer back.
///
/// Ownership: owned by the caller. Thread safety: immutable, thread-safe.
pub struct dlslime_ring_payload_t {
    _private: [u8; 0],
}

castable!(dlslime_ring_payload_t => Box<Payload>);

/// Fetches payload `r` of `producer` and writes it to `*out`.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`; `DLSLIME_STATUS_UNKNOWN_HANDLE` (no route for
/// `producer`, or its server does not serve it); `DLSLIME_STATUS_STALE_SLOT` (not
/// retried); `DLSLIME_STATUS_SLOT_BUSY` (another reader held it through every attempt);
/// `DLSLIME_STATUS_TIMEOUT`, `DLSLIME_STATUS_PEER_DISCONNECTED`, ... (the last attempt's
/// failure after every attempt failed retryably).
#[no_mangle]
pub extern "C" fn dlslime_ring_client_fetch(
    client: *const dlslime_ring_client_t,
    producer: *const c_char,
    r: dlslime_slot_ref_t,
    out: *mut *mut dlslime_ring_payload_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let c = try_ref!(client);
        let producer = try_str!(producer);
        let out = try_out!(out);
        let p = try_res!(c.fetch(producer, r.into()));
        handle_out(p, out)
    }
}

/// Fetches payload `r` of `producer` into `dst` (`cap` bytes); its length goes to
/// `*out_len`. Errors as `dlslime_ring_client_fetch`, plus `DLSLIME_STATUS_OUT_OF_RANGE`
/// (`cap` too small: the payload stays in the ring).
#[no_mangle]
pub extern "C" fn dlslime_ring_client_fetch_into(
    client: *const dlslime_ring_client_t,
    producer: *const c_char,
    r: dlslime_slot_ref_t,
    dst: *mut c_void,
    cap: usize,
    out_len: *mut usize,
) -> dlslime_status_t {
    ffi_boundary! {
        let c = try_ref!(client);
        let producer = try_str!(producer);
        let out_len = try_out!(out_len);
        let d = try_slice!(mut dst, cap);
        let n = try_res!(c.fetch_into(producer, r.into(), d));
        out_len.write(n);
        dlslime_status_t::Ok
    }
}

/// Fetches `n` payloads of `producer` concurrently in bounded rounds. For each `i`,
/// `out_statuses[i]` is its status and `out_payloads[i]` its payload (NULL when the
/// status is not OK). Returns `DLSLIME_STATUS_OK` when the batch ran (whatever the
/// per-payload outcomes).
#[no_mangle]
pub extern "C" fn dlslime_ring_client_fetch_batch(
    client: *const dlslime_ring_client_t,
    producer: *const c_char,
    refs: *const dlslime_slot_ref_t,
    n: usize,
    out_payloads: *mut *mut dlslime_ring_payload_t,
    out_statuses: *mut i32,
) -> dlslime_status_t {
    ffi_boundary! {
        let c = try_ref!(client);
        let producer = try_str!(producer);
        if n > 0 && (refs.is_null() || out_payloads.is_null() || out_statuses.is_null()) {
            null_arg!(if refs.is_null() { "refs" } else if out_payloads.is_null() { "out_payloads" } else { "out_statuses" });
        }
        // SAFETY: `refs` holds `n` references (non-NULL when `n > 0`, checked above).
        let rs: Vec<SlotRef> = (0..n).map(|i| unsafe { *refs.add(i) }.into()).collect();
        for (i, res) in c.fetch_batch(producer, &rs).into_iter().enumerate() {
            let (p, st) = match res {
                Ok(p) => (box_into_ptr::<dlslime_ring_payload_t>(p), Status::Ok.code()),
                Err(e) => (std::ptr::null_mut(), e.status().code()),
            };
            // SAFETY: both output arrays hold `n` entries (checked non-NULL above), `i < n`.
            unsafe {
                out_payloads.add(i).write(p);
                out_statuses.add(i).write(st);
            }
        }
        dlslime_status_t::Ok
    }
}

/// The payload's bytes (NULL for a NULL payload or an empty one).
#[no_mangle]
pub extern "C" fn dlslime_ring_payload_data(p: *const dlslime_ring_payload_t) -> *const c_void {
    ffi_boundary! {
        // SAFETY: `p` is NULL or a live payload handle.
        match unsafe { super::cast::try_from_ptr(p) } {
            Some(p) if !p.is_empty() => p.as_ptr().cast(),
            _ => std::ptr::null(),
        }
    }
}

/// The payload's length (0 for NULL).
#[no_mangle]
pub extern "C" fn dlslime_ring_payload_len(p: *const dlslime_ring_payload_t) -> usize {
    ffi_boundary! {
        try_ref!(p).len()
    }
}

/// Gives the payload's buffer back to its client's pool. NULL is a no-op.
#[no_mangle]
pub extern "C" fn dlslime_ring_payload_free(p: *mut dlslime_ring_payload_t) {
    free_body!(p)
}

/// Writes the client's counters to `*out`.
#[no_mangle]
pub extern "C" fn dlslime_ring_client_counters(
    client: *const dlslime_ring_client_t,
    out: *mut ClientCounters,
) -> dlslime_status_t {
    value_getter_body!(client, out, |c| c.counters())
}

/// The true worst-case wall time, in milliseconds, of one fetch (`n == 0`) or of a batch
/// of `n` references with this client's options (0 for NULL).
#[no_mangle]
pub extern "C" fn dlslime_ring_client_worst_case_ms(
    client: *const dlslime_ring_client_t,
    n: usize,
) -> u64 {
    ffi_boundary! {
        let c = try_ref!(client);
        let d = if n == 0 { c.fetch_worst_case() } else { c.batch_worst_case(n) };
        d.as_millis().min(u64::MAX as u128) as u64
    }
}

/// Closes the client's sessions (new ones are made on demand). Idempotent.
#[no_mangle]
pub extern "C" fn dlslime_ring_client_close(
    client: *const dlslime_ring_client_t,
) -> dlslime_status_t {
    ffi_boundary! {
        try_ref!(client).close();
        dlslime_status_t::Ok
    }
}

/// Closes and frees the client. Payloads it returned stay valid. NULL is a no-op.
#[no_mangle]
pub extern "C" fn dlslime_ring_client_free(client: *mut dlslime_ring_client_t) {
    free_body!(client)
}
