//! SlimeRPC reply buffers (wire version 5), two OS processes: over shared memory a call
//! with a large request announces a reply buffer of its own and the server writes the
//! reply straight into it (an echo is two copies of the payload). Checked: sizes around
//! the slot size and the announcement threshold, 16 MiB, a reply kept by its future
//! while later calls reuse the slot, a reply larger than the announced buffer (takes the
//! ordinary path, content intact), a placed reply claiming more than was announced
//! (`Truncated`) or placed without an announcement (`Protocol`), a peer killed mid-call,
//! and TCP untouched (no reply buffer).

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{check_pattern, fill_pattern, rpc_endpoint, Parent, Peer};
use dlslime::rpc::call::PLACE_MIN;
use dlslime::rpc::{RpcConfig, RpcSession, Service};
use dlslime::{Endpoint, Status};

const T: Option<Duration> = Some(Duration::from_secs(60));

fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap())
}

fn u64s(v: &[u64], len: usize) -> Vec<u8> {
    let mut b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    b.resize(len.max(b.len()), 0);
    b
}

/// Methods by sorted name; `forge` is answered by the child's loop itself.
fn service() -> Service {
    Service::new()
        .method("echo", |p| Ok(p.to_vec()))
        .method("forge", |_| Ok(Vec::new()))
        // [len u64][seed u64] (padded) -> len bytes of pattern(seed)
        .method("grow", |p| {
            let mut v = vec![0u8; u64_at(p, 0) as usize];
            fill_pattern(&mut v, u64_at(p, 1));
            Ok(v)
        })
        // [ms u64] (padded) -> the request, after ms milliseconds
        .method("sleep", |p| {
            std::thread::sleep(Duration::from_millis(u64_at(p, 0)));
            Ok(p.to_vec())
        })
        .inplace_method("upper", |p| {
            p.make_ascii_uppercase();
            Ok(p.len())
        })
}

fn tag(name: &str) -> u32 {
    service().tag(name).unwrap()
}

fn config() -> RpcConfig {
    RpcConfig {
        slot_count: 2,
        ..Default::default()
    }
}

/// The server process: serves `service()`, answering `forge` ([claimed u64]) with a
/// placed reply claiming `claimed` bytes and writing none.
#[test]
#[ignore]
fn reply_buffer_child() {
    let Some(mut parent) = Parent::child() else {
        return;
    };
    let cfg = config();
    let (ep, mem) = rpc_endpoint(&std::env::var("RPC_TRANSPORT").unwrap(), &cfg);
    parent.connect_endpoint(&*ep);
    let sess = RpcSession::with_memory(ep, mem, cfg).unwrap();
    parent.send("session");
    let svc = service();
    while let Ok(Some(r)) = sess.poll_request(Some(Duration::from_secs(600))) {
        if r.tag() == tag("forge") {
            let claimed = u64_at(r.payload(), 0);
            r.reply_placed_claiming(claimed).unwrap();
        } else {
            svc.handle(r).unwrap();
        }
    }
}

fn pair(transport: &str) -> (RpcSession, Peer) {
    let cfg = config();
    let (ep, mem) = rpc_endpoint(transport, &cfg);
    let mut peer = Peer::spawn(
        "reply_buffer_child",
        &[("RPC_TRANSPORT", transport.to_string())],
    );
    peer.connect_endpoint(&*ep);
    let sess = RpcSession::with_memory(ep, mem, cfg).unwrap();
    peer.expect("session");
    (sess, peer)
}

fn placed(s: &RpcSession) -> u64 {
    s.stats().placed_received.load(Ordering::Relaxed)
}

#[test]
fn shm_replies_are_written_into_the_callers_buffer() {
    let (s, _peer) = pair("shm");
    let cap = s.slot_capacity();
    // Around the threshold and the slot: a request of cap - 24 bytes or less carries the
    // announcement in its slot, a larger one goes bulk with it.
    let sizes = [
        PLACE_MIN - 1,
        PLACE_MIN,
        cap - 25,
        cap - 24,
        cap - 23,
        cap,
        cap + 1,
        1 << 20,
        16 << 20,
    ];
    for n in sizes {
        let mut m = vec![0u8; n];
        fill_pattern(&mut m, n as u64);
        let before = placed(&s);
        let mut f = s.call(tag("echo"), &m).unwrap();
        let r = f.wait_ok(T).unwrap();
        assert!(r == &m[..], "echo of {n} bytes differs");
        // The first reply into a fresh buffer may miss it (the server has not mapped
        // the new allocation yet); every later one lands in it.
        drop(f);
        let mut f = s.call(tag("echo"), &m).unwrap();
        assert!(f.wait_ok(T).unwrap() == &m[..], "echo of {n} bytes differs");
        let want = if n >= PLACE_MIN { 1 } else { 0 };
        assert!(
            placed(&s) - before >= want && placed(&s) - before <= 2 * want,
            "{n} bytes: {} placed replies",
            placed(&s) - before
        );
        // in place of the request on the server (reply_from_payload)
        let m: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
        let mut f = s.call(tag("upper"), &m).unwrap();
        assert!(
            f.wait_ok(T).unwrap() == &m.to_ascii_uppercase()[..],
            "upper of {n} bytes differs"
        );
    }
    assert!(placed(&s) >= 14, "{} placed replies", placed(&s));
    // A future keeps its reply while later calls (2 slots) reuse the slots: the reply
    // buffer is the call's, not the slot's.
    let n = 16 << 20;
    let mut a = vec![0u8; n];
    fill_pattern(&mut a, 1);
    let mut fa = s.call(tag("echo"), &a).unwrap();
    fa.wait_ok(T).unwrap();
    for seed in 2..6 {
        let mut b = vec![0u8; n];
        fill_pattern(&mut b, seed);
        let mut fb = s.call(tag("echo"), &b).unwrap();
        assert_eq!(check_pattern(fb.wait_ok(T).unwrap(), seed), None);
    }
    assert_eq!(fa.reply().len(), n);
    assert_eq!(
        check_pattern(fa.reply(), 1),
        None,
        "an earlier reply was overwritten"
    );
}

