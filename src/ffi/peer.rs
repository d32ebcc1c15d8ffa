//! PeerAgent (`dlslime_peer_agent_t`, configured by `dlslime_peer_options_t`): registers
//! with NanoCtrl, publishes its memory regions in Redis and connects to peers by alias
//! (`dlslime_peer_connection_t`); its operations name regions
//! (`dlslime_named_assignment_t`).

use std::ffi::{c_char, c_void, CStr};
use std::time::Duration;

use super::args::handle_out;
use super::args::{buffer_ptr, future_out, opt_text, string_out, timeout};
use super::future::dlslime_future_t;
use super::memory::dlslime_mr_handle_t;
use super::options::ms;
use super::status::dlslime_status_t;
use crate::error::{Error, Status};
use crate::future::Future;
use crate::memory::device::alloc::MemoryKind;
use crate::peer::{
    ConnState, ConnectOptions, NamedAssignment, PeerAgent, PeerAgentOptions, PeerConnection,
    Transport,
};

/// Options of a PeerAgent. Initialise with `dlslime_peer_options_init` (or set `size` to
/// `sizeof(dlslime_peer_options_t)` and zero the rest): every zero/NULL field means "the
/// library default". Later versions only append fields.
#[repr(C)]
pub struct dlslime_peer_options_t {
    /// `sizeof(dlslime_peer_options_t)` as the caller was compiled.
    pub size: usize,
    /// Heartbeat period. 0: 15000 ms (NanoCtrl's record TTL is 60 s).
    pub heartbeat_interval_ms: u64,
    /// Registration attempts on connection errors and 5xx answers. 0: 5.
    pub register_attempts: u32,
    /// First backoff between registration attempts (doubles each time). 0: 1000 ms.
    pub register_backoff_ms: u64,
    /// Redis URL (`redis://[user:password@]host:port`) to use instead of the address
    /// NanoCtrl hands out, or several separated by commas (a primary and its replicas:
    /// the agent follows the primary). NULL: NanoCtrl's. Borrowed for the call.
    pub redis_url: *const c_char,
    /// Host or IP peers reach this agent's TCP listener at. NULL: the local address of
    /// the route to NanoCtrl. Borrowed for the call.
    pub advertise_host: *const c_char,
    /// Connect attempts per handshake before the connection fails. 0: 5.
    pub connect_attempts: u32,
    /// Deadline of each HTTP call to NanoCtrl. 0: 5000 ms.
    pub http_timeout_ms: u64,
    /// Deadline of operations that pass `timeout_ms = 0`. 0: 30 s (or
    /// `DLSLIME_TIMEOUT_MS`).
    pub default_timeout_ms: u64,
    /// NanoCtrl's bearer token. NULL: `$NANOCTRL_TOKEN`, else none. Borrowed for the
    /// call.
    pub nanoctrl_token: *const c_char,
    /// The agent's RDMA device (the original's `PeerAgent(device=...)`). NULL: the first
    /// visible device whose port is ACTIVE, or no RDMA; a named device that cannot be
    /// opened fails `dlslime_peer_agent_new` (`DLSLIME_STATUS_RDMA_UNAVAILABLE`).
    /// Borrowed for the call.
    pub rdma_device: *const c_char,
    /// The RDMA port. 0: 1.
    pub rdma_ib_port: u32,
}

/// Fills `*opts` with the defaults: `size = sizeof(dlslime_peer_options_t)`, every other
/// field zero/NULL. NULL is a no-op.
#[no_mangle]
pub extern "C" fn dlslime_peer_options_init(opts: *mut dlslime_peer_options_t) {
    options_init_body!(opts)
}

/// Converts C options (zero/NULL fields keep the defaults).
///
/// # Safety
/// The string fields are NULL or NUL-terminated.
unsafe fn to_options(o: &dlslime_peer_options_t) -> crate::Result<PeerAgentOptions> {
    let mut p = PeerAgentOptions::default();
    p.heartbeat_interval = ms(o.heartbeat_interval_ms, p.heartbeat_interval);
    if o.register_attempts != 0 {
        p.register_attempts = o.register_attempts;
    }
    p.register_backoff = ms(o.register_backoff_ms, p.register_backoff);
    // SAFETY: the string fields are NULL or NUL-terminated (this function's contract).
    p.redis_url = unsafe { opt_text(o.redis_url, "dlslime_peer_options_t.redis_url") }?;
    // SAFETY: as above.
    p.advertise_host =
        unsafe { opt_text(o.advertise_host, "dlslime_peer_options_t.advertise_host") }?;
    // SAFETY: as above.
    p.nanoctrl_token =
        unsafe { opt_text(o.nanoctrl_token, "dlslime_peer_options_t.nanoctrl_token") }?;
    if o.connect_attempts != 0 {
        p.connect_attempts = o.connect_attempts;
    }
    p.http_timeout = ms(o.http_timeout_ms, p.http_timeout);
    if o.default_timeout_ms != 0 {
        let t = Duration::from_millis(o.default_timeout_ms);
        p.tcp.engine.default_timeout = t;
        p.shm.engine.default_timeout = t;
        p.rdma.engine.default_timeout = t;
    }
    // SAFETY: as above.
    p.rdma.device = unsafe { opt_text(o.rdma_device, "dlslime_peer_options_t.rdma_device") }?;
    if o.rdma_ib_port != 0 {
        p.rdma.ib_port = port_number(o.rdma_ib_port, "dlslime_peer_options_t.rdma_ib_port")?;
    }
    Ok(p)
}

