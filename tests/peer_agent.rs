//! PeerAgent against a real Redis and the real NanoCtrl of this workspace, on loopback,
//! with agents in separate OS processes, over shared memory and TCP: the three handshake
//! orders, 8 agents all-to-all, named I/O with content checks, late regions, cleanup,
//! duplicate aliases and bad input (including malformed mailbox messages).

mod common;
mod peer_fixture;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::Peer;
use dlslime::peer::{ConnState, NamedAssignment, PeerAgent, Transport};
use dlslime::Status;
use peer_fixture::{
    agent, count, one_sided_both_ways, opts, refused_both_sides, register, unique, wait_for, Child,
    Cluster, T, WAIT,
};

peer_agent_child!();

/// (a) both sides dial; content checks both ways; the transport is the one asked for.
fn both_dial(transport: &str) {
    let cl = Cluster::start("both");
    let a = agent(&cl, "alice");
    let mut b = Child::start(&cl, "bob", &[]);
    let mut bufs = HashMap::new();
    register(&a, &mut bufs, "buf", 1 << 20, 1);
    b.ok("reg buf 1048576 2");
    let ca = a.connect_to("bob", transport).unwrap();
    b.ok(&format!("connect alice {transport}"));
    let t = ca.wait(WAIT).unwrap();
    let want = if transport == "auto" {
        "shm"
    } else {
        transport
    };
    assert_eq!(t.as_str(), want);
    assert_eq!(ca.transport().unwrap().as_str(), want);
    assert_eq!(b.ok("wait alice 30000"), format!("ok {want}"));
    // no qp_ready ping-pong: at most two per side (one more when both dialled at once)
    std::thread::sleep(Duration::from_millis(300));
    let sent = count(&a.stats().qp_ready_sent);
    assert!((1..=2).contains(&sent), "alice sent {sent} qp_ready");
    // write alice[0..64K) -> bob[4096..), read bob's -> alice[256K..), and the other
    // direction, driven by the child (bob's first 4 KiB are still his)
    one_sided_both_ways(&a, &mut b, &bufs);
    b.exit();
    a.shutdown();
}

common::scenario_tests! {
    handshake_both_dial_tcp => both_dial("tcp");
    handshake_both_dial_shm => both_dial("shm");
    handshake_both_dial_auto_picks_shm_on_one_host => both_dial("auto");
}

/// (b) a passive peer that never calls connect_to still connects when dialled.
#[test]
fn handshake_passive_peer() {
    for transport in ["tcp", "shm"] {
        let cl = Cluster::start("passive");
        let a = agent(&cl, "alice");
        let mut b = Child::start(&cl, "bob", &[]);
        b.ok("reg buf 65536 7");
        let c = a.connect_to("bob", transport).unwrap();
        assert_eq!(c.wait(WAIT).unwrap().as_str(), transport);
        assert_eq!(b.ok("wait alice 30000"), format!("ok {transport}"));
        // three messages in all: alice's offer, bob's answer, alice's confirmation
        let bob_stream = format!("{}:stream:bob", cl.scope);
        let alice_stream = format!("{}:stream:alice", cl.scope);
        std::thread::sleep(Duration::from_millis(300));
        let mut r = cl.redis.conn();
        let to_bob: usize = redis::cmd("XLEN").arg(&bob_stream).query(&mut r).unwrap();
        let to_alice: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(&alice_stream)
            .arg("-")
            .arg("+")
            .query(&mut r)
            .unwrap();
        let qp_to_alice = to_alice
            .iter()
            .filter(|(_, f)| f.iter().any(|(k, v)| k == "type" && v == "qp_ready"))
            .count();
        assert_eq!(
            (to_bob, qp_to_alice),
            (2, 1),
            "qp_ready messages per direction"
        );
        let mut bufs = HashMap::new();
        register(&a, &mut bufs, "local", 65536, 0);
        a.read(
            "bob",
            &[NamedAssignment::pair("local", "buf", 0, 0, 65536)],
            T,
        )
        .unwrap()
        .wait()
        .unwrap();
        assert_eq!(bufs["local"].check(7, 0, 65536), None);
        b.exit();
    }
}

