//! Attacks on the TCP transport, made the way an attacker on the same network would:
//! from a third OS process, with raw sockets, knowing everything `endpoint_info`
//! publishes (read from Redis, say) but no secret. Every attack must fail, and the
//! legitimate pair (the parent and a target child process) must keep working, checked by
//! content.
//!
//! Processes: the parent is the legitimate initiator; `sec_target` owns a 1 MiB region
//! filled with pattern 1; `sec_attacker` runs one attack per command and reports.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{check_pattern, fill_pattern, pattern, region_command, registered, Peer, PeerCommand};
use dlslime::transport::auth::{self, Challenge, Dialer, Identity, Response};
use dlslime::transport::tcp::wire::{Header, Hello, Opcode, FLAG_PAYLOAD, HEADER_LEN, HELLO_LEN};
use dlslime::transport::tcp::{TcpConfig, TcpContext, TcpEndpoint};
use dlslime::{Assignment, Endpoint, MemoryPool, Status};
use serde_json::Value;

const MIB: usize = 1 << 20;

fn env_ms(k: &str, default: u64) -> Duration {
    Duration::from_millis(
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

fn ctx() -> Arc<TcpContext> {
    TcpContext::new(TcpConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        connect_grace: env_ms("SEC_GRACE_MS", 10_000),
        handshake_timeout: env_ms("SEC_HANDSHAKE_MS", 5_000),
        idle_timeout: env_ms("SEC_IDLE_MS", 60_000),
        max_connections_per_ip: std::env::var("SEC_CAP_PER_IP")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        ..Default::default()
    })
    .unwrap()
}

// The target: a region filled with pattern 1; answers commands from the parent.
common::peer_entry!(fn sec_target(parent) {
    let ep = TcpEndpoint::new(&ctx(), MemoryPool::new()).unwrap();
    // SAFETY: `region` lives until the end of this function, after ep.shutdown(); the
    // endpoint is the only writer while it is registered.
    let (mut region, _) = unsafe { registered(ep.memory_pool(), "buf", pattern(MIB, 1)) };
    parent.send(&format!("info {}", ep.endpoint_info()));
    parent.serve(|parent, cmd| {
        let nums = cmd.nums();
        match cmd.name {
            // imm <timeout ms>: the next notification's value, or "none"
            "imm" => {
                let f = ep.imm_recv(Some(Duration::from_millis(nums[0]))).unwrap();
                match f.wait() {
                    Ok(()) => parent.send(&format!("imm {}", f.imm_data())),
                    Err(_) => parent.send("none"),
                }
            }
            // recv <timeout ms>: the next message's first byte and length, or "none"
            "recv" => {
                let mut b = vec![0u8; 4096];
                // SAFETY: `b` is not touched until the receive's wait() below returns,
                // and outlives it (a failed wait ends the library's access too).
                let f = unsafe {
                    ep.recv(
                        b.as_mut_ptr(),
                        b.len(),
                        Some(Duration::from_millis(nums[0])),
                    )
                }
                .unwrap();
                match f.wait() {
                    Ok(()) => parent.send(&format!("msg {} {}", b[0], f.nbytes())),
                    Err(_) => parent.send("none"),
                }
            }
            "conns" => parent.send(&ep.context().accepted_connections().to_string()),
            _ => return region_command(parent, &*ep, &mut region, cmd),
        }
        true
    });
    ep.shutdown();
});

/// Reads until EOF or error; how many bytes came (replies the attacker got).
fn drain_to_eof(s: &mut TcpStream, limit: Duration) -> usize {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut n = 0;
    let mut b = [0u8; 4096];
    loop {
        match s.read(&mut b) {
            Ok(0) => return n,
            Ok(k) => n += k,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("connection still open after {limit:?} ({n} bytes came)")
            }
            Err(_) => return n,
        }
    }
}

struct Target {
    addr: String,
    endpoint: u32,
    key: auth::PublicKey,
    buf_addr: u64,
    buf_key: u64,
}

fn target_of(info: &Value) -> Target {
    Target {
        addr: format!("{}:{}", info["host"].as_str().unwrap(), info["port"]),
        endpoint: info["endpoint_id"].as_u64().unwrap() as u32,
        key: auth::PublicKey::from_hex(info["auth_key"].as_str().unwrap()).unwrap(),
        buf_addr: info["mr_info"]["buf"]["addr"].as_u64().unwrap(),
        buf_key: info["mr_info"]["buf"]["rkey"].as_u64().unwrap(),
    }
}