fn port_number(p: u32, what: &str) -> crate::Result<u8> {
    u8::try_from(p).map_err(|_| Error::invalid(format!("{what} {p} is not a port number")))
}

/// What one `dlslime_peer_agent_connect` asks for. Initialise with
/// `dlslime_peer_connect_options_init`; zero/NULL fields mean the defaults. Later
/// versions only append fields.
#[repr(C)]
pub struct dlslime_peer_connect_options_t {
    /// `sizeof(dlslime_peer_connect_options_t)` as the caller was compiled.
    pub size: usize,
    /// "auto" (NULL), "shm", "tcp" or "rdma". Borrowed for the call.
    pub transport: *const c_char,
    /// RDMA data QPs, 1..=16 (the connection uses the larger of the two sides'). 0: 1.
    pub qp_num: u32,
    /// RDMA: this side's device; must be the agent's (NULL: the agent's). Borrowed.
    pub local_device: *const c_char,
    /// RDMA: this side's port; must be the agent's (0: the agent's).
    pub ib_port: u32,
}

/// Fills `*opts` with the defaults: `size = sizeof(dlslime_peer_connect_options_t)`,
/// every other field zero/NULL. NULL is a no-op.
#[no_mangle]
pub extern "C" fn dlslime_peer_connect_options_init(opts: *mut dlslime_peer_connect_options_t) {
    options_init_body!(opts)
}

/// Converts C connect options.
///
/// # Safety
/// The string fields are NULL or NUL-terminated.
unsafe fn to_connect_options(o: &dlslime_peer_connect_options_t) -> crate::Result<ConnectOptions> {
    let what = "dlslime_peer_connect_options_t";
    // SAFETY: the string fields are NULL or NUL-terminated (this function's contract).
    let transport = unsafe { opt_text(o.transport, &format!("{what}.transport")) }?;
    // SAFETY: as above.
    let local_device = unsafe { opt_text(o.local_device, &format!("{what}.local_device")) }?;
    Ok(ConnectOptions {
        transport: transport.unwrap_or_else(|| "auto".into()),
        qp_num: if o.qp_num == 0 { 1 } else { o.qp_num as usize },
        local_device,
        ib_port: match o.ib_port {
            0 => None,
            p => Some(port_number(p, &format!("{what}.ib_port"))?),
        },
    })
}

/// The transport of a connection.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum dlslime_peer_transport {
    /// Not connected (yet).
    None = 0,
    Shm = 1,
    Tcp = 2,
    Rdma = 3,
}

/// The transport type (an `int32_t` in C).
pub type dlslime_peer_transport_t = dlslime_peer_transport;

impl From<Option<Transport>> for dlslime_peer_transport {
    fn from(t: Option<Transport>) -> Self {
        match t {
            None => Self::None,
            Some(Transport::Shm) => Self::Shm,
            Some(Transport::Tcp) => Self::Tcp,
            Some(Transport::Rdma) => Self::Rdma,
        }
    }
}

/// Where a connection to a peer stands.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum dlslime_peer_conn_state {
    Idle = 0,
    Connecting = 1,
    Connected = 2,
    /// Gave up (transport mismatch, retries exhausted); `_wait` returns the error.
    Failed = 3,
    /// Was connected; the peer left, died or restarted. Connect again to re-dial.
    Disconnected = 4,
}

/// The connection-state type (an `int32_t` in C).
pub type dlslime_peer_conn_state_t = dlslime_peer_conn_state;

impl From<ConnState> for dlslime_peer_conn_state {
    fn from(s: ConnState) -> Self {
        match s {
            ConnState::Idle => Self::Idle,
            ConnState::Connecting => Self::Connecting,
            ConnState::Connected => Self::Connected,
            ConnState::Failed => Self::Failed,
            ConnState::Disconnected => Self::Disconnected,
        }
    }
}

