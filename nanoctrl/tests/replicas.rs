//! NanoCtrl replicas and Redis failover, over HTTP: any replica answers any request
//! (NanoCtrl keeps no state of its own), and a NanoCtrl given a primary and its replica
//! follows whichever is the primary (promotion after a crash, and a switchover back that
//! leaves it talking to a demoted node, which answers READONLY).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use redis::Commands;
use serde_json::json;

#[tokio::test]
async fn two_replicas_serve_one_cluster() {
    let redis = Redis::start();
    let a = NanoCtrl::start(&redis.url);
    let mut b = NanoCtrl::start(&redis.url);
    let scope = unique("two");
    let tok = "t".repeat(32);
    let hb =
        json!({"entity_type": "agent", "entity_id": "alice", "scope": scope, "owner_token": tok});
    // registered at A, beaten and looked up at B
    a.start_agent_ok(
        json!({"alias": "alice", "address": "127.0.0.1", "scope": scope, "owner_token": tok}),
    )
    .await;
    b.post_ok("/heartbeat", hb.clone()).await;
    let (_, list) = b.post("/query", json!({"scope": scope})).await;
    assert_eq!(list[0]["name"], "alice");
    // B restarts: nothing is lost, nothing to rebuild
    b = {
        drop(b);
        NanoCtrl::start(&redis.url)
    };
    b.post_ok("/heartbeat", hb.clone()).await;
    // generated names from both replicas at once never collide
    let mut tasks = Vec::new();
    for (i, base) in [a.base.clone(), b.base.clone()]
        .into_iter()
        .cycle()
        .take(8)
        .enumerate()
    {
        let scope = scope.clone();
        tasks.push(tokio::spawn(async move {
            let http = client();
            let mut names = Vec::new();
            for _ in 0..25 {
                let v: serde_json::Value = http
                    .post(format!("{base}/start_peer_agent"))
                    .json(&json!({"address": format!("10.0.0.{i}"), "scope": scope}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                names.push(v["name"].as_str().unwrap().to_string());
            }
            names
        }));
    }
    let mut names = HashSet::new();
    for t in tasks {
        for n in t.await.unwrap() {
            assert!(names.insert(n.clone()), "duplicate {n}");
        }
    }
    assert_eq!(names.len(), 200);
    // a topology posted at A, the owner's cleanup at B: the peer is notified
    a.post_ok(
        "/v1/desired_topology/alice",
        json!({"target_peers": ["bob"], "scope": scope, "owner_token": tok}),
    )
    .await;
    b.post_expect(
        "/cleanup",
        json!({"agent_name": "alice", "scope": scope}),
        403,
    )
    .await;
    b.post_ok(
        "/cleanup",
        json!({"agent_name": "alice", "scope": scope, "owner_token": tok}),
    )
    .await;
    let notices: Vec<String> = redis
        .conn()
        .lrange(format!("{scope}:inbox:bob"), 0, -1)
        .unwrap();
    assert_eq!(notices.len(), 1, "{notices:?}");
}

fn replicaof(r: &Redis, primary: Option<u16>) {
    let mut cmd = redis::cmd("REPLICAOF");
    match primary {
        Some(p) => cmd.arg("127.0.0.1").arg(p),
        None => cmd.arg("NO").arg("ONE"),
    };
    let _: String = cmd.query(&mut r.conn()).unwrap();
}

async fn registers(c: &NanoCtrl, scope: &str, id: &str) -> bool {
    c.post(
        "/register",
        json!({"entity_id": id, "kind": "k", "scope": scope}),
    )
    .await
    .0 == 200
}

#[tokio::test]
async fn follows_the_primary_through_a_promotion_and_a_switchover() {
    let mut p = Redis::start();
    let r = Redis::start_with(&["--replicaof", "127.0.0.1", &p.port.to_string()], "");
    wait_for(Duration::from_secs(15), "replication", || {
        r.replicating().then_some(())
    });
    let c = NanoCtrl::start(&format!("{},{}", p.url, r.url));
    let scope = unique("failover");
    assert!(registers(&c, &scope, "before").await);
    p.wait_replicated_to(&r, Duration::from_secs(15));

    // the primary dies; requests fail until the replica is promoted, then succeed on it
    let p_port = p.port;
    p.kill();
    assert!(!registers(&c, &scope, "during").await);
    replicaof(&r, None);
    wait_writes(&c, &scope, "after").await;
    let h: Option<String> = r
        .conn()
        .hget(format!("{scope}:service:before"), "kind")
        .unwrap();
    assert_eq!(h.as_deref(), Some("k"), "replicated data is served");
    let (_, addr) = c
        .post("/get_redis_address", json!({"address": "127.0.0.1"}))
        .await;
    assert_eq!(
        addr["redis_address"],
        format!("redis://127.0.0.1:{}", r.port)
    );

    // the old primary comes back as a replica; then the roles are switched back: the
    // node NanoCtrl talks to answers READONLY, and it moves to the new primary
    let p3 = Redis::start_on_with(
        p_port,
        &["--replicaof".into(), "127.0.0.1".into(), r.port.to_string()],
        "",
    );
    wait_for(Duration::from_secs(15), "replication back", || {
        p3.replicating().then_some(())
    });
    replicaof(&p3, None);
    replicaof(&r, Some(p_port));
    let id = wait_writes(&c, &scope, "back").await;
    let k: Option<String> = p3
        .conn()
        .hget(format!("{scope}:service:{id}"), "kind")
        .unwrap();
    assert_eq!(k.as_deref(), Some("k"), "written on the new primary");
}

/// Registers `{tag}-1`, `{tag}-2`, … until one succeeds (20 s at most); its id.
async fn wait_writes(c: &NanoCtrl, scope: &str, tag: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for n in 1.. {
        let id = format!("{tag}-{n}");
        if registers(c, scope, &id).await {
            return id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no write succeeded ({tag})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}
