//! Fixtures for the PeerAgent tests: a real `redis-server` and the real `nanoctrl`
//! binary of this workspace, each on an ephemeral loopback port, killed on drop (also
//! when a test fails); and the agent child process driven over the two-process harness
//! of `tests/common`. Every wait has a deadline.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh, unique name for scopes and aliases.
pub fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{tag}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 20 ms until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn redis_server_bin() -> String {
    if let Ok(p) = std::env::var("REDIS_SERVER") {
        return p;
    }
    for p in [
        "redis-server",
        "/usr/bin/redis-server",
        "/usr/local/bin/redis-server",
    ] {
        if Command::new(p)
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok()
        {
            return p.to_string();
        }
    }
    panic!("redis-server not found: run scripts/install-deps.sh (or set REDIS_SERVER)");
}

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    pub url: String,
}

impl Redis {
    pub fn start() -> Redis {
        for _ in 0..5 {
            if let Some(r) = Self::try_start_on(free_port()) {
                return r;
            }
        }
        panic!("could not start redis-server on an ephemeral port");
    }

    /// Starts on `port` again (after `kill`), retrying while the port is released.
    pub fn restart(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(mut r) = Self::try_start_on(self.port) {
                self.child = r.child.take();
                return;
            }
            assert!(
                Instant::now() < deadline,
                "could not restart redis-server on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn try_start_on(port: u16) -> Option<Redis> {
        let mut child = Command::new(redis_server_bin())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let url = format!("redis://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return None;
            }
            if let Ok(mut c) = redis::Client::open(url.as_str()).and_then(|c| c.get_connection()) {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return Some(Redis {
                        child: Some(child),
                        port,
                        url,
                    });
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url.as_str())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap()
    }

    /// Every key under `scope:` (SCAN).
    pub fn scope_keys(&self, scope: &str) -> Vec<String> {
        let mut c = self.conn();
        let mut out = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{scope}:*"))
                .arg("COUNT")
                .arg(1000)
                .query(&mut c)
                .unwrap();
            out.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        out.sort();
        out
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The workspace's nanoctrl binary, built once per test process if missing.
pub fn nanoctrl_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    static BUILD: Mutex<()> = Mutex::new(());
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("NANOCTRL_BIN") {
            return PathBuf::from(p);
        }
        // tests run from <target>/<profile>/deps/
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let bin = profile_dir.join("nanoctrl");
        if !bin.exists() {
            let _g = BUILD.lock().unwrap();
            let target = profile_dir.parent().unwrap();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "-p", "nanoctrl", "--bins", "--manifest-path"])
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
                .env("CARGO_TARGET_DIR", target);
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let st = cmd.status().expect("run cargo build -p nanoctrl");
            assert!(st.success(), "cargo build -p nanoctrl failed");
        }
        assert!(
            bin.exists(),
            "nanoctrl binary not found at {}",
            bin.display()
        );
        bin
    })
    .clone()
}

pub struct NanoCtrl {
    child: Option<Child>,
    pub port: u16,
    pub url: String,
    redis_url: String,
}

impl NanoCtrl {
    pub fn start(redis_url: &str) -> NanoCtrl {
        let mut n = NanoCtrl {
            child: None,
            port: free_port(),
            url: String::new(),
            redis_url: redis_url.to_string(),
        };
        n.url = format!("http://127.0.0.1:{}", n.port);
        n.restart();
        n
    }

    /// (Re)starts the server on the same port.
    pub fn restart(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut child = Command::new(nanoctrl_bin())
                .args([
                    "server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &self.port.to_string(),
                ])
                .args(["--redis-url", &self.redis_url])
                .env_remove("NANOCTRL_REDIS_URL")
                .env("NANOCTRL_RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn nanoctrl");
            let up = loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break false;
                }
                if health(self.port) {
                    break true;
                }
                if Instant::now() > deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            if up {
                self.child = Some(child);
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                Instant::now() < deadline,
                "nanoctrl did not come up on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NanoCtrl {
    fn drop(&mut self) {
        self.kill();
    }
}

fn health(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_millis(500),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).contains("Running")
}

/// Redis + NanoCtrl + a unique scope.
pub struct Cluster {
    pub nanoctrl: NanoCtrl,
    pub redis: Redis,
    pub scope: String,
}

impl Cluster {
    pub fn start(tag: &str) -> Cluster {
        let redis = Redis::start();
        let nanoctrl = NanoCtrl::start(&redis.url);
        Cluster {
            nanoctrl,
            redis,
            scope: unique(tag),
        }
    }

    pub fn url(&self) -> &str {
        &self.nanoctrl.url
    }
}