/// (c) the peer dials before this agent exists: its qp_ready waits in the stream, which
/// the new agent reads from the start (a start-up that deleted the stream fails this).
#[test]
fn handshake_dial_before_peer_exists() {
    for transport in ["tcp", "shm", "auto"] {
        let cl = Cluster::start("early");
        let a = agent(&cl, "alice");
        let c = a.connect_to("bob", transport).unwrap();
        // nothing to connect to yet
        let e = c.wait(Duration::from_millis(300)).unwrap_err();
        assert_eq!(e.status(), Status::Timeout);
        assert!(e.message().contains("bob"), "{e}");
        let key = format!("{}:stream:bob", cl.scope);
        let n: usize = redis::cmd("XLEN")
            .arg(&key)
            .query(&mut cl.redis.conn())
            .unwrap();
        assert!(n >= 1, "alice's qp_ready is waiting in bob's stream");
        let mut b = Child::start(&cl, "bob", &[]);
        let want = if transport == "auto" {
            "shm"
        } else {
            transport
        };
        assert_eq!(c.wait(WAIT).unwrap().as_str(), want);
        assert_eq!(b.ok("wait alice 30000"), format!("ok {want}"));
        b.exit();
    }
}

/// Two explicit, different transports: both sides fail with a clear error; asking again
/// with a compatible one connects.
#[test]
fn explicit_transport_mismatch_is_a_clear_error() {
    let cl = Cluster::start("mismatch");
    let a = agent(&cl, "alice");
    let mut b = Child::start(&cl, "bob", &[]);
    b.ok("connect alice shm");
    let c = a.connect_to("bob", "tcp").unwrap();
    refused_both_sides(&c, &mut b, Status::Unsupported, "mismatch", "err 501");
    // asking again with a compatible transport connects
    let c = a.connect_to("bob", "shm").unwrap();
    b.ok("connect alice shm");
    assert_eq!(c.wait(WAIT).unwrap(), Transport::Shm);
    b.exit();
}

/// 8 agents in 8 processes connect all-to-all; each writes its pattern into its slot of
/// every other agent's buffer; every slot is checked.
#[allow(clippy::needless_range_loop)]
fn all_to_all(transport: &str) {
    const N: usize = 8;
    const SLOT: usize = 16384;
    let cl = Cluster::start("mesh");
    let mut kids: Vec<Child> = (0..N)
        .map(|i| Child::start(&cl, &format!("a{i}"), &[]))
        .collect();
    for (i, k) in kids.iter_mut().enumerate() {
        k.ok(&format!("reg buf {} {}", SLOT * N, 100 + i));
    }
    for i in 0..N {
        for j in 0..N {
            if i != j {
                kids[i].ok(&format!("connect a{j} {transport}"));
            }
        }
    }
    let want = if transport == "auto" {
        "shm"
    } else {
        transport
    };
    for i in 0..N {
        for j in 0..N {
            if i != j {
                assert_eq!(
                    kids[i].ok(&format!("wait a{j} 60000")),
                    format!("ok {want}")
                );
            }
        }
    }
    for i in 0..N {
        for j in 0..N {
            if i != j {
                // from its own slot, which nobody else writes
                kids[i].ok(&format!("write a{j} buf buf {0} {0} {SLOT}", i * SLOT));
            }
        }
    }
    for (j, k) in kids.iter_mut().enumerate() {
        for i in 0..N {
            if i != j {
                k.ok(&format!("check buf {} {1} {SLOT} {1}", 100 + i, i * SLOT));
            }
        }
    }
    for k in kids {
        k.exit();
    }
    // everyone shut down: nothing of this scope is left in Redis
    wait_for(Duration::from_secs(10), "no keys left", || {
        cl.redis.scope_keys(&cl.scope).is_empty().then_some(())
    });
}

common::scenario_tests! {
    eight_agents_all_to_all_tcp => all_to_all("tcp");
    eight_agents_all_to_all_shm => all_to_all("auto");
}

