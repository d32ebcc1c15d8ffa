//! SlimeRPC sessions between two OS processes, over shared memory and TCP: raw and
//! inplace calls, empty replies, remote exceptions, unknown methods, many concurrent
//! calls from threads, calls in both directions, timeouts and detached calls (no slot
//! leak), oversized payloads and replies, the bulk path at 256 MiB both ways with content
//! checks, close, slot-configuration mismatch, and a peer killed mid-call.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{check_pattern, fill_pattern, is_child, rpc_endpoint, Peer};
use dlslime::rpc::{HandlerError, RemoteError, RpcConfig, RpcProgress, RpcSession, Service};
use dlslime::transport::shm::{ShmConfig, ShmEndpoint};
use dlslime::transport::tcp::TcpEndpoint;
use dlslime::{Endpoint, MemoryPool, Status};

const T: Option<Duration> = Some(Duration::from_secs(60));

fn config(env: &dyn Fn(&str) -> Option<String>) -> RpcConfig {
    let num = |k: &str, d: u64| env(k).and_then(|v| v.parse().ok()).unwrap_or(d);
    RpcConfig {
        slot_size: num("RPC_SLOT_SIZE", 4096) as usize,
        slot_count: num("RPC_SLOTS", 4) as usize,
        max_payload: num("RPC_MAX_PAYLOAD", 1 << 40),
        bulk_arena: num("RPC_ARENA", 0) as usize,
        progress: match env("RPC_PROGRESS").as_deref() {
            Some("pump") => RpcProgress::Pump,
            Some("inline") => RpcProgress::Inline,
            _ => RpcProgress::Auto,
        },
        ..Default::default()
    }
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap())
}

/// The service both sides run. Tags follow sorted names.
fn service() -> Service {
    Service::new()
        .method("echo", |p| Ok(p.to_vec()))
        .method("none", |_| Ok(Vec::new()))
        .method("fail", |p| {
            Err(HandlerError::new(
                "ValueError",
                format!("boom: {}", String::from_utf8_lossy(p)),
            ))
        })
        // [len u64][seed u64] -> len bytes of pattern(seed)
        .method("big", |p| {
            let (len, seed) = (u64_at(p, 0) as usize, u64_at(p, 1));
            let mut v = vec![0u8; len];
            fill_pattern(&mut v, seed);
            Ok(v)
        })
        // [seed u64][pattern(seed) of the rest] -> [len u64][first bad index or u64::MAX]
        .method("check", |p| {
            let seed = u64_at(p, 0);
            let bad = check_pattern(&p[8..], seed).map_or(u64::MAX, |i| i as u64);
            let mut out = ((p.len() - 8) as u64).to_le_bytes().to_vec();
            out.extend_from_slice(&bad.to_le_bytes());
            Ok(out)
        })
        // ASCII upper-case in place; the reply is the request buffer itself
        .inplace_method("upper", |p| {
            p.make_ascii_uppercase();
            Ok(p.len())
        })
        .method("sleep", |p| {
            std::thread::sleep(Duration::from_millis(u64_at(p, 0)));
            Ok(b"slept".to_vec())
        })
}

/// `service()` served on `ep` by a thread until the peer's session goes away.
fn serve_in_thread(ep: Arc<dyn Endpoint>, cfg: RpcConfig) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let s = RpcSession::new(ep, cfg).unwrap();
        let r = service().serve(&s);
        assert_eq!(r.unwrap_err().status(), Status::PeerDisconnected);
    })
}

fn tag(name: &str) -> u32 {
    service().tag(name).unwrap()
}

