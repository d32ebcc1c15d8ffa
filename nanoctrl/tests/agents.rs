//! PeerAgent routes: /start_peer_agent, /query, /v1/desired_topology, /cleanup,
//! /register_mr, /get_mr_info, /get_redis_address.

mod common;

use std::collections::HashMap;

use common::*;
use redis::Commands;
use serde_json::{json, Value};

#[tokio::test]
async fn start_peer_agent_generates_hex_names_and_rejects_duplicate_aliases() {
    let s = Stack::start();
    let scope = unique("spa");
    let mut r = s.redis.conn();

    let body = s
        .ctrl
        .start_agent_ok(json!({"address": "127.0.0.1", "scope": scope}))
        .await;
    assert_eq!(
        body,
        json!({"status": "ok", "name": "agent-1", "redis_address": format!("127.0.0.1:{}", s.redis.port)})
    );
    // The counter is rendered in hex: 10 -> "a".
    let _: () = r.set(format!("{scope}:agent_name_counter"), 9).unwrap();
    let (_, body) = s
        .ctrl
        .start_agent(json!({"address": "127.0.0.1", "scope": scope, "name_prefix": "dlslime"}))
        .await;
    assert_eq!(body["name"], "dlslime-a");
    assert!(
        body.get("resource").is_none(),
        "resource echoed only when sent"
    );

    // Alias with all optional fields; the hash holds them, resource twice.
    let res = json!({"nics": [{"name": "mlx5_0"}], "host": {"address": "127.0.0.1"}});
    let body = s.ctrl.start_agent_ok(json!({"address": "127.0.0.1", "scope": scope, "alias": "alice", "device": "mlx5_0", "ib_port": 2, "link_type": "RoCE", "resource": res})).await;
    assert_eq!(body["name"], "alice");
    assert_eq!(body["resource"], res);
    let h: HashMap<String, String> = r.hgetall(format!("{scope}:agent:alice")).unwrap();
    assert_eq!(h["addr"], "127.0.0.1");
    assert_eq!(h["memory_keys"], "[]");
    assert_eq!(
        (
            h["device"].as_str(),
            h["ib_port"].as_str(),
            h["link_type"].as_str()
        ),
        ("mlx5_0", "2", "RoCE")
    );
    assert_eq!(serde_json::from_str::<Value>(&h["resource"]).unwrap(), res);
    assert_eq!(h["resource"], h["topology"]);
    assert!(h["updated_at"].parse::<u64>().is_ok());
    let ttl: i64 = r.ttl(format!("{scope}:agent:alice")).unwrap();
    assert!((55..=60).contains(&ttl));

    // Same alias, same scope: 409 with the original's envelope.
    let body = s
        .ctrl
        .post_expect(
            "/start_peer_agent",
            json!({"address": "127.0.0.2", "scope": scope, "alias": "alice"}),
            409,
        )
        .await;
    assert_eq!(
        body,
        json!({"status": "error", "message": "Peer agent alias 'alice' already exists in this scope"})
    );
    let addr: String = r.hget(format!("{scope}:agent:alice"), "addr").unwrap();
    assert_eq!(addr, "127.0.0.1", "a rejected registration changes nothing");
    // Same alias in another scope (and unscoped) is fine.
    let other = unique("spa-other");
    s.ctrl
        .start_agent_ok(json!({"address": "127.0.0.1", "scope": other, "alias": "alice"}))
        .await;
    s.ctrl
        .start_agent_ok(json!({"address": "127.0.0.1", "alias": "alice"}))
        .await;
    // After the agent is gone (expired or cleaned up) the alias is free again.
    s.ctrl
        .post("/cleanup", json!({"agent_name": "alice", "scope": scope}))
        .await;
    s.ctrl
        .start_agent_ok(json!({"address": "127.0.0.1", "scope": scope, "alias": "alice"}))
        .await;

    // Missing address: 422.
    s.ctrl
        .post_expect("/start_peer_agent", json!({"scope": scope}), 422)
        .await;
}