/// Named I/O: 4- and 5-tuples, write_with_imm, a region registered after connecting
/// (looked up in Redis on first use), unknown regions, unregister.
#[test]
fn named_io_and_late_regions() {
    for transport in ["tcp", "shm"] {
        let cl = Cluster::start("named");
        let a = agent(&cl, "alice");
        let mut b = Child::start(&cl, "bob", &[]);
        let c = a.connect_to("bob", transport).unwrap();
        b.ok(&format!("connect alice {transport}"));
        c.wait(WAIT).unwrap();
        b.ok("wait alice 30000");
        // both register after the connection exists
        let mut bufs = HashMap::new();
        register(&a, &mut bufs, "src", 262144, 11);
        register(&a, &mut bufs, "dst", 262144, 0);
        b.ok("reg late 262144 12");
        let info = a.get_mr_info("bob", "late").unwrap().unwrap();
        assert_eq!(info["length"], 262144);
        assert_eq!(info["agent_name"], "bob");
        assert!(a.get_mr_info("bob", "nope").unwrap().is_none());
        a.write(
            "bob",
            &[NamedAssignment::pair("src", "late", 0, 1000, 200000)],
            T,
        )
        .unwrap()
        .wait()
        .unwrap();
        b.ok("check late 11 1000 200000");
        a.read(
            "bob",
            &[NamedAssignment::pair("dst", "late", 5, 0, 1000)],
            T,
        )
        .unwrap()
        .wait()
        .unwrap();
        assert_eq!(bufs["dst"].check(12, 5, 1000), None);
        // the child uses a region of ours registered after the connection
        b.ok("reg mine 65536 0");
        b.ok("read alice mine src 0 0 65536");
        b.ok("check mine 11 0 65536");
        // write_with_imm: data visible before the notification
        b.ok("reg src 4096 13");
        let f = a.imm_recv("bob", T).unwrap();
        b.ok("writeimm alice src 4096 77");
        f.wait().unwrap();
        assert_eq!(f.imm_data(), 77);
        assert_eq!(bufs["src"].check(13, 0, 4096), None);
        // two-sided send/recv through the agent, both directions
        let msg = b"hello-from-alice";
        // SAFETY: `msg` is a static string, never modified.
        let f = unsafe { a.send("bob", msg.as_ptr(), msg.len(), T) }.unwrap();
        assert_eq!(b.ok("recvmsg alice 64"), "ok hello-from-alice");
        f.wait().unwrap();
        let mut rb = vec![0u8; 64];
        // SAFETY: `rb` is untouched until `f.wait()` returns, and outlives it.
        let f = unsafe { a.recv("bob", rb.as_mut_ptr(), rb.len(), T) }.unwrap();
        b.ok("sendmsg alice hi-from-bob");
        f.wait().unwrap();
        assert_eq!(&rb[..f.nbytes() as usize], b"hi-from-bob");
        // unknown names: clear synchronous errors, nothing moves
        let e = a
            .write("bob", &[NamedAssignment::pair("src", "ghost", 0, 0, 8)], T)
            .unwrap_err();
        assert_eq!(e.status(), Status::UnknownHandle);
        assert!(e.message().contains("ghost"), "{e}");
        let e = a
            .write("bob", &[NamedAssignment::same("nolocal", 0, 0, 8)], T)
            .unwrap_err();
        assert_eq!(e.status(), Status::UnknownHandle);
        // out of range
        let e = a
            .write(
                "bob",
                &[NamedAssignment::pair("src", "late", 0, 262144, 1)],
                T,
            )
            .unwrap_err();
        assert_eq!(e.status(), Status::OutOfRange);
        // unregistered on the peer: the target refuses
        b.ok("unreg late");
        assert!(a.get_mr_info("bob", "late").unwrap().is_none());
        let r = a
            .write("bob", &[NamedAssignment::pair("src", "late", 0, 0, 8)], T)
            .unwrap()
            .wait();
        assert_eq!(r.unwrap_err().status(), Status::RemoteAccess);
        assert!(a.unregister_memory_region("src").unwrap());
        assert!(!a.unregister_memory_region("src").unwrap());
        let key = format!("{}:mr:alice:src", cl.scope);
        let exists: i64 = redis::cmd("EXISTS")
            .arg(&key)
            .query(&mut cl.redis.conn())
            .unwrap();
        assert_eq!(exists, 0);
        b.exit();
    }
}