/// One named transfer: `local[local_offset ..]` and the peer's
/// `remote[remote_offset ..]`, `length` bytes. `remote` NULL means the same name as
/// `local` (the original's 4-tuple `(name, local_off, remote_off, len)`); otherwise it is
/// the 5-tuple `(local, remote, local_off, remote_off, len)`. The strings are borrowed
/// for the call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dlslime_named_assignment_t {
    pub local: *const c_char,
    pub remote: *const c_char,
    pub local_offset: u64,
    pub remote_offset: u64,
    pub length: u64,
}

/// A PeerAgent: registered with NanoCtrl, it publishes its memory regions in Redis and
/// connects to peers by alias through the Redis stream mailbox.
///
/// Ownership: created by `dlslime_peer_agent_new`, released by `dlslime_peer_agent_free`
/// (which shuts it down). Connections and futures it handed out stay valid after that
/// (connections report `DLSLIME_STATUS_SHUT_DOWN`; pending futures fail).
///
/// Thread safety: thread-safe; only `dlslime_peer_agent_free` must not race with other
/// calls on it.
///
/// Methods: `dlslime_peer_agent_new`, `_alias`, `_list_agents`, `_connect_to`,
/// `_register_memory_region`, `_unregister_memory_region`, `_get_mr_info`, `_read`,
/// `_write`, `_write_with_imm`, `_imm_recv`, `_send`, `_recv`, `_shutdown`, `_free`.
pub struct dlslime_peer_agent_t {
    _private: [u8; 0],
}

castable!(dlslime_peer_agent_t => Box<PeerAgent>);

/// The connection to one peer, returned by `dlslime_peer_agent_connect_to`. It names the
/// peer: after a reconnect it reports the new connection.
///
/// Ownership: owned by the caller; release with `dlslime_peer_connection_free`.
/// Thread safety: thread-safe (except `_free`).
pub struct dlslime_peer_connection_t {
    _private: [u8; 0],
}

castable!(dlslime_peer_connection_t => Box<PeerConnection>);

/// Converts the C assignment array.
///
/// # Safety
/// `a` is NULL with `n == 0`, or points at `n` readable assignments whose strings are
/// NULL (remote only) or NUL-terminated.
unsafe fn named(
    a: *const dlslime_named_assignment_t,
    n: usize,
) -> crate::Result<Vec<NamedAssignment>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if a.is_null() {
        return Err(Error::new(
            Status::NullParameter,
            "argument `assignments` is NULL with a non-zero count",
        ));
    }
    let text = |p: *const c_char, i: usize, what: &str| -> crate::Result<&str> {
        if p.is_null() {
            return Err(Error::new(
                Status::NullParameter,
                format!("assignments[{i}].{what} is NULL"),
            ));
        }
        // SAFETY: not NULL (checked above) and NUL-terminated (this function's contract);
        // the `&str` lives no longer than the call, and `NamedAssignment` copies it.
        unsafe { CStr::from_ptr(p) }
            .to_str()
            .map_err(|_| Error::invalid(format!("assignments[{i}].{what} is not valid UTF-8")))
    };
    // SAFETY: `a` is not NULL (checked above) and points at `n` readable entries (this
    // function's contract); only read during the call.
    unsafe { std::slice::from_raw_parts(a, n) }
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let local = text(x.local, i, "local")?;
            let remote = if x.remote.is_null() {
                local
            } else {
                text(x.remote, i, "remote")?
            };
            Ok(NamedAssignment::pair(
                local,
                remote,
                x.local_offset,
                x.remote_offset,
                x.length,
            ))
        })
        .collect()
}

/// The body of the named one-sided exports: checks the handles, converts the assignment
/// array, starts the operation with `start` and hands its future out.
fn named_io(
    agent: *const dlslime_peer_agent_t,
    peer: *const c_char,
    assignments: *const dlslime_named_assignment_t,
    n: usize,
    out: *mut *mut dlslime_future_t,
    start: impl FnOnce(&PeerAgent, &str, &[NamedAssignment]) -> crate::Result<Future>,
) -> dlslime_status_t {
    let agent = try_ref!(agent);
    let peer = try_str!(peer);
    let out = try_out!(out);
    // SAFETY: the header requires `assignments` to be NULL with `n == 0` or `n` readable
    // entries whose strings are NULL (remote only) or NUL-terminated and valid for the
    // call, `named`'s contract.
    let a = try_res!(unsafe { named(assignments, n) });
    future_out(try_res!(start(agent, peer, &a)), out)
}

