//! The PeerAgent C ABI (`dlslime_peer_*`), called as C would call it, against a real
//! Redis and NanoCtrl: options, connect/wait, named I/O, status codes and last-error
//! messages for bad input, NULL handling, free.

mod common;
mod peer_fixture;

use std::ffi::{CStr, CString};
use std::ptr::{null, null_mut};

use dlslime::ffi::future::*;
use dlslime::ffi::peer::*;
use dlslime::ffi::status::*;
use peer_fixture::Cluster;

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn last_error() -> String {
    let mut buf = vec![0 as std::ffi::c_char; 1024];
    dlslime_last_error_message(buf.as_mut_ptr(), buf.len(), std::ptr::null_mut());
    // SAFETY: `dlslime_last_error_message` NUL-terminated the message within `buf`.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn new_agent(cl: &Cluster, alias: &str) -> *mut dlslime_peer_agent_t {
    let mut o = std::mem::MaybeUninit::<dlslime_peer_options_t>::uninit();
    dlslime_peer_options_init(o.as_mut_ptr());
    // SAFETY: `dlslime_peer_options_init` wrote every field (it writes the whole struct).
    let mut o = unsafe { o.assume_init() };
    o.heartbeat_interval_ms = 500;
    o.default_timeout_ms = 20_000;
    let mut a = null_mut();
    let st = dlslime_peer_agent_new(
        c(cl.url()).as_ptr(),
        c(alias).as_ptr(),
        c(&cl.scope).as_ptr(),
        &o,
        &mut a,
    );
    assert_eq!(st, dlslime_status_t::Ok, "{}", last_error());
    a
}