#[test]
fn bad_input() {
    let cl = Cluster::start("bad");
    let a = agent(&cl, "alice");
    // self-connect, rdma without a NIC (this host has none), unknown transport, empty
    // alias, qp_num out of range
    assert_eq!(
        a.connect_to("alice", "auto").err().unwrap().status(),
        Status::InvalidArgument
    );
    let e = a.connect_to("bob", "rdma").err().unwrap();
    assert_eq!(e.status(), Status::RdmaUnavailable);
    assert!(e.message().contains("RDMA NIC"), "{e}");
    let bad_qp = dlslime::peer::ConnectOptions {
        qp_num: 17,
        ..Default::default()
    };
    assert_eq!(
        a.connect_with("bob", &bad_qp).err().unwrap().status(),
        Status::InvalidArgument
    );
    assert_eq!(
        a.connect_to("bob", "ib").err().unwrap().status(),
        Status::InvalidArgument
    );
    assert_eq!(
        a.connect_to("", "auto").err().unwrap().status(),
        Status::InvalidArgument
    );
    // unknown peer: a clear timeout naming the peer and the state
    let c = a.connect_to("nobody", "tcp").unwrap();
    let e = c.wait(Duration::from_millis(500)).unwrap_err();
    assert_eq!(e.status(), Status::Timeout);
    assert!(
        e.message().contains("nobody") && e.message().contains("connecting"),
        "{e}"
    );
    // operations towards a peer that is not connected
    assert_eq!(
        a.write("nobody", &[NamedAssignment::same("x", 0, 0, 1)], T)
            .unwrap_err()
            .status(),
        Status::NotConnected
    );
    assert_eq!(
        a.read("stranger", &[NamedAssignment::same("x", 0, 0, 1)], T)
            .unwrap_err()
            .status(),
        Status::NotConnected
    );
    // malformed messages injected into alice's stream: logged, skipped, counted
    let stream = format!("{}:stream:alice", cl.scope);
    let mut r = cl.redis.conn();
    let bad: Vec<Vec<(&str, &str)>> = vec![
        vec![("garbage", "1")],
        vec![("type", "qp_ready")],
        vec![
            ("type", "qp_ready"),
            ("peer", "bob"),
            ("qp_info", "{nope"),
            ("conn_meta", "{}"),
        ],
        vec![
            ("type", "qp_ready"),
            ("peer", "bob"),
            ("qp_info", "{}"),
            ("conn_meta", "[1,2]"),
        ],
        vec![
            ("type", "qp_ready"),
            ("peer", "bob"),
            ("qp_info", "{}"),
            ("conn_meta", "{\"src\":\"bob\"}"),
        ],
        vec![("type", "teleport"), ("peer", "bob")],
        vec![("type", "connect_peer"), ("peer", "alice")],
    ];
    for fields in &bad {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&stream).arg("*");
        for (k, v) in fields {
            cmd.arg(*k).arg(*v);
        }
        let _: String = cmd.query(&mut r).unwrap();
    }
    // a qp_ready whose qp_info lies (wrong transport fields): the connect fails, is
    // retried, and never takes the agent down
    let before = count(&a.stats().malformed_messages);
    // (one of them, conn_meta without src_instance/src_nonce, is the original agent's
    // format: not malformed, the connection to its sender fails instead)
    wait_for(
        Duration::from_secs(10),
        "malformed messages counted",
        || (count(&a.stats().malformed_messages) >= before.max(bad.len() as u64 - 1)).then_some(()),
    );
    assert_eq!(count(&a.stats().original_peers), 1);
    // the agent keeps working: a real peer connects
    let mut b = Child::start(&cl, "bob", &[]);
    let c = a.connect_to("bob", "tcp").unwrap();
    assert_eq!(c.wait(WAIT).unwrap(), Transport::Tcp);
    b.ok("wait alice 30000");
    let s = b.ok("stats");
    assert_eq!(s, "ok 0", "bob saw no malformed messages");
    b.exit();
}

