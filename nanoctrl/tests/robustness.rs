//! Bad input, body limits, Redis outages and concurrency: the server answers with a
//! clear status and keeps running.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use redis::Commands;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_the_server_keeps_running() {
    let mut s = Stack::start();
    let c = &s.ctrl;
    let body = br#"{"entity_id":"x","kind":"k"}"#.to_vec();

    let (code, text) = c.post_raw("/register", None, body.clone()).await;
    assert_eq!(code, 415, "{text}");
    assert!(text.contains("Content-Type: application/json"), "{text}");
    let (code, text) = c
        .post_raw("/register", Some("text/plain"), body.clone())
        .await;
    assert_eq!(code, 415, "{text}");
    let (code, text) = c
        .post_raw("/register", Some("application/json"), b"{not json".to_vec())
        .await;
    assert_eq!(code, 400, "{text}");
    assert!(
        text.contains("Failed to parse the request body as JSON"),
        "{text}"
    );
    let (code, text) = c
        .post_raw(
            "/register",
            Some("application/json"),
            br#"{"entity_id":"x"}"#.to_vec(),
        )
        .await;
    assert_eq!(code, 422, "{text}");
    assert!(text.contains("missing field `kind`"), "{text}");
    let (code, text) = c
        .post_raw(
            "/register",
            Some("application/json"),
            br#"{"entity_id":5,"kind":"k"}"#.to_vec(),
        )
        .await;
    assert_eq!(code, 422, "{text}");
    let (code, text) = c
        .post_raw(
            "/register",
            Some("application/json"),
            b"\xff\xfe\x00garbage".to_vec(),
        )
        .await;
    assert!(code == 400 || code == 422, "{code} {text}");

    // Unknown route 404, wrong method 405, both empty bodies.
    let http = client();
    for (method, path, code) in [
        (Method::GET, "/no/such/route", 404),
        (Method::GET, "/register", 405),
        (Method::POST, "/", 405),
    ] {
        let r = http.request(method, format!("{}{path}", c.base));
        let r = r.send().await.unwrap();
        assert_eq!(r.status().as_u16(), code, "{path}");
        assert!(r.text().await.unwrap().is_empty(), "{path}");
    }

    // Oversized body (default limit 2 MiB): 413 from the declared length, before upload.
    let head = raw_request(c.port, "POST /register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 3145728\r\nExpect: 100-continue\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    // A client that pushes the whole body anyway gets 413 or a closed connection
    // (the server will not read 3 MiB it is going to reject); either way it survives.
    let big = format!(
        r#"{{"entity_id":"x","kind":"k","metadata":{{"blob":"{}"}}}}"#,
        "a".repeat(3 << 20)
    );
    let r = client()
        .post(format!("{}/register", c.base))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status().as_u16(), 413);
    }
    // A body under the limit whose one field is over its own limit (256 KiB for an
    // embedded document): 413 naming the field, as JSON.
    let big_field = format!(
        r#"{{"entity_id":"x","kind":"k","metadata":{{"blob":"{}"}}}}"#,
        "a".repeat(1 << 20)
    );
    let (code, text) = c
        .post_raw(
            "/register",
            Some("application/json"),
            big_field.into_bytes(),
        )
        .await;
    assert_eq!(code, 413, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["status"], "error");
    assert!(v["message"].as_str().unwrap().contains("`metadata`"), "{v}");
    // Just under the field limit is accepted.
    let ok = format!(
        r#"{{"entity_id":"x","kind":"k","metadata":{{"blob":"{}"}}}}"#,
        "a".repeat(200 << 10)
    );
    let (code, _) = c
        .post_raw("/register", Some("application/json"), ok.into_bytes())
        .await;
    assert_eq!(code, 200);

    assert!(s.ctrl.alive());
    let (code, body) = s
        .ctrl
        .post(
            "/heartbeat",
            json!({"entity_type": "service", "entity_id": "x"}),
        )
        .await;
    assert_eq!((code, body["status"].as_str()), (200, Some("ok")));
}