// The peer process: connects, creates its session, serves with `RPC_WORKERS` threads;
// "callback N" makes it call our echo N times.
common::peer_entry!(fn rpc_child(parent) {
    let env = |k: &str| std::env::var(k).ok();
    let cfg = config(&env);
    let transport = env("RPC_TRANSPORT").unwrap();
    let (ep, mem) = rpc_endpoint(&transport, &cfg);
    parent.connect_endpoint(&*ep);
    let sess = match RpcSession::with_memory(ep, mem, cfg) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            parent.send(&format!("session-error {}", e.status().code()));
            return;
        }
    };
    parent.send("session");
    let workers: usize = env("RPC_WORKERS").and_then(|v| v.parse().ok()).unwrap_or(2);
    let mut servers: Vec<_> = (0..workers)
        .map(|_| {
            let s = sess.clone();
            std::thread::spawn(move || service().serve(&s))
        })
        .collect();
    while let Some(line) = parent.recv() {
        if let Some(n) = line.strip_prefix("callback ") {
            let n: usize = n.parse().unwrap();
            let mut ok = 0;
            for i in 0..n {
                let mut m = vec![0u8; 100 + i * 37];
                fill_pattern(&mut m, i as u64);
                let mut f = sess.call(tag("echo"), &m).unwrap();
                if f.wait_ok(T).unwrap() == &m[..] {
                    ok += 1;
                }
            }
            parent.send(&format!("callback-ok {ok}"));
        } else if line == "join" {
            let results: Vec<String> = std::mem::take(&mut servers)
                .into_iter()
                .map(|h| match h.join().unwrap() {
                    Ok(()) => "ok".to_string(),
                    Err(e) => format!("err{}", e.status().code()),
                })
                .collect();
            parent.send(&format!("served {}", results.join(",")));
        }
    }
});

struct Pair {
    sess: Arc<RpcSession>,
    peer: Peer,
}

fn pair_with(
    transport: &str,
    env: &[(&str, &str)],
) -> std::result::Result<Pair, (dlslime::Error, Peer)> {
    let mut env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.to_string())).collect();
    env.push(("RPC_TRANSPORT", transport.to_string()));
    let mine: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| !k.starts_with("PEER_"))
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    // PEER_X=v sets X only in the child.
    let child_env: Vec<(&str, String)> = env
        .iter()
        .map(|(k, v)| (k.strip_prefix("PEER_").unwrap_or(k), v.clone()))
        .collect();
    let look = |k: &str| mine.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let cfg = config(&look);
    let (ep, mem) = rpc_endpoint(transport, &cfg);
    let mut peer = Peer::spawn("rpc_child", &child_env);
    peer.connect_endpoint(&*ep);
    match RpcSession::with_memory(ep, mem, cfg) {
        Ok(sess) => {
            peer.expect("session");
            Ok(Pair {
                sess: Arc::new(sess),
                peer,
            })
        }
        Err(e) => Err((e, peer)),
    }
}

fn pair(transport: &str, env: &[(&str, &str)]) -> Pair {
    pair_with(transport, env).unwrap_or_else(|(e, _)| panic!("session: {e}"))
}

