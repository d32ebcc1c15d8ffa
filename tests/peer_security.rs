//! Attacks on the control plane, written as an attacker on the same network would run
//! them: raw HTTP on a socket from the test process, a third process next to NanoCtrl
//! and the two agent processes. Each attack must fail, and the legitimate agents must
//! keep transferring (content checked) and stay reachable under their aliases.
//!
//! - every route without NanoCtrl's bearer token (401);
//! - taking a live alias over: `/cleanup` + re-registration, heartbeats, topology and
//!   region records on its behalf, by a caller that has the bearer token but not the
//!   alias's owner token (403/409);
//! - Redis credentials: never handed to a caller without the token, flowing to agents
//!   with it, a Redis ACL user end to end.

mod common;
mod peer_fixture;

use dlslime::peer::NamedAssignment;
use dlslime::Status;
use peer_fixture::{
    agent, raw, raw_get, raw_post, register, rounds, rounds_setup, Child, Cluster, NanoCtrl, Redis,
    T, WAIT,
};
use serde_json::json;

peer_agent_child!();

const TOKEN: &str = "cluster-token-5f1c9e";

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

/// Two agent processes, connected over `transport`, with the regions of `rounds`.
fn pair(cl: &Cluster, transport: &str) -> (Child, Child) {
    let mut alice = Child::start(cl, "alice", &[]);
    let mut bob = Child::start(cl, "bob", &[]);
    rounds_setup(&mut alice, &mut bob);
    alice.ok(&format!("connect bob {transport}"));
    alice.ok("wait bob 30000");
    bob.ok("wait alice 30000");
    (alice, bob)
}

