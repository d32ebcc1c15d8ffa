//! The control plane without a single point of failure: several NanoCtrl replicas on one
//! Redis (agents take the list and fail over), and a Redis replica promoted by hand
//! after its primary died (NanoCtrl takes both Redis URLs and follows the primary; the
//! agents find it through NanoCtrl, or through their own list). Agents are separate
//! processes; transfers run throughout with content checks.

mod common;
mod peer_fixture;

use std::time::{Duration, Instant};

use peer_fixture::{
    raw_post, rounds, rounds_setup, unique, wait_for, Child, Cluster, NanoCtrl, Redis,
};
use serde_json::json;

peer_agent_child!();

const TOKEN: &str = "replica-token-7e21";

fn field(r: &Redis, key: &str, f: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(key)
        .arg(f)
        .query(&mut r.conn())
        .unwrap()
}

/// Redis's clock in ms (the clock `hb_at_ms` is written with).
fn redis_now_ms(r: &Redis) -> u64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query(&mut r.conn()).unwrap();
    s * 1000 + us / 1000
}

/// Waits until the heartbeat of `alias` (through NanoCtrl) is newer than `after_ms`.
fn heartbeat_after(r: &Redis, scope: &str, alias: &str, after_ms: u64) {
    let key = format!("{scope}:agent:{alias}");
    wait_for(
        Duration::from_secs(15),
        &format!("a heartbeat of {alias}"),
        || {
            let at: u64 = field(r, &key, "hb_at_ms")?.parse().ok()?;
            (at > after_ms).then_some(())
        },
    );
}