fn u64s(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn basic_calls(transport: &str, env: &[(&str, &str)]) {
    let p = pair(transport, env);
    let s = &p.sess;
    let cap = s.slot_capacity();
    // raw echo at the interesting sizes: empty, one, exactly a slot, one more (bulk)
    for n in [0usize, 1, 100, cap - 1, cap, cap + 1, 3 * cap + 7, 1 << 20] {
        let mut m = vec![0u8; n];
        fill_pattern(&mut m, n as u64);
        let mut f = s.call(tag("echo"), &m).unwrap();
        assert_eq!(f.wait_ok(T).unwrap(), &m[..], "echo of {n} bytes");
    }
    // inplace: the payload is written straight into the slot (or bulk buffer)
    for n in [10usize, cap + 100] {
        let mut f = s
            .call_inplace(tag("echo"), n + 5, |b| {
                fill_pattern(&mut b[..n], 7);
                Ok(n)
            })
            .unwrap();
        let r = f.wait_ok(T).unwrap();
        assert_eq!(r.len(), n);
        assert_eq!(check_pattern(r, 7), None);
    }
    // in place of the request (zero-copy for bulk payloads), slot and bulk sizes
    for n in [5usize, cap, cap + 1, 200_000] {
        let m: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
        let want: Vec<u8> = m.to_ascii_uppercase();
        let mut f = s.call(tag("upper"), &m).unwrap();
        assert_eq!(f.wait_ok(T).unwrap(), &want[..], "upper of {n} bytes");
    }
    // a writer that fails sends nothing
    let e = s
        .call_inplace(tag("echo"), 10, |_| Err(dlslime::Error::invalid("no")))
        .err()
        .unwrap();
    assert_eq!(e.status(), Status::InvalidArgument);
    // empty reply ("None")
    let mut f = s.call(tag("none"), b"x").unwrap();
    f.wait(T).unwrap();
    assert!(!f.is_exception());
    assert_eq!(f.reply(), b"");
    drop(f);
    // remote exception: type and message
    let mut f = s.call(tag("fail"), b"hello").unwrap();
    f.wait(T).unwrap();
    assert!(f.is_exception());
    let re = RemoteError::parse(f.reply());
    assert_eq!(re.type_name, "ValueError");
    assert_eq!(re.message, "boom: hello");
    drop(f);
    let e = s.call(tag("fail"), b"x").unwrap().wait_ok(T).err().unwrap();
    assert!(e.message().contains("ValueError: boom: x"), "{e}");
    // unknown method
    let mut f = s.call(99, b"").unwrap();
    f.wait(T).unwrap();
    assert!(f.is_exception());
    assert_eq!(
        RemoteError::parse(f.reply()).message,
        "Unknown RPC tag 99 on remote service"
    );
    drop(f);
    // a tag with flag bits is refused before anything is sent
    assert_eq!(
        s.call(1 << 27, b"").err().unwrap().status(),
        Status::InvalidArgument
    );
    // pipelined: several in flight from one thread, completed out of order
    let mut fs: Vec<_> = (0..s.config().slot_count)
        .map(|i| s.call(tag("echo"), &[i as u8; 33]).unwrap())
        .collect();
    for (i, f) in fs.iter_mut().enumerate().rev() {
        assert_eq!(f.wait_ok(T).unwrap(), &[i as u8; 33][..]);
    }
    drop(fs);
    assert!(
        s.stats()
            .requests_sent
            .load(std::sync::atomic::Ordering::Relaxed)
            > 10
    );
}

common::scenario_tests! {
    shm_calls_inline => basic_calls("shm", &[("RPC_PROGRESS", "inline")]);
    shm_calls_pump => basic_calls("shm", &[("RPC_PROGRESS", "pump")]);
}

#[test]
fn shm_calls_with_bulk_arena() {
    // payloads up to 64 KiB use the pre-mapped arena, larger ones on-demand buffers
    basic_calls("shm", &[("RPC_ARENA", "65536")]);
}

common::scenario_tests! {
    tcp_calls_with_bulk_arena => basic_calls("tcp", &[("RPC_ARENA", "65536")]);
    tcp_calls => basic_calls("tcp", &[]);
}

fn concurrent(transport: &str) {
    let p = pair(transport, &[("RPC_SLOTS", "8")]);
    let s = &p.sess;
    let cap = s.slot_capacity();
    std::thread::scope(|sc| {
        for t in 0..4u64 {
            sc.spawn(move || {
                for i in 0..150u64 {
                    let n = match i % 5 {
                        0 => cap + 1 + (i as usize * 13), // bulk
                        _ => (i as usize * 31 + t as usize) % cap,
                    };
                    let mut m = vec![0u8; n];
                    fill_pattern(&mut m, t * 1000 + i);
                    let mut f = s.call(tag("echo"), &m).unwrap();
                    let r = f.wait_ok(T).unwrap();
                    assert_eq!(r.len(), n, "thread {t} call {i}");
                    assert_eq!(check_pattern(r, t * 1000 + i), None, "thread {t} call {i}");
                }
            });
        }
    });
}

common::scenario_tests! {
    shm_concurrent_threads => concurrent("shm");
    tcp_concurrent_threads => concurrent("tcp");
}

fn both_directions(transport: &str) {
    let mut p = pair(transport, &[("RPC_SLOTS", "4")]);
    let sess = p.sess.clone();
    let server = {
        let s = sess.clone();
        std::thread::spawn(move || service().serve(&s))
    };
    p.peer.send("callback 60");
    for i in 0..60usize {
        let m = vec![i as u8; 50 + i * 91];
        assert_eq!(
            sess.call(tag("echo"), &m).unwrap().wait_ok(T).unwrap(),
            &m[..]
        );
    }
    p.peer.expect("callback-ok 60");
    sess.close();
    assert_eq!(server.join().unwrap().map_err(|e| e.status()), Ok(()));
}

common::scenario_tests! {
    shm_both_directions => both_directions("shm");
    tcp_both_directions => both_directions("tcp");
}

fn timeouts(transport: &str) {
    let p = pair(transport, &[("RPC_SLOTS", "2"), ("PEER_RPC_WORKERS", "1")]);
    let s = &p.sess;
    let sleep = |ms: u64| u64s(&[ms]);
    // wait(timeout) times out, the call stays pending, a second wait gets the reply
    let mut f = s.call(tag("sleep"), &sleep(400)).unwrap();
    let t0 = Instant::now();
    assert_eq!(
        f.wait(Some(Duration::from_millis(100)))
            .unwrap_err()
            .status(),
        Status::Timeout
    );
    let el = t0.elapsed();
    assert!(
        el >= Duration::from_millis(100) && el < Duration::from_millis(350),
        "{el:?}"
    );
    assert_eq!(f.wait_ok(T).unwrap(), b"slept");
    drop(f);
    // timed-out calls that are dropped free their slots when the late reply comes:
    // 6 rounds with 2 slots would deadlock on a leak
    for _ in 0..6 {
        let mut f = s.call(tag("sleep"), &sleep(50)).unwrap();
        assert_eq!(
            f.wait(Some(Duration::from_millis(1))).unwrap_err().status(),
            Status::Timeout
        );
        drop(f);
    }
    for i in 0..4u8 {
        assert_eq!(s.call(tag("echo"), &[i]).unwrap().wait_ok(T).unwrap(), &[i]);
    }
    // both slots busy: a third call waits for a slot, freed when the first reply arrives
    // (read into its future), not when that future is waited or dropped; the replies
    // stay each future's own although their slots were reused
    let mut a = s.call(tag("sleep"), &sleep(100)).unwrap();
    let mut b = s.call(tag("sleep"), &sleep(100)).unwrap();
    let t0 = Instant::now();
    // with its own deadline: no slot comes back in 50 ms
    let e = s
        .call_with_timeout(tag("echo"), b"e", Some(Duration::from_millis(50)))
        .err()
        .expect("no slot within 50 ms");
    assert_eq!(e.status(), Status::Timeout, "{e}");
    let mut c = s.call(tag("echo"), b"c").unwrap();
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(80),
        "third call got a slot after {waited:?}"
    );
    assert_eq!(c.wait_ok(T).unwrap(), b"c");
    assert_eq!(a.wait_ok(T).unwrap(), b"slept");
    assert_eq!(b.wait_ok(T).unwrap(), b"slept");
}