/// The frames of every kind an attacker would send to corrupt, notify, inject or leak:
/// write and write-with-imm into the region (with its real key), a bare imm, an eager
/// send, a read, and a pull of the legitimate client's first message.
fn attack_frames(t: &Target) -> Vec<(Header, Vec<u8>)> {
    let evil = vec![0xEE; 64];
    let mut out = Vec::new();
    for (i, op) in [
        Opcode::Write,
        Opcode::WriteImm,
        Opcode::Imm,
        Opcode::Send,
        Opcode::Read,
        Opcode::Pull,
    ]
    .into_iter()
    .enumerate()
    {
        let payload = matches!(op, Opcode::Write | Opcode::WriteImm | Opcode::Send);
        let h = Header {
            size: if op == Opcode::Imm { 0 } else { 64 },
            addr: if matches!(op, Opcode::Send | Opcode::Pull) {
                1
            } else {
                t.buf_addr
            },
            key: t.buf_key,
            endpoint: t.endpoint,
            req_id: i as u64 + 1,
            imm: 666,
            flags: if op == Opcode::Send { FLAG_PAYLOAD } else { 0 },
            ..Header::new(op)
        };
        out.push((h, if payload { evil.clone() } else { Vec::new() }));
    }
    out
}

/// A complete handshake as `id` (the attacker's own key pair: anyone can have one).
fn stranger(t: &Target, id: &Identity) -> TcpStream {
    let mut s = TcpStream::connect(&t.addr).unwrap();
    let d = Dialer::new(id, &t.key, "tcp").unwrap();
    let mine = Hello {
        version: 2,
        status: 0,
        context_id: 0x5eed,
    }
    .encode();
    s.write_all(&mine).unwrap();
    s.write_all(&d.challenge().encode()).unwrap();
    let mut theirs = [0u8; HELLO_LEN];
    s.read_exact(&mut theirs).unwrap();
    let mut r = [0u8; auth::RESPONSE_LEN];
    s.read_exact(&mut r).unwrap();
    let mut bind = mine.to_vec();
    bind.extend_from_slice(&theirs);
    let p = d.check_response(&Response::decode(&r), &bind).unwrap();
    s.write_all(&p.encode()).unwrap();
    s
}

/// Sends the attack frames on `s`; the statuses of the replies that came back.
fn fire(s: &mut TcpStream, t: &Target) -> Vec<u16> {
    let mut out = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    for (h, payload) in attack_frames(t) {
        if s.write_all(&h.encode())
            .and_then(|_| s.write_all(&payload))
            .is_err()
        {
            break;
        }
        let mut b = [0u8; HEADER_LEN];
        if s.read_exact(&mut b).is_err() {
            break;
        }
        let r = Header::decode(&b);
        let mut skip = vec![0u8; r.size as usize];
        let _ = s.read_exact(&mut skip);
        out.push(r.status);
    }
    out
}

