//! Fixtures for the PeerAgent tests: a real `redis-server` and the real `nanoctrl`
//! binary of this workspace, each on an ephemeral loopback port, killed on drop (also
//! when a test fails); and the agent child process driven over the two-process harness
//! of `tests/common`. Every wait has a deadline.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child as Proc, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::common::{pattern_byte, Parent, Peer};
use dlslime::peer::{ConnState, NamedAssignment, PeerAgent, PeerAgentOptions, PeerConnection};
use dlslime::rpc::{RpcConfig, RpcSession, Service};

#[path = "../support/raw_http.rs"]
mod raw_http;
#[path = "../support/redis_server.rs"]
mod redis_server;
#[allow(unused_imports)] // each test crate uses its own subset
pub use raw_http::raw;
#[allow(unused_imports)] // each test crate uses its own subset
pub use redis_server::{free_port, unique, wait_for, Redis};

/// Declares a test crate's `peer_agent_child`: the agent child process that [`Child`]
/// spawns (an ignored test, so a plain `cargo test` runs it only as a child).
#[macro_export]
macro_rules! peer_agent_child {
    () => {
        #[test]
        #[ignore]
        fn peer_agent_child() {
            if $crate::common::is_child() {
                $crate::peer_fixture::child_main();
            }
        }
    };
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
    child: Option<Proc>,
    pub port: u16,
    pub url: String,
    redis_url: String,
    /// Extra server arguments (kept for `restart`).
    args: Vec<String>,
    /// The bearer token it requires (sent by the health check), if any.
    pub token: Option<String>,
}

impl NanoCtrl {
    pub fn start(redis_url: &str) -> NanoCtrl {
        Self::start_with(redis_url, None, &[])
    }