/// More futures held than there are slots: every call beyond the window waits for a
/// slot while earlier replies arrive, and each future keeps its own reply (the issue:
/// 17 futures on 16 slots stalled 60 s).
fn held_beyond_window(transport: &str) {
    let p = pair(transport, &[("RPC_SLOTS", "16")]);
    let s = &p.sess;
    for n in [17u64, 100, 1000] {
        let t0 = Instant::now();
        let mut fs: Vec<_> = (0..n)
            .map(|i| s.call(tag("echo"), &i.to_le_bytes()).unwrap())
            .collect();
        for (i, f) in fs.iter_mut().enumerate() {
            assert_eq!(f.wait_ok(T).unwrap(), &(i as u64).to_le_bytes(), "call {i}");
        }
        let el = t0.elapsed();
        eprintln!("{transport}: {n} futures held, all replies in {el:?}");
        assert!(el < Duration::from_secs(20), "{n} calls took {el:?}");
    }
    // bulk replies hold their slots until read: 16 of them are in flight, the 17th
    // call waits for a slot with its own deadline
    let cap = s.slot_capacity();
    let mut held: Vec<_> = (0..16)
        .map(|i| s.call(tag("big"), &u64s(&[cap as u64 + 10, i])).unwrap())
        .collect();
    let e = s
        .call_with_timeout(tag("echo"), b"x", Some(Duration::from_millis(300)))
        .err()
        .expect("every slot holds an unread bulk reply");
    assert_eq!(e.status(), Status::Timeout, "{e}");
    for (i, f) in held.iter_mut().enumerate() {
        let r = f.wait_ok(T).unwrap();
        assert_eq!(r.len(), cap + 10);
        assert_eq!(check_pattern(r, i as u64), None, "bulk reply {i}");
    }
    // read: their slots are free again, before the futures are dropped
    assert_eq!(s.call(tag("echo"), b"y").unwrap().wait_ok(T).unwrap(), b"y");
    drop(held);
}