#[test]
fn c_abi_connect_and_named_io() {
    for transport in ["tcp", "shm"] {
        let cl = Cluster::start("cabi");
        let a = new_agent(&cl, "alice");
        let b = new_agent(&cl, "bob");
        let mut alias = null_mut();
        assert_eq!(
            dlslime_peer_agent_alias(a, &mut alias),
            dlslime_status_t::Ok
        );
        // SAFETY: a successful call wrote a NUL-terminated string the library owns until freed.
        assert_eq!(unsafe { CStr::from_ptr(alias) }.to_str().unwrap(), "alice");
        dlslime_string_free(alias);

        let mut src = vec![7u8; 8192];
        let mut dst = vec![0u8; 8192];
        let st = dlslime_peer_agent_register_memory_region(
            a,
            c("src").as_ptr(),
            src.as_mut_ptr().cast(),
            0,
            8192,
            null_mut(),
        );
        assert_eq!(st, dlslime_status_t::Ok, "{}", last_error());
        let mut h = u32::MAX;
        let st = dlslime_peer_agent_register_memory_region(
            b,
            c("dst").as_ptr(),
            dst.as_mut_ptr().cast(),
            0,
            8192,
            &mut h,
        );
        assert_eq!(st, dlslime_status_t::Ok, "{}", last_error());
        assert_ne!(h, u32::MAX);

        let mut conn = null_mut();
        let st =
            dlslime_peer_agent_connect_to(a, c("bob").as_ptr(), c(transport).as_ptr(), &mut conn);
        assert_eq!(st, dlslime_status_t::Ok, "{}", last_error());
        let mut t = dlslime_peer_transport_t::None;
        let st = dlslime_peer_connection_wait(conn, 30_000, &mut t);
        assert_eq!(st, dlslime_status_t::Ok, "{}", last_error());
        let want = if transport == "tcp" {
            dlslime_peer_transport_t::Tcp
        } else {
            dlslime_peer_transport_t::Shm
        };
        assert_eq!(t, want);
        assert_eq!(dlslime_peer_connection_transport(conn), want);
        assert_eq!(
            dlslime_peer_connection_state(conn),
            dlslime_peer_conn_state_t::Connected
        );

        let mut info = null_mut();
        let st = dlslime_peer_agent_get_mr_info(a, c("bob").as_ptr(), c("dst").as_ptr(), &mut info);
        assert_eq!(st, dlslime_status_t::Ok, "{}", last_error());
        let v: serde_json::Value =
            // SAFETY: as above: a library string, freed only after this read.
            serde_json::from_str(unsafe { CStr::from_ptr(info) }.to_str().unwrap()).unwrap();
        assert_eq!(v["length"], 8192);
        dlslime_string_free(info);

        // 5-tuple write src[100..) -> bob.dst[200..), 1000 bytes
        let (l, r) = (c("src"), c("dst"));
        let asg = [dlslime_named_assignment_t {
            local: l.as_ptr(),
            remote: r.as_ptr(),
            local_offset: 100,
            remote_offset: 200,
            length: 1000,
        }];
        let mut f = null_mut();
        let st = dlslime_peer_agent_write(a, c("bob").as_ptr(), asg.as_ptr(), 1, 0, &mut f);
        assert_eq!(st, dlslime_status_t::Ok, "{}", last_error());
        assert_eq!(
            dlslime_future_wait(f),
            dlslime_status_t::Ok,
            "{}",
            last_error()
        );
        dlslime_future_free(f);
        assert!(dst[200..1200].iter().all(|&x| x == 7));
        assert!(dst[..200].iter().all(|&x| x == 0));

        // 4-tuple with remote NULL: same name on both sides -> unknown on bob
        let asg = [dlslime_named_assignment_t {
            local: l.as_ptr(),
            remote: null(),
            local_offset: 0,
            remote_offset: 0,
            length: 8,
        }];
        let st = dlslime_peer_agent_read(a, c("bob").as_ptr(), asg.as_ptr(), 1, 0, &mut f);
        assert_eq!(st, dlslime_status_t::UnknownHandle);
        assert!(last_error().contains("src"), "{}", last_error());
        // bad input
        assert_eq!(
            dlslime_peer_agent_read(a, c("bob").as_ptr(), null(), 1, 0, &mut f),
            dlslime_status_t::NullParameter
        );
        assert_eq!(
            dlslime_peer_agent_write(null(), c("bob").as_ptr(), asg.as_ptr(), 1, 0, &mut f),
            dlslime_status_t::NullParameter
        );
        let mut c2 = null_mut();
        assert_eq!(
            dlslime_peer_agent_connect_to(a, c("alice").as_ptr(), null(), &mut c2),
            dlslime_status_t::InvalidArgument
        );
        assert_eq!(
            dlslime_peer_agent_connect_to(a, c("bob").as_ptr(), c("rdma").as_ptr(), &mut c2),
            dlslime_status_t::RdmaUnavailable
        );
        assert!(last_error().contains("RDMA NIC"), "{}", last_error());
        let mut co = std::mem::MaybeUninit::<dlslime_peer_connect_options_t>::zeroed();
        dlslime_peer_connect_options_init(co.as_mut_ptr());
        // SAFETY: initialised by dlslime_peer_connect_options_init.
        let mut co = unsafe { co.assume_init() };
        co.qp_num = 17;
        assert_eq!(
            dlslime_peer_agent_connect(a, c("bob").as_ptr(), &co, &mut c2),
            dlslime_status_t::InvalidArgument
        );
        co.qp_num = 2;
        let dev = c("mlx5_0");
        co.local_device = dev.as_ptr();
        assert_eq!(
            dlslime_peer_agent_connect(a, c("bob").as_ptr(), &co, &mut c2),
            dlslime_status_t::RdmaUnavailable
        );
        assert_eq!(
            dlslime_peer_agent_connect_to(a, c("zed").as_ptr(), null(), &mut c2),
            dlslime_status_t::Ok
        );
        assert_eq!(
            dlslime_peer_connection_wait(c2, 200, null_mut()),
            dlslime_status_t::Timeout
        );
        assert!(last_error().contains("zed"), "{}", last_error());
        dlslime_peer_connection_free(c2);
        assert_eq!(
            dlslime_peer_connection_state(null()),
            dlslime_peer_conn_state_t::Idle
        );
        let mut existed = false;
        assert_eq!(
            dlslime_peer_agent_unregister_memory_region(a, c("src").as_ptr(), &mut existed),
            dlslime_status_t::Ok
        );
        assert!(existed);
        let mut list = null_mut();
        assert_eq!(
            dlslime_peer_agent_list_agents(a, &mut list),
            dlslime_status_t::Ok
        );
        let l: Vec<String> =
            // SAFETY: as above: a library string, freed only after this read.
            serde_json::from_str(unsafe { CStr::from_ptr(list) }.to_str().unwrap()).unwrap();
        assert!(
            l.contains(&"alice".to_string()) && l.contains(&"bob".to_string()),
            "{l:?}"
        );
        dlslime_string_free(list);

        // a duplicate alias is NAME_CONFLICT
        let mut dup = null_mut();
        let st = dlslime_peer_agent_new(
            c(cl.url()).as_ptr(),
            c("alice").as_ptr(),
            c(&cl.scope).as_ptr(),
            null(),
            &mut dup,
        );
        assert_eq!(st, dlslime_status_t::NameConflict);
        assert!(dup.is_null(), "out-parameter untouched on failure");

        assert_eq!(dlslime_peer_agent_shutdown(b), dlslime_status_t::Ok);
        dlslime_peer_agent_free(b);
        dlslime_peer_connection_free(conn);
        dlslime_peer_agent_free(a);
        dlslime_peer_agent_free(null_mut());
        let left = cl.redis.scope_keys(&cl.scope);
        assert!(left.is_empty(), "{left:?}");
    }
}