#[test]
fn every_route_refuses_a_caller_without_the_token() {
    let cl = Cluster::start_with_token("sec-token", TOKEN);
    let (mut alice, mut bob) = pair(&cl, "tcp");
    rounds(&mut alice, &mut bob, 0, 3);
    let port = cl.nanoctrl.port;
    let s = &cl.scope;
    let routes = [
        (
            "/register",
            json!({"entity_id": "x", "kind": "k", "scope": s}),
        ),
        ("/unregister", json!({"entity_id": "x", "scope": s})),
        (
            "/heartbeat",
            json!({"entity_type": "agent", "entity_id": "bob", "scope": s}),
        ),
        ("/get_entity_info", json!({"entity_id": "x", "scope": s})),
        ("/list_entities", json!({"scope": s})),
        (
            "/start_peer_agent",
            json!({"alias": "mallory", "address": "10.6.6.6", "scope": s}),
        ),
        ("/query", json!({"scope": s})),
        ("/cleanup", json!({"agent_name": "bob", "scope": s})),
        (
            "/v1/desired_topology/bob",
            json!({"target_peers": ["mallory"], "scope": s}),
        ),
        (
            "/register_mr",
            json!({"agent_name": "bob", "mr_name": "buf", "addr": 0, "length": 1, "rkey": 0, "scope": s}),
        ),
        (
            "/get_mr_info",
            json!({"src": "m", "dst": "bob", "mr_name": "buf", "scope": s}),
        ),
        ("/get_redis_address", json!({})),
        ("/no/such/route", json!({})),
    ];
    let wrong = [
        None,
        Some(bearer("cluster-token-5f1c9")),
        Some(bearer(&format!("{TOKEN}x"))),
        Some("Basic bWFsbG9yeTpndWVzcw==".to_string()), // mallory:guess
        Some(format!("Token {TOKEN}")),
    ];
    for (path, body) in &routes {
        for auth in &wrong {
            let (code, reply) = raw_post(port, path, auth.as_deref(), body);
            assert_eq!(code, 401, "{path} with {auth:?}: {reply}");
            assert_eq!(reply["status"], "error", "{path}: {reply}");
        }
    }
    for get in ["/", "/health"] {
        let r = raw_get(port, get).unwrap();
        assert!(r.starts_with("HTTP/1.1 401"), "{get}: {r}");
        assert!(r.contains("www-authenticate: Bearer"), "{r}");
        assert!(!r.contains("Running"), "{r}");
    }
    // a huge declared body without the token: refused before anything is read
    let r = raw(port, b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 999999999\r\nConnection: close\r\n\r\n", std::time::Duration::from_secs(10)).unwrap();
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    // nothing the attacker sent landed in Redis
    let keys = cl.redis.scope_keys(s);
    assert!(
        keys.iter()
            .all(|k| !k.contains("mallory") && !k.contains(":service:")),
        "{keys:?}"
    );
    assert!(
        !keys.contains(&format!("{s}:mr:bob:buf")) || {
            let v: String = redis::cmd("GET")
                .arg(format!("{s}:mr:bob:buf"))
                .query(&mut cl.redis.conn())
                .unwrap();
            v.contains("\"agent_name\"") // the agent's own record, not /register_mr's
        }
    );
    // with the token (Bearer, or Basic as the published Python client sends it)
    let (code, _) = raw_post(port, "/query", Some(&bearer(TOKEN)), &json!({"scope": s}));
    assert_eq!(code, 200);
    let basic = format!("Basic {}", b64(&format!("nanoctrl:{TOKEN}")));
    let (code, list) = raw_post(port, "/query", Some(&basic), &json!({"scope": s}));
    assert_eq!(code, 200, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 2);
    // and the legitimate pair never noticed
    rounds(&mut alice, &mut bob, 3, 3);
    alice.exit();
    bob.exit();
}

fn b64(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The attack of issue 11: `/cleanup` of a live agent, then registering its alias, so
/// that clients looking it up reach the impostor. The attacker here even has the
/// cluster's bearer token (an insider, or an open NanoCtrl): it still lacks bob's owner
/// token.
fn takeover_attempt(cl: &Cluster, auth: Option<&str>) {
    let (mut alice, mut bob) = pair(cl, "tcp");
    rounds(&mut alice, &mut bob, 0, 3);
    let port = cl.nanoctrl.port;
    let s = &cl.scope;
    let record = |field: &str| -> Option<String> {
        redis::cmd("HGET")
            .arg(format!("{s}:agent:bob"))
            .arg(field)
            .query(&mut cl.redis.conn())
            .unwrap()
    };
    let (addr, instance) = (record("addr"), record("instance"));
    assert!(addr.is_some() && record("owner").is_some());
    let mr_before: Option<String> = redis::cmd("GET")
        .arg(format!("{s}:mr:bob:buf"))
        .query(&mut cl.redis.conn())
        .unwrap();
    let fake_owner = "f".repeat(64);
    let attacks = [
        ("/cleanup", json!({"agent_name": "bob", "scope": s}), 403),
        (
            "/cleanup",
            json!({"agent_name": "bob", "scope": s, "owner_token": fake_owner}),
            403,
        ),
        (
            "/start_peer_agent",
            json!({"alias": "bob", "address": "10.6.6.6", "scope": s}),
            409,
        ),
        (
            "/start_peer_agent",
            json!({"alias": "bob", "address": "10.6.6.6", "scope": s, "owner_token": fake_owner}),
            409,
        ),
        (
            "/start_peer_agent",
            json!({"alias": "bob", "address": "10.6.6.6", "scope": s, "owned": true}),
            409,
        ),
        (
            "/heartbeat",
            json!({"entity_type": "agent", "entity_id": "bob", "scope": s}),
            403,
        ),
        (
            "/v1/desired_topology/bob",
            json!({"target_peers": ["mallory"], "symmetric": true, "scope": s}),
            403,
        ),
        (
            "/register_mr",
            json!({"agent_name": "bob", "mr_name": "buf", "addr": 4096, "length": 65536, "rkey": 1, "scope": s}),
            403,
        ),
    ];
    for round in 0..3 {
        for (path, body, want) in &attacks {
            let (code, reply) = raw_post(port, path, auth, body);
            assert_eq!(code, *want, "round {round}: {path} {body}: {reply}");
            assert_eq!(reply["status"], "error", "{reply}");
        }
    }
    // bob's record, regions and stream are his own
    assert_eq!((record("addr"), record("instance")), (addr, instance));
    let mr_after: Option<String> = redis::cmd("GET")
        .arg(format!("{s}:mr:bob:buf"))
        .query(&mut cl.redis.conn())
        .unwrap();
    assert_eq!(mr_before, mr_after);
    let stream: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(format!("{s}:stream:bob"))
        .arg("-")
        .arg("+")
        .query(&mut cl.redis.conn())
        .unwrap();
    assert!(
        stream
            .iter()
            .all(|(_, f)| !f.iter().any(|(_, v)| v == "mallory")),
        "{stream:?}"
    );
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("{s}:agent:bob"))
        .query(&mut cl.redis.conn())
        .unwrap();
    assert!(ttl > 0);
    // the pair keeps working, and a newcomer that looks bob up reaches the real bob
    rounds(&mut alice, &mut bob, 3, 3);
    let carol = agent(cl, "carol");
    let mut bufs = std::collections::HashMap::new();
    register(&carol, &mut bufs, "buf", 65536, 55);
    carol.connect_to("bob", "tcp").unwrap().wait(WAIT).unwrap();
    carol
        .write(
            "bob",
            &[NamedAssignment::pair("buf", "buf", 0, 0, 65536)],
            T,
        )
        .unwrap()
        .wait()
        .unwrap();
    bob.ok("check buf 55 0 65536");
    // bob's heartbeats keep going: his own, with his owner token
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let (code, _) = raw_post(
        port,
        "/heartbeat",
        auth,
        &json!({"entity_type": "agent", "entity_id": "bob", "scope": s}),
    );
    assert_eq!(code, 403, "still owned: bob is alive");
    drop(carol);
    alice.exit();
    bob.exit();
    // once bob shut down, his alias is free again
    let (code, reply) = raw_post(
        port,
        "/start_peer_agent",
        auth,
        &json!({"alias": "bob", "address": "10.6.6.6", "scope": s}),
    );
    assert_eq!(code, 200, "{reply}");
}

#[test]
fn live_alias_cannot_be_taken_over_by_a_token_holder() {
    let cl = Cluster::start_with_token("sec-takeover", TOKEN);
    takeover_attempt(&cl, Some(&bearer(TOKEN)));
}

#[test]
fn live_alias_cannot_be_taken_over_on_an_open_nanoctrl() {
    let cl = Cluster::start("sec-open");
    takeover_attempt(&cl, None);
}

/// Redis with `requirepass` (the default user, NanoCtrl's) and an ACL user for agents;
/// NanoCtrl requires a token and hands the agents' credentials to token holders only.
#[test]
fn redis_credentials_and_acl_end_to_end() {
    let redis = Redis::start_with(
        &[
            "--requirepass",
            "admin-pw-1",
            "--user",
            "agent",
            "on",
            ">agent-pw-2",
            "~*",
            "&*",
            "+@all",
            "-flushall",
            "-flushdb",
            "-config",
            "-shutdown",
        ],
        ":admin-pw-1",
    );
    let nano = NanoCtrl::start_with(
        &redis.url,
        Some(TOKEN),
        &["--agent-redis-auth", "agent:agent-pw-2"],
    );
    let cl = Cluster {
        nanoctrl: nano,
        redis,
        scope: peer_fixture::unique("sec-acl"),
    };
    let port = cl.nanoctrl.port;
    // without the token: nothing, in particular no credentials
    for (path, body) in [
        ("/get_redis_address", json!({})),
        (
            "/start_peer_agent",
            json!({"address": "127.0.0.1", "scope": cl.scope}),
        ),
    ] {
        let (code, reply) = raw_post(port, path, None, &body);
        assert_eq!(code, 401, "{reply}");
        assert!(!reply.to_string().contains("pw"), "{reply}");
    }
    // with it: the agents' credentials, not NanoCtrl's own
    let (code, reply) = raw_post(
        port,
        "/get_redis_address",
        Some(&bearer(TOKEN)),
        &json!({"address": "127.0.0.1"}),
    );
    assert_eq!(code, 200);
    let url = reply["redis_address"].as_str().unwrap();
    assert!(
        url.starts_with("redis://agent:agent-pw-2@127.0.0.1:"),
        "{url}"
    );
    assert!(!reply.to_string().contains("admin-pw-1"));
    // agents that only know NanoCtrl's token connect and transfer
    let (mut alice, mut bob) = pair(&cl, "tcp");
    rounds(&mut alice, &mut bob, 0, 4);
    // ... logged in to Redis as the ACL user
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut cl.redis.conn())
        .unwrap();
    let agent_conns = clients
        .lines()
        .filter(|l| l.contains(" user=agent "))
        .count();
    assert!(
        agent_conns >= 4,
        "two agents, two connections each: {clients}"
    );
    // an agent without the token is refused with a clear status
    let r = Child::start_err(&cl, "mallory", &[]);
    assert!(
        r.starts_with(&format!("err {}", Status::PermissionDenied.code())),
        "{r}"
    );
    assert!(r.contains("token"), "{r}");

    // An open NanoCtrl on the same Redis never hands out credentials: agents need their own.
    let open = NanoCtrl::start_with(&cl.redis.url, None, &[]);
    for (path, body) in [
        ("/get_redis_address", json!({})),
        ("/get_redis_address", json!({"address": "127.0.0.1"})),
        (
            "/start_peer_agent",
            json!({"address": "127.0.0.1", "scope": cl.scope}),
        ),
    ] {
        let (code, reply) = raw_post(open.port, path, None, &body);
        assert_eq!(code, 200, "{reply}");
        assert!(!reply.to_string().contains("pw"), "{path}: {reply}");
    }
    let r = Child::start_err(&cl, "dave", &[("PEER_URL", open.url.clone())]);
    assert!(r.starts_with(&format!("err {}", Status::Io.code())), "{r}");
    assert!(r.contains("NOAUTH") || r.contains("uthenticat"), "{r}");
    let mut erin = Child::start(
        &cl,
        "erin",
        &[
            ("PEER_URL", open.url.clone()),
            ("PEER_REDIS_URL", cl.redis.url_with("agent:agent-pw-2")),
        ],
    );
    erin.ok("reg buf 65536 77");
    erin.ok("connect bob tcp");
    erin.ok("wait bob 30000");
    erin.ok("write bob buf buf 0 0 65536");
    bob.ok("check buf 77 0 65536");
    erin.exit();
    rounds(&mut alice, &mut bob, 4, 2);
    alice.exit();
    bob.exit();
}