common::scenario_tests! {
    shm_futures_held_beyond_the_window => held_beyond_window("shm");
    tcp_futures_held_beyond_the_window => held_beyond_window("tcp");
    shm_timeouts_and_detach => timeouts("shm");
    tcp_timeouts_and_detach => timeouts("tcp");
}

fn oversized(transport: &str) {
    let p = pair(transport, &[("RPC_MAX_PAYLOAD", "1048576")]);
    let s = &p.sess;
    // a request over max_payload is refused at the call
    let e = s
        .call(tag("echo"), &vec![0u8; (1 << 20) + 1])
        .err()
        .unwrap();
    assert_eq!(e.status(), Status::InvalidArgument);
    assert!(e.message().contains("max_payload"), "{e}");
    // a reply over the server's max_payload becomes an exception reply
    let mut f = s.call(tag("big"), &u64s(&[2 << 20, 1])).unwrap();
    f.wait(T).unwrap();
    assert!(f.is_exception());
    let re = RemoteError::parse(f.reply());
    assert!(re.message.contains("exceeds max_payload"), "{re:?}");
    // exactly max_payload works (bulk)
    let mut f = s.call(tag("big"), &u64s(&[1 << 20, 3])).unwrap();
    let r = f.wait_ok(T).unwrap();
    assert_eq!(r.len(), 1 << 20);
    assert_eq!(check_pattern(r, 3), None);
}

common::scenario_tests! {
    shm_oversized => oversized("shm");
    tcp_oversized => oversized("tcp");
}

fn huge(transport: &str) {
    let p = pair(transport, &[("RPC_SLOTS", "1"), ("RPC_SLOT_SIZE", "65536")]);
    let s = &p.sess;
    const N: usize = 256 << 20;
    // 256 MiB request, content checked by the server
    let t0 = Instant::now();
    let mut f = s
        .call_inplace(tag("check"), N + 8, |b| {
            b[..8].copy_from_slice(&42u64.to_le_bytes());
            fill_pattern(&mut b[8..], 42);
            Ok(N + 8)
        })
        .unwrap();
    let r = f.wait_ok(T).unwrap();
    assert_eq!(u64_at(r, 0), N as u64);
    assert_eq!(u64_at(r, 1), u64::MAX, "server found a bad byte");
    drop(f);
    // 256 MiB reply, content checked here
    let mut f = s.call(tag("big"), &u64s(&[N as u64, 9])).unwrap();
    let r = f.wait_ok(T).unwrap();
    assert_eq!(r.len(), N);
    assert_eq!(check_pattern(r, 9), None);
    drop(f);
    // 256 MiB echo both ways
    let mut m = vec![0u8; N];
    fill_pattern(&mut m, 5);
    let mut f = s.call(tag("echo"), &m).unwrap();
    let r = f.wait_ok(T).unwrap();
    assert!(r == &m[..], "256 MiB echo differs");
    eprintln!("{transport}: 256 MiB tests took {:?}", t0.elapsed());
}

common::scenario_tests! {
    shm_256mib_both_ways => huge("shm");
    tcp_256mib_both_ways => huge("tcp");
}

fn peer_killed(transport: &str) {
    let mut p = pair(transport, &[]);
    let mut f = p.sess.call(tag("sleep"), &u64s(&[20_000])).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    common::kill_fails_call(&mut p.peer, &mut f);
    // later calls fail at once
    let e = p.sess.call(tag("echo"), b"x").err().unwrap();
    assert_eq!(e.status(), Status::PeerDisconnected, "{e}");
    assert_eq!(
        p.sess.poll_request(T).err().unwrap().status(),
        Status::PeerDisconnected
    );
}

common::scenario_tests! {
    shm_peer_killed_mid_call => peer_killed("shm");
    tcp_peer_killed_mid_call => peer_killed("tcp");
}

