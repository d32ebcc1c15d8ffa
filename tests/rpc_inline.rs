//! SlimeRPC with the default progress (inline: the waiting thread receives, no thread of
//! the session's own) when sessions follow one another over the same endpoint pair, as
//! the slot ring's client and server make them: two OS processes, shared memory and
//! TCP, each scenario built deterministically (the peer holds a request and answers it
//! on command, a gated method replies on command).
//!
//! * A late reply of a call abandoned in an earlier session arrives while the next
//!   session has a call in flight in the same slot: it must be dropped, never delivered
//!   to that call (it was: "malformed RPC reply (tag 0x0, total_len 0)" when the reply
//!   was sent into the earlier session's mailbox and the slot was fresh; else the late
//!   write landed in the next session's mailbox, which has the same remote-region name:
//!   the call got the stale reply's bytes, "request_id mismatch" when the slot had held
//!   a reply before, or a reply still held in the slot was overwritten).
//! * A session the peer closed while nobody here waited must be seen closed by the next
//!   `is_closed` or `call`, which fails at once with `PeerDisconnected` and sends nothing
//!   the peer's next session could take for its own.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::Peer;
use dlslime::rpc::{Request, RpcConfig, RpcProgress, RpcSession, Service};
use dlslime::transport::shm::{ShmConfig, ShmEndpoint};
use dlslime::transport::tcp::TcpEndpoint;
use dlslime::{Endpoint, MemoryPool, Status};

const T: Option<Duration> = Some(Duration::from_secs(60));

/// Method tags (sorted names of `service()`).
const ECHO: u32 = 0;
const GATE: u32 = 1;

/// The documented default configuration, with small slots (as the ring's).
fn config(progress: &str) -> RpcConfig {
    RpcConfig {
        slot_size: 2048,
        slot_count: 4,
        progress: match progress {
            "pump" => RpcProgress::Pump,
            _ => RpcProgress::Auto,
        },
        ..Default::default()
    }
}

fn endpoint(transport: &str) -> Arc<dyn Endpoint> {
    match transport {
        "shm" => Arc::new(ShmEndpoint::new(MemoryPool::new(), ShmConfig::default()).unwrap()),
        "tcp" => TcpEndpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap(),
        t => panic!("unknown transport {t}"),
    }
}

/// Opened by the parent's "open": `gate` calls wait for it.
static GATE_OPEN: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

fn service() -> Service {
    Service::new()
        .method("echo", |p| Ok(p.to_vec()))
        .method("gate", |_| {
            let (m, cv) = &GATE_OPEN;
            let mut open = m.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            Ok(b"gate".to_vec())
        })
}

// The peer: sessions over one endpoint, driven line by line by the parent.
//
// * `session` — a new session (the parent makes its own at the same time);
// * `serve K` — serves session K on a thread;
// * `hold K` — takes the next request of session K and keeps it unanswered;
// * `answer` — answers the held request (echo);
// * `open` — opens the gate of `gate` calls (100 ms later: what was sent before lands
//   first);
// * `close K` — closes session K and joins its serving thread;
// * `errors K` — session K's protocol error count.
common::peer_entry!(fn rpc_inline_child(parent) {
    let transport = std::env::var("RPC_TRANSPORT").unwrap();
    let ep = endpoint(&transport);
    parent.connect_endpoint(&*ep);
    let mut sessions: Vec<Arc<RpcSession>> = Vec::new();
    let mut servers: Vec<Option<std::thread::JoinHandle<String>>> = Vec::new();
    let mut held: Option<Request> = None;
    let k_of = |s: &str| -> usize { s.parse().unwrap() };
    while let Some(line) = parent.recv() {
        let (cmd, arg) = line.split_once(' ').unwrap_or((&line, ""));
        match cmd {
            "session" => {
                let s = RpcSession::new(ep.clone(), config("default")).unwrap();
                sessions.push(Arc::new(s));
                servers.push(None);
                parent.send(&format!("session {}", sessions.len() - 1));
            }
            "serve" => {
                let s = sessions[k_of(arg)].clone();
                servers[k_of(arg)] = Some(std::thread::spawn(move || match service().serve(&s) {
                    Ok(()) => "ok".to_string(),
                    Err(e) => format!("{:?}", e.status()),
                }));
            }
            "hold" => {
                let r = sessions[k_of(arg)].poll_request(T).unwrap().unwrap();
                parent.send(&format!("held {}", r.request_id()));
                held = Some(r);
            }
            "answer" => {
                let r = held.take().unwrap();
                let p = r.payload().to_vec();
                r.reply(&p).unwrap();
                parent.send("answered");
            }
            "open" => {
                std::thread::sleep(Duration::from_millis(100));
                let (m, cv) = &GATE_OPEN;
                *m.lock().unwrap() = true;
                cv.notify_all();
            }
            "close" => {
                let k = k_of(arg);
                sessions[k].close();
                let served = servers[k].take().map(|h| h.join().unwrap());
                parent.send(&format!("closed {k} {}", served.unwrap_or_default()));
            }
            "errors" => {
                let n = sessions[k_of(arg)]
                    .stats()
                    .protocol_errors
                    .load(Ordering::Relaxed);
                parent.send(&format!("errors {n}"));
            }
            c => panic!("unknown command {c}"),
        }
    }
});

