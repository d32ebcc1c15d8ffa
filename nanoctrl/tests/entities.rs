//! Entity routes: /register, /unregister, /heartbeat, /get_entity_info, /list_entities,
//! Redis hash layout, TTL, revisions and the ADD/REMOVE events.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use redis::Commands;
use serde_json::{json, Value};

#[tokio::test]
async fn register_writes_hash_info_ttl_and_answers_like_the_original() {
    let s = Stack::start();
    let scope = unique("reg");
    s.ctrl
        .post_answers(
            "/register",
            json!({"entity_id": "cache:0", "kind": "cache", "scope": scope}),
            json!({"status": "ok", "message": "Entity service:cache:0 registered successfully"}),
        )
        .await;

    let mut r = s.redis.conn();
    let key = format!("{scope}:service:cache:0");
    let h: HashMap<String, String> = r.hgetall(&key).unwrap();
    assert_eq!(h["entity_type"], "service"); // default entity_type
    assert_eq!(h["entity_id"], "cache:0");
    assert_eq!(h["kind"], "cache");
    assert_eq!(h["endpoint"], ""); // null endpoint/resource stored as ""
    assert_eq!(h["resource"], "");
    assert_eq!(h["metadata"], "{}"); // metadata defaults to {}
    let info: Value = serde_json::from_str(&h["info"]).unwrap();
    assert_eq!(
        info,
        json!({"entity_type": "service", "entity_id": "cache:0", "id": "cache:0", "kind": "cache",
               "endpoint": null, "metadata": {}, "resource": null})
    );
    let ttl: i64 = r.ttl(&key).unwrap();
    assert!((55..=60).contains(&ttl), "ttl {ttl}");
    let rev: i64 = r
        .get(format!("{scope}:nano_meta:service_revision"))
        .unwrap();
    assert_eq!(rev, 1);

    // Full body, custom type; get_entity_info returns the info JSON.
    s.ctrl.post_ok("/register", json!({"entity_type": "engine", "entity_id": "p0", "kind": "prefill", "scope": scope, "endpoint": {"host": "10.0.0.1", "port": 9000}, "metadata": {"tp": 2}, "resource": {"gpus": 8}})).await;
    let body = s
        .ctrl
        .post_ok(
            "/get_entity_info",
            json!({"entity_type": "engine", "entity_id": "p0", "scope": scope}),
        )
        .await;
    assert_eq!(body["status"], "ok");
    assert_eq!(
        body["entity_info"]["endpoint"],
        json!({"host": "10.0.0.1", "port": 9000})
    );
    assert_eq!(body["entity_info"]["metadata"], json!({"tp": 2}));
    assert_eq!(body["entity_info"]["resource"], json!({"gpus": 8}));
    let h: HashMap<String, String> = r.hgetall(format!("{scope}:engine:p0")).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&h["endpoint"]).unwrap(),
        json!({"host": "10.0.0.1", "port": 9000})
    );

    // Unknown entity.
    s.ctrl
        .post_answers(
            "/get_entity_info",
            json!({"entity_id": "nope", "scope": scope}),
            json!({"status": "not_found", "entity_info": null}),
        )
        .await;
}

