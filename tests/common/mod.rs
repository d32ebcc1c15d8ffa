//! Two-process test harness: a test re-runs its own test binary as a child that executes
//! one `#[ignore]`d entry function (the peer), and the two talk over the child's
//! stdin/stdout with `@@ `-prefixed lines (everything else the child prints is ignored).
//! Every read has a deadline; the child is SIGKILLed when the handle drops.
#![allow(dead_code)]

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

    /// Parent side of the endpoint exchange ([`Parent::connect_endpoint`] in the child):
    /// takes the child's `info`, sends ours, connects, waits for `connected`.
    pub fn connect_endpoint(&mut self, ep: &dyn dlslime::Endpoint) {
        let line = self.recv();
        let info: serde_json::Value =
            serde_json::from_str(line.strip_prefix("info ").expect("info line")).unwrap();
        self.send(&format!("connect {}", ep.endpoint_info()));
        ep.connect(&info).unwrap();
        self.expect("connected");
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
