//! NanoCtrl under attack, from raw sockets as an attacker on the network would send:
//! the bearer token, owner tokens (no live alias changes hands), oversized and garbage
//! bodies (clear JSON errors, the server keeps serving), a Redis outage (bounded logs,
//! `/health` says so), a log sink nobody drains (requests never wait on logging) and a
//! flood of silent and half-sent connections (bounded, closed when idle).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};
use redis::Commands;
use serde_json::{json, Value};

const TOKEN: &str = "s3cret-token-8d2f";

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| panic!("not JSON: {text:?}"))
}

fn log_text(c: &NanoCtrl) -> String {
    std::fs::read_to_string(&c.log).unwrap_or_default()
}

#[tokio::test]
async fn open_mode_is_announced_and_the_token_is_never_logged() {
    let redis = Redis::start();
    let open = NanoCtrl::start(&redis.url);
    wait_for(Duration::from_secs(5), "the open-mode line", || {
        log_text(&open).contains("NanoCtrl is OPEN").then_some(())
    });
    // token from a file: the file's first line, never in the log
    let dir = TempDir::new("nanoctrl-token");
    let f = dir.path().join("token");
    std::fs::write(&f, format!("{TOKEN}\n")).unwrap();
    let mut c = NanoCtrl::start_full(
        &redis.url,
        &["--token-file", f.to_str().unwrap()],
        Some(TOKEN),
        &[("NANOCTRL_RUST_LOG", "info")],
    );
    c.token = Some(TOKEN.into());
    assert_eq!(
        c.post("/query", json!({})).await.0,
        200,
        "token from the file"
    );
    // a 17-character token is weak: a warning follows the token line
    wait_for(
        Duration::from_secs(5),
        "the token line and the warning",
        || {
            let log = log_text(&c);
            (log.contains("requires a bearer token") && log.contains("can be guessed"))
                .then_some(())
        },
    );
    let (code, _) = raw_post(c.port, "/query", "", b"{}");
    assert_eq!(code, 401);
    let log = log_text(&c);
    assert!(!log.contains(TOKEN), "{log}");
    assert!(!log.contains("is OPEN"), "{log}");
    assert!(
        log.contains("can be guessed"),
        "a 17-character token is weak: {log}"
    );
    // --token and --token-file together, an empty token: clear errors at start-up
    for args in [
        vec!["--token", "a", "--token-file", f.to_str().unwrap()],
        vec!["--token", " "],
    ] {
        let out = Command::new(NANOCTRL)
            .args(["server", "--port", &free_port().to_string()])
            .args(["--redis-url", &redis.url])
            .args(&args)
            .env_remove("NANOCTRL_TOKEN")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
    }
}