fn sigkill(pid: u32) {
    // SAFETY: kill(2) on a pid this test spawned; no memory is involved.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

#[test]
fn killing_a_nanoctrl_replica_under_load_loses_nothing() {
    let redis = Redis::start();
    let a = NanoCtrl::start_with(&redis.url, Some(TOKEN), &[]);
    let b = NanoCtrl::start_with(&redis.url, Some(TOKEN), &[]);
    let urls = format!("{},{}", a.url, b.url);
    let b_port = b.port;
    let mut cl = Cluster {
        nanoctrl: a,
        redis,
        scope: unique("replicas"),
    };
    let env = [
        ("PEER_URL", urls.clone()),
        ("PEER_HB_MS", "300".to_string()),
    ];
    let mut alice = Child::start(&cl, "alice", &env);
    let mut bob = Child::start(&cl, "bob", &env);
    rounds_setup(&mut alice, &mut bob);
    alice.ok("connect bob tcp");
    alice.ok("wait bob 30000");
    bob.ok("wait alice 30000");
    rounds(&mut alice, &mut bob, 0, 5);
    let s = cl.scope.clone();
    let owners: Vec<_> = ["alice", "bob"]
        .iter()
        .map(|a| field(&cl.redis, &format!("{s}:agent:{a}"), "owner"))
        .collect();

    // SIGKILL the replica both agents talk to, in the middle of the transfers
    let killed_at = redis_now_ms(&cl.redis);
    sigkill(cl.nanoctrl.pid());
    let t0 = Instant::now();
    let mut k = 5;
    while t0.elapsed() < Duration::from_secs(3) {
        rounds(&mut alice, &mut bob, k, 1);
        k += 1;
    }
    cl.nanoctrl.kill(); // reap it
                        // heartbeats continue through the other replica; nothing was lost or re-registered
    for a in ["alice", "bob"] {
        heartbeat_after(&cl.redis, &s, a, killed_at + 1000);
    }
    let owners_after: Vec<_> = ["alice", "bob"]
        .iter()
        .map(|a| field(&cl.redis, &format!("{s}:agent:{a}"), "owner"))
        .collect();
    assert_eq!(owners, owners_after, "same registrations, same owners");
    assert!(owners.iter().all(Option::is_some));
    for a in ["alice", "bob"] {
        let ttl: i64 = redis::cmd("TTL")
            .arg(format!("{s}:agent:{a}"))
            .query(&mut cl.redis.conn())
            .unwrap();
        assert!(ttl > 55, "{a}'s record is kept alive (TTL {ttl})");
    }
    // a newcomer with the same list registers and connects through the live replica
    let mut carol = Child::start(&cl, "carol", &env);
    carol.ok("reg buf 65536 42");
    carol.ok("connect alice tcp");
    carol.ok("wait alice 30000");
    carol.ok("write alice buf rin 0 0 65536");
    alice.ok("check rin 42 0 65536");
    rounds(&mut alice, &mut bob, k, 3);
    // the live replica sees all three
    let (code, list) = raw_post(
        b_port,
        "/query",
        Some(&format!("Bearer {TOKEN}")),
        &json!({"scope": s}),
    );
    assert_eq!(code, 200);
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
    carol.exit();
    alice.exit();
    bob.exit();
    drop(b);
}

#[test]
fn redis_primary_lost_and_replica_promoted_by_hand() {
    let primary = Redis::start();
    let replica = Redis::start_with(&["--replicaof", "127.0.0.1", &primary.port.to_string()], "");
    wait_for(Duration::from_secs(15), "replication link", || {
        replica.replicating().then_some(())
    });
    let urls = format!("{},{}", primary.url, replica.url);
    let nano = NanoCtrl::start_with(&urls, None, &[]);
    let mut cl = Cluster {
        nanoctrl: nano,
        redis: primary,
        scope: unique("promote"),
    };
    let s = cl.scope.clone();
    // alice finds Redis through NanoCtrl; bob has its own list of Redis URLs
    let hb = ("PEER_HB_MS", "300".to_string());
    let mut alice = Child::start(&cl, "alice", std::slice::from_ref(&hb));
    let mut bob = Child::start(&cl, "bob", &[hb.clone(), ("PEER_REDIS_URL", urls.clone())]);
    rounds_setup(&mut alice, &mut bob);
    alice.ok("connect bob tcp");
    alice.ok("wait bob 30000");
    bob.ok("wait alice 30000");
    rounds(&mut alice, &mut bob, 0, 3);
    // the replica has everything so far
    cl.redis
        .wait_replicated_to(&replica, Duration::from_secs(15));

    // the primary dies; the operator promotes the replica
    cl.redis.kill();
    rounds(&mut alice, &mut bob, 3, 3); // the data plane does not depend on Redis
    let _: String = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut replica.conn())
        .unwrap();
    let promoted_at = redis_now_ms(&replica);

    // NanoCtrl follows (its /health turns 200 again) ...
    wait_for(
        Duration::from_secs(20),
        "NanoCtrl on the new primary",
        || {
            let r = peer_fixture::raw_get(cl.nanoctrl.port, "/health")?;
            r.starts_with("HTTP/1.1 200").then_some(())
        },
    );
    let (_, addr) = raw_post(
        cl.nanoctrl.port,
        "/get_redis_address",
        None,
        &json!({"address": "127.0.0.1"}),
    );
    assert_eq!(
        addr["redis_address"],
        format!("redis://127.0.0.1:{}", replica.port)
    );
    // ... the agents' heartbeats reach the new primary ...
    for a in ["alice", "bob"] {
        heartbeat_after(&replica, &s, a, promoted_at);
    }
    // ... and so do their own Redis commands (a region registered now is published)
    for (agent, name) in [(&mut alice, "late-a"), (&mut bob, "late-b")] {
        let mut n = 0;
        wait_for(
            Duration::from_secs(20),
            "a region published after the promotion",
            || {
                n += 1;
                agent
                    .cmd(&format!("reg {name}{n} 4096 5"))
                    .starts_with("ok")
                    .then_some(())
            },
        );
        let key = format!("{s}:mr:{}:{name}{n}", agent.alias);
        let v: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query(&mut replica.conn())
            .unwrap();
        assert!(v.is_some(), "{key} on the new primary");
    }
    rounds(&mut alice, &mut bob, 6, 3);
    // a newcomer connects to both through the new primary's mailboxes
    let mut carol = Child::start(&cl, "carol", &[hb]);
    carol.ok("reg buf 65536 43");
    for peer in ["alice", "bob"] {
        carol.ok(&format!("connect {peer} tcp"));
        carol.ok(&format!("wait {peer} 30000"));
    }
    carol.ok("write alice buf rin 0 0 65536");
    alice.ok("check rin 43 0 65536");
    carol.ok("write bob buf buf 0 0 65536");
    bob.ok("check buf 43 0 65536");
    carol.exit();
    alice.exit();
    bob.exit();
    // every key of the scope is gone from the new primary after the shutdowns
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{s}:*"))
        .query(&mut replica.conn())
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
    drop(replica);
}