// The attacker. Commands carry the target's info (and the client's, stolen).
common::peer_entry!(fn sec_attacker(parent) {
    let mut held: Vec<TcpStream> = Vec::new();
    parent.serve(|parent, cmd| {
        let infos = cmd.json_args();
        match cmd.name {
            // The attack on protocol 1: a hello presenting the client's
            // context id, then frames. Refused at the version; nothing served.
            "v1" => {
                let t = target_of(&infos[0]);
                let ctx_id = infos[1]["context_id"].as_u64().unwrap();
                let mut s = TcpStream::connect(&t.addr).unwrap();
                s.write_all(
                    &Hello {
                        version: 1,
                        status: 0,
                        context_id: ctx_id,
                    }
                    .encode(),
                )
                .unwrap();
                let mut ans = [0u8; HELLO_LEN];
                s.read_exact(&mut ans).unwrap();
                let ans = Hello::decode(&ans).unwrap();
                for (h, p) in attack_frames(&t) {
                    let _ = s.write_all(&h.encode());
                    let _ = s.write_all(&p);
                }
                let more = drain_to_eof(&mut s, Duration::from_secs(20));
                parent.send(&format!("v1 {} {}", ans.status, more));
            }
            // Stolen endpoint_info: claim the client's key (public) without its secret.
            "impostor" => {
                let t = target_of(&infos[0]);
                let client_key =
                    auth::PublicKey::from_hex(infos[1]["auth_key"].as_str().unwrap()).unwrap();
                let mut s = TcpStream::connect(&t.addr).unwrap();
                let c = Challenge {
                    key: client_key,
                    nonce: [9u8; auth::NONCE_LEN],
                };
                s.write_all(
                    &Hello {
                        version: 2,
                        status: 0,
                        context_id: infos[1]["context_id"].as_u64().unwrap(),
                    }
                    .encode(),
                )
                .unwrap();
                s.write_all(&c.encode()).unwrap();
                let mut ans = [0u8; HELLO_LEN + auth::RESPONSE_LEN];
                s.read_exact(&mut ans).unwrap();
                // No secret: the best it can do is a guess, then the frames.
                s.write_all(&[0x42u8; auth::PROOF_LEN]).unwrap();
                for (h, p) in attack_frames(&t) {
                    let _ = s.write_all(&h.encode());
                    let _ = s.write_all(&p);
                }
                let replies = drain_to_eof(&mut s, Duration::from_secs(20));
                parent.send(&format!("impostor {replies}"));
            }
            // Its own key pair, a valid handshake: every operation refused.
            "stranger" => {
                let t = target_of(&infos[0]);
                let mut s = stranger(&t, &Identity::generate());
                let st = fire(&mut s, &t);
                let st: Vec<String> = st.iter().map(|v| v.to_string()).collect();
                parent.send(&format!("stranger {}", st.join(",")));
            }
            // Keeps firing refused frames: the connection must be closed after a few.
            "probe" => {
                let t = target_of(&infos[0]);
                let mut s = stranger(&t, &Identity::generate());
                let mut refused = 0;
                let mut closed = false;
                for i in 0..100u64 {
                    let h = Header {
                        size: 8,
                        addr: t.buf_addr,
                        key: t.buf_key ^ (i + 1),
                        endpoint: t.endpoint,
                        req_id: i + 1,
                        ..Header::new(Opcode::Read)
                    };
                    if s.write_all(&h.encode()).is_err() {
                        closed = true;
                        break;
                    }
                    let mut b = [0u8; HEADER_LEN];
                    if s.read_exact(&mut b).is_err() {
                        closed = true;
                        break;
                    }
                    assert_ne!(Header::decode(&b).status, 0, "a probe was served");
                    refused += 1;
                }
                parent.send(&format!("probe {refused} {closed}"));
            }
            // Opens and holds `n` silent connections and `n` that send garbage.
            "flood" => {
                let t = target_of(&infos[0]);
                let n: usize = 300;
                for i in 0..2 * n {
                    match TcpStream::connect(&t.addr) {
                        Ok(mut s) => {
                            if i % 2 == 1 {
                                let _ = s.write_all(&[0x47u8; 64]);
                            }
                            held.push(s);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
                parent.send("flooded");
            }
            // Many short garbage connections (each one is a refusal the target logs).
            "garbage" => {
                let t = target_of(&infos[0]);
                for _ in 0..3000 {
                    if let Ok(mut s) = TcpStream::connect(&t.addr) {
                        let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
                    }
                }
                parent.send("garbaged");
            }
            // A connection that never says hello, and an authenticated stranger that
            // goes quiet: how long each stays open.
            "linger" => {
                let t = target_of(&infos[0]);
                let start = Instant::now();
                let mut silent = TcpStream::connect(&t.addr).unwrap();
                let mut quiet = stranger(&t, &Identity::generate());
                let wait = Duration::from_secs(30);
                drain_to_eof(&mut silent, wait);
                let silent_ms = start.elapsed().as_millis();
                drain_to_eof(&mut quiet, wait);
                let quiet_ms = start.elapsed().as_millis();
                parent.send(&format!("linger {silent_ms} {quiet_ms}"));
            }
            "release" => {
                held.clear();
                parent.send("released");
            }
            _ => return false,
        }
        true
    });
});

/// The legitimate client and its two peers.
struct Rig {
    target: Peer,
    attacker: Peer,
    ep: Arc<TcpEndpoint>,
    target_info: Value,
    buf: Vec<u8>,
    local: u32,
}

impl Rig {
    fn new(target_env: &[(&str, String)], stderr: Stdio) -> Rig {
        let mut target = Peer::spawn_with("sec_target", target_env, stderr);
        let target_info = target.info();
        let attacker = Peer::spawn("sec_attacker", &[]);
        let ep = TcpEndpoint::new(&ctx(), MemoryPool::new()).unwrap();
        let mut buf = vec![0u8; MIB];
        // SAFETY: `buf` moves into the Rig with its heap allocation unchanged and lives
        // as long as the endpoint; it is read only after the operations on it completed.
        let local = unsafe {
            ep.register_memory_region("local", buf.as_mut_ptr(), MIB)
                .unwrap()
        };
        Rig {
            target,
            attacker,
            ep,
            target_info,
            buf,
            local,
        }
    }

    fn connect(&mut self) {
        self.ep.connect(&self.target_info).unwrap();
        self.target
            .send(&format!("connect {}", self.ep.endpoint_info()));
        self.target.expect("ok");
    }

    /// Connects despite whatever the attacker is doing, well within the handshake's own
    /// deadlines (the flood and log tests).
    fn connect_promptly(&mut self) {
        let t = Instant::now();
        self.connect();
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "connect took {:?}",
            t.elapsed()
        );
    }

    fn attack(&mut self, cmd: &str) -> String {
        self.attacker.send(&format!(
            "{cmd} {}\t{}",
            self.target_info,
            self.ep.endpoint_info()
        ));
        self.attacker.recv()
    }

    /// The legitimate pair works: a write (content checked at the target), a read back,
    /// a notification and a message, all arriving as sent.
    fn legit_round(&mut self, seed: u64) {
        let remote = self.ep.remote_pool().handle("buf").unwrap();
        fill_pattern(&mut self.buf[..4096], seed);
        let a = Assignment::new(self.local, remote, 8192, 0, 4096);
        self.ep.write(&[a], None).unwrap().wait().unwrap();
        self.target.send(&format!("check 8192 4096 {seed}"));
        self.target.expect("ok");
        let r = Assignment::new(self.local, remote, 0, 0, 4096);
        self.ep.read(&[r], None).unwrap().wait().unwrap();
        assert_eq!(check_pattern(&self.buf[..4096], 1), None);
        self.target.send("imm 20000");
        self.ep
            .write_with_imm(&[], seed as i32, None)
            .unwrap()
            .wait()
            .unwrap();
        self.target.expect(&format!("imm {seed}"));
        self.target.send("recv 20000");
        let m = [seed as u8; 100];
        // SAFETY: `m` outlives the send, which is waited for at once.
        unsafe { self.ep.send(m.as_ptr(), m.len(), None) }
            .unwrap()
            .wait()
            .unwrap();
        self.target.expect(&format!("msg {} 100", seed as u8));
    }

    /// Nothing of the attacker's reached the target: no notification, no message, and the
    /// start of the region (where its writes aim; the client writes at 8192) still holds
    /// pattern 1.
    fn nothing_injected(&mut self) {
        self.target.send("imm 300");
        self.target.expect("none");
        self.target.send("recv 300");
        self.target.expect("none");
        self.target.send("check 0 8192 1");
        self.target.expect("ok");
    }

    fn finish(mut self) {
        self.attacker.send("exit");
        self.target.send("exit");
        self.attacker.join();
        self.target.join();
    }
}

#[test]
fn spoofed_context_id_and_stolen_info_are_refused() {
    let mut r = Rig::new(&[], Stdio::inherit());
    r.connect();
    // protocol 1, the attack: refused with 409 before any frame is read
    let v1 = r.attack("v1");
    assert_eq!(
        v1,
        format!("v1 {} 0", Status::VersionMismatch.code()),
        "{v1}"
    );
    // the client's key without its secret: the target closes without a single reply
    // (it saw the response it sent, 0 reply frames)
    assert_eq!(r.attack("impostor"), "impostor 0");
    r.nothing_injected();
    r.legit_round(5);
    r.finish();
}

#[test]
fn injection_before_and_after_connect_is_refused() {
    // a short grace, so frames that arrive before connect() are answered quickly
    let mut r = Rig::new(&[("SEC_GRACE_MS", "300".to_string())], Stdio::inherit());
    // before the target connected to anyone: every frame waits for connect(), then is
    // refused as "not connected"
    let nc = Status::NotConnected.code().to_string();
    let want: Vec<&str> = vec![nc.as_str(); 6];
    assert_eq!(r.attack("stranger"), format!("stranger {}", want.join(",")));
    r.connect();
    // after: refused as "remote access denied" (the target's peer is another key)
    let ra = Status::RemoteAccess.code().to_string();
    let want: Vec<&str> = vec![ra.as_str(); 6];
    assert_eq!(r.attack("stranger"), format!("stranger {}", want.join(",")));
    r.nothing_injected();
    r.legit_round(7);
    r.finish();
}

#[test]
fn probing_connections_are_closed_after_a_few_refusals() {
    let mut r = Rig::new(&[], Stdio::inherit());
    r.connect();
    let p = r.attack("probe");
    assert_eq!(
        p,
        format!("probe {} true", dlslime::transport::strikes::MAX_STRIKES),
        "{p}"
    );
    r.nothing_injected();
    r.legit_round(9);
    r.finish();
}

#[test]
fn the_connected_peer_probing_keys_loses_its_connection() {
    let mut r = Rig::new(&[], Stdio::inherit());
    r.connect();
    let real = dlslime::memory::RemoteRegion::from_json(&r.target_info["mr_info"]["buf"]).unwrap();
    let mut outcomes = Vec::new();
    for i in 0..40u64 {
        let forged =
            r.ep.remote_pool()
                .register(
                    &format!("forged{i}"),
                    dlslime::memory::RemoteRegion {
                        key: real.key ^ (i + 1),
                        ..real
                    },
                )
                .unwrap();
        fill_pattern(&mut r.buf[..64], 3);
        let st = match r
            .ep
            .write(&[Assignment::new(r.local, forged, 0, 0, 64)], None)
        {
            Ok(f) => f.wait().err().map(|e| e.status()),
            Err(e) => Some(e.status()),
        };
        outcomes.push(st);
    }
    // Every probe refused; each connection (one per lane) is closed at its ninth, and
    // with lane 0 the peer is lost: the rest fail at once.
    let max = dlslime::transport::strikes::MAX_STRIKES as usize;
    let refused = outcomes
        .iter()
        .filter(|s| **s == Some(Status::RemoteAccess))
        .count();
    assert!(refused >= max && refused <= 2 * max, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|s| matches!(s, Some(Status::RemoteAccess | Status::PeerDisconnected))),
        "{outcomes:?}"
    );
    assert_eq!(
        *outcomes.last().unwrap(),
        Some(Status::PeerDisconnected),
        "{outcomes:?}"
    );
    r.target.send("check 0 1048576 1");
    r.target.expect("ok");
    r.finish();
}

#[test]
fn a_connection_flood_does_not_lock_out_the_legitimate_pair() {
    let mut r = Rig::new(&[("SEC_CAP_PER_IP", "64".to_string())], Stdio::inherit());
    assert_eq!(r.attack("flood"), "flooded");
    // the flood's connections are still open; the legitimate pair connects and works
    r.connect_promptly();
    r.legit_round(11);
    r.target.send("conns");
    let n: usize = r.target.recv().parse().unwrap();
    assert!(n <= 64, "{n} accepted connections held, cap 64");
    r.attacker.send("release");
    r.attacker.expect("released");
    r.finish();
}

#[test]
fn silent_and_idle_connections_are_closed() {
    let env = [
        ("SEC_HANDSHAKE_MS", "500".to_string()),
        ("SEC_IDLE_MS", "1500".to_string()),
    ];
    let mut r = Rig::new(&env, Stdio::inherit());
    r.connect();
    r.legit_round(15);
    let got = r.attack("linger");
    let c = PeerCommand::parse(&got);
    assert_eq!(c.name, "linger", "{got}");
    let ms = c.nums();
    // the silent one at its handshake deadline; the quiet stranger once idle (swept every
    // idle/4), and not before
    assert!(ms[0] >= 400 && ms[0] < 5_000, "{got}");
    assert!(ms[1] >= 1_400 && ms[1] < 10_000, "{got}");
    // the legitimate pair's connections serve a connected endpoint: idle longer than
    // idle_timeout, they were kept
    r.legit_round(16);
    r.finish();
}

#[test]
fn an_undrained_stderr_does_not_wedge_the_listener() {
    // the target logs every refusal (level 3) into a pipe nobody reads
    let mut r = Rig::new(&[("DLSLIME_LOG_LEVEL", "3".to_string())], Stdio::piped());
    assert_eq!(r.attack("garbage"), "garbaged");
    r.connect_promptly();
    r.legit_round(13);
    assert_eq!(r.attack("garbage"), "garbaged");
    r.legit_round(14);
    r.finish();
}