/// Registers with NanoCtrl at `nanoctrl_url` ("http://host:port", or several replicas
/// separated by commas: the agent fails over between them) as `alias` (NULL: a
/// generated name) in `scope` (NULL or "": none), and writes the agent to `*out`. `opts`
/// may be NULL for the defaults. Blocks while registering (retries with backoff).
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_INVALID_ARGUMENT` (bad URL,
/// bad options), `DLSLIME_STATUS_NAME_CONFLICT` (a live agent holds `alias` in `scope`),
/// `DLSLIME_STATUS_PERMISSION_DENIED` (NanoCtrl requires a token: `nanoctrl_token`),
/// `DLSLIME_STATUS_IO` (NanoCtrl or Redis unreachable after the retries).
#[no_mangle]
pub extern "C" fn dlslime_peer_agent_new(
    nanoctrl_url: *const c_char,
    alias: *const c_char,
    scope: *const c_char,
    opts: *const dlslime_peer_options_t,
    out: *mut *mut dlslime_peer_agent_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let url = try_str!(nanoctrl_url);
        let alias = try_opt_str!(alias);
        let scope = try_opt_str!(scope);
        let out = try_out!(out);
        let o = try_options!(opts, to_options);
        let agent = try_res!(PeerAgent::new(url, alias, scope, o));
        handle_out(agent, out)
    }
}

/// Writes the agent's alias (the generated one when none was given) as an owned string
/// to `*out`; free it with `dlslime_string_free`.
#[no_mangle]
pub extern "C" fn dlslime_peer_agent_alias(
    agent: *const dlslime_peer_agent_t,
    out: *mut *mut c_char,
) -> dlslime_status_t {
    string_getter_body!(agent, out, |agent| agent.alias().to_string())
}

/// Writes the aliases registered in the agent's scope as a JSON array (owned string,
/// free with `dlslime_string_free`).
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_IO` (Redis).
#[no_mangle]
pub extern "C" fn dlslime_peer_agent_list_agents(
    agent: *const dlslime_peer_agent_t,
    out_json: *mut *mut c_char,
) -> dlslime_status_t {
    string_getter_body!(agent, out_json, |agent| ? agent
        .list_agents()
        .map(|v| serde_json::Value::from(v).to_string()))
}

/// Writes every peer the agent knows (dialled with `connect_to`, or one that dialled
/// it) as a JSON object `{"<peer>": {"state": "connected", "transport": "shm"}}` (owned
/// string, free with `dlslime_string_free`); `state` is `idle`, `connecting`,
/// `connected`, `failed` or `disconnected`, `transport` `shm`, `tcp`, `rdma` or null.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`.
#[no_mangle]
pub extern "C" fn dlslime_peer_agent_connections(
    agent: *const dlslime_peer_agent_t,
    out_json: *mut *mut c_char,
) -> dlslime_status_t {
    string_getter_body!(agent, out_json, |agent| {
        let mut m = serde_json::Map::new();
        for (peer, state) in agent.connections() {
            let t = agent.connection(&peer).and_then(|c| c.transport());
            m.insert(
                peer,
                serde_json::json!({
                    "state": state.as_str(),
                    "transport": t.map(|t| t.as_str()),
                }),
            );
        }
        serde_json::Value::Object(m).to_string()
    })
}

/// Writes a handle on the agent's connection to `peer` (one `connect_to` started, or
/// one the peer started) to `*out`.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_NOT_CONNECTED` (the agent
/// knows no connection to `peer`).
#[no_mangle]
pub extern "C" fn dlslime_peer_agent_connection(
    agent: *const dlslime_peer_agent_t,
    peer: *const c_char,
    out: *mut *mut dlslime_peer_connection_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let agent = try_ref!(agent);
        let peer = try_str!(peer);
        let out = try_out!(out);
        let c = try_res!(agent.connection(peer).ok_or_else(|| Error::new(
            Status::NotConnected,
            format!("no connection to '{peer}'"),
        )));
        handle_out(c, out)
    }
}

/// The exports that answer with a JSON document (owned string) about the agent itself
/// (`peer` NULL) or about `peer`.
fn about_peer(
    agent: *const dlslime_peer_agent_t,
    peer: *const c_char,
    out_json: *mut *mut c_char,
    query: impl FnOnce(&PeerAgent, Option<&str>) -> crate::Result<serde_json::Value>,
) -> dlslime_status_t {
    ffi_boundary! {
        let agent = try_ref!(agent);
        let peer = try_opt_str!(peer);
        let out_json = try_out!(out_json);
        let v = try_res!(query(agent, peer));
        string_out(v.to_string(), out_json)
    }
}

/// Writes the resource record (JSON object, owned string) of the agent itself (`peer`
/// NULL) or the one `peer` published.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_UNKNOWN_HANDLE` (`peer` is
/// not registered in the scope), `DLSLIME_STATUS_IO` (Redis).
#[no_mangle]
pub extern "C" fn dlslime_peer_agent_get_resource(
    agent: *const dlslime_peer_agent_t,
    peer: *const c_char,
    out_json: *mut *mut c_char,
) -> dlslime_status_t {
    about_peer(agent, peer, out_json, |a, p| a.get_resource(p))
}