#[tokio::test]
async fn events_and_revisions_match_the_original_payloads() {
    let s = Stack::start();
    let scope = unique("ev");
    let sub = Subscriber::new(&s.redis.url, &format!("{scope}:nano_events:service_update"));
    let t = Duration::from_secs(10);

    let reg = json!({"entity_id": "a\"b", "kind": "cache", "scope": scope, "metadata": {"x": 1}});
    s.ctrl.post_ok("/register", reg.clone()).await;
    let add = sub.next(t).expect("ADD event");
    assert_eq!(add["event_type"], "ADD");
    assert_eq!(add["entity_type"], "service");
    assert_eq!(add["entity_id"], "a\"b"); // a quote in the id still yields valid JSON
    assert_eq!(add["kind"], "cache");
    assert_eq!(add["revision"], 1);
    assert!(
        add["timestamp"].is_i64(),
        "ADD timestamp is a number: {add}"
    );
    assert_eq!(add["payload"]["metadata"], json!({"x": 1}));
    assert_eq!(add["payload"]["id"], "a\"b");

    // Re-registering bumps the revision and publishes ADD again.
    s.ctrl.post_ok("/register", reg).await;
    let add2 = sub.next(t).expect("second ADD");
    assert_eq!(
        (add2["event_type"].as_str(), add2["revision"].as_i64()),
        (Some("ADD"), Some(2))
    );

    s.ctrl
        .post_answers(
            "/unregister",
            json!({"entity_id": "a\"b", "scope": scope}),
            json!({"status": "ok", "message": "Entity service:a\"b unregistered successfully"}),
        )
        .await;
    let rm = sub.next(t).expect("REMOVE event");
    assert_eq!(rm["event_type"], "REMOVE");
    assert_eq!(rm["revision"], 3);
    assert!(
        rm["timestamp"].is_string(),
        "REMOVE timestamp is a string: {rm}"
    );
    assert!(rm.get("payload").is_none());
    assert_eq!(rm.as_object().unwrap().len(), 5);

    // Unregistering a missing entity: ok, no event, no revision bump.
    let body = s
        .ctrl
        .post_ok("/unregister", json!({"entity_id": "a\"b", "scope": scope}))
        .await;
    assert_eq!(body["status"], "ok");
    assert!(sub.next(Duration::from_millis(500)).is_none());
    let rev: i64 = s
        .redis
        .conn()
        .get(format!("{scope}:nano_meta:service_revision"))
        .unwrap();
    assert_eq!(rev, 3);
}

#[tokio::test]
async fn heartbeat_ok_not_found_ttl_expiry_and_reregistration() {
    let s = Stack::start();
    let scope = unique("hb");
    let mut r = s.redis.conn();
    let key = format!("{scope}:service:w1");

    // No default entity_type on /heartbeat.
    let (code, text) = s
        .ctrl
        .post("/heartbeat", json!({"entity_id": "w1", "scope": scope}))
        .await;
    assert_eq!(code, 422, "{text}");

    let hb = json!({"entity_type": "service", "entity_id": "w1", "scope": scope});
    s.ctrl.post_answers("/heartbeat", hb.clone(), json!({"status": "not_found", "message": "service w1 not found. Please register first."})).await;

    s.ctrl
        .post(
            "/register",
            json!({"entity_id": "w1", "kind": "worker", "scope": scope}),
        )
        .await;
    let _: () = r.expire(&key, 5).unwrap();
    s.ctrl
        .post_answers(
            "/heartbeat",
            hb.clone(),
            json!({"status": "ok", "message": "Heartbeat successful for service w1"}),
        )
        .await;
    let ttl: i64 = r.ttl(&key).unwrap();
    assert!(ttl > 50, "heartbeat resets the TTL to 60 s, got {ttl}");

    // Let it really expire (shortened TTL), then the client's re-registration path.
    let _: () = redis::cmd("PEXPIRE")
        .arg(&key)
        .arg(150)
        .query(&mut r)
        .unwrap();
    wait_for(Duration::from_secs(10), "key expiry", || {
        (!r.exists::<_, bool>(&key).unwrap()).then_some(())
    });
    let (_, body) = s.ctrl.post("/heartbeat", hb.clone()).await;
    assert_eq!(body["status"], "not_found");
    let (_, body) = s
        .ctrl
        .post(
            "/get_entity_info",
            json!({"entity_id": "w1", "scope": scope}),
        )
        .await;
    assert_eq!(body["status"], "not_found");
    s.ctrl
        .post(
            "/register",
            json!({"entity_id": "w1", "kind": "worker", "scope": scope}),
        )
        .await;
    let (_, body) = s.ctrl.post("/heartbeat", hb).await;
    assert_eq!(body["status"], "ok");

    // A heartbeat naming a non-entity key (here the revision counter) finds nothing and
    // leaves that key's (absent) TTL alone.
    let rev_key = format!("{scope}:nano_meta:service_revision");
    let (_, body) = s
        .ctrl
        .post(
            "/heartbeat",
            json!({"entity_type": "nano_meta", "entity_id": "service_revision", "scope": scope}),
        )
        .await;
    assert_eq!(body["status"], "not_found");
    assert_eq!(r.ttl::<_, i64>(&rev_key).unwrap(), -1);

    // Agents heartbeat through the same route with entity_type "agent".
    let (_, reg) = s
        .ctrl
        .start_agent(json!({"address": "127.0.0.1", "scope": scope}))
        .await;
    let name = reg["name"].as_str().unwrap();
    let _: () = r.expire(format!("{scope}:agent:{name}"), 5).unwrap();
    let (_, body) = s
        .ctrl
        .post(
            "/heartbeat",
            json!({"entity_type": "agent", "entity_id": name, "scope": scope}),
        )
        .await;
    assert_eq!(body["status"], "ok");
    let ttl: i64 = r.ttl(format!("{scope}:agent:{name}")).unwrap();
    assert!(ttl > 50);
}

