//! Child processes for the ring benchmarks: the running binary re-executes itself with
//! `RING_BENCH_ROLE=<role>` (plus `child_args`, which a test binary sets to run its
//! child entry), and parent and child talk in lines prefixed with `@@ ` (anything else a
//! child prints is ignored). Every read has a deadline; children are SIGKILLed on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::Duration;

const PREFIX: &str = "@@ ";
pub const ROLE_ENV: &str = "RING_BENCH_ROLE";

/// Extra arguments for the re-executed binary (a test binary passes its child entry).
pub static CHILD_ARGS: OnceLock<Vec<String>> = OnceLock::new();

pub fn role() -> Option<String> {
    std::env::var(ROLE_ENV).ok()
}

pub struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Proc {
    pub fn spawn(role: &str, env: &[(&str, String)]) -> Proc {
        let exe = std::env::current_exe().expect("own binary");
        let mut cmd = Command::new(exe);
        cmd.args(CHILD_ARGS.get().cloned().unwrap_or_default())
            .env(ROLE_ENV, role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn child");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find(PREFIX) {
                    if tx.send(line[i + PREFIX.len()..].to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        let stdin = child.stdin.take();
        Proc {
            child,
            stdin,
            lines: rx,
        }
    }

    pub fn send(&mut self, msg: &str) {
        if let Some(s) = self.stdin.as_mut() {
            let _ = writeln!(s, "{msg}");
            let _ = s.flush();
        }
    }

    pub fn recv(&mut self, timeout: Duration) -> Option<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    pub fn expect_prefix(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let m = self
                .recv(left)
                .unwrap_or_else(|| panic!("child said no {prefix:?} within {timeout:?}"));
            if let Some(rest) = m.strip_prefix(prefix) {
                return rest.trim_start().to_string();
            }
        }
    }

    /// Messages already received (non-blocking).
    pub fn drain(&mut self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn finish(mut self, timeout: Duration) {
        self.send("exit");
        self.stdin.take();
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Child side: a line to the parent.
pub fn say(msg: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{PREFIX}{msg}");
    let _ = out.flush();
}

/// Child side: the parent's lines (ends when the parent closes stdin or dies).
pub fn commands() -> impl Iterator<Item = String> {
    std::io::stdin().lines().map_while(Result::ok)
}

/// Deterministic content of the payload of generation `gen`.
pub fn fill(buf: &mut [u8], gen: u64) {
    let mut x = gen.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

/// Whether `buf` holds the payload of generation `gen`.
pub fn check(buf: &[u8], gen: u64) -> bool {
    let mut want = vec![0u8; buf.len()];
    fill(&mut want, gen);
    want == buf
}