struct Pair {
    ep: Arc<dyn Endpoint>,
    peer: Peer,
    progress: &'static str,
    sessions: usize,
}

impl Pair {
    /// A peer process with the default progress; `progress` is this side's.
    fn start(transport: &str, progress: &'static str) -> Pair {
        let ep = endpoint(transport);
        let mut peer = Peer::spawn(
            "rpc_inline_child",
            &[("RPC_TRANSPORT", transport.to_string())],
        );
        peer.connect_endpoint(&*ep);
        Pair {
            ep,
            peer,
            progress,
            sessions: 0,
        }
    }

    /// The next session of both sides over the endpoint pair (and its number).
    fn session(&mut self) -> (RpcSession, usize) {
        self.peer.send("session");
        let s = RpcSession::new(self.ep.clone(), config(self.progress)).unwrap();
        let k = self.sessions;
        self.peer.expect(&format!("session {k}"));
        self.sessions += 1;
        (s, k)
    }
}

fn echo(s: &RpcSession, m: &[u8]) {
    assert_eq!(s.call(ECHO, m).unwrap().wait_ok(T).unwrap(), m);
}

/// What session 2 did in the slot the late reply names (slot 0) before it arrives.
#[derive(Clone, Copy, Debug)]
enum Before {
    /// The late reply was sent before session 2 started (into session 1's mailbox); the
    /// slot is fresh, the gated call waits in it.
    Early,
    /// Nothing: the slot is fresh; the gated call waits in it.
    Nothing,
    /// A call completed there and was dropped; the gated call waits in it.
    Done,
    /// A call completed there and its future is still held (the reply bytes live in
    /// the slot); the gated call waits in slot 1.
    Held,
}

/// A call of session 1 times out (the peer holds its request) and is dropped; session 1
/// closes; sessions 2 start; the peer then answers the held request: its reply is for
/// session 1's mailbox and its notification arrives while session 2 waits for a gated
/// call. The call gets its own reply, the stale one is dropped, and nothing of it lands
/// in session 2's mailbox.
fn late_reply_of_an_earlier_session(transport: &str, progress: &'static str, before: Before) {
    let mut p = Pair::start(transport, progress);
    let (s1, _) = p.session();
    let mut f = s1.call(ECHO, b"late").unwrap();
    p.peer.send("hold 0");
    p.peer.expect("held 1");
    let e = f.wait(Some(Duration::from_millis(20))).unwrap_err();
    assert_eq!(e.status(), Status::Timeout, "{e}");
    drop(f);
    // Closed, not dropped: its mailbox stays registered, so the late reply lands.
    s1.close();
    let answer = |p: &mut Pair| {
        p.peer.send("answer");
        p.peer.expect("answered");
    };
    if let Before::Early = before {
        answer(&mut p);
    }
    let (s2, k2) = p.session();
    p.peer.send(&format!("serve {k2}"));
    let mut held = None;
    match before {
        Before::Early | Before::Nothing => {}
        Before::Done => echo(&s2, b"one"),
        Before::Held => {
            let mut h = s2.call(ECHO, b"one").unwrap();
            assert_eq!(h.wait_ok(T).unwrap(), b"one");
            held = Some(h);
        }
    }
    let mut g = s2.call(GATE, b"").unwrap();
    if !matches!(before, Before::Early) {
        answer(&mut p);
    }
    p.peer.send("open");
    let what = format!("{transport}/{progress}/{before:?}");
    match g.wait_ok(T) {
        Ok(r) => assert_eq!(r, b"gate", "{what}: the call got another call's reply"),
        Err(e) => panic!("{what}: the call got another call's reply: {e}"),
    }
    drop(g);
    if let Some(h) = held {
        assert_eq!(
            h.reply(),
            b"one",
            "{what}: the late reply overwrote a held one"
        );
    }
    assert_eq!(
        s2.stats().protocol_errors.load(Ordering::Relaxed),
        0,
        "{what}: the stale reply counted as the peer's protocol error"
    );
    // the session goes on: every slot, twice
    for i in 0..8u8 {
        echo(&s2, &[i; 40]);
    }
    s2.close();
    p.peer.send(&format!("close {k2}"));
    let line = p.peer.recv();
    assert!(line.starts_with(&format!("closed {k2} ")), "{line}");
    drop(s1);
}