/// Writes the names of the agent's own memory regions (`peer` NULL) or of those `peer`
/// published, as a sorted JSON array (owned string).
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_IO` (Redis).
#[no_mangle]
pub extern "C" fn dlslime_peer_agent_list_mem_keys(
    agent: *const dlslime_peer_agent_t,
    peer: *const c_char,
    out_json: *mut *mut c_char,
) -> dlslime_status_t {
    about_peer(agent, peer, out_json, |a, p| {
        a.list_mem_keys(p).map(Into::into)
    })
}

/// Writes the handle of memory region `name`: the local handle (`peer` NULL), or the
/// remote handle of `peer`'s region on the endpoint of the connection to it (looked up
/// in Redis and registered on first use).
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_UNKNOWN_HANDLE` (no such
/// region), `DLSLIME_STATUS_NOT_CONNECTED` / `DLSLIME_STATUS_PEER_DISCONNECTED` (no
/// connection to `peer`), `DLSLIME_STATUS_IO` (Redis).
#[no_mangle]
pub extern "C" fn dlslime_peer_agent_get_handle(
    agent: *const dlslime_peer_agent_t,
    name: *const c_char,
    peer: *const c_char,
    out: *mut u32,
) -> dlslime_status_t {
    ffi_boundary! {
        let agent = try_ref!(agent);
        let name = try_str!(name);
        let peer = try_opt_str!(peer);
        let out = try_out!(out);
        let h = try_res!(agent.get_handle(name, peer));
        out.write(h);
        dlslime_status_t::Ok
    }
}

/// Starts (or re-uses) the connection to `peer` and writes a handle on it to `*out`.
/// Does not block: wait with `dlslime_peer_connection_wait`. `transport` is "auto"
/// (NULL: shared memory on the same host, RDMA between hosts when both agents have an
/// active NIC port, TCP otherwise), "shm", "tcp" or "rdma". The same as
/// `dlslime_peer_agent_connect` with only the transport set.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_INVALID_ARGUMENT` (own
/// alias, empty alias, unknown transport), `DLSLIME_STATUS_RDMA_UNAVAILABLE` ("rdma" on
/// an agent without an RDMA NIC port), `DLSLIME_STATUS_SHUT_DOWN`.
#[no_mangle]
pub extern "C" fn dlslime_peer_agent_connect_to(
    agent: *const dlslime_peer_agent_t,
    peer: *const c_char,
    transport: *const c_char,
    out: *mut *mut dlslime_peer_connection_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let agent = try_ref!(agent);
        let peer = try_str!(peer);
        let transport = try_opt_str!(transport).unwrap_or("auto");
        let out = try_out!(out);
        let c = try_res!(agent.connect_to(peer, transport));
        handle_out(c, out)
    }
}

/// `dlslime_peer_agent_connect_to` with the RDMA knobs of `opts` (NULL: the defaults).
///
/// Errors: those of `dlslime_peer_agent_connect_to`, and `DLSLIME_STATUS_INVALID_ARGUMENT`
/// for a `qp_num` beyond 16 or a device or port that is not the agent's.
#[no_mangle]
pub extern "C" fn dlslime_peer_agent_connect(
    agent: *const dlslime_peer_agent_t,
    peer: *const c_char,
    opts: *const dlslime_peer_connect_options_t,
    out: *mut *mut dlslime_peer_connection_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let agent = try_ref!(agent);
        let peer = try_str!(peer);
        let out = try_out!(out);
        let o = try_options!(opts, to_connect_options);
        let c = try_res!(agent.connect_with(peer, &o));
        handle_out(c, out)
    }
}

/// Blocks until the connection is established (writes its transport to
/// `*out_transport` if that is not NULL), has failed, or `timeout_ms` passed. A lost
/// connection the agent re-dials on its own (state `DISCONNECTED`) is waited for.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_TIMEOUT` (the message names
/// the state and the connected peers), `DLSLIME_STATUS_UNSUPPORTED` (transport
/// mismatch), `DLSLIME_STATUS_PEER_DISCONNECTED` (the connection was lost and is not
/// re-dialled),
/// `DLSLIME_STATUS_SHUT_DOWN`, or the error of the last connect attempt.
#[no_mangle]
pub extern "C" fn dlslime_peer_connection_wait(
    conn: *const dlslime_peer_connection_t,
    timeout_ms: u64,
    out_transport: *mut dlslime_peer_transport_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let conn = try_ref!(conn);
        let t = try_res!(conn.wait(Duration::from_millis(timeout_ms)));
        if let Some(out) = opt_out!(out_transport) {
            out.write(Some(t).into());
        }
        dlslime_status_t::Ok
    }
}