#[test]
fn duplicate_alias_is_a_clear_error() {
    let cl = Cluster::start("dup");
    let a = agent(&cl, "alice");
    let e = PeerAgent::new(cl.url(), Some("alice"), Some(&cl.scope), opts(500))
        .err()
        .unwrap();
    assert_eq!(e.status(), Status::NameConflict);
    assert!(e.message().contains("alice"), "{e}");
    // from another process too
    let mut env = vec![
        ("PEER_URL", cl.url().to_string()),
        ("PEER_SCOPE", cl.scope.clone()),
        ("PEER_ALIAS", "alice".to_string()),
        ("PEER_HB_MS", "500".to_string()),
    ];
    let mut p = Peer::spawn("peer_agent_child", &env);
    let r = p.recv();
    assert!(r.starts_with("err 104"), "{r}");
    // the same alias in another scope is fine; generated names are unique
    env[1].1 = unique("other");
    let mut p = Peer::spawn("peer_agent_child", &env);
    assert_eq!(p.recv(), "ready alice");
    let g1 = PeerAgent::new(cl.url(), None, Some(&cl.scope), opts(500)).unwrap();
    let g2 = PeerAgent::new(cl.url(), None, Some(&cl.scope), opts(500)).unwrap();
    assert_ne!(g1.alias(), g2.alias());
    assert!(g1.alias().starts_with("agent-"), "{}", g1.alias());
    let mut listed = a.list_agents().unwrap();
    listed.sort();
    assert!(listed.contains(&"alice".to_string()) && listed.contains(&g1.alias().to_string()));
    // a bad URL and an unreachable NanoCtrl fail clearly
    let e = PeerAgent::new("ftp://x", Some("z"), None, opts(500))
        .err()
        .unwrap();
    assert_eq!(e.status(), Status::InvalidArgument);
    let port = peer_fixture::free_port();
    let t0 = Instant::now();
    let e = PeerAgent::new(
        &format!("http://127.0.0.1:{port}"),
        Some("z"),
        None,
        opts(500),
    )
    .err()
    .unwrap();
    assert_eq!(e.status(), Status::Io, "{e}");
    assert!(e.message().contains("3 attempts"), "{e}");
    assert!(
        t0.elapsed() >= Duration::from_millis(600),
        "backoff 200+400 ms"
    );
}

/// Shutdown removes everything the agent published and notifies its peers: the peer's
/// connection becomes disconnected and its pending operations fail.
#[test]
fn shutdown_cleans_up_and_notifies_peers() {
    for transport in ["tcp", "shm"] {
        let cl = Cluster::start("bye");
        let a = agent(&cl, "alice");
        let mut bufs = HashMap::new();
        register(&a, &mut bufs, "buf", 4096, 1);
        let mut b = Child::start(&cl, "bob", &[]);
        b.ok("reg buf 4096 2");
        let c = a.connect_to("bob", transport).unwrap();
        c.wait(WAIT).unwrap();
        b.ok("wait alice 30000");
        assert!(cl
            .redis
            .scope_keys(&cl.scope)
            .iter()
            .any(|k| k.ends_with(":mr:alice:buf")));
        let pending = a.imm_recv("bob", Some(Duration::from_secs(60))).unwrap();
        let t0 = Instant::now();
        b.ok("shutdown");
        // bob's cleanup notice reaches alice: connection gone, pending op failed
        wait_for(Duration::from_secs(5), "alice sees bob leave", || {
            (c.state() == ConnState::Disconnected).then_some(())
        });
        let e = pending.wait().unwrap_err();
        assert!(
            matches!(e.status(), Status::Cancelled | Status::PeerDisconnected),
            "{e}"
        );
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(c.wait(WAIT).unwrap_err().status(), Status::PeerDisconnected);
        a.shutdown();
        a.shutdown(); // idempotent
        assert_eq!(
            a.connect_to("bob", "tcp").err().unwrap().status(),
            Status::ShutDown
        );
        let left = cl.redis.scope_keys(&cl.scope);
        assert!(left.is_empty(), "keys left after shutdown: {left:?}");
        b.exit();
    }
}

/// Unscoped agents (the original listened on `:inbox:{alias}` and lost cleanup notices):
/// they connect, get each other's cleanup notice, and leave no key behind.
#[test]
fn unscoped_agents_connect_and_get_cleanup_notices() {
    let cl = Cluster::start("unscoped");
    let a = PeerAgent::new(cl.url(), Some("alice"), None, opts(500)).unwrap();
    assert_eq!(a.scope(), None);
    let mut b = Child::start(&cl, "bob", &[("PEER_SCOPE", String::new())]);
    b.ok("reg buf 4096 3");
    let c = a.connect_to("bob", "tcp").unwrap();
    c.wait(WAIT).unwrap();
    let keys = cl.redis.all_keys();
    assert!(
        keys.contains(&"agent:bob".to_string()) && keys.contains(&"mr:bob:buf".to_string()),
        "{keys:?}"
    );
    let pending = a.imm_recv("bob", Some(Duration::from_secs(60))).unwrap();
    b.ok("shutdown");
    wait_for(
        Duration::from_secs(5),
        "alice gets bob's cleanup notice",
        || (c.state() == ConnState::Disconnected).then_some(()),
    );
    assert!(pending.wait().is_err());
    wait_for(Duration::from_secs(5), "the notice on inbox:alice", || {
        let n = count(&a.stats().cleanup_notices);
        (n >= 1).then_some(())
    });
    b.exit();
    a.shutdown();
    let left: Vec<String> = cl
        .redis
        .all_keys()
        .into_iter()
        .filter(|k| !k.starts_with("nano_meta:"))
        .collect();
    assert!(left.is_empty(), "keys left: {left:?}");
}