/// A NanoCtrl that requires a token, two replicas of it (the first one dead), the token
/// in `dlslime_peer_options_t.nanoctrl_token`: PERMISSION_DENIED without it, a working
/// agent with it.
#[test]
fn c_abi_token_and_replica_list() {
    use peer_fixture::NanoCtrl;
    let token = "c-abi-token-11aa";
    let cl = Cluster::start_with_token("cabi-tok", token);
    let mut dead = NanoCtrl::start_with(&cl.redis.url, Some(token), &[]);
    dead.kill();
    let urls = format!("{},{}", dead.url, cl.url());
    let opts = |tok: Option<&CString>| {
        let mut o = std::mem::MaybeUninit::<dlslime_peer_options_t>::uninit();
        dlslime_peer_options_init(o.as_mut_ptr());
        // SAFETY: `dlslime_peer_options_init` wrote every field.
        let mut o = unsafe { o.assume_init() };
        o.register_attempts = 1;
        o.nanoctrl_token = tok.map_or(null(), |t| t.as_ptr());
        o
    };
    let mut a = null_mut();
    let st = dlslime_peer_agent_new(
        c(&urls).as_ptr(),
        c("alice").as_ptr(),
        c(&cl.scope).as_ptr(),
        &opts(None),
        &mut a,
    );
    assert_eq!(st, dlslime_status_t::PermissionDenied, "{}", last_error());
    assert!(a.is_null());
    assert!(last_error().contains("token"), "{}", last_error());
    let t = c(token);
    let st = dlslime_peer_agent_new(
        c(&urls).as_ptr(),
        c("alice").as_ptr(),
        c(&cl.scope).as_ptr(),
        &opts(Some(&t)),
        &mut a,
    );
    assert_eq!(st, dlslime_status_t::Ok, "{}", last_error());
    let owner: Option<String> = redis::cmd("HGET")
        .arg(format!("{}:agent:alice", cl.scope))
        .arg("owner")
        .query(&mut cl.redis.conn())
        .unwrap();
    assert!(owner.is_some(), "the alias is owned");
    assert_eq!(dlslime_peer_agent_shutdown(a), dlslime_status_t::Ok);
    dlslime_peer_agent_free(a);
    assert!(cl.redis.scope_keys(&cl.scope).is_empty());
}