/// The connection's state (`DLSLIME_PEER_CONN_STATE_IDLE` for NULL).
#[no_mangle]
pub extern "C" fn dlslime_peer_connection_state(
    conn: *const dlslime_peer_connection_t,
) -> dlslime_peer_conn_state_t {
    ffi_boundary! {
        // SAFETY: `conn` is NULL or a live connection handle (the header's contract).
        match unsafe { super::cast::try_from_ptr(conn) } {
            Some(c) => c.state().into(),
            None => dlslime_peer_conn_state_t::Idle,
        }
    }
}

/// The transport of the established connection (`DLSLIME_PEER_TRANSPORT_NONE` while not
/// connected, or for NULL).
#[no_mangle]
pub extern "C" fn dlslime_peer_connection_transport(
    conn: *const dlslime_peer_connection_t,
) -> dlslime_peer_transport_t {
    ffi_boundary! {
        // SAFETY: `conn` is NULL or a live connection handle (the header's contract).
        match unsafe { super::cast::try_from_ptr(conn) } {
            Some(c) => c.transport().into(),
            None => dlslime_peer_transport_t::None,
        }
    }
}

/// Releases a connection handle (the connection itself stays). NULL is a no-op.
#[no_mangle]
pub extern "C" fn dlslime_peer_connection_free(conn: *mut dlslime_peer_connection_t) {
    free_body!(conn)
}

/// Registers `[ptr, ptr + offset + length)` as region `name` (the original's semantics:
/// the region starts at `ptr`) and publishes it in Redis; peers, connected or not, can
/// use it by name. Writes the local handle to `*out_handle` if that is not NULL.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_INVALID_ARGUMENT` (empty
/// name, zero length), `DLSLIME_STATUS_NAME_CONFLICT` (the name is bound to another
/// address), `DLSLIME_STATUS_IO` (Redis).
#[no_mangle]
pub extern "C" fn dlslime_peer_agent_register_memory_region(
    agent: *const dlslime_peer_agent_t,
    name: *const c_char,
    ptr: *mut c_void,
    offset: usize,
    length: usize,
    out_handle: *mut dlslime_mr_handle_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let agent = try_ref!(agent);
        let name = try_str!(name);
        if ptr.is_null() {
            null_arg!("ptr");
        }
        // SAFETY: the header makes the caller keep the registered memory valid until it
        // is unregistered and every operation on it is done, the contract of
        // `PeerAgent::register_memory_region`.
        let h = try_res!(unsafe { agent.register_memory_region(name, ptr.cast(), offset, length) });
        if let Some(out) = opt_out!(out_handle) {
            out.write(h);
        }
        dlslime_status_t::Ok
    }
}

/// The original's `register_dmabuf_memory_region`: registers `length` bytes of dma-buf
/// `fd` from `offset` with the agent's RDMA NIC as region `name` at `iova` (the CUDA
/// device pointer the dma-buf exports) and publishes it. The NIC keeps its own reference
/// to the dma-buf: `fd` may be closed after. Writes the local handle to `*out_handle` if
/// that is not NULL.
///
/// The memory must stay valid until the region is unregistered and every operation on it
/// is done.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_DEVICE_UNAVAILABLE` (no CUDA
/// driver), `DLSLIME_STATUS_INVALID_ARGUMENT` (bad fd, `iova` not device memory),
/// `DLSLIME_STATUS_UNSUPPORTED` (no RDMA NIC, or no dma-buf support),
/// `DLSLIME_STATUS_NAME_CONFLICT`, `DLSLIME_STATUS_IO`.
#[no_mangle]
pub extern "C" fn dlslime_peer_agent_register_dmabuf_memory_region(
    agent: *const dlslime_peer_agent_t,
    name: *const c_char,
    fd: i32,
    offset: u64,
    length: usize,
    iova: u64,
    out_handle: *mut dlslime_mr_handle_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let agent = try_ref!(agent);
        let name = try_str!(name);
        // SAFETY: the header makes the caller keep the memory valid while registered and
        // pass a dma-buf of it, the contract of `register_dmabuf_memory_region`.
        let h = try_res!(unsafe { agent.register_dmabuf_memory_region(name, fd, offset, length, iova) });
        if let Some(out) = opt_out!(out_handle) {
            out.write(h);
        }
        dlslime_status_t::Ok
    }
}