#[tokio::test]
async fn body_limit_is_configurable() {
    let redis = Redis::start();
    let ctrl = NanoCtrl::start_with(&redis.url, &["--max-body-bytes", "1024"]);
    let body = format!(
        r#"{{"entity_id":"x","kind":"k","metadata":{{"b":"{}"}}}}"#,
        "a".repeat(2000)
    );
    assert_eq!(
        ctrl.post_raw(
            "/register",
            Some("application/json"),
            body.clone().into_bytes()
        )
        .await
        .0,
        413
    );
    // Chunked, no Content-Length: caught while reading.
    let req = format!(
        "POST /register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let head = raw_request(ctrl.port, &req);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    ctrl.post_ok("/register", json!({"entity_id": "x", "kind": "k"}))
        .await;
}

#[tokio::test]
async fn redis_outage_gives_5xx_then_recovers_without_restart() {
    let mut s = Stack::start();
    let scope = unique("outage");
    let reg = json!({"entity_id": "w", "kind": "k", "scope": scope});
    s.ctrl.post_ok("/register", reg.clone()).await;

    let port = s.redis.port;
    s.redis.kill();
    for path in ["/register", "/list_entities", "/query"] {
        let (code, body) = s.ctrl.post(path, reg.clone()).await;
        assert_eq!(code, 500, "{path}: {body}");
        assert_eq!(body["status"], "error");
        assert!(
            body["message"].as_str().unwrap().starts_with("Redis:"),
            "{body}"
        );
    }
    assert!(s.ctrl.alive(), "server survives the outage");

    // Bring Redis back on the same port (empty: scripts must be reloaded transparently).
    s.redis = Redis::start_on(port);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, _) = s.ctrl.post("/register", reg.clone()).await;
        if code == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no recovery after Redis came back (last {code})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for body in [json!({"entity_type": "service", "entity_id": "w", "scope": scope})] {
        let (code, resp) = s.ctrl.post("/heartbeat", body).await;
        assert_eq!((code, resp["status"].as_str()), (200, Some("ok")));
    }
    s.ctrl
        .start_agent_ok(json!({"address": "127.0.0.1", "scope": scope, "alias": "z"}))
        .await;
    s.ctrl
        .post_ok(
            "/v1/desired_topology/z",
            json!({"target_peers": ["y"], "symmetric": true, "scope": scope}),
        )
        .await;
    s.ctrl
        .post_ok("/unregister", json!({"entity_id": "w", "scope": scope}))
        .await;
}

#[tokio::test]
async fn concurrent_registrations_from_many_clients() {
    let s = Stack::start();
    let scope = unique("conc");
    let base = s.ctrl.base.clone();
    const CLIENTS: usize = 64;
    const PER_CLIENT: usize = 10;

    // 64 clients, each with its own connection, registering entities and generated agents.
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let base = base.clone();
        let scope = scope.clone();
        tasks.push(tokio::spawn(async move {
            let http = client();
            let mut names = Vec::new();
            for i in 0..PER_CLIENT {
                let r = http
                    .post(format!("{base}/register"))
                    .json(&json!({"entity_id": format!("e-{c}-{i}"), "kind": "k", "scope": scope}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200);
                let r = http
                    .post(format!("{base}/start_peer_agent"))
                    .json(&json!({"address": "127.0.0.1", "scope": scope}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200);
                let v: serde_json::Value = r.json().await.unwrap();
                names.push(v["name"].as_str().unwrap().to_string());
            }
            names
        }));
    }
    let mut names = HashSet::new();
    for t in tasks {
        for n in tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("deadline")
            .unwrap()
        {
            assert!(names.insert(n.clone()), "duplicate generated name {n}");
        }
    }
    assert_eq!(names.len(), CLIENTS * PER_CLIENT);
    let (_, body) = s.ctrl.post("/list_entities", json!({"scope": scope})).await;
    assert_eq!(
        body["entities"].as_array().unwrap().len(),
        CLIENTS * PER_CLIENT
    );
    let (_, body) = s.ctrl.post("/query", json!({"scope": scope})).await;
    assert_eq!(body.as_array().unwrap().len(), CLIENTS * PER_CLIENT);
    let rev: i64 = s
        .redis
        .conn()
        .get(format!("{scope}:nano_meta:service_revision"))
        .unwrap();
    assert_eq!(
        rev as usize,
        CLIENTS * PER_CLIENT,
        "every registration bumped the revision once"
    );

    // Many clients racing for one alias: exactly one wins, the rest get 409.
    let codes = post_concurrently(
        &base,
        (0..32).map(|i| {
            let body =
                json!({"address": format!("10.0.0.{i}"), "scope": scope, "alias": "contested"});
            ("/start_peer_agent".to_string(), body)
        }),
    )
    .await;
    assert_eq!(codes.iter().filter(|&&c| c == 200).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|&&c| c == 409).count(), 31, "{codes:?}");

    // Concurrent symmetric topology updates toward one peer lose nobody (atomic merge).
    let codes = post_concurrently(
        &base,
        (0..32).map(|i| {
            let body = json!({"target_peers": ["hub"], "symmetric": true, "scope": scope});
            (format!("/v1/desired_topology/s{i}"), body)
        }),
    )
    .await;
    assert_eq!(codes, vec![200; 32]);
    let hub: String = s
        .redis
        .conn()
        .get(format!("{scope}:spec:topology:hub"))
        .unwrap();
    let hub: serde_json::Value = serde_json::from_str(&hub).unwrap();
    assert_eq!(hub["target_peers"].as_array().unwrap().len(), 32);
}

/// Send a raw request head and return the first response line.
fn raw_request(port: u16, head: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut buf = vec![0u8; 256];
    let n = s.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}
