//! Test fixtures: a real `redis-server` and the real `nanoctrl` binary, each on an
//! ephemeral loopback port, killed (and their temp dirs removed) on drop, even when the
//! test fails. Every wait has a deadline.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "../../../tests/support/redis_server.rs"]
mod redis_server;
pub use redis_server::{free_port, unique, wait_for, Redis};
#[path = "../../../tests/support/raw_http.rs"]
mod raw_http;
#[allow(unused_imports)] // each test crate uses its own subset
pub use raw_http::{nanoctrl_up, raw, raw_post};

pub const NANOCTRL: &str = env!("CARGO_BIN_EXE_nanoctrl");
/// A temp dir removed on drop.
pub struct TempDir(pub PathBuf);
impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (and reaped) when this drops, pass or fail.
pub struct KillOnDrop(pub std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct NanoCtrl {
    child: Option<Child>,
    pub port: u16,
    pub base: String,
    pub log: PathBuf,
    _dir: TempDir,
    http: reqwest::Client,
    /// The bearer token it requires, sent by `post`/`post_raw`.
    pub token: Option<String>,
}

impl NanoCtrl {
    pub fn start(redis_url: &str) -> Self {
        Self::start_with(redis_url, &[])
    }

    pub fn start_with(redis_url: &str, extra: &[&str]) -> Self {
        Self::start_full(redis_url, extra, None, &[])
    }

    /// With a token (given in NANOCTRL_TOKEN) and extra environment.
    pub fn start_full(
        redis_url: &str,
        extra: &[&str],
        token: Option<&str>,
        env: &[(&str, &str)],
    ) -> Self {
        let dir = TempDir::new("nanoctrl-srv");
        for _ in 0..5 {
            let port = free_port();
            let log = dir.path().join(format!("server-{port}.log"));
            let logf = std::fs::File::create(&log).unwrap();
            let mut child = Command::new(NANOCTRL)
                .args([
                    "server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--redis-url",
                    redis_url,
                ])
                .args(extra)
                .env_remove("NANOCTRL_REDIS_URL")
                .env_remove("NANOCTRL_TOKEN")
                // the token in the environment, unless a token file is given
                .envs(
                    token
                        .filter(|_| !extra.contains(&"--token-file"))
                        .map(|t| ("NANOCTRL_TOKEN", t)),
                )
                .env("NANOCTRL_RUST_LOG", "warn")
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(logf.try_clone().unwrap())
                .stderr(logf)
                .spawn()
                .expect("spawn nanoctrl");
            let deadline = Instant::now() + Duration::from_secs(20);
            let up = loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break false;
                }
                if health_with(port, token) {
                    break true;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "nanoctrl did not become healthy: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            if up {
                return NanoCtrl {
                    child: Some(child),
                    port,
                    base: format!("http://127.0.0.1:{port}"),
                    log,
                    _dir: dir,
                    http: client(),
                    token: token.map(str::to_string),
                };
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(
                text.contains("Cannot listen"),
                "nanoctrl exited at startup: {text}"
            );
        }
        panic!("could not start nanoctrl on an ephemeral port");
    }

    /// POST a JSON body that must succeed (200); returns the answer.
    pub async fn post_ok(&self, path: &str, body: Value) -> Value {
        self.post_expect(path, body, 200).await
    }

    /// POST a JSON body that must succeed (200) with exactly `answer`.
    pub async fn post_answers(&self, path: &str, body: Value, answer: Value) {
        let got = self.post_ok(path, body).await;
        assert_eq!(got, answer, "POST {path}");
    }

    /// `POST /start_peer_agent`, the call most tests begin with; returns status and body.
    pub async fn start_agent(&self, body: Value) -> (u16, Value) {
        self.post("/start_peer_agent", body).await
    }

    /// `POST /start_peer_agent` that must succeed (200); returns the answer.
    pub async fn start_agent_ok(&self, body: Value) -> Value {
        self.post_ok("/start_peer_agent", body).await
    }

    /// POST a JSON body that must be answered with status `code`; returns the answer.
    pub async fn post_expect(&self, path: &str, body: Value, code: u16) -> Value {
        let (got, answer) = self.post(path, body).await;
        assert_eq!(got, code, "POST {path}: {answer}");
        answer
    }

    /// POST a JSON body; returns the status and the body (JSON, or a JSON string if not JSON).
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let mut rb = self.http.post(format!("{}{}", self.base, path)).json(&body);
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        let r = rb.send().await.expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// POST raw bytes with an optional content type; returns status and text.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, String) {
        let mut rb = self.http.post(format!("{}{}", self.base, path)).body(body);
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            rb = rb.header("content-type", ct);
        }
        let r = rb.send().await.expect("request");
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Wait (with a deadline) for the process to exit on its own; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        let status = wait_for(timeout, "nanoctrl to exit", || {
            child.try_wait().ok().flatten()
        });
        status.code()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for NanoCtrl {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// POSTs every `(path, body)` at once, each from a client (and connection) of its own;
/// returns the status codes in order. Each answer has a 60 s deadline.
pub async fn post_concurrently(
    base: &str,
    requests: impl IntoIterator<Item = (String, Value)>,
) -> Vec<u16> {
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|(path, body)| {
            let url = format!("{base}{path}");
            tokio::spawn(async move {
                let r = client().post(url).json(&body).send().await.unwrap();
                r.status().as_u16()
            })
        })
        .collect();
    let mut codes = Vec::new();
    for t in tasks {
        let code = tokio::time::timeout(Duration::from_secs(60), t).await;
        codes.push(code.expect("deadline").unwrap());
    }
    codes
}

pub fn health(port: u16) -> bool {
    health_with(port, None)
}

pub fn health_with(port: u16, token: Option<&str>) -> bool {
    nanoctrl_up(port, token)
}

/// Redis + NanoCtrl, the usual pair.
pub struct Stack {
    pub redis: Redis,
    pub ctrl: NanoCtrl,
}

impl Stack {
    pub fn start() -> Self {
        let redis = Redis::start();
        let ctrl = NanoCtrl::start(&redis.url);
        Stack { redis, ctrl }
    }
}

/// Collects pub/sub messages on `channel` from a background thread.
pub struct Subscriber {
    rx: std::sync::mpsc::Receiver<String>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Subscriber {
    pub fn new(redis_url: &str, channel: &str) -> Self {
        let client = redis::Client::open(redis_url).unwrap();
        let mut conn = client.get_connection().unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let channel = channel.to_string();
        std::thread::spawn(move || {
            conn.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut ps = conn.as_pubsub();
            ps.subscribe(&channel).unwrap();
            ready_tx.send(()).unwrap();
            while !stop2.load(Ordering::Relaxed) {
                match ps.get_message() {
                    Ok(m) => {
                        if tx.send(m.get_payload::<String>().unwrap()).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.is_timeout() => continue,
                    Err(_) => break,
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("subscribe");
        Subscriber { rx, stop }
    }

    pub fn next(&self, timeout: Duration) -> Option<Value> {
        self.rx
            .recv_timeout(timeout)
            .ok()
            .map(|s| serde_json::from_str(&s).expect("event is JSON"))
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