/// The original's `allocate_memory_region`: allocates `length` bytes of device memory
/// of `memory_kind` (`"cuda"`; NULL means `"cuda"`; `"cuda_fabric"` is refused) on CUDA
/// device `device`, owned by the agent (freed when the agent is freed), registers and
/// publishes it as region `name`. Writes the local handle and the device pointer to the
/// out-parameters that are not NULL.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_DEVICE_UNAVAILABLE` (no CUDA
/// driver), `DLSLIME_STATUS_INVALID_ARGUMENT` (unknown kind, zero length),
/// `DLSLIME_STATUS_UNSUPPORTED` (`"cuda_fabric"`), `DLSLIME_STATUS_RESOURCE_EXHAUSTED`
/// (device memory), `DLSLIME_STATUS_NAME_CONFLICT`, `DLSLIME_STATUS_IO`.
#[no_mangle]
pub extern "C" fn dlslime_peer_agent_allocate_memory_region(
    agent: *const dlslime_peer_agent_t,
    name: *const c_char,
    length: usize,
    memory_kind: *const c_char,
    device: i32,
    out_handle: *mut dlslime_mr_handle_t,
    out_ptr: *mut u64,
) -> dlslime_status_t {
    ffi_boundary! {
        let agent = try_ref!(agent);
        let name = try_str!(name);
        // SAFETY: NULL or a NUL-terminated string (the header's contract).
        let kind = try_res!(unsafe { opt_text(memory_kind, "memory_kind") });
        let kind = try_res!(MemoryKind::parse(kind.as_deref().unwrap_or("cuda")));
        let (h, p) = try_res!(agent.allocate_memory_region(name, length, kind, device));
        if let Some(out) = opt_out!(out_handle) {
            out.write(h);
        }
        if let Some(out) = opt_out!(out_ptr) {
            out.write(p as u64);
        }
        dlslime_status_t::Ok
    }
}

/// Unregisters region `name` and removes its Redis key. Writes whether it existed to
/// `*out_existed` if that is not NULL.
#[no_mangle]
pub extern "C" fn dlslime_peer_agent_unregister_memory_region(
    agent: *const dlslime_peer_agent_t,
    name: *const c_char,
    out_existed: *mut bool,
) -> dlslime_status_t {
    ffi_boundary! {
        let agent = try_ref!(agent);
        let name = try_str!(name);
        let existed = try_res!(agent.unregister_memory_region(name));
        if let Some(out) = opt_out!(out_existed) {
            out.write(existed);
        }
        dlslime_status_t::Ok
    }
}

/// Writes the record `peer` published for its region `name` (JSON `{"agent_name",
/// "mr_name", "addr", "length", "rkey", ...}`, owned string) to `*out_json`.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_UNKNOWN_HANDLE` (not
/// published), `DLSLIME_STATUS_IO` (Redis).
#[no_mangle]
pub extern "C" fn dlslime_peer_agent_get_mr_info(
    agent: *const dlslime_peer_agent_t,
    peer: *const c_char,
    name: *const c_char,
    out_json: *mut *mut c_char,
) -> dlslime_status_t {
    ffi_boundary! {
        let agent = try_ref!(agent);
        let peer = try_str!(peer);
        let name = try_str!(name);
        let out_json = try_out!(out_json);
        let v = try_res!(agent.get_mr_info(peer, name));
        let v = try_res!(v.ok_or_else(|| Error::new(
            Status::UnknownHandle,
            format!("peer '{peer}' has not published a memory region named {name:?}"),
        )));
        string_out(v.to_string(), out_json)
    }
}

/// One-sided read from `peer` by region names: copies each remote range into the local
/// range; the future completes when every byte is in local memory. `assignments` (`n`
/// entries; NULL when `n` is 0) is only read during the call. A remote name the
/// connection does not know yet is looked up in Redis.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`, `DLSLIME_STATUS_NOT_CONNECTED`,
/// `DLSLIME_STATUS_PEER_DISCONNECTED`, `DLSLIME_STATUS_UNKNOWN_HANDLE` (unknown region
/// name), `DLSLIME_STATUS_OUT_OF_RANGE` (no memory touched), `DLSLIME_STATUS_SHUT_DOWN`.
#[no_mangle]
pub extern "C" fn dlslime_peer_agent_read(
    agent: *const dlslime_peer_agent_t,
    peer: *const c_char,
    assignments: *const dlslime_named_assignment_t,
    n: usize,
    timeout_ms: u64,
    out: *mut *mut dlslime_future_t,
) -> dlslime_status_t {
    ffi_boundary! {
        named_io(agent, peer, assignments, n, out, |agent, peer, a| agent.read(peer, a, timeout(timeout_ms)))
    }
}