fn close(transport: &str) {
    let mut p = pair(transport, &[("PEER_RPC_WORKERS", "1")]);
    let mut pending = p.sess.call(tag("sleep"), &u64s(&[300])).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    p.sess.close();
    p.sess.close(); // idempotent
    let e = pending.wait(T).unwrap_err();
    assert_eq!(e.status(), Status::ShutDown);
    assert_eq!(e.message(), "RPC session closed");
    assert_eq!(
        p.sess.call(tag("echo"), b"").err().unwrap().status(),
        Status::ShutDown
    );
    assert_eq!(
        p.sess.poll_request(T).err().unwrap().status(),
        Status::ShutDown
    );
    // the peer's serve() ends (PeerDisconnected: we closed) instead of hanging
    p.peer.send("join");
    let line = p.peer.recv();
    assert_eq!(line, "served err405", "{line}");
}

common::scenario_tests! {
    shm_close_ends_peer_serve => close("shm");
    tcp_close_ends_peer_serve => close("tcp");
}

#[test]
fn slot_configuration_mismatch_is_refused() {
    let (e, _peer) = pair_with("tcp", &[("RPC_SLOTS", "4"), ("PEER_RPC_SLOTS", "8")])
        .err()
        .expect("mismatched slot counts must fail");
    assert_eq!(e.status(), Status::InvalidArgument);
    assert!(e.message().contains("slot configuration differs"), "{e}");
}

#[test]
fn config_validation() {
    let bad = [
        RpcConfig {
            slot_count: 0,
            ..Default::default()
        },
        RpcConfig {
            slot_count: 65537,
            ..Default::default()
        },
        RpcConfig {
            slot_size: 63,
            ..Default::default()
        },
    ];
    for c in bad {
        assert_eq!(c.validate().unwrap_err().status(), Status::InvalidArgument);
    }
    RpcConfig {
        slot_count: 65536,
        slot_size: 64,
        ..Default::default()
    }
    .validate()
    .unwrap();
}

/// 1 GiB request and reply (not run by default: ~6 GiB of memory; run with
/// `cargo test --release --test rpc_session -- --ignored gib`).
#[test]
#[ignore]
fn shm_1gib_echo() {
    if is_child() {
        return;
    }
    let p = pair("shm", &[("RPC_SLOTS", "1")]);
    const N: usize = 1 << 30;
    let t0 = Instant::now();
    let mut f = p
        .sess
        .call_inplace(tag("check"), N + 8, |b| {
            b[..8].copy_from_slice(&77u64.to_le_bytes());
            fill_pattern(&mut b[8..], 77);
            Ok(N + 8)
        })
        .unwrap();
    let r = f.wait_ok(Some(Duration::from_secs(300))).unwrap();
    assert_eq!(u64_at(r, 0), N as u64);
    assert_eq!(u64_at(r, 1), u64::MAX, "server found a bad byte");
    drop(f);
    let mut f = p.sess.call(tag("big"), &u64s(&[N as u64, 4])).unwrap();
    let r = f.wait_ok(Some(Duration::from_secs(300))).unwrap();
    assert_eq!(r.len(), N);
    assert_eq!(check_pattern(r, 4), None);
    eprintln!("1 GiB both ways over shm: {:?}", t0.elapsed());
}

/// Two sessions one after the other over the same TCP endpoint pair (in this process):
/// closing the first withdraws its receives, so the second gets every message.
#[test]
fn a_new_session_after_close_on_the_same_endpoints() {
    let (a, b) = common::tcp_pair();
    for (round, progress) in [RpcProgress::Pump, RpcProgress::Inline, RpcProgress::Pump]
        .into_iter()
        .enumerate()
    {
        let cfg = RpcConfig {
            slot_size: 256,
            slot_count: 2,
            progress,
            ..Default::default()
        };
        let server = serve_in_thread(b.clone(), cfg.clone());
        let s = RpcSession::new(a.clone(), cfg).unwrap();
        for i in 0..20u8 {
            let m = vec![i ^ round as u8; 10 + i as usize * 50];
            assert_eq!(s.call(tag("echo"), &m).unwrap().wait_ok(T).unwrap(), &m[..]);
        }
        s.close();
        server.join().unwrap();
    }
}