#[tokio::test]
async fn list_entities_filters_by_type_kind_and_scope_without_leaks() {
    let s = Stack::start();
    let a = unique("job-a");
    let b = unique("job-b");
    for (scope, id, kind, ty) in [
        (None, "cache:0", "cache", "service"),
        (None, "p:0", "prefill", "service"),
        (None, "e0", "decode", "engine"),
        (Some(&a), "cache:0", "cache", "service"),
        (Some(&a), "d0", "decode", "engine"),
        (Some(&b), "cache:1", "cache", "service"),
    ] {
        let mut body = json!({"entity_id": id, "kind": kind, "entity_type": ty});
        if let Some(sc) = scope {
            body["scope"] = json!(sc);
        }
        s.ctrl.post_ok("/register", body).await;
    }
    // Non-entity keys that also match `*:*` must not break or pollute the listing.
    s.ctrl
        .start_agent(json!({"address": "127.0.0.1", "alias": "x"}))
        .await;
    let mut r = s.redis.conn();
    let _: () = r.set("odd:string", "v").unwrap();

    let ids = |v: &Value| {
        let mut ids: Vec<String> = v["entities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{}/{}",
                    e["entity_type"].as_str().unwrap(),
                    e["entity_id"].as_str().unwrap()
                )
            })
            .collect();
        ids.sort();
        ids
    };
    // Unscoped, all types: only the unscoped entities (the original leaked scoped ones).
    let body = s.ctrl.post_ok("/list_entities", json!({})).await;
    assert_eq!(body["status"], "ok");
    assert_eq!(ids(&body), ["engine/e0", "service/cache:0", "service/p:0"]);
    let (_, body) = s
        .ctrl
        .post("/list_entities", json!({"entity_type": "service"}))
        .await;
    assert_eq!(ids(&body), ["service/cache:0", "service/p:0"]);
    let (_, body) = s
        .ctrl
        .post(
            "/list_entities",
            json!({"entity_type": "service", "kind": "prefill"}),
        )
        .await;
    assert_eq!(ids(&body), ["service/p:0"]);
    let (_, body) = s
        .ctrl
        .post("/list_entities", json!({"kind": "decode"}))
        .await;
    assert_eq!(ids(&body), ["engine/e0"]);
    let (_, body) = s.ctrl.post("/list_entities", json!({"scope": a})).await;
    assert_eq!(ids(&body), ["engine/d0", "service/cache:0"]);
    let (_, body) = s
        .ctrl
        .post("/list_entities", json!({"scope": b, "kind": "cache"}))
        .await;
    assert_eq!(ids(&body), ["service/cache:1"]);
    let (_, body) = s
        .ctrl
        .post(
            "/list_entities",
            json!({"scope": "", "entity_type": "engine"}),
        )
        .await;
    assert_eq!(ids(&body), ["engine/e0"], "empty scope means no scope");
    let (_, body) = s
        .ctrl
        .post("/list_entities", json!({"scope": unique("empty")}))
        .await;
    assert_eq!(body, json!({"status": "ok", "entities": []}));
}

#[tokio::test]
async fn empty_scope_is_no_scope_on_every_key() {
    let s = Stack::start();
    let mut r = s.redis.conn();
    s.ctrl
        .post(
            "/register",
            json!({"entity_id": "z", "kind": "k", "scope": ""}),
        )
        .await;
    assert!(r.exists::<_, bool>("service:z").unwrap());
    assert!(r.exists::<_, bool>("nano_meta:service_revision").unwrap());
    let (_, body) = s
        .ctrl
        .start_agent(json!({"address": "127.0.0.1", "scope": ""}))
        .await;
    assert!(r
        .exists::<_, bool>(format!("agent:{}", body["name"].as_str().unwrap()))
        .unwrap());
    assert!(r.exists::<_, bool>("agent_name_counter").unwrap());
}