    /// With a bearer token (passed in the environment) and extra server arguments.
    pub fn start_with(redis_url: &str, token: Option<&str>, args: &[&str]) -> NanoCtrl {
        let mut n = NanoCtrl {
            child: None,
            port: free_port(),
            url: String::new(),
            redis_url: redis_url.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            token: token.map(str::to_string),
        };
        n.url = format!("http://127.0.0.1:{}", n.port);
        n.restart();
        n
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// (Re)starts the server on the same port.
    pub fn restart(&mut self) {
        let bin = nanoctrl_bin(); // may build it first: not part of the start deadline
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut child = Command::new(&bin)
                .args([
                    "server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &self.port.to_string(),
                ])
                .args(["--redis-url", &self.redis_url])
                .args(&self.args)
                .env_remove("NANOCTRL_REDIS_URL")
                .env_remove("NANOCTRL_TOKEN")
                .envs(self.token.as_ref().map(|t| ("NANOCTRL_TOKEN", t)))
                .env("NANOCTRL_RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn nanoctrl");
            let up = loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break false;
                }
                if raw_http::nanoctrl_up(self.port, self.token.as_deref()) {
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

/// A raw `POST path` with a JSON body and optional `Authorization` header value:
/// `(status code, body as JSON or a JSON string)`.
pub fn raw_post(
    port: u16,
    path: &str,
    auth: Option<&str>,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let headers = match auth {
        Some(a) => format!("Authorization: {a}\r\nContent-Type: application/json\r\n"),
        None => "Content-Type: application/json\r\n".to_string(),
    };
    let (code, text) = raw_http::raw_post(port, path, &headers, body.to_string().as_bytes());
    let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (code, v)
}

/// `GET path` on a raw socket: the whole reply, or None when unreachable.
pub fn raw_get(port: u16, path: &str) -> Option<String> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    raw_http::raw(port, req.as_bytes(), Duration::from_secs(5))
}

/// Redis + NanoCtrl + a unique scope.
pub struct Cluster {
    pub nanoctrl: NanoCtrl,
    pub redis: Redis,
    pub scope: String,
}

impl Cluster {
    pub fn start(tag: &str) -> Cluster {
        Cluster::on(tag, Redis::start())
    }

    /// On a Redis the caller started (under libfaketime, say).
    pub fn on(tag: &str, redis: Redis) -> Cluster {
        let nanoctrl = NanoCtrl::start(&redis.url);
        Cluster {
            nanoctrl,
            redis,
            scope: unique(tag),
        }
    }

    /// With NanoCtrl requiring `token`.
    pub fn start_with_token(tag: &str, token: &str) -> Cluster {
        let redis = Redis::start();
        let nanoctrl = NanoCtrl::start_with(&redis.url, Some(token), &[]);
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

pub const T: Option<Duration> = Some(Duration::from_secs(30));
pub const WAIT: Duration = Duration::from_secs(30);

pub fn opts(hb_ms: u64) -> PeerAgentOptions {
    PeerAgentOptions {
        heartbeat_interval: Duration::from_millis(hb_ms),
        register_attempts: 3,
        register_backoff: Duration::from_millis(200),
        ..Default::default()
    }
}

/// A region buffer that never moves.
pub struct Buf(pub Box<[u8]>);

impl Buf {
    pub fn new(len: usize, seed: u64) -> Buf {
        let mut b = vec![0u8; len].into_boxed_slice();
        for (i, x) in b.iter_mut().enumerate() {
            *x = pattern_byte(seed, i);
        }
        Buf(b)
    }
    /// Index of the first byte of `[off, off+len)` that is not `pattern(seed, k)`.
    pub fn check(&self, seed: u64, off: usize, len: usize) -> Option<usize> {
        self.check_from(seed, off, len, 0)
    }
    pub fn check_from(&self, seed: u64, off: usize, len: usize, base: usize) -> Option<usize> {
        (0..len).find(|&k| self.0[off + k] != pattern_byte(seed, base + k))
    }
}

pub fn register(
    agent: &PeerAgent,
    bufs: &mut HashMap<String, Buf>,
    name: &str,
    len: usize,
    seed: u64,
) {
    let mut b = Buf::new(len, seed);
    // SAFETY: `b` moves into `bufs` (its heap block stays put), which the caller keeps
    // for as long as the agent may use the region.
    unsafe {
        agent
            .register_memory_region(name, b.0.as_mut_ptr(), 0, len)
            .unwrap()
    };
    bufs.insert(name.to_string(), b);
}

/// The value of one of an agent's counters.
pub fn count(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(std::sync::atomic::Ordering::Relaxed)
}

/// Alice writes her region "buf" [0, len) to bob's at `bob_off`; bob checks that it
/// holds her pattern (1) there.
pub fn write_checked(a: &PeerAgent, bob: &mut Child, bob_off: u64, len: u64) {
    a.write("bob", &[NamedAssignment::same("buf", 0, bob_off, len)], T)
        .unwrap()
        .wait()
        .unwrap();
    bob.ok(&format!("check buf 1 {bob_off} {len}"));
}

/// A connection from alice that fails on both sides: hers with `status` and a message
/// containing `needle`, the child's `wait alice` with an answer starting with `child_err`.
pub fn refused_both_sides(
    c: &PeerConnection,
    child: &mut Child,
    status: dlslime::Status,
    needle: &str,
    child_err: &str,
) {
    let e = c.wait(WAIT).unwrap_err();
    assert_eq!(e.status(), status, "{e}");
    assert!(e.message().contains(needle), "{e}");
    let r = child.cmd("wait alice 30000");
    assert!(r.starts_with(child_err), "{r}");
}

/// One-sided both ways between the agent `a` and the child `bob`, each with a 1 MiB
/// region "buf" (alice's in `bufs`, pattern 1; bob's pattern 2): alice writes her
/// [0, 64K) to bob's [4096, ..) and reads bob's [300000, +128K) into her [256K, ..); then
/// bob writes his first 4 KiB into alice's.
pub fn one_sided_both_ways(a: &PeerAgent, bob: &mut Child, bufs: &HashMap<String, Buf>) {
    write_checked(a, bob, 4096, 65536);
    a.read(
        "bob",
        &[NamedAssignment::same("buf", 262144, 300000, 131072)],
        T,
    )
    .unwrap()
    .wait()
    .unwrap();
    let want = Buf::new(1 << 20, 2);
    assert_eq!(
        &bufs["buf"].0[262144..262144 + 131072],
        &want.0[300000..300000 + 131072]
    );
    bob.ok("write alice buf buf 0 0 4096");
    assert_eq!(bufs["buf"].check(2, 0, 4096), None);
}

pub fn err_line(e: &dlslime::Error) -> String {
    format!("err {} {}", e.status().code(), e.message())
}

/// One command of the child agent. Replies start with "ok" or "err <code>".
pub fn exec(agent: &PeerAgent, bufs: &mut HashMap<String, Buf>, line: &str) -> String {
    let w: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize| -> u64 { w[i].parse().unwrap() };
    let r: Result<String, dlslime::Error> = (|| match w[0] {
        "connect" => agent.connect_to(w[1], w[2]).map(|_| "ok".to_string()),
        "wait" => {
            let c = agent
                .connection(w[1])
                .ok_or_else(|| dlslime::Error::invalid("no such connection"))?;
            c.wait(Duration::from_millis(num(2)))
                .map(|t| format!("ok {}", t.as_str()))
        }
        // "hold <peer> <ms>": polls the state every millisecond for <ms>; "ok" if it
        // stayed connected throughout, else "bad <state> after <t> ms (<error>)"
        "hold" => {
            let c = agent
                .connection(w[1])
                .ok_or_else(|| dlslime::Error::invalid("no such connection"))?;
            Ok(match hold_connected(&c, Duration::from_millis(num(2))) {
                Ok(()) => "ok".to_string(),
                Err(why) => format!("bad {why}"),
            })
        }
        // "dialhold <peer> <transport> <hold ms>": connect_to, wait (30 s), then at once
        // `hold`; "ok <transport>" or the first problem
        "dialhold" => {
            let c = agent.connect_to(w[1], w[2])?;
            let t = c.wait(Duration::from_secs(30))?;
            Ok(match hold_connected(&c, Duration::from_millis(num(3))) {
                Ok(()) => format!("ok {}", t.as_str()),
                Err(why) => format!("bad {why}"),
            })
        }
        "state" => Ok(format!(
            "ok {}",
            agent
                .connection(w[1])
                .map_or("none", |c| c.state().as_str())
        )),
        "reg" => {
            let (len, seed) = (num(2) as usize, num(3));
            let mut b = Buf::new(len, seed);
            // SAFETY: as in `register`: `b` moves into `bufs`, kept while registered.
            let h = unsafe { agent.register_memory_region(w[1], b.0.as_mut_ptr(), 0, len)? };
            bufs.insert(w[1].to_string(), b);
            Ok(format!("ok {h}"))
        }
        "unreg" => agent
            .unregister_memory_region(w[1])
            .map(|b| format!("ok {b}")),
        "check" => {
            let b = &bufs[w[1]];
            // optional 5th word: the pattern index of the first byte checked
            let base = if w.len() > 5 { num(5) as usize } else { 0 };
            Ok(
                match b.check_from(num(2), num(3) as usize, num(4) as usize, base) {
                    None => "ok".into(),
                    Some(i) => format!("bad {i}"),
                },
            )
        }
        "write" | "read" => {
            let a = [NamedAssignment::pair(w[2], w[3], num(4), num(5), num(6))];
            let f = if w[0] == "write" {
                agent.write(w[1], &a, T)?
            } else {
                agent.read(w[1], &a, T)?
            };
            f.wait().map(|_| "ok".to_string())
        }
        "writeimm" => {
            let a = [NamedAssignment::same(w[2], 0, 0, num(3))];
            agent
                .write_with_imm(w[1], &a, num(4) as i32, T)?
                .wait()
                .map(|_| "ok".to_string())
        }
        "immrecv" => {
            let f = agent.imm_recv(w[1], Some(Duration::from_millis(num(2))))?;
            f.wait().map(|_| format!("ok {}", f.imm_data()))
        }
        // "recvmsg <peer> <cap>": posts a receive, answers "ok <text>"
        "recvmsg" => {
            let mut b = vec![0u8; num(2) as usize];
            // SAFETY: `b` is untouched until `f.wait()` returns, and outlives it.
            let f = unsafe {
                agent.recv(w[1], b.as_mut_ptr(), b.len(), Some(Duration::from_secs(30)))?
            };
            f.wait()?;
            Ok(format!(
                "ok {}",
                String::from_utf8_lossy(&b[..f.nbytes() as usize])
            ))
        }
        // "sendmsg <peer> <text>"
        "sendmsg" => {
            // SAFETY: `w[2]` borrows `line`, alive and unmodified until `f.wait()` returns.
            let f = unsafe {
                agent.send(
                    w[1],
                    w[2].as_ptr(),
                    w[2].len(),
                    Some(Duration::from_secs(30)),
                )?
            };
            f.wait().map(|_| "ok".to_string())
        }
        "stats" => Ok(format!("ok {}", count(&agent.stats().malformed_messages))),
        "qpsent" => Ok(format!("ok {}", count(&agent.stats().qp_ready_sent))),
        // "rpcserve <peer>": an RPC session over the connection's endpoint (blocks until
        // the peer creates its session too), served by a thread with `rpc_service`
        "rpcserve" => {
            let sess = Arc::new(RpcSession::new(agent.endpoint(w[1])?, rpc_config())?);
            std::thread::spawn(move || rpc_service().serve(&sess));
            Ok("ok".into())
        }
        // "info <peer>": the endpoint_info of the connection's endpoint
        "info" => Ok(format!("ok {}", agent.endpoint(w[1])?.endpoint_info())),
        "shutdown" => {
            agent.shutdown();
            Ok("ok".into())
        }
        "exit" => Ok("ok".into()),
        other => Err(dlslime::Error::invalid(format!("unknown command {other}"))),
    })();
    r.unwrap_or_else(|e| err_line(&e))
}

/// The RPC configuration of the `rpcserve` tests (both sides must agree).
pub fn rpc_config() -> RpcConfig {
    RpcConfig {
        slot_size: 4096,
        slot_count: 4,
        max_payload: 1 << 30,
        ..Default::default()
    }
}

/// `echo` copies the request; `check` takes `[seed u64][pattern(seed) ...]` and answers
/// `[payload length u64][index of the first bad byte, or u64::MAX]`.
pub fn rpc_service() -> Service {
    Service::new()
        .method("echo", |p| Ok(p.to_vec()))
        .method("check", |p| {
            let seed = u64::from_le_bytes(p[..8].try_into().unwrap());
            let bad = crate::common::check_pattern(&p[8..], seed).map_or(u64::MAX, |i| i as u64);
            let mut out = ((p.len() - 8) as u64).to_le_bytes().to_vec();
            out.extend_from_slice(&bad.to_le_bytes());
            Ok(out)
        })
}

/// Polls `c` every millisecond for `d`: `Err` describing the first state that is not
/// `Connected` (and the connection's error, if `wait` reports one).
pub fn hold_connected(c: &PeerConnection, d: Duration) -> Result<(), String> {
    let start = Instant::now();
    while start.elapsed() < d {
        let s = c.state();
        if s != ConnState::Connected {
            let t = start.elapsed();
            let why = match c.wait(Duration::ZERO) {
                Err(e) => e.message().to_string(),
                Ok(_) => "connected again".to_string(),
            };
            return Err(format!("{} after {t:?} ({why})", s.as_str()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

pub struct Child {
    pub p: Peer,
    pub alias: String,
}

impl Child {
    pub fn start(cl: &Cluster, alias: &str, extra: &[(&str, String)]) -> Child {
        let (p, r) = Self::spawn(cl, alias, true, extra);
        assert_eq!(r, format!("ready {alias}"), "child {alias} did not start");
        Child {
            p,
            alias: alias.to_string(),
        }
    }

    /// Starts a child without the cluster's token that is expected to fail registering:
    /// its "err …" line.
    pub fn start_err(cl: &Cluster, alias: &str, extra: &[(&str, String)]) -> String {
        let (p, r) = Self::spawn(cl, alias, false, extra);
        p.join();
        r
    }

    /// The child process (given the cluster's token if `token`) and its first line.
    fn spawn(cl: &Cluster, alias: &str, token: bool, extra: &[(&str, String)]) -> (Peer, String) {
        let mut env = vec![
            ("PEER_URL", cl.url().to_string()),
            ("PEER_SCOPE", cl.scope.clone()),
            ("PEER_ALIAS", alias.to_string()),
            ("PEER_HB_MS", "500".to_string()),
        ];
        if let Some(t) = cl.nanoctrl.token.as_ref().filter(|_| token) {
            env.push(("PEER_TOKEN", t.clone()));
        }
        env.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
        let mut p = Peer::spawn("peer_agent_child", &env);
        let r = p.recv();
        (p, r)
    }

    pub fn cmd(&mut self, line: &str) -> String {
        self.p.send(line);
        self.p.recv()
    }
    pub fn ok(&mut self, line: &str) -> String {
        let r = self.cmd(line);
        assert!(
            r.starts_with("ok"),
            "{}: {line:?} answered {r:?}",
            self.alias
        );
        r
    }
    pub fn exit(mut self) {
        self.ok("exit");
        self.p.join();
    }
}

pub fn agent(cl: &Cluster, alias: &str) -> PeerAgent {
    let mut o = opts(500);
    o.nanoctrl_token = cl.nanoctrl.token.clone();
    PeerAgent::new(cl.url(), Some(alias), Some(&cl.scope), o).unwrap()
}

/// The agent child: registers (env PEER_URL, PEER_SCOPE, PEER_ALIAS, PEER_HB_MS, and
/// optionally PEER_TOKEN and PEER_REDIS_URL), says "ready <alias>", then runs commands
/// until "exit" or EOF.
pub fn child_main() {
    let env = |k: &str| std::env::var(k).unwrap();
    let mut parent = Parent::new();
    let hb: u64 = env("PEER_HB_MS").parse().unwrap();
    let mut o = opts(hb);
    o.nanoctrl_token = std::env::var("PEER_TOKEN").ok();
    o.redis_url = std::env::var("PEER_REDIS_URL").ok();
    let agent = match PeerAgent::new(
        &env("PEER_URL"),
        Some(&env("PEER_ALIAS")),
        Some(&env("PEER_SCOPE")),
        o,
    ) {
        Ok(a) => a,
        Err(e) => {
            parent.send(&err_line(&e));
            return;
        }
    };
    parent.send(&format!("ready {}", agent.alias()));
    let mut bufs = HashMap::new();
    while let Some(line) = parent.recv() {
        let reply = exec(&agent, &mut bufs, &line);
        parent.send(&reply);
        if line == "exit" {
            break;
        }
    }
    drop(agent);
}

/// Regions for [`rounds`]: alice gets `s0`/`s1` (seeds 100/101) and `rin`, bob gets
/// `buf` and `rbuf`, 64 KiB each.
pub fn rounds_setup(alice: &mut Child, bob: &mut Child) {
    alice.ok("reg s0 65536 100");
    alice.ok("reg s1 65536 101");
    alice.ok("reg rin 65536 7");
    bob.ok("reg buf 65536 8");
    bob.ok("reg rbuf 65536 9");
}

/// `n` content-checked transfers each way between two connected agents: alice writes
/// `s{k%2}` into bob's `buf`, bob reads alice's `s{k%2}` into `rbuf`; each time the
/// receiver checks the bytes are that region's (alternating, so a transfer that did
/// nothing is caught). `k0` numbers the first round.
pub fn rounds(alice: &mut Child, bob: &mut Child, k0: usize, n: usize) {
    for k in k0..k0 + n {
        let (src, seed) = (format!("s{}", k % 2), 100 + (k % 2));
        alice.ok(&format!("write {} {src} buf 0 0 65536", bob.alias));
        bob.ok(&format!("check buf {seed} 0 65536"));
        bob.ok(&format!("read {} rbuf {src} 0 0 65536", alice.alias));
        bob.ok(&format!("check rbuf {seed} 0 65536"));
    }
}