/// A session whose peer never came (its handshake timed out) leaves its hello in the
/// peer endpoint; the next pair of sessions must not bind to that dead session's
/// mailbox (the guide's one-process example once failed this way with "remote access
/// denied"): the stale hello is consumed and the calls work.
#[test]
fn a_failed_handshake_leaves_nothing_the_next_session_binds_to() {
    for transport in ["tcp", "shm"] {
        let (a, b): (Arc<dyn Endpoint>, Arc<dyn Endpoint>) = match transport {
            "tcp" => (
                TcpEndpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap(),
                TcpEndpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap(),
            ),
            _ => (
                Arc::new(ShmEndpoint::new(MemoryPool::new(), ShmConfig::default()).unwrap()),
                Arc::new(ShmEndpoint::new(MemoryPool::new(), ShmConfig::default()).unwrap()),
            ),
        };
        let (ai, b2) = (a.endpoint_info(), b.clone());
        let t = std::thread::spawn(move || b2.connect(&ai).unwrap());
        a.connect(&b.endpoint_info()).unwrap();
        t.join().unwrap();
        let cfg = RpcConfig {
            slot_size: 256,
            slot_count: 2,
            handshake_timeout: Duration::from_millis(300),
            ..Default::default()
        };
        // `b` alone: times out, its hello stays in `a`.
        let e = RpcSession::new(b.clone(), cfg.clone())
            .err()
            .expect("no peer session");
        assert_eq!(e.status(), Status::Timeout, "{e}");
        let cfg = RpcConfig {
            handshake_timeout: Duration::from_secs(30),
            ..cfg
        };
        let server = serve_in_thread(b.clone(), cfg.clone());
        let s = RpcSession::new(a.clone(), cfg).unwrap();
        for i in 0..10u8 {
            let m = vec![i; 20 + i as usize * 30];
            let mut f = s.call(tag("echo"), &m).unwrap();
            assert_eq!(f.wait_ok(T).unwrap(), &m[..], "{transport}");
        }
        s.close();
        server.join().unwrap();
    }
}

/// The client side's per-method counters in the snapshot: calls, exception replies as
/// errors, a wait that timed out, and the request-to-reply latency. The method names are
/// this test's own (`set_method_names`), as other tests call the same tags meanwhile.
fn client_obs(transport: &str) {
    dlslime::obs::set_enabled(true);
    let p = pair(transport, &[]);
    let s = &p.sess;
    let names: Vec<String> = service()
        .names()
        .iter()
        .map(|n| format!("obs-{transport}.{n}"))
        .collect();
    s.set_method_names(&names.iter().map(String::as_str).collect::<Vec<_>>());
    for _ in 0..3 {
        s.call(tag("echo"), b"hi").unwrap().wait_ok(T).unwrap();
    }
    let mut f = s.call(tag("fail"), b"x").unwrap();
    f.wait(T).unwrap();
    assert!(f.is_exception());
    let mut f = s.call(tag("sleep"), &u64s(&[300])).unwrap();
    assert_eq!(
        f.wait(Some(Duration::from_millis(20)))
            .unwrap_err()
            .status(),
        Status::Timeout
    );
    f.wait_ok(T).unwrap();
    let snap = dlslime::obs::snapshot();
    let row = |m: &str| {
        let name = format!("obs-{transport}.{m}");
        snap["rpc"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["side"] == "client" && r["method"] == name.as_str())
            .unwrap_or_else(|| panic!("no client row {name}: {snap}"))
            .clone()
    };
    let echo = row("echo");
    assert_eq!(
        (&echo["calls"], &echo["errors"], &echo["timeouts"]),
        (&3.into(), &0.into(), &0.into())
    );
    assert_eq!(echo["latency_ns"]["count"], 3);
    let fail = row("fail");
    assert_eq!((&fail["calls"], &fail["errors"]), (&1.into(), &1.into()));
    let sleep = row("sleep");
    assert_eq!(
        (&sleep["calls"], &sleep["errors"], &sleep["timeouts"]),
        (&1.into(), &0.into(), &1.into())
    );
    assert!(
        sleep["latency_ns"]["max"].as_u64().unwrap() >= 300_000_000,
        "{sleep}"
    );
}

#[test]
fn shm_client_obs() {
    client_obs("shm");
}

#[test]
fn tcp_client_obs() {
    client_obs("tcp");
}
