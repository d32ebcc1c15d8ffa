//! Shared by the PeerAgent tests (`tests/peer_fixture`) and NanoCtrl's tests
//! (`nanoctrl/tests/common`): unique names, ephemeral ports, deadline polling, and a real
//! `redis-server` on a loopback port, killed on drop (also when a test fails).
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh, unique name for scopes, aliases and temp dirs.
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

/// The working directory of the server on `port` (one server per port at a time).
fn work_dir(port: u16) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("dlslime-redis-{port}"))
}

fn url_for(port: u16, auth: &str) -> String {
    if auth.is_empty() {
        format!("redis://127.0.0.1:{port}")
    } else {
        format!("redis://{auth}@127.0.0.1:{port}")
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

/// A `redis-server` without persistence on `127.0.0.1:port`.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    /// With the credentials of `auth`, if any.
    pub url: String,
    /// Extra server arguments (kept for `restart`).
    args: Vec<String>,
    auth: String,
    /// Extra environment of the server process (kept for `restart`).
    env: Vec<(String, String)>,
}

impl Redis {
    pub fn start() -> Redis {
        Self::start_with(&[], "")
    }

    /// Starts with extra server arguments (`--requirepass`, `--user …`, `--replicaof
    /// …`); `auth` (`user:password`, `:password` or "") is what the fixture and `url`
    /// log in with.
    pub fn start_with(args: &[&str], auth: &str) -> Redis {
        Self::start_env(args, auth, &[])
    }

    /// As `start_with`, the server process with extra environment `env` (libfaketime's,
    /// say).
    pub fn start_env(args: &[&str], auth: &str, env: &[(&str, String)]) -> Redis {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        for _ in 0..5 {
            if let Some(r) = Self::try_start_on(free_port(), &args, auth, &env) {
                return r;
            }
        }
        panic!("could not start redis-server on an ephemeral port");
    }

    /// Starts on `port`, retrying while a killed predecessor still holds it.
    pub fn start_on(port: u16) -> Redis {
        Self::start_on_with(port, &[], "")
    }

    /// Starts on `port` with extra arguments, retrying while the port is still taken.
    pub fn start_on_with(port: u16, args: &[String], auth: &str) -> Redis {
        Self::start_on_env(port, args, auth, &[])
    }

    fn start_on_env(port: u16, args: &[String], auth: &str, env: &[(String, String)]) -> Redis {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(r) = Self::try_start_on(port, args, auth, env) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "could not restart redis-server on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts again on the same port (after `kill`), with the same arguments.
    pub fn restart(&mut self) {
        let mut r = Self::start_on_env(self.port, &self.args, &self.auth, &self.env);
        self.child = r.child.take();
    }

    /// `redis://[auth@]127.0.0.1:port`
    pub fn url_with(&self, auth: &str) -> String {
        url_for(self.port, auth)
    }

    fn try_start_on(
        port: u16,
        args: &[String],
        auth: &str,
        env: &[(String, String)],
    ) -> Option<Redis> {
        // Its own working directory: a replica writes the RDB it receives there, which
        // must not land in the source tree.
        let dir = work_dir(port);
        let _ = std::fs::create_dir_all(&dir);
        let mut child = Command::new(redis_server_bin())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&dir)
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--protected-mode", "no"])
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let url = url_for(port, auth);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return None; // port taken, most likely
            }
            if let Ok(mut c) = redis::Client::open(url.as_str()).and_then(|c| c.get_connection()) {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return Some(Redis {
                        child: Some(child),
                        port,
                        url,
                        args: args.to_vec(),
                        auth: auth.to_string(),
                        env: env.to_vec(),
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

    /// Whether this server is a replica whose link to its primary is up.
    pub fn replicating(&self) -> bool {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut self.conn())
            .unwrap();
        info.contains("master_link_status:up")
    }

    /// Waits until `replica` has applied every write this primary has made so far (its
    /// replication offset reached ours). `WAIT` on a fresh connection would not do: it
    /// waits only for the writes of the connection that sends it.
    pub fn wait_replicated_to(&self, replica: &Redis, timeout: Duration) {
        let offset = |r: &Redis, field: &str| -> i64 {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut r.conn())
                .unwrap();
            info.lines()
                .find_map(|l| l.strip_prefix(field)?.trim().parse().ok())
                .unwrap_or(-1)
        };
        let target = offset(self, "master_repl_offset:");
        wait_for(timeout, "the replica caught up with the primary", || {
            (offset(replica, "slave_repl_offset:") >= target).then_some(())
        });
    }

    /// Every key matching `pattern` (SCAN), sorted.
    pub fn keys_matching(&self, pattern: &str) -> Vec<String> {
        let mut c = self.conn();
        let mut scan = redis::cmd("SCAN");
        scan.cursor_arg(0)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000);
        let mut out: Vec<String> = scan
            .iter(&mut c)
            .unwrap()
            .collect::<redis::RedisResult<_>>()
            .unwrap();
        out.sort();
        out
    }

    /// Every key under `scope:`.
    pub fn scope_keys(&self, scope: &str) -> Vec<String> {
        self.keys_matching(&format!("{scope}:*"))
    }

    /// Every key in this Redis.
    pub fn all_keys(&self) -> Vec<String> {
        self.keys_matching("*")
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(work_dir(self.port));
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