/// Reads the qp_ready messages in `stream` as `(conn_meta, qp_info)`.
fn qp_readies(cl: &Cluster, stream: &str) -> Vec<(serde_json::Value, serde_json::Value)> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(&mut cl.redis.conn())
        .unwrap();
    entries
        .into_iter()
        .filter_map(|(_, f)| {
            let get = |k: &str| f.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
            (get("type")? == "qp_ready").then(|| {
                (
                    serde_json::from_str(&get("conn_meta").unwrap()).unwrap(),
                    serde_json::from_str(&get("qp_info").unwrap()).unwrap(),
                )
            })
        })
        .collect()
}

/// A failed connect is retried with a fresh endpoint, not left stalled. The peer here is
/// the test itself speaking the mailbox protocol: its first answer points at a closed
/// port (alice's connect fails), its second at a real TCP endpoint.
#[test]
fn failed_connect_is_retried() {
    use dlslime::peer::http::Http;
    use dlslime::transport::tcp::TcpEndpoint;
    use dlslime::Endpoint;
    let cl = Cluster::start("retry");
    let a = agent(&cl, "alice");
    // register "mallory" so that alice answers it
    let http = Http::new(cl.url(), Duration::from_secs(5)).unwrap();
    let r = http
        .post(
            "/start_peer_agent",
            &serde_json::json!({"alias": "mallory", "address": "127.0.0.1", "scope": cl.scope}),
        )
        .unwrap();
    assert_eq!(r.code, 200, "{:?}", r.body);
    let c = a.connect_to("mallory", "tcp").unwrap();
    let to_m = format!("{}:stream:mallory", cl.scope);
    let to_a = format!("{}:stream:alice", cl.scope);
    let first = wait_for(WAIT, "alice's offer", || {
        qp_readies(&cl, &to_m).into_iter().next()
    });
    let (meta, _) = first;
    let (ai, an1) = (
        meta["src_instance"].as_u64().unwrap(),
        meta["src_nonce"].as_u64().unwrap(),
    );
    assert!(meta["dst_nonce"].is_null());
    // a real endpoint whose info we first hand out with a dead port
    let mut buf = vec![0u8; 4096];
    let ep = TcpEndpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    // SAFETY: `buf` outlives `ep` (declared first, dropped last), and is read below only after
    // the write into it has completed.
    unsafe {
        ep.register_memory_region("buf", buf.as_mut_ptr(), buf.len())
            .unwrap()
    };
    let mut bogus = ep.endpoint_info();
    let dead_port = peer_fixture::free_port();
    bogus["port"] = dead_port.into();
    let send = |nonce: u64, dst_nonce: u64, info: &serde_json::Value| {
        let meta = serde_json::json!({
            "conn_id": "mallory", "src": "mallory", "dst": "alice", "src_instance": 7,
            "src_nonce": nonce, "dst_instance": ai, "dst_nonce": dst_nonce,
            "transport": "tcp", "transport_request": "tcp", "host_id": "elsewhere",
        });
        let _: String = redis::cmd("XADD")
            .arg(&to_a)
            .arg("*")
            .arg("type")
            .arg("qp_ready")
            .arg("peer")
            .arg("mallory")
            .arg("qp_info")
            .arg(info.to_string())
            .arg("conn_meta")
            .arg(meta.to_string())
            .query(&mut cl.redis.conn())
            .unwrap();
    };
    send(1, an1, &bogus);
    // alice's connect to the dead port fails; she starts over with a new endpoint
    let (meta2, info2) = wait_for(WAIT, "alice's second offer", || {
        qp_readies(&cl, &to_m)
            .into_iter()
            .find(|(m, _)| m["src_nonce"].as_u64().unwrap() > an1)
    });
    let an2 = meta2["src_nonce"].as_u64().unwrap();
    assert!(count(&a.stats().connect_failures) >= 1);
    assert_ne!(c.state(), ConnState::Connected);
    // now the real one: alice connects to it, and it to alice
    send(2, an2, &ep.endpoint_info());
    ep.connect(&info2).unwrap();
    assert_eq!(c.wait(WAIT).unwrap(), Transport::Tcp);
    let mut src = vec![9u8; 4096];
    // SAFETY: `src` stays alive and unmodified until the write from it has completed; it is
    // dropped at the end, with no operation pending.
    unsafe {
        a.register_memory_region("src", src.as_mut_ptr(), 0, src.len())
            .unwrap()
    };
    a.write(
        "mallory",
        &[NamedAssignment::pair("src", "buf", 0, 100, 1000)],
        T,
    )
    .unwrap()
    .wait()
    .unwrap();
    assert!(buf[100..1100].iter().all(|&x| x == 9));
    assert!(buf[..100].iter().all(|&x| x == 0));
    drop(src);
}

