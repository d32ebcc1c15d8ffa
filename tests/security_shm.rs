//! Attacks on the shared-memory handshake from a third OS process: a silent connection
//! to a listener, an impostor presenting the legitimate peer's names and public key
//! without its secret, and another user. Each must fail and the legitimate pair (the
//! parent and a target child) must connect promptly and move bytes (content checked).

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use common::{check_pattern, fill_pattern, pattern, region_command, registered, Peer};
use dlslime::transport::auth::{self, Challenge};
use dlslime::transport::shm::handshake;
use dlslime::transport::shm::{ShmConfig, ShmEndpoint};
use dlslime::{Assignment, Endpoint, MemoryPool, Status};
use serde_json::{json, Value};

const LEN: usize = 1 << 20;

fn endpoint() -> ShmEndpoint {
    ShmEndpoint::new(MemoryPool::new(), ShmConfig::default()).unwrap()
}

common::peer_entry!(fn shm_sec_target(parent) {
    let ep = endpoint();
    // SAFETY: `region` lives until the end of this function, after ep.shutdown(); the
    // endpoint is the only writer while it is registered.
    let (mut region, _) = unsafe { registered(ep.memory_pool(), "buf", pattern(LEN, 1)) };
    parent.send(&format!("info {}", ep.endpoint_info()));
    parent.serve(|parent, cmd| region_command(parent, &ep, &mut region, cmd));
    ep.shutdown();
});

fn raw_connect(path: &str) -> std::io::Result<OwnedFd> {
    handshake::connect(
        path,
        dlslime::engine::Deadline::after(Duration::from_secs(5)),
    )
    .map_err(|e| std::io::Error::other(e.message().to_string()))
}