common::scenario_tests! {
    shm_late_reply_sent_before_the_next_session => late_reply_of_an_earlier_session("shm", "default", Before::Early);
    tcp_late_reply_sent_before_the_next_session => late_reply_of_an_earlier_session("tcp", "default", Before::Early);
    shm_late_reply_into_a_fresh_slot_of_the_next_session => late_reply_of_an_earlier_session("shm", "default", Before::Nothing);
    tcp_late_reply_into_a_fresh_slot_of_the_next_session => late_reply_of_an_earlier_session("tcp", "default", Before::Nothing);
    shm_late_reply_into_a_used_slot_of_the_next_session => late_reply_of_an_earlier_session("shm", "default", Before::Done);
    tcp_late_reply_into_a_used_slot_of_the_next_session => late_reply_of_an_earlier_session("tcp", "default", Before::Done);
    shm_late_reply_beside_a_held_reply_of_the_next_session => late_reply_of_an_earlier_session("shm", "default", Before::Held);
    tcp_late_reply_beside_a_held_reply_of_the_next_session => late_reply_of_an_earlier_session("tcp", "default", Before::Held);

    /// With a receive thread here the late reply arrives after the first session's thread
    /// stopped: the same hazard, the same fence.
    shm_late_reply_of_an_earlier_session_pump => late_reply_of_an_earlier_session("shm", "pump", Before::Done);
    tcp_late_reply_of_an_earlier_session_pump => late_reply_of_an_earlier_session("tcp", "pump", Before::Nothing);
}

/// The peer closes its session while nothing here waits (the ring server's idle
/// eviction): the next `is_closed`, or the next `call`, sees it at once, the call fails
/// with `PeerDisconnected` and nothing reaches the peer's next session.
fn peer_close_seen_at_next_use(transport: &str) {
    let mut p = Pair::start(transport, "default");
    for round in 0..2 {
        let (s, k) = p.session();
        p.peer.send(&format!("serve {k}"));
        echo(&s, b"before");
        p.peer.send(&format!("close {k}"));
        // the peer's close waited for its notice to be delivered here
        p.peer.expect(&format!("closed {k} ok"));
        let t0 = Instant::now();
        if round == 0 {
            assert!(
                s.is_closed(),
                "{transport}: the peer's close went unnoticed"
            );
        }
        let e = s.call(ECHO, b"after").err().unwrap_or_else(|| {
            panic!("{transport} round {round}: a call on a session the peer closed was sent")
        });
        assert_eq!(e.status(), Status::PeerDisconnected, "{e}");
        assert!(s.is_closed());
        let e = s.poll_request(Some(Duration::ZERO)).err().unwrap();
        assert_eq!(e.status(), Status::PeerDisconnected, "{e}");
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    }
    // the next session works and its peer side saw nothing of the closed ones
    let (s, k) = p.session();
    p.peer.send(&format!("serve {k}"));
    for i in 0..8u8 {
        echo(&s, &[i; 100]);
    }
    p.peer.send(&format!("errors {k}"));
    p.peer.expect("errors 0");
    p.peer.send(&format!("close {k}"));
    p.peer.expect(&format!("closed {k} ok"));
}

common::scenario_tests! {
    shm_peer_close_seen_at_next_use => peer_close_seen_at_next_use("shm");
    tcp_peer_close_seen_at_next_use => peer_close_seen_at_next_use("tcp");
}