/// One-sided write to `peer` by region names; the future completes when the target has
/// applied every byte. Arguments and errors as `dlslime_peer_agent_read`.
#[no_mangle]
pub extern "C" fn dlslime_peer_agent_write(
    agent: *const dlslime_peer_agent_t,
    peer: *const c_char,
    assignments: *const dlslime_named_assignment_t,
    n: usize,
    timeout_ms: u64,
    out: *mut *mut dlslime_future_t,
) -> dlslime_status_t {
    ffi_boundary! {
        named_io(agent, peer, assignments, n, out, |agent, peer, a| agent.write(peer, a, timeout(timeout_ms)))
    }
}

/// Like `dlslime_peer_agent_write`, then delivers one notification carrying `imm` to
/// the peer's `dlslime_peer_agent_imm_recv` after the data is visible there.
#[no_mangle]
pub extern "C" fn dlslime_peer_agent_write_with_imm(
    agent: *const dlslime_peer_agent_t,
    peer: *const c_char,
    assignments: *const dlslime_named_assignment_t,
    n: usize,
    imm: i32,
    timeout_ms: u64,
    out: *mut *mut dlslime_future_t,
) -> dlslime_status_t {
    ffi_boundary! {
        named_io(agent, peer, assignments, n, out, |agent, peer, a| {
            agent.write_with_imm(peer, a, imm, timeout(timeout_ms))
        })
    }
}

/// Posts a receive for the next immediate-data notification from `peer`.
#[no_mangle]
pub extern "C" fn dlslime_peer_agent_imm_recv(
    agent: *const dlslime_peer_agent_t,
    peer: *const c_char,
    timeout_ms: u64,
    out: *mut *mut dlslime_future_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let agent = try_ref!(agent);
        let peer = try_str!(peer);
        let out = try_out!(out);
        let f = try_res!(agent.imm_recv(peer, timeout(timeout_ms)));
        future_out(f, out)
    }
}

/// Sends `len` bytes at `ptr` to `peer`'s next posted receive. The buffer must stay
/// valid and unmodified until the future completes.
#[no_mangle]
pub extern "C" fn dlslime_peer_agent_send(
    agent: *const dlslime_peer_agent_t,
    peer: *const c_char,
    ptr: *const c_void,
    len: usize,
    timeout_ms: u64,
    out: *mut *mut dlslime_future_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let agent = try_ref!(agent);
        let peer = try_str!(peer);
        let out = try_out!(out);
        let Some(p) = buffer_ptr(ptr.cast_mut(), len) else { null_arg!("ptr") };
        // SAFETY: the header makes the caller keep `[ptr, ptr+len)` valid and unmodified
        // until the future completes, `PeerAgent::send`'s contract.
        let f = try_res!(unsafe { agent.send(peer, p, len, timeout(timeout_ms)) });
        future_out(f, out)
    }
}

/// Posts a receive buffer of `len` bytes for a message from `peer`. The buffer must stay
/// valid and untouched until the future completes.
#[no_mangle]
pub extern "C" fn dlslime_peer_agent_recv(
    agent: *const dlslime_peer_agent_t,
    peer: *const c_char,
    ptr: *mut c_void,
    len: usize,
    timeout_ms: u64,
    out: *mut *mut dlslime_future_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let agent = try_ref!(agent);
        let peer = try_str!(peer);
        let out = try_out!(out);
        let Some(p) = buffer_ptr(ptr, len) else { null_arg!("ptr") };
        // SAFETY: the header makes the caller keep `[ptr, ptr+len)` valid and untouched
        // until the future completes, `PeerAgent::recv`'s contract.
        let f = try_res!(unsafe { agent.recv(peer, p, len, timeout(timeout_ms)) });
        future_out(f, out)
    }
}

/// Shuts the agent down: pending operations fail, everything it published is removed
/// and its peers are notified. Idempotent.
#[no_mangle]
pub extern "C" fn dlslime_peer_agent_shutdown(
    agent: *const dlslime_peer_agent_t,
) -> dlslime_status_t {
    ffi_boundary! {
        let agent = try_ref!(agent);
        agent.shutdown();
        dlslime_status_t::Ok
    }
}

/// Shuts the agent down (as `dlslime_peer_agent_shutdown`) and releases it. NULL is a
/// no-op.
#[no_mangle]
pub extern "C" fn dlslime_peer_agent_free(agent: *mut dlslime_peer_agent_t) {
    free_body!(agent)
}

impl super::panic::Fallback for dlslime_peer_conn_state_t {
    fn null_parameter() -> Self {
        Self::Idle
    }
    fn panicked() -> Self {
        Self::Idle
    }
}

impl super::panic::Fallback for dlslime_peer_transport_t {
    fn null_parameter() -> Self {
        Self::None
    }
    fn panicked() -> Self {
        Self::None
    }
}
