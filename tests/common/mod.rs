//! Two-process test harness: a test re-runs its own test binary as a child that executes
//! one `#[ignore]`d entry function (the peer), and the two talk over the child's
//! stdin/stdout with `@@ `-prefixed lines (everything else the child prints is ignored).
//! Every read has a deadline; the child is SIGKILLed when the handle drops.
#![allow(dead_code)]

pub mod scenarios;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::Duration;

const PREFIX: &str = "@@ ";
const CHILD_ENV: &str = "DLSLIME_TEST_CHILD";

/// Generous default for a peer's answer on a loaded 2-core machine.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Peer {
    /// Starts the `#[ignore]`d test `entry` (its full path, e.g. `tcp_peer_target`) of
    /// this test binary in a new process.
    pub fn spawn(entry: &str, env: &[(&str, String)]) -> Peer {
        Peer::spawn_with(entry, env, Stdio::inherit())
    }

    /// Like [`Peer::spawn`], with the child's stderr going to `stderr` (e.g. a pipe
    /// nobody reads).
    pub fn spawn_with(entry: &str, env: &[(&str, String)], stderr: Stdio) -> Peer {
        let exe = std::env::current_exe().expect("test binary path");
        let mut cmd = Command::new(exe);
        cmd.args([
            entry,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn peer process");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The test harness may print "test name ... " on the same line first.
                if let Some(i) = line.find(PREFIX) {
                    if tx.send(line[i + PREFIX.len()..].to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        let stdin = child.stdin.take();
        Peer {
            child,
            stdin,
            lines: rx,
        }
    }

    pub fn send(&mut self, msg: &str) {
        let stdin = self.stdin.as_mut().expect("peer stdin open");
        writeln!(stdin, "{msg}").expect("write to peer");
        stdin.flush().unwrap();
    }

    /// The next message from the peer; panics after `timeout` or if the peer exited.
    pub fn recv_within(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => panic!("peer said nothing within {timeout:?}"),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().ok();
                panic!("peer exited before answering (status {status:?})")
            }
        }
    }

    pub fn recv(&mut self) -> String {
        self.recv_within(ANSWER_TIMEOUT)
    }

    /// The next message if one has arrived (never blocks).
    pub fn try_recv(&mut self) -> Option<String> {
        self.lines.try_recv().ok()
    }

    /// The child's next message, `info <endpoint_info>`: its endpoint info.
    pub fn info(&mut self) -> serde_json::Value {
        let line = self.recv();
        serde_json::from_str(line.strip_prefix("info ").expect("info line")).unwrap()
    }

    /// Parent side of the endpoint exchange ([`Parent::connect_endpoint`] in the child):
    /// takes the child's `info`, sends ours, connects, waits for `connected`.
    pub fn connect_endpoint(&mut self, ep: &dyn dlslime::Endpoint) {
        let info = self.info();
        self.send(&format!("connect {}", ep.endpoint_info()));
        ep.connect(&info).unwrap();
        self.expect("connected");
    }

    /// Parent side of a target's `connect` command: takes the child's `info`, connects
    /// `ep` to it, sends ours, waits for `ok`; returns the child's info.
    pub fn dial(&mut self, ep: &dyn dlslime::Endpoint) -> serde_json::Value {
        let info = self.info();
        ep.connect(&info).unwrap();
        self.send(&format!("connect {}", ep.endpoint_info()));
        self.expect("ok");
        info
    }

    /// Sends a command and returns the answer.
    pub fn cmd(&mut self, c: &str) -> String {
        self.send(c);
        self.recv()
    }

    /// Expects the exact message `want`.
    pub fn expect(&mut self, want: &str) {
        let got = self.recv();
        assert_eq!(got, want, "unexpected message from peer");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for a clean exit (after sending it "exit", say) and asserts success.
    pub fn join(mut self) {
        self.stdin.take();
        let deadline = std::time::Instant::now() + ANSWER_TIMEOUT;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(st.success(), "peer failed: {st:?}");
                return;
            }
            assert!(std::time::Instant::now() < deadline, "peer did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True inside a child started by [`Peer::spawn`]. Entry functions return at once
/// otherwise (they are `#[ignore]`d, so a normal run does not even call them).
pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// Child side: the channel to the parent.
pub struct Parent {
    lines: std::io::Lines<std::io::StdinLock<'static>>,
}

impl Parent {
    pub fn new() -> Parent {
        Parent {
            lines: std::io::stdin().lock().lines(),
        }
    }

    /// The channel to the parent inside a child started by [`Peer::spawn`]; `None`
    /// otherwise (the entry function then returns at once).
    pub fn child() -> Option<Parent> {
        is_child().then(Parent::new)
    }

    /// A child's command loop: hands each command to `handle` until `exit` or until the
    /// parent closes stdin. A command `handle` does not know (it returns false) is a bug
    /// of the test.
    pub fn serve(&mut self, mut handle: impl FnMut(&mut Parent, &PeerCommand<'_>) -> bool) {
        while let Some(line) = self.recv() {
            let c = PeerCommand::parse(&line);
            if c.name == "exit" {
                break;
            }
            assert!(handle(self, &c), "unknown command {}", c.name);
        }
    }

    pub fn send(&self, msg: &str) {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{PREFIX}{msg}").unwrap();
        out.flush().unwrap();
    }

    /// Child side of the endpoint exchange ([`Peer::connect_endpoint`] in the parent):
    /// sends `info`, connects to the parent's endpoint, says `connected`.
    pub fn connect_endpoint(&mut self, ep: &dyn dlslime::Endpoint) {
        self.send(&format!("info {}", ep.endpoint_info()));
        let line = self.recv().expect("parent's connect line");
        let info = line.strip_prefix("connect ").expect("connect line");
        ep.connect(&serde_json::from_str(info).unwrap()).unwrap();
        self.send("connected");
    }

    /// The parent's next message; `None` when the parent closed stdin (or died).
    pub fn recv(&mut self) -> Option<String> {
        self.lines.next().and_then(Result::ok)
    }
}

/// Deterministic test pattern: byte `i` of a buffer seeded with `seed`.
pub fn pattern_byte(seed: u64, i: usize) -> u8 {
    let x = (i as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(seed.wrapping_mul(0xD1B5_4A32_D192_ED03));
    (x >> 56) as u8 ^ (i as u8)
}

pub fn fill_pattern(buf: &mut [u8], seed: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(seed, i);
    }
}

/// Index of the first byte that differs from the pattern, if any.
pub fn check_pattern(buf: &[u8], seed: u64) -> Option<usize> {
    buf.iter()
        .enumerate()
        .position(|(i, b)| *b != pattern_byte(seed, i))
}

/// `len` bytes of the pattern of `seed`.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill_pattern(&mut v, seed);
    v
}

/// A child's answer to a check: `ok` when `buf` holds the pattern of `seed`, else
/// `bad <index of the first differing byte>`.
pub fn check_reply(buf: &[u8], seed: u64) -> String {
    match check_pattern(buf, seed) {
        None => "ok".to_string(),
        Some(i) => format!("bad {i}"),
    }
}

/// Registers `buf` in `pool` as `name`; returns it (its heap block does not move) and
/// the region's handle.
///
/// # Safety
/// The caller keeps the returned buffer alive, and does not reallocate it, for as long
/// as any endpoint of `pool` may use the region.
pub unsafe fn registered(
    pool: &dlslime::MemoryPool,
    name: &str,
    mut buf: Vec<u8>,
) -> (Vec<u8>, u32) {
    // SAFETY: `buf` outlives every use of the region (this function's contract).
    let h = unsafe { pool.register(Some(name), buf.as_mut_ptr(), buf.len()) }.unwrap();
    (buf, h)
}

/// The commands of a target child about its region: `connect <info>` (answered `ok`),
/// `check <off> <len> <seed>` and `fill <off> <len> <seed>`. False for any other.
pub fn region_command(
    parent: &Parent,
    ep: &dyn dlslime::Endpoint,
    region: &mut [u8],
    c: &PeerCommand<'_>,
) -> bool {
    let n = c.nums();
    match c.name {
        "connect" => {
            ep.connect(&serde_json::from_str(c.rest).unwrap()).unwrap();
            parent.send("ok");
        }
        "check" => parent.send(&check_reply(
            &region[n[0] as usize..][..n[1] as usize],
            n[2],
        )),
        "fill" => {
            fill_pattern(&mut region[n[0] as usize..][..n[1] as usize], n[2]);
            parent.send("ok");
        }
        _ => return false,
    }
    true
}

/// The commands of a target child that both registers a region and takes messages:
/// [`region_command`], else [`message_command`]; false for any other.
pub fn target_command(
    parent: &Parent,
    ep: &dyn dlslime::Endpoint,
    region: &mut [u8],
    timeout: Option<Duration>,
    c: &PeerCommand<'_>,
) -> bool {
    region_command(parent, ep, region, c) || message_command(parent, ep, timeout, c)
}

/// The two-sided commands of a target child: `imm <n>` (n imm_recvs, answered
/// `imms <values or statuses>`), `recv <n> <cap>` (n receives, answered
/// `recvd <status>:<len>:<seed-or-bad>,...`; the sender seeds message k with pattern
/// k+100, encoded in its byte 0) and `send <len> <seed>` (answered `ok` or
/// `err <status>`). False for any other.
pub fn message_command(
    parent: &Parent,
    ep: &dyn dlslime::Endpoint,
    timeout: Option<Duration>,
    c: &PeerCommand<'_>,
) -> bool {
    let nums = c.nums();
    match c.name {
        "imm" => {
            let vals: Vec<String> = (0..nums[0])
                .map(|_| {
                    let f = ep.imm_recv(timeout).unwrap();
                    match f.wait() {
                        Ok(()) => f.imm_data().to_string(),
                        Err(e) => format!("{:?}", e.status()),
                    }
                })
                .collect();
            parent.send(&format!("imms {}", vals.join(",")));
        }
        "recv" => {
            let (n, cap) = (nums[0], nums[1] as usize);
            let mut bufs: Vec<Vec<u8>> = (0..n).map(|_| vec![0u8; cap.max(1)]).collect();
            let futs: Vec<_> = bufs
                .iter_mut()
                // SAFETY: each buffer of `bufs` stays alive and untouched until its
                // future is waited below (a failed wait also ends the library's access).
                .map(|b| unsafe { ep.recv(b.as_mut_ptr(), cap, timeout).unwrap() })
                .collect();
            let mut out = Vec::new();
            for (f, b) in futs.iter().zip(&bufs) {
                match f.wait() {
                    Ok(()) => {
                        let len = f.nbytes() as usize;
                        let seed = b[0] as u64;
                        let ok = len > 0 && check_pattern(&b[1..len], seed).is_none();
                        out.push(format!(
                            "ok:{len}:{}",
                            if ok { seed.to_string() } else { "bad".into() }
                        ));
                    }
                    Err(e) => out.push(format!("{:?}:0:-", e.status())),
                }
            }
            parent.send(&format!("recvd {}", out.join(",")));
        }
        "send" => {
            let m = message(nums[0] as usize, nums[1] as u8);
            // SAFETY: `m` stays alive and unmodified until `f` completes (waited just
            // below).
            let f = unsafe { ep.send(m.as_ptr(), m.len(), timeout).unwrap() };
            match f.wait() {
                Ok(()) => parent.send("ok"),
                Err(e) => parent.send(&format!("err {:?}", e.status())),
            }
        }
        _ => return false,
    }
    true
}

/// A message for `message_command`'s `recv`: byte 0 is `seed`, the rest its pattern
/// (empty for `len == 0`).
pub fn message(len: usize, seed: u8) -> Vec<u8> {
    let mut m = vec![0u8; len.max(1)];
    m[0] = seed;
    fill_pattern(&mut m[1..], seed as u64);
    m.truncate(len);
    m
}

/// One operation kind's traffic as `(submitted, submitted_bytes, completed,
/// completed_bytes)`, the tuple the counter tests compare against a known workload.
pub fn traffic(v: &dlslime::obs::OpValues) -> (u64, u64, u64, u64) {
    (
        v.submitted,
        v.submitted_bytes,
        v.completed,
        v.completed_bytes,
    )
}

/// Tests that each run one scenario function with their own arguments:
/// An endpoint of `transport` ("shm" or "tcp") with the RPC session memory for `cfg`
/// allocated before connect (on shared memory the peer then maps it at connect).
pub fn rpc_endpoint(
    transport: &str,
    cfg: &dlslime::rpc::RpcConfig,
) -> (
    std::sync::Arc<dyn dlslime::Endpoint>,
    std::sync::Arc<dlslime::rpc::RpcMemory>,
) {
    use dlslime::Endpoint;
    match transport {
        "shm" => {
            let pool = dlslime::MemoryPool::new();
            let mem = dlslime::rpc::RpcMemory::new(&pool, cfg).unwrap();
            let ep = dlslime::transport::shm::ShmEndpoint::new(pool, Default::default()).unwrap();
            (std::sync::Arc::new(ep), mem)
        }
        "tcp" => {
            let ep =
                dlslime::transport::tcp::TcpEndpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let mem = dlslime::rpc::RpcMemory::new(ep.memory_pool(), cfg).unwrap();
            (ep, mem)
        }
        t => panic!("unknown transport {t}"),
    }
}

/// Kills `peer` while the call `f` waits for its reply: the call must fail with
/// `PeerDisconnected` within 3 s.
pub fn kill_fails_call(peer: &mut Peer, f: &mut dlslime::rpc::CallFuture) {
    let t0 = std::time::Instant::now();
    peer.kill();
    let e = f.wait(Some(ANSWER_TIMEOUT)).unwrap_err();
    let el = t0.elapsed();
    assert_eq!(e.status(), dlslime::Status::PeerDisconnected, "{e}");
    assert!(
        el < Duration::from_secs(3),
        "pending call failed after {el:?}"
    );
}

/// `scenario_tests! { name => scenario(args); ... }`, each name optionally preceded by
/// docs and attributes (`#[ignore = "..."]`).
#[allow(unused_macros)]
macro_rules! scenario_tests {
    ($($(#[$attr:meta])* $name:ident => $scenario:ident($($arg:expr),* $(,)?);)*) => {
        $(
            #[test]
            $(#[$attr])*
            fn $name() {
                $scenario($($arg),*);
            }
        )*
    };
}
#[allow(unused_imports)]
pub(crate) use scenario_tests;

/// A peer-process entry: the `#[ignore]`d test that [`Peer::spawn`] runs in the child
/// process, and that returns at once when run by hand outside one.
/// `peer_entry!(fn name(parent) { body })`: `body` sees the child's `mut parent`.
#[allow(unused_macros)]
macro_rules! peer_entry {
    (fn $name:ident($parent:ident) $body:block) => {
        #[test]
        #[ignore = "peer process entry, run by the two-process tests"]
        fn $name() {
            let Some(mut $parent) = $crate::common::Parent::child() else {
                return;
            };
            $body
        }
    };
}
#[allow(unused_imports)]
pub(crate) use peer_entry;

/// One command from the parent, `<name> <rest>`: the child entries' loops read these.
pub struct PeerCommand<'a> {
    pub name: &'a str,
    pub rest: &'a str,
}

impl<'a> PeerCommand<'a> {
    pub fn parse(line: &'a str) -> PeerCommand<'a> {
        let (name, rest) = line.split_once(' ').unwrap_or((line, ""));
        PeerCommand { name, rest }
    }

    /// The numbers among the arguments (anything else is skipped).
    pub fn nums(&self) -> Vec<u64> {
        self.rest
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect()
    }

    /// The arguments as tab-separated JSON documents (endpoint infos, say).
    pub fn json_args(&self) -> Vec<serde_json::Value> {
        self.rest
            .split('\t')
            .filter(|s| !s.is_empty())
            .map(|s| serde_json::from_str(s).expect("a JSON argument"))
            .collect()
    }
}

/// An anonymous mapping that the test unmaps while a region still names it. It lies
/// far from where the kernel places mappings (which grow down from near the top of the
/// address space), so that no allocation of the process lands there after the unmap.
pub struct Hole {
    addr: usize,
    pub len: usize,
}

impl Hole {
    pub fn new(len: usize) -> Hole {
        const FAR: usize = 0x2000_0000_0000; // 32 TiB
                                             // SAFETY: a fresh private anonymous mapping at an address nothing else uses
                                             // (MAP_FIXED_NOREPLACE fails rather than replace a mapping).
        let p = unsafe {
            libc::mmap(
                FAR as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        assert_eq!(p as usize, FAR, "mmap at {FAR:#x}");
        Hole {
            addr: p as usize,
            len,
        }
    }

    pub fn ptr(&self) -> *mut u8 {
        self.addr as *mut u8
    }

    pub fn unmap(&self) {
        // SAFETY: our own mapping; nothing in this process dereferences it afterwards
        // (the library only hands its addresses to the kernel, which checks them).
        assert_eq!(unsafe { libc::munmap(self.ptr().cast(), self.len) }, 0);
    }
}

/// Two TCP endpoints on loopback in this process, connected to each other.
pub fn tcp_pair() -> (
    std::sync::Arc<dlslime::transport::tcp::TcpEndpoint>,
    std::sync::Arc<dlslime::transport::tcp::TcpEndpoint>,
) {
    use dlslime::Endpoint;
    let bind =
        || dlslime::transport::tcp::TcpEndpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let (a, b) = (bind(), bind());
    a.connect(&b.endpoint_info()).unwrap();
    b.connect(&a.endpoint_info()).unwrap();
    (a, b)
}