#[tokio::test]
async fn owner_tokens_guard_live_aliases() {
    let s = Stack::start();
    let c = &s.ctrl;
    let scope = unique("owner");
    let mut r = s.redis.conn();
    let key = format!("{scope}:agent:alice");

    // `owned: true`: NanoCtrl makes the token and returns it; Redis keeps only its hash
    let (code, body) = c
        .start_agent(
            json!({"alias": "alice", "address": "127.0.0.1", "scope": scope, "owned": true,
                   "heartbeat_interval_ms": 500}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let tok = body["owner_token"].as_str().unwrap().to_string();
    assert_eq!(tok.len(), 64);
    let owner: String = r.hget(&key, "owner").unwrap();
    assert_ne!(owner, tok);
    assert_eq!(owner.len(), 64);
    for k in s.redis.all_keys() {
        let dump: Vec<u8> = redis::cmd("DUMP").arg(&k).query(&mut r).unwrap();
        assert!(
            !String::from_utf8_lossy(&dump).contains(&tok),
            "the token itself is stored at {k}"
        );
    }

    let hb = |t: Option<&str>| json!({"entity_type": "agent", "entity_id": "alice", "scope": scope, "owner_token": t});
    c.post_ok("/heartbeat", hb(Some(&tok))).await;
    let (code, body) = c.post("/heartbeat", hb(None)).await;
    assert_eq!(
        (code, body["status"].as_str()),
        (403, Some("error")),
        "{body}"
    );
    c.post_expect("/heartbeat", hb(Some(&"x".repeat(64))), 403)
        .await;
    // the owner may register again (a retry whose reply was lost), nobody else
    let reg = |t: Option<&str>| json!({"alias": "alice", "address": "127.0.0.2", "scope": scope, "owner_token": t});
    c.post_expect("/start_peer_agent", reg(None), 409).await;
    c.post_expect("/start_peer_agent", reg(Some(&"y".repeat(32))), 409)
        .await;
    let (code, body) = c.start_agent(reg(Some(&tok))).await;
    assert_eq!(
        (code, body["owner_token"].as_str()),
        (200, Some(tok.as_str()))
    );
    let addr: String = r.hget(&key, "addr").unwrap();
    assert_eq!(addr, "127.0.0.2");
    // a malformed owner token is a 422, not a silent "no token"
    let (code, body) = c
        .post(
            "/cleanup",
            json!({"agent_name": "alice", "scope": scope, "owner_token": "short"}),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    c.post_expect(
        "/cleanup",
        json!({"agent_name": "alice", "scope": scope, "owner_token": 7}),
        422,
    )
    .await;
    assert!(r.exists::<_, bool>(&key).unwrap());

    // generated names skip an owned alias instead of overwriting it
    let _: () = r.set(format!("{scope}:agent_name_counter"), 2).unwrap();
    let (code, body) = c
        .start_agent(json!({"alias": "x-3", "address": "127.0.0.1", "scope": scope, "owner_token": "o".repeat(40)}))
        .await;
    assert_eq!(code, 200, "{body}");
    let (_, body) = c
        .start_agent(json!({"address": "10.6.6.6", "scope": scope, "name_prefix": "x"}))
        .await;
    assert_eq!(body["name"], "x-4");
    let addr: String = r.hget(format!("{scope}:agent:x-3"), "addr").unwrap();
    assert_eq!(addr, "127.0.0.1");

    // a silent owner (no heartbeat for 3 periods + 1 s) no longer holds the alias
    c.start_agent_ok(json!({"alias": "ghost", "address": "127.0.0.1", "scope": scope, "owner_token": "g".repeat(40), "heartbeat_interval_ms": 100})).await;
    let cleanup_ghost = json!({"agent_name": "ghost", "scope": scope});
    c.post_expect("/cleanup", cleanup_ghost.clone(), 403).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, body) = c.post("/cleanup", cleanup_ghost).await;
    assert_eq!(code, 200, "{body}");
    assert!(!r.exists::<_, bool>(format!("{scope}:agent:ghost")).unwrap());
    // and a silent owner's alias can be registered by someone else
    c.start_agent_ok(json!({"alias": "ghost2", "address": "127.0.0.1", "scope": scope, "owner_token": "h".repeat(40), "heartbeat_interval_ms": 100})).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, body) = c
        .start_agent(json!({"alias": "ghost2", "address": "10.1.1.1", "scope": scope, "owner_token": "i".repeat(40)}))
        .await;
    assert_eq!(code, 200, "{body}");

    // the owner cleans up with its token; then the alias is free
    c.post_ok(
        "/cleanup",
        json!({"agent_name": "alice", "scope": scope, "owner_token": tok}),
    )
    .await;
    assert!(!r.exists::<_, bool>(&key).unwrap());
    c.start_agent_ok(reg(None)).await;
    // an agent registered without a token keeps the original's rules
    c.post_ok("/cleanup", json!({"agent_name": "alice", "scope": scope}))
        .await;
}

/// (route, body with every field valid): each string field is blown up in turn.
fn routes(scope: &str) -> Vec<(&'static str, Value)> {
    vec![
        (
            "/register",
            json!({"entity_type": "service", "entity_id": "e", "kind": "k", "scope": scope}),
        ),
        (
            "/unregister",
            json!({"entity_type": "service", "entity_id": "e", "scope": scope}),
        ),
        (
            "/heartbeat",
            json!({"entity_type": "service", "entity_id": "e", "scope": scope}),
        ),
        (
            "/get_entity_info",
            json!({"entity_type": "service", "entity_id": "e", "scope": scope}),
        ),
        (
            "/list_entities",
            json!({"entity_type": "service", "kind": "k", "scope": scope}),
        ),
        (
            "/start_peer_agent",
            json!({"alias": "a", "address": "127.0.0.1", "device": "d", "link_type": "l", "name_prefix": "p", "scope": scope}),
        ),
        ("/query", json!({"scope": scope})),
        ("/cleanup", json!({"agent_name": "a", "scope": scope})),
        (
            "/v1/desired_topology/a",
            json!({"target_peers": ["b"], "min_bw": "1", "scope": scope}),
        ),
        (
            "/register_mr",
            json!({"agent_name": "a", "mr_name": "m", "addr": 1, "length": 1, "rkey": 1, "scope": scope}),
        ),
        (
            "/get_mr_info",
            json!({"src": "a", "dst": "b", "mr_name": "m", "scope": scope}),
        ),
        ("/get_redis_address", json!({"address": "127.0.0.1"})),
    ]
}

const JSON: &str = "Content-Type: application/json\r\n";

#[tokio::test]
async fn oversized_and_garbage_bodies_get_json_errors_and_change_nothing() {
    let s = Stack::start();
    let port = s.ctrl.port;
    let scope = unique("limits");
    // every string field over its limit: 413 naming the field
    for (path, body) in routes(&scope) {
        for (k, v) in body.as_object().unwrap() {
            if !v.is_string() {
                continue;
            }
            let mut b = body.clone();
            b[k] = "z".repeat(4096).into();
            let (code, text) = raw_post(port, path, JSON, b.to_string().as_bytes());
            assert_eq!(code, 413, "{path} {k}: {text}");
            let v = json_of(&text);
            assert_eq!(v["status"], "error");
            assert!(v["message"].as_str().unwrap().contains(k.as_str()), "{v}");
        }
    }
    let (code, _) = raw_post(
        port,
        &format!("/v1/desired_topology/{}", "a".repeat(4096)),
        JSON,
        br#"{"target_peers":[]}"#,
    );
    assert_eq!(code, 413);
    let many: Vec<String> = (0..5000).map(|i| format!("p{i}")).collect();
    let (code, text) = raw_post(
        port,
        "/v1/desired_topology/a",
        JSON,
        json!({"target_peers": many}).to_string().as_bytes(),
    );
    assert_eq!(code, 413, "{text}");
    // wrong types: 422 with a JSON error
    for (path, body) in [
        ("/register", json!({"entity_id": 5, "kind": "k"})),
        ("/register", json!({"entity_id": "e", "kind": ["k"]})),
        (
            "/start_peer_agent",
            json!({"address": "h", "ib_port": "one"}),
        ),
        ("/start_peer_agent", json!({"address": "h", "ib_port": -1})),
        ("/start_peer_agent", json!({"address": "h", "owned": "yes"})),
        ("/v1/desired_topology/a", json!({"target_peers": "b"})),
        (
            "/register_mr",
            json!({"agent_name": "a", "mr_name": "m", "addr": -1, "length": 1, "rkey": 1}),
        ),
        (
            "/register_mr",
            json!({"agent_name": "a", "mr_name": "m", "addr": 1, "length": 1, "rkey": 4294967296u64}),
        ),
        ("/cleanup", json!({"agent_name": null})),
        ("/heartbeat", json!({"entity_id": "e"})),
    ] {
        let (code, text) = raw_post(port, path, JSON, body.to_string().as_bytes());
        assert_eq!(code, 422, "{path} {body}: {text}");
        assert_eq!(json_of(&text)["status"], "error");
    }
    // not JSON, wrong content type, nesting bombs: 400/415, as JSON
    for (headers, body, want) in [
        (JSON, b"{not json".to_vec(), 400),
        (JSON, b"\xff\xfe\x00garbage".to_vec(), 400),
        ("Content-Type: text/plain\r\n", b"{}".to_vec(), 415),
        ("", b"{}".to_vec(), 415),
        (JSON, "[".repeat(100_000).into_bytes(), 422),
        (
            JSON,
            format!(
                r#"{{"entity_id":"e","kind":"k","metadata":{}}}"#,
                "[".repeat(5000)
            )
            .into_bytes(),
            400,
        ),
    ] {
        let (code, text) = raw_post(port, "/register", headers, &body);
        assert_eq!(code, want, "{text}");
        assert_eq!(json_of(&text)["status"], "error");
    }
    // a declared body over --max-body-bytes: 413 before it is read
    let r = raw(
        port,
        b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 99999999\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    assert_eq!(
        json_of(r.split_once("\r\n\r\n").unwrap().1)["status"],
        "error"
    );

    // random bytes and mutated bodies on every route: never a 5xx, never a hang
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let t0 = Instant::now();
    let mut n = 0;
    for round in 0..400 {
        let (path, good) = &routes(&scope)[round % 12];
        let body: Vec<u8> = match round % 4 {
            0 => (0..rng.gen_range(0..512)).map(|_| rng.gen()).collect(),
            1 => {
                let mut b = good.to_string().into_bytes();
                for _ in 0..rng.gen_range(1..8) {
                    let i = rng.gen_range(0..b.len());
                    b[i] = rng.gen();
                }
                b
            }
            2 => {
                let mut b = good.to_string().into_bytes();
                b.truncate(rng.gen_range(0..b.len()));
                b
            }
            _ => {
                let mut v = good.clone();
                let k = v.as_object().unwrap().keys().next().unwrap().clone();
                v[k] = match rng.gen_range(0..4) {
                    0 => json!(null),
                    1 => json!({"a": [1, 2]}),
                    2 => json!(rng.gen::<i64>()),
                    _ => json!(true),
                };
                v.to_string().into_bytes()
            }
        };
        let (code, text) = raw_post(port, path, JSON, &body);
        assert!(
            (200..500).contains(&code) && code != 0,
            "{path} {:?}: {code} {text}",
            String::from_utf8_lossy(&body)
        );
        if code >= 400 {
            assert_eq!(json_of(&text)["status"], "error", "{path}: {text}");
        }
        n += 1;
    }
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "{n} requests took {:?}",
        t0.elapsed()
    );
    // no oversized value landed, and the server still works
    let keys = s.redis.all_keys();
    assert!(keys.iter().all(|k| !k.contains("zzzz")), "{keys:?}");
    s.ctrl
        .post_ok(
            "/register",
            json!({"entity_id": "ok", "kind": "k", "scope": unique("after")}),
        )
        .await;
}

#[tokio::test]
async fn redis_outage_health_and_rate_limited_logs() {
    let mut s = Stack::start();
    let port = s.ctrl.port;
    let health = |port| {
        raw(
            port,
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(10),
        )
        .unwrap()
    };
    let h = health(port);
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    assert!(h.contains(r#""redis":"ok""#), "{h}");

    let redis_port = s.redis.port;
    s.redis.kill();
    let h = health(port);
    assert!(h.starts_with("HTTP/1.1 503"), "{h}");
    assert!(h.contains(r#""status":"error""#), "{h}");
    // GET / is the liveness text of the original and stays 200
    assert!(health_with(port, None));

    // a burst of failing requests from 16 clients
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let base = s.ctrl.base.clone();
        tasks.push(tokio::spawn(async move {
            let http = client();
            for j in 0..25 {
                let r = http
                    .post(format!("{base}/register"))
                    .json(&json!({"entity_id": format!("e{i}-{j}"), "kind": "k"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 500);
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("deadline")
            .unwrap();
    }
    let took = t0.elapsed();
    let log = log_text(&s.ctrl);
    let errors = log.lines().filter(|l| l.contains("redis error")).count();
    assert!(
        errors <= 1 + (took.as_secs() as usize / 10),
        "{errors} error lines for 400 failed requests in {took:?}:\n{log}"
    );
    assert!(errors >= 1, "the outage is logged:\n{log}");

    s.redis = Redis::start_on(redis_port);
    wait_for(
        Duration::from_secs(30),
        "/health after Redis is back",
        || health(port).starts_with("HTTP/1.1 200").then_some(()),
    );
    wait_for(Duration::from_secs(5), "the recovery line", || {
        let log = log_text(&s.ctrl);
        log.lines()
            .any(|l| l.contains("Redis reachable again") && l.contains("suppressed"))
            .then_some(())
    });
}

/// The log sink is a pipe nobody reads (a supervisor that stopped draining it): once the
/// pipe is full, a synchronous logger would block every request that logs. Every request
/// here logs (debug level: per-request lines; Redis down: error lines; no token: refusals).
#[test]
fn an_undrained_log_pipe_never_blocks_requests() {
    let mut redis = Redis::start();
    let port = free_port();
    let mut child = Command::new(NANOCTRL)
        .args(["server", "--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--redis-url", &redis.url])
        .env_remove("NANOCTRL_REDIS_URL")
        .env("NANOCTRL_TOKEN", TOKEN)
        .env("NANOCTRL_RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped()) // never read
        .spawn()
        .unwrap();
    let _stderr = child.stderr.take();
    let _stdout = child.stdout.take();
    let _guard = KillOnDrop(child);
    wait_for(Duration::from_secs(20), "nanoctrl up", || {
        health_with(port, Some(TOKEN)).then_some(())
    });
    let auth = format!("Authorization: Bearer {TOKEN}\r\n{JSON}");
    let mut slowest = Duration::ZERO;
    let t0 = Instant::now();
    for i in 0..1200 {
        if i == 400 {
            redis.kill();
        }
        let t = Instant::now();
        let (code, _) = match i % 3 {
            0 => raw_post(port, "/query", &auth, b"{}"),
            1 => raw_post(port, "/query", JSON, b"{}"),
            _ => raw_post(port, "/register", &auth, br#"{"entity_id":"e","kind":"k"}"#),
        };
        assert!(matches!(code, 200 | 401 | 500), "request {i}: {code}");
        slowest = slowest.max(t.elapsed());
    }
    assert!(
        slowest < Duration::from_secs(3),
        "a request waited {slowest:?} (1200 in {:?})",
        t0.elapsed()
    );
}

/// A connection from `ip` (any of 127.0.0.0/8) to the server, as a blocking socket.
async fn connect_from(ip: [u8; 4], port: u16) -> std::net::TcpStream {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind((std::net::Ipv4Addr::from(ip), 0).into()).unwrap();
    let s = s
        .connect(([127, 0, 0, 1], port).into())
        .await
        .unwrap()
        .into_std()
        .unwrap();
    s.set_nonblocking(false).unwrap();
    s
}

/// True when the server closes `s` (end of stream or reset) within `within`.
fn closed_within(s: &mut std::net::TcpStream, within: Duration) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 256];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue, // a reply (the 408/400 of a cut request), then the close
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// `POST /query` from `ip`: the status line, or "" when the server closed the connection.
async fn query_from(ip: [u8; 4], port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = connect_from(ip, port).await;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!("POST /query HTTP/1.1\r\nHost: x\r\n{JSON}Content-Length: 2\r\nConnection: close\r\n\r\n{{}}");
    let _ = s.write_all(req.as_bytes());
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// A flood of silent and half-sent connections: past the per-address cap a connection is
/// closed at once and other addresses are still served; past the server's cap every new
/// connection is closed (descriptors stay bounded); connections that move no byte are
/// closed after the idle time, and the server serves again without a restart.
#[tokio::test]
async fn connection_floods_and_silent_connections_are_bounded() {
    let redis = Redis::start();
    let c = NanoCtrl::start_with(
        &redis.url,
        &[
            "--max-connections",
            "24",
            "--max-connections-per-ip",
            "8",
            "--idle-timeout",
            "2",
        ],
    );
    let ok = "HTTP/1.1 200 OK";
    let t0 = Instant::now();
    let mut held = Vec::new();
    for i in 0..8 {
        let mut s = connect_from([127, 0, 0, 1], c.port).await;
        if i % 2 == 1 {
            // slowloris: a request head that never ends
            use std::io::Write;
            s.write_all(b"POST /query HTTP/1.1\r\nHost: x\r\n").unwrap();
        }
        held.push(s);
    }
    let mut ninth = connect_from([127, 0, 0, 1], c.port).await;
    assert!(
        closed_within(&mut ninth, Duration::from_secs(1)),
        "over the per-address cap"
    );
    assert_eq!(
        query_from([127, 0, 0, 2], c.port).await,
        ok,
        "another address is served"
    );
    for ip in [[127, 0, 0, 3], [127, 0, 0, 4]] {
        for _ in 0..8 {
            held.push(connect_from(ip, c.port).await);
        }
    }
    assert_eq!(
        query_from([127, 0, 0, 5], c.port).await,
        "",
        "over the server's cap"
    );
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "the flood took {:?}: the idle timeout below would not be what closes them",
        t0.elapsed()
    );
    // idle connections go after ~2 s, the half-sent ones included
    for (i, s) in held.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(6)),
            "held connection {i} still open"
        );
    }
    assert!(
        t0.elapsed() >= Duration::from_secs(2),
        "closed before the idle time"
    );
    assert_eq!(query_from([127, 0, 0, 5], c.port).await, ok, "served again");
    c.post_ok("/query", json!({})).await;
    wait_for(Duration::from_secs(5), "a refusal log line", || {
        let log = log_text(&c);
        (log.contains("closed a connection from 127.0.0.1")
            && log.contains("--max-connections-per-ip"))
        .then_some(())
    });
}