/// Both agents call `connect_to` at about the same time (in both orders, 0 to 30 ms
/// apart), round after round with fresh agents in two processes. Once `wait()` returns
/// on a side, the connection must stay `Connected` there (polled every millisecond for
/// 300 ms, starting at once), a write issued right after `wait()` must succeed, and a
/// named write + read round trip checks content. Regression test: a side that answered
/// the peer's dial before its own `connect_to` replaced its endpoint when `connect_to`
/// came, so the peer, already connected (its `wait()` had returned), tore down and went
/// back to `connecting` (seen about once in 40 runs of the Python tests).
fn both_dial_at_once_repeatedly(transport: &str) {
    let rounds: usize = std::env::var("PEER_CROSS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let cl = Cluster::start("cross");
    for round in 0..rounds {
        let (an, bn) = (format!("alice{round}"), format!("bob{round}"));
        let ctx = format!("{transport} round {round}");
        let a = agent(&cl, &an);
        let mut b = Child::start(&cl, &bn, &[]);
        let (sa, sb) = (2 * round as u64 + 10, 2 * round as u64 + 11);
        let mut bufs = HashMap::new();
        register(&a, &mut bufs, "buf", 65536, sa);
        b.ok(&format!("reg buf 65536 {sb}"));
        // bob: connect_to + wait + hold, like the Python test's peer
        let gap = Duration::from_micros([0, 1000, 3000, 8000, 15000, 30000][(round / 2) % 6]);
        let dial = format!("dialhold {an} {transport} 300");
        let ca = if round % 2 == 0 {
            b.p.send(&dial);
            std::thread::sleep(gap);
            a.connect_to(&bn, transport).unwrap()
        } else {
            let c = a.connect_to(&bn, transport).unwrap();
            std::thread::sleep(gap);
            b.p.send(&dial);
            c
        };
        let t = ca
            .wait(WAIT)
            .unwrap_or_else(|e| panic!("{ctx}: alice's wait: {e}"));
        let want = if transport == "auto" {
            "shm"
        } else {
            transport
        };
        assert_eq!(t.as_str(), want, "{ctx}");
        // an operation issued right after wait() returned must succeed ...
        let w = a
            .write(&bn, &[NamedAssignment::same("buf", 0, 0, 4096)], T)
            .and_then(|f| f.wait());
        // ... and the connection stays up, on both sides
        let mine = peer_fixture::hold_connected(&ca, Duration::from_millis(300));
        let theirs = b.p.recv();
        assert_eq!(
            mine,
            Ok(()),
            "{ctx}: alice's connection to bob (write: {w:?})"
        );
        assert_eq!(
            theirs,
            format!("ok {want}"),
            "{ctx}: bob's connection to alice"
        );
        w.unwrap_or_else(|e| panic!("{ctx}: write right after wait(): {e}"));
        // one endpoint pair: each side sent its offer and at most one answer (a side that
        // replaced its endpoint would have sent more)
        let sent = count(&a.stats().qp_ready_sent);
        assert!((1..=2).contains(&sent), "{ctx}: alice sent {sent} qp_ready");
        let sent: u64 = b.ok("qpsent")[3..].parse().unwrap();
        assert!((1..=2).contains(&sent), "{ctx}: bob sent {sent} qp_ready");
        // named write + read with content checks
        b.ok(&format!("check buf {sa} 0 4096"));
        a.read(&bn, &[NamedAssignment::same("buf", 8192, 8192, 8192)], T)
            .and_then(|f| f.wait())
            .unwrap_or_else(|e| panic!("{ctx}: read: {e}"));
        assert_eq!(bufs["buf"].check_from(sb, 8192, 8192, 8192), None, "{ctx}");
        assert_eq!(
            a.connections().get(&bn),
            Some(&ConnState::Connected),
            "{ctx}"
        );
        b.exit();
        a.shutdown();
    }
}

common::scenario_tests! {
    both_dial_at_once_repeatedly_tcp => both_dial_at_once_repeatedly("tcp");
    both_dial_at_once_repeatedly_shm => both_dial_at_once_repeatedly("shm");
    both_dial_at_once_repeatedly_auto => both_dial_at_once_repeatedly("auto");
}

/// Peers that are original DLSlime agents (the published wheel, HEAD's Python agent):
/// their records and `qp_ready` messages are understood, not logged as malformed, and a
/// connection to them, which cannot work (their data transports differ), fails at once
/// with an error saying so instead of after a timeout. Both agents are played by the
/// test through NanoCtrl and Redis, with the shapes in spec §2 and §5.
#[test]
fn original_agents_fail_at_once() {
    use dlslime::peer::http::Http;
    let cl = Cluster::start("orig");
    let a = agent(&cl, "alice");
    let http = Http::new(cl.url(), Duration::from_secs(5)).unwrap();
    // 1. registered with the original's resource record (discover_topology's shape, no
    //    NIC: the 0.1.23 wheel on a host without RDMA, connecting over its TCP)
    let resource = serde_json::json!({
        "schema_version": 1, "host": {"hostname": "h", "address": "127.0.0.1"},
        "nics": [], "accelerators": [], "memory_keys": [], "topology_epoch": 1,
        "topology_backends": {},
    });
    let r = http
        .post(
            "/start_peer_agent",
            &serde_json::json!({"alias": "orig-tcp", "address": "127.0.0.1",
                                "resource": resource, "scope": cl.scope}),
        )
        .unwrap();
    assert_eq!(r.code, 200, "{:?}", r.body);
    let t = std::time::Instant::now();
    let e = a
        .connect_to("orig-tcp", "auto")
        .unwrap()
        .wait(Duration::from_secs(25))
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(e.status(), Status::Unsupported, "{e}");
    assert!(
        e.message().contains("original DLSlime") && e.message().contains("TCP wire"),
        "{e}"
    );
    // 2. registered without a resource record (cannot be told apart), then it answers
    //    alice's dial with the original's qp_ready (RDMA queue pairs)
    let r = http
        .post(
            "/start_peer_agent",
            &serde_json::json!({"alias": "orig-rdma", "address": "127.0.0.1", "scope": cl.scope}),
        )
        .unwrap();
    assert_eq!(r.code, 200, "{:?}", r.body);
    let c = a.connect_to("orig-rdma", "auto").unwrap();
    let meta = serde_json::json!({
        "conn_id": "orig-rdma:mlx5_0:port1->alice:mlx5_0:port1#qp1", "src": "orig-rdma",
        "dst": "alice", "src_device": "mlx5_0", "dst_device": "mlx5_0", "ib_port": 1,
        "qp_num": 1, "link_type": "RoCE", "profile": "default",
    });
    let qp = serde_json::json!({"gid": {"subnet_prefix": 1, "interface_id": 2}, "gidx": 3,
                                "lid": 0, "qpn": 77, "psn": 5, "mtu": 5});
    let qp_info = serde_json::json!({
        "mr_info": {}, "io_info": {"data_channel_info": [qp]},
        "msg_info": {"meta_channel_info": [qp], "data_channel_info": [qp],
                     "remote_meta_base": {"addr": 4096, "rkey": 9, "length": 64}},
    });
    let t = std::time::Instant::now();
    let _: String = redis::cmd("XADD")
        .arg(format!("{}:stream:alice", cl.scope))
        .arg("*")
        .arg("type")
        .arg("qp_ready")
        .arg("peer")
        .arg("orig-rdma")
        .arg("qp_info")
        .arg(qp_info.to_string())
        .arg("conn_meta")
        .arg(meta.to_string())
        .arg("timestamp")
        .arg("1795283257.8616328")
        .query(&mut cl.redis.conn())
        .unwrap();
    let e = c.wait(Duration::from_secs(25)).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(e.status(), Status::Unsupported, "{e}");
    assert!(
        e.message().contains("original DLSlime") && e.message().contains("RDMA"),
        "{e}"
    );
    let st = a.stats();
    assert_eq!(
        count(&st.malformed_messages),
        0,
        "the original's messages are not malformed"
    );
    assert_eq!(count(&st.original_peers), 1);
}