#[tokio::test]
async fn query_returns_a_bare_array_with_defaults_per_scope() {
    let s = Stack::start();
    let scope = unique("q");
    let mut r = s.redis.conn();
    s.ctrl
        .start_agent(json!({"address": "10.0.0.1", "scope": scope, "alias": "b", "device": "mlx5_1", "ib_port": 2, "link_type": "IB", "resource": {"k": 1}}))
        .await;
    s.ctrl
        .start_agent(json!({"address": "10.0.0.2", "scope": scope, "alias": "a"}))
        .await;
    // PeerAgent later HSETs memory_keys; a hash without addr is skipped.
    let _: () = r
        .hset(format!("{scope}:agent:a"), "memory_keys", "[\"kv\"]")
        .unwrap();
    let _: () = r
        .hset(format!("{scope}:agent:ghost"), "device", "x")
        .unwrap();
    s.ctrl
        .start_agent(json!({"address": "10.0.0.3", "alias": "unscoped"}))
        .await;

    s.ctrl.post_answers("/query", json!({"scope": scope}), json!([
            {"name": "a", "device": "", "ib_port": 1, "link_type": "", "address": "10.0.0.2", "resource": null, "memory_keys": ["kv"]},
            {"name": "b", "device": "mlx5_1", "ib_port": 2, "link_type": "IB", "address": "10.0.0.1", "resource": {"k": 1}, "memory_keys": []}
        ])).await;
    let (_, body) = s.ctrl.post("/query", json!({})).await;
    let names: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["unscoped"]);
    let (_, body) = s
        .ctrl
        .post("/query", json!({"scope": unique("none")}))
        .await;
    assert_eq!(body, json!([]));
}

fn stream(r: &mut redis::Connection, key: &str) -> Vec<HashMap<String, String>> {
    let v: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query(r)
        .unwrap();
    v.into_iter()
        .map(|(_, kv)| kv.into_iter().collect())
        .collect()
}