common::peer_entry!(fn shm_sec_attacker(parent) {
    let mut held: Vec<OwnedFd> = Vec::new();
    parent.serve(|parent, cmd| {
        let infos = cmd.json_args();
        match cmd.name {
            // Connects to both listeners and says nothing.
            "silent" => {
                for i in &infos {
                    for _ in 0..4 {
                        held.push(raw_connect(i["socket"].as_str().unwrap()).unwrap());
                    }
                }
                parent.send("holding");
            }
            // Claims to be the dialling peer (its names and public key, all published)
            // towards the acceptor, then guesses the proof and offers a memfd.
            "impostor" => {
                let (a, b) = (&infos[0], &infos[1]);
                let (dialer, acceptor) = if a["socket"].as_str() < b["socket"].as_str() {
                    (a, b)
                } else {
                    (b, a)
                };
                let s = raw_connect(acceptor["socket"].as_str().unwrap()).unwrap();
                let key = auth::PublicKey::from_info(dialer.as_object().unwrap()).unwrap();
                let c = Challenge {
                    key,
                    nonce: [3u8; auth::NONCE_LEN],
                };
                let first = json!({
                    "socket": dialer["socket"], "peer_socket": acceptor["socket"],
                    "host": dialer["host"], "challenge": auth::to_hex(&c.encode()),
                });
                handshake::send_frame(s.as_raw_fd(), &first, &[]).unwrap();
                let deadline = dlslime::engine::Deadline::after(Duration::from_secs(60));
                let Ok((r, _)) = handshake::recv_frame(s.as_raw_fd(), deadline) else {
                    // the acceptor finished with the real peer first and hung up
                    parent.send("impostor PeerDisconnected");
                    return true;
                };
                assert!(r.get("response").is_some(), "{r}");
                // SAFETY: a NUL-terminated name and no flags.
                let memfd = unsafe { libc::memfd_create(c"evil".as_ptr(), 0) };
                assert!(memfd >= 0);
                // SAFETY: a fresh descriptor, owned by nothing else.
                let memfd = unsafe { OwnedFd::from_raw_fd(memfd) };
                let guess = json!({"proof": auth::to_hex(&[0x42u8; auth::PROOF_LEN]), "pid": 1,
                                   "probe": 0, "allocs": [], "host": dialer["host"]});
                let _ = handshake::send_frame(s.as_raw_fd(), &guess, &[memfd.as_raw_fd()]);
                let end = handshake::recv_frame(s.as_raw_fd(), deadline);
                parent.send(&format!(
                    "impostor {}",
                    end.err()
                        .map_or("answered".into(), |e| format!("{:?}", e.status()))
                ));
            }
            // Another user (root drops to nobody) tries to reach the listener at all.
            "other_user" => {
                // SAFETY: geteuid takes no arguments and cannot fail.
                if unsafe { libc::geteuid() } != 0 {
                    parent.send("not-root");
                    return true;
                }
                let path = infos[0]["socket"].as_str().unwrap().to_string();
                // Everything the child needs is made before fork: after it, only
                // async-signal-safe syscalls.
                // SAFETY: sockaddr_un is plain data, valid when zeroed.
                let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
                addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
                for (i, b) in path.as_bytes().iter().enumerate() {
                    addr.sun_path[i] = *b as libc::c_char;
                }
                let len =
                    (std::mem::size_of::<libc::sa_family_t>() + path.len() + 1) as libc::socklen_t;
                // SAFETY: the child only calls setgid/setuid/socket/connect/_exit.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    // SAFETY: async-signal-safe syscalls only, on locals made before the
                    // fork (`addr`, `len`), then _exit without unwinding or destructors.
                    unsafe {
                        if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                            libc::_exit(2);
                        }
                        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0);
                        let rc = libc::connect(fd, &addr as *const _ as *const libc::sockaddr, len);
                        let refused = rc != 0 && *libc::__errno_location() == libc::EACCES;
                        libc::_exit(if rc == 0 {
                            0
                        } else if refused {
                            13
                        } else {
                            1
                        });
                    }
                }
                let mut st = 0;
                // SAFETY: `st` is a live int the call writes; `pid` is our child.
                unsafe { libc::waitpid(pid, &mut st, 0) };
                parent.send(&format!("other_user {}", libc::WEXITSTATUS(st)));
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

struct Rig {
    target: Peer,
    attacker: Peer,
    ep: ShmEndpoint,
    info: Value,
    buf: Vec<u8>,
}

impl Rig {
    fn new() -> Rig {
        let mut target = Peer::spawn("shm_sec_target", &[]);
        let info = target.info();
        let attacker = Peer::spawn("shm_sec_attacker", &[]);
        let ep = endpoint();
        let buf = vec![0u8; LEN];
        Rig {
            target,
            attacker,
            ep,
            info,
            buf,
        }
    }

    fn attack(&mut self, cmd: &str) -> String {
        self.attacker
            .send(&format!("{cmd} {}\t{}", self.info, self.ep.endpoint_info()));
        self.attacker.recv()
    }

    /// Both sides connect (concurrently, as shm requires); how long ours took.
    fn connect(&mut self) -> Duration {
        let t = Instant::now();
        self.target
            .send(&format!("connect {}", self.ep.endpoint_info()));
        self.ep.connect(&self.info).unwrap();
        self.target.expect("ok");
        t.elapsed()
    }

    fn legit_round(&mut self, seed: u64) {
        // SAFETY: `buf` lives as long as the Rig and its endpoint; it is read only after
        // the operations on it completed.
        let local = unsafe {
            self.ep
                .register_memory_region("local", self.buf.as_mut_ptr(), LEN)
                .unwrap()
        };
        let remote = self.ep.remote_pool().handle("buf").unwrap();
        self.ep
            .read(&[Assignment::new(local, remote, 0, 0, LEN as u64)], None)
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(check_pattern(&self.buf, 1), None);
        fill_pattern(&mut self.buf[..4096], seed);
        self.ep
            .write(&[Assignment::new(local, remote, 0, 0, 4096)], None)
            .unwrap()
            .wait()
            .unwrap();
        self.target.send(&format!("check 0 4096 {seed}"));
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
fn a_silent_connection_does_not_block_the_peer() {
    let mut r = Rig::new();
    assert_eq!(r.attack("silent"), "holding");
    let took = r.connect();
    // the silent connections' own deadline is 5 s: connecting sooner shows they were
    // served concurrently, not in turn
    assert!(took < Duration::from_secs(4), "connect took {took:?}");
    r.legit_round(21);
    r.attacker.send("release");
    r.attacker.expect("released");
    r.finish();
}

#[test]
fn an_impostor_without_the_secret_is_refused() {
    let mut r = Rig::new();
    r.attacker
        .send(&format!("impostor {}\t{}", r.info, r.ep.endpoint_info()));
    // the impostor's connection waits in the acceptor's backlog until connect() runs
    std::thread::sleep(Duration::from_millis(200));
    r.connect();
    let got = r.attacker.recv();
    assert!(
        got == "impostor PeerDisconnected" || got == "impostor Io",
        "{got}"
    );
    r.legit_round(22);
    r.finish();
}

#[test]
fn other_users_cannot_reach_the_socket() {
    let dir = handshake::socket_dir().unwrap();
    let m = std::fs::metadata(&dir).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o700, "{}", dir.display());
    // SAFETY: geteuid takes no arguments and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(m.uid(), euid);
    let mut r = Rig::new();
    match r.attack("other_user").as_str() {
        "other_user 13" => {}
        "not-root" => {
            println!("NOT RUN: the other-user connect needs root to switch users");
            assert!(std::env::var("CI").is_err(), "NOT RUN under CI");
        }
        other => panic!("another user reached the listener: {other}"),
    }
    r.connect();
    r.legit_round(23);
    r.finish();
}

#[test]
fn the_connected_peer_probing_keys_loses_its_connection() {
    let mut r = Rig::new();
    r.connect();
    r.legit_round(24);
    let local = r.ep.memory_pool().handle("local").unwrap();
    let real =
        r.ep.remote_pool()
            .get(r.ep.remote_pool().handle("buf").unwrap())
            .unwrap();
    let max = dlslime::transport::strikes::MAX_STRIKES as u64;
    // what a probe would write if it got through
    fill_pattern(&mut r.buf[..64], 99);
    let mut outcomes = Vec::new();
    let start = Instant::now();
    for i in 0.. {
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
        let st = match r
            .ep
            .write(&[Assignment::new(local, forged, 0, 0, 64)], None)
        {
            Ok(f) => f.wait().err().map(|e| e.status()),
            Err(e) => Some(e.status()),
        };
        outcomes.push(st);
        if st != Some(Status::RemoteAccess) || start.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    // Every probe is refused; the ninth makes the target hang up. Its own answer races
    // the hang-up (either may reach us first), and entries already in the ring may still
    // be refused while the target tears down; then the peer is gone.
    let refused = outcomes
        .iter()
        .filter(|s| **s == Some(Status::RemoteAccess))
        .count();
    assert!(refused >= max as usize, "{outcomes:?}");
    assert!(outcomes.len() > max as usize, "{outcomes:?}");
    assert_eq!(
        *outcomes.last().unwrap(),
        Some(Status::PeerDisconnected),
        "{outcomes:?}"
    );
    // nothing was written: the target still holds the legitimate round's bytes
    r.target.send(&format!("check 0 4096 {}", 24));
    r.target.expect("ok");
    r.finish();
}