#[test]
fn shm_a_reply_larger_than_the_announced_buffer_takes_the_ordinary_path() {
    let (s, _peer) = pair("shm");
    for (req, reply) in [
        (PLACE_MIN, 2 << 20),
        (1 << 20, (1 << 20) + 1),
        (PLACE_MIN, 1),
    ] {
        for _ in 0..2 {
            let before = placed(&s);
            let mut f = s.call(tag("grow"), &u64s(&[reply as u64, 9], req)).unwrap();
            let r = f.wait_ok(T).unwrap();
            assert_eq!(r.len(), reply);
            assert_eq!(check_pattern(r, 9), None, "{reply}-byte reply");
            if reply > req.max(s.slot_capacity()) {
                assert_eq!(placed(&s), before, "a {reply}-byte reply was placed");
            }
        }
    }
}

#[test]
fn shm_a_placed_reply_over_the_announced_capacity_fails_the_call() {
    let (s, _peer) = pair("shm");
    let cap = s.slot_capacity();
    // The announced buffer holds max(request, slot capacity) bytes at least; claiming
    // far more is refused, not read.
    let mut f = s.call(tag("forge"), &u64s(&[1 << 40], PLACE_MIN)).unwrap();
    let e = f.wait(T).unwrap_err();
    assert_eq!(e.status(), Status::Truncated, "{e}");
    assert!(
        e.message().contains("larger than the call's reply buffer"),
        "{e}"
    );
    // A placed reply to a call that announced no buffer.
    let mut f = s.call(tag("forge"), &u64s(&[4], 16)).unwrap();
    let e = f.wait(T).unwrap_err();
    assert_eq!(e.status(), Status::Protocol, "{e}");
    // Within the capacity it is accepted (its bytes are whatever the buffer held).
    let mut f = s
        .call(tag("forge"), &u64s(&[cap as u64], PLACE_MIN))
        .unwrap();
    assert_eq!(f.wait_ok(T).unwrap().len(), cap);
    // The session goes on.
    let m = vec![3u8; 1 << 20];
    assert!(s.call(tag("echo"), &m).unwrap().wait_ok(T).unwrap() == &m[..]);
}

#[test]
fn shm_peer_killed_while_a_reply_buffer_is_announced() {
    let (s, mut peer) = pair("shm");
    // warm: the buffer exists and is mapped by the server
    let m = u64s(&[1], 1 << 20);
    assert!(s.call(tag("sleep"), &m).unwrap().wait_ok(T).unwrap() == &m[..]);
    let mut f = s.call(tag("sleep"), &u64s(&[20_000], 1 << 20)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    common::kill_fails_call(&mut peer, &mut f);
}

#[test]
fn tcp_replies_take_the_ordinary_path() {
    let (s, _peer) = pair("tcp");
    for n in [PLACE_MIN, 1 << 20] {
        let mut m = vec![0u8; n];
        fill_pattern(&mut m, 4);
        let mut f = s.call(tag("echo"), &m).unwrap();
        assert!(f.wait_ok(T).unwrap() == &m[..], "{n}");
    }
    assert_eq!(placed(&s), 0);
}

/// A peer of the previous wire version (4, no reply buffers) is refused at the
/// handshake with `VersionMismatch` and a message naming both versions, over an
/// endpoint pair in this process: the old peer's hello is sent raw.
#[test]
fn a_peer_of_the_previous_wire_version_is_refused_at_the_handshake() {
    let (a, b) = common::tcp_pair();
    let cfg = RpcConfig {
        slot_size: 256,
        slot_count: 2,
        handshake_timeout: Duration::from_secs(20),
        ..Default::default()
    };
    let old = serde_json::json!({
        "slime_rpc": 4, "session": 0x1234_0001u64, "ack": null,
        "slot_size": 256, "slot_count": 2,
        "mailbox": {"addr": 4096, "length": 1024, "rkey": 1},
    })
    .to_string();
    let mut inbox = vec![0u8; 4096];
    // SAFETY: `inbox` and `old` outlive both operations, which are waited on below.
    let (rx, tx) = unsafe {
        (
            b.recv(inbox.as_mut_ptr(), inbox.len(), T).unwrap(),
            b.send(old.as_ptr(), old.len(), T).unwrap(),
        )
    };
    let e = RpcSession::new(a.clone(), cfg)
        .err()
        .expect("an old peer must be refused");
    assert_eq!(e.status(), Status::VersionMismatch, "{e}");
    assert!(e.message().contains("wire version 4, this side 5"), "{e}");
    tx.wait().unwrap();
    rx.wait().unwrap();
    // The new side's hello says version 5, which the old peer refuses in turn.
    let n = rx.nbytes() as usize;
    let hello: serde_json::Value = serde_json::from_slice(&inbox[..n]).unwrap();
    assert_eq!(hello["slime_rpc"], 5);
}