#[tokio::test]
async fn desired_topology_sets_spec_and_wakes_mailboxes() {
    let s = Stack::start();
    let scope = unique("topo");
    let mut r = s.redis.conn();
    let url = |a: &str| format!("/v1/desired_topology/{a}");

    s.ctrl
        .post_answers(
            &url("A"),
            json!({"target_peers": ["B", "C"], "scope": scope, "min_bw": "100Gbps"}),
            json!({"status": "ok"}),
        )
        .await;
    let spec: Value = serde_json::from_str(
        &r.get::<_, String>(format!("{scope}:spec:topology:A"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        spec,
        json!({"target_peers": ["B", "C"], "min_bw": "100Gbps", "symmetric": false, "scope": scope})
    );
    let msgs = stream(&mut r, &format!("{scope}:stream:A"));
    assert_eq!(msgs.len(), 2);
    assert_eq!(
        (msgs[0]["type"].as_str(), msgs[0]["peer"].as_str()),
        ("connect_peer", "B")
    );
    assert_eq!(msgs[1]["peer"], "C");
    assert!(msgs[0]["timestamp"].parse::<f64>().unwrap() > 1.0e9);
    // Not symmetric: targets untouched.
    assert!(!r.exists::<_, bool>(format!("{scope}:stream:B")).unwrap());

    // Overwrite, not merge.
    s.ctrl
        .post(&url("A"), json!({"target_peers": ["D"], "scope": scope}))
        .await;
    let spec: Value = serde_json::from_str(
        &r.get::<_, String>(format!("{scope}:spec:topology:A"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(spec["target_peers"], json!(["D"]));

    // Symmetric: merged into each target's spec (once) and the target's mailbox woken.
    let _: () = r
        .set(
            format!("{scope}:spec:topology:F"),
            r#"{"target_peers":["X"],"min_bw":null,"symmetric":false,"scope":null}"#,
        )
        .unwrap();
    for _ in 0..2 {
        s.ctrl
            .post(
                &url("E"),
                json!({"target_peers": ["F", "G"], "symmetric": true, "scope": scope}),
            )
            .await;
    }
    let f: Value = serde_json::from_str(
        &r.get::<_, String>(format!("{scope}:spec:topology:F"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        f,
        json!({"target_peers": ["X", "E"], "min_bw": null, "symmetric": false, "scope": scope})
    );
    let g: Value = serde_json::from_str(
        &r.get::<_, String>(format!("{scope}:spec:topology:G"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(g["target_peers"], json!(["E"]));
    let gs = stream(&mut r, &format!("{scope}:stream:G"));
    assert_eq!(gs.len(), 2);
    assert_eq!(
        (gs[0]["type"].as_str(), gs[0]["peer"].as_str()),
        ("connect_peer", "E")
    );

    // MAXLEN ~ 1000 keeps the stream bounded.
    for _ in 0..40 {
        let targets: Vec<String> = (0..50).map(|i| format!("t{i}")).collect();
        s.ctrl
            .post(&url("H"), json!({"target_peers": targets, "scope": scope}))
            .await;
    }
    let len: usize = r.xlen(format!("{scope}:stream:H")).unwrap();
    assert!((1000..2000).contains(&len), "stream length {len}");

    // Missing target_peers: 422.
    s.ctrl
        .post_expect(&url("A"), json!({"scope": scope}), 422)
        .await;
}

#[tokio::test]
async fn cleanup_removes_everything_and_notifies_exactly_the_linked_peers() {
    let s = Stack::start();
    let scope = unique("clean");
    let mut r = s.redis.conn();
    let k = |rest: &str| format!("{scope}:{rest}");
    s.ctrl
        .start_agent(json!({"address": "127.0.0.1", "scope": scope, "alias": "a"}))
        .await;
    s.ctrl
        .start_agent(json!({"address": "127.0.0.1", "scope": scope, "alias": "b"}))
        .await;
    s.ctrl
        .post(
            "/v1/desired_topology/a",
            json!({"target_peers": ["b"], "scope": scope}),
        )
        .await;
    s.ctrl
        .post(
            "/v1/desired_topology/c",
            json!({"target_peers": ["a"], "scope": scope}),
        )
        .await;
    s.ctrl
        .post(
            "/v1/desired_topology/d",
            json!({"target_peers": ["x"], "scope": scope}),
        )
        .await;
    let _: () = r.set(k("spec:topology:broken"), "not json").unwrap();
    for key in [
        "exchange:a:b",
        "exchange:a:b:a:mlx5_0:port1->b:mlx5_0:port1#qp1",
        "exchange:b:a",
        "exchange:b:a:b:mlx5_0:port1->a:mlx5_0:port1#qp1",
        "mr:a:kv",
        "mr:a:kv:mlx5_0:1:RoCE",
        "inbox:a",
        // must survive:
        "exchange:b:c:b:mlx5_0:port1->c:mlx5_0:port1#qp1",
        "mr:b:kv",
        "mr:ab:kv",
    ] {
        let _: () = r.set(k(key), "v").unwrap();
    }
    let _: () = r.del(k("inbox:a")).unwrap();
    let _: () = r.lpush(k("inbox:a"), "old").unwrap();
    s.ctrl
        .post(
            "/register",
            json!({"entity_id": "a", "kind": "k", "scope": scope}),
        )
        .await;
    // An agent with the same name in another scope is not touched.
    let other = unique("clean-other");
    s.ctrl
        .start_agent(json!({"address": "127.0.0.1", "scope": other, "alias": "a"}))
        .await;

    s.ctrl
        .post_answers(
            "/cleanup",
            json!({"agent_name": "a", "scope": scope}),
            json!({"status": "ok", "message": "Cleaned up agent: a"}),
        )
        .await;

    for gone in [
        "agent:a",
        "spec:topology:a",
        "stream:a",
        "inbox:a",
        "exchange:a:b",
        "exchange:a:b:a:mlx5_0:port1->b:mlx5_0:port1#qp1",
        "exchange:b:a",
        "exchange:b:a:b:mlx5_0:port1->a:mlx5_0:port1#qp1",
        "mr:a:kv",
        "mr:a:kv:mlx5_0:1:RoCE",
    ] {
        assert!(
            !r.exists::<_, bool>(k(gone)).unwrap(),
            "{gone} should be deleted"
        );
    }
    for kept in [
        "agent:b",
        "spec:topology:c",
        "exchange:b:c:b:mlx5_0:port1->c:mlx5_0:port1#qp1",
        "mr:b:kv",
        "mr:ab:kv",
        "service:a",
    ] {
        assert!(
            r.exists::<_, bool>(k(kept)).unwrap(),
            "{kept} should be kept"
        );
    }
    assert!(r.exists::<_, bool>(format!("{other}:agent:a")).unwrap());

    // Notices: b (a's own target) and c (whose spec names a); not d.
    let notice = json!({"type": "cleanup", "peer": "a"});
    for peer in ["b", "c"] {
        let items: Vec<String> = r.lrange(k(&format!("inbox:{peer}")), 0, -1).unwrap();
        assert_eq!(items.len(), 1, "inbox:{peer}");
        assert_eq!(serde_json::from_str::<Value>(&items[0]).unwrap(), notice);
    }
    assert!(!r.exists::<_, bool>(k("inbox:d")).unwrap());
    assert!(!r.exists::<_, bool>(k("inbox:x")).unwrap());

    // Unknown agent: still ok.
    let (code, body) = s
        .ctrl
        .post("/cleanup", json!({"agent_name": "nobody", "scope": scope}))
        .await;
    assert_eq!((code, body["status"].as_str()), (200, Some("ok")));
    s.ctrl
        .post_expect("/cleanup", json!({"scope": scope}), 422)
        .await;
}

#[tokio::test]
async fn unscoped_cleanup_notice_reaches_the_key_peer_agents_listen_on() {
    let s = Stack::start();
    let mut r = s.redis.conn();
    let a = unique("ua");
    let b = unique("ub");
    s.ctrl
        .start_agent(json!({"address": "127.0.0.1", "alias": a}))
        .await;
    s.ctrl
        .post(
            &format!("/v1/desired_topology/{a}"),
            json!({"target_peers": [b]}),
        )
        .await;
    s.ctrl.post("/cleanup", json!({"agent_name": a})).await;
    // HEAD's PeerAgent without a scope listens on ":inbox:{alias}"; the documented key is
    // "inbox:{alias}". Both get the notice.
    for key in [format!("inbox:{b}"), format!(":inbox:{b}")] {
        let items: Vec<String> = r.lrange(&key, 0, -1).unwrap();
        assert_eq!(items.len(), 1, "{key}");
    }
    assert!(!r.exists::<_, bool>(format!("stream:{a}")).unwrap());
}

#[tokio::test]
async fn memory_regions_and_redis_addresses() {
    let s = Stack::start();
    let scope = unique("mr");
    let mut r = s.redis.conn();
    let (code, body) = s
        .ctrl
        .post("/register_mr", json!({"agent_name": "a", "mr_name": "kv", "addr": 140_000_000_000_000u64, "length": 4096, "rkey": 77, "scope": scope}))
        .await;
    assert_eq!((code, body), (200, json!({"status": "ok"})));
    let stored: Value =
        serde_json::from_str(&r.get::<_, String>(format!("{scope}:mr:a:kv")).unwrap()).unwrap();
    assert_eq!(
        stored,
        json!({"addr": 140_000_000_000_000u64, "length": 4096, "rkey": 77, "lkey": 0})
    );
    assert_eq!(
        r.ttl::<_, i64>(format!("{scope}:mr:a:kv")).unwrap(),
        -1,
        "no TTL"
    );

    s.ctrl.post_answers("/get_mr_info",
            json!({"src": "b", "dst": "a", "mr_name": "kv", "scope": scope}), json!({"mr_info": {"addr": 140_000_000_000_000u64, "length": 4096, "rkey": 77, "lkey": 0}})).await;
    // PeerAgent's own record (extra fields) is readable too; a partial one is null.
    let _: () = r
        .set(format!("{scope}:mr:a:pa"), r#"{"agent_name":"a","mr_name":"pa","device":"d","ib_port":1,"link_type":"IB","addr":1,"length":2,"rkey":3,"lkey":0}"#)
        .unwrap();
    let _: () = r
        .set(
            format!("{scope}:mr:a:partial"),
            r#"{"addr":1,"length":2,"rkey":3}"#,
        )
        .unwrap();
    let (_, body) = s
        .ctrl
        .post(
            "/get_mr_info",
            json!({"src": "b", "dst": "a", "mr_name": "pa", "scope": scope}),
        )
        .await;
    assert_eq!(
        body["mr_info"],
        json!({"addr": 1, "length": 2, "rkey": 3, "lkey": 0})
    );
    let (_, body) = s
        .ctrl
        .post(
            "/get_mr_info",
            json!({"src": "b", "dst": "a", "mr_name": "partial", "scope": scope}),
        )
        .await;
    assert_eq!(body, json!({"mr_info": null}));
    let (_, body) = s
        .ctrl
        .post(
            "/get_mr_info",
            json!({"src": "b", "dst": "a", "mr_name": "kv"}),
        )
        .await;
    assert_eq!(
        body,
        json!({"mr_info": null}),
        "scoped record invisible unscoped"
    );
    // src is required although unused; rkey must fit u32.
    s.ctrl
        .post_expect("/get_mr_info", json!({"dst": "a", "mr_name": "kv"}), 422)
        .await;
    s.ctrl
        .post_expect(
            "/register_mr",
            json!({"agent_name": "a", "mr_name": "x", "addr": 1, "length": 1, "rkey": -1}),
            422,
        )
        .await;

    // /get_redis_address includes the scheme; /start_peer_agent does not.
    let body = s.ctrl.post_ok("/get_redis_address", json!({})).await;
    assert_eq!(body["status"], "ok");
    let addr = body["redis_address"].as_str().unwrap();
    assert!(
        addr.starts_with("redis://") && addr.ends_with(&format!(":{}", s.redis.port)),
        "{addr}"
    );
    let (code, text) = s
        .ctrl
        .post_raw("/get_redis_address", Some("application/json"), vec![])
        .await;
    assert_eq!(code, 400, "{text}");
    let (_, body) = s
        .ctrl
        .start_agent(json!({"address": "127.0.0.1", "scope": scope}))
        .await;
    assert_eq!(body["redis_address"], format!("127.0.0.1:{}", s.redis.port));
    // A remote client is not handed a loopback address.
    let (_, body) = s
        .ctrl
        .start_agent(json!({"address": "10.9.9.9", "scope": scope}))
        .await;
    let remote = body["redis_address"].as_str().unwrap();
    assert!(
        remote.ends_with(&format!(":{}", s.redis.port)) && !remote.contains("://"),
        "{remote}"
    );
}
