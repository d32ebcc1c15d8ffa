//! A host whose wall clock jumps does not expire live registrations (issue 13): the
//! agent "bob" runs in a child process under libfaketime, its wall clock stepped an hour
//! forward and then an hour back while it runs (its monotonic clock untouched, as a real
//! `settimeofday` leaves it). Heartbeats run on the monotonic clock and NanoCtrl judges
//! liveness by Redis's clock, so through both steps bob's record stays registered, nobody
//! can take its alias over, and its connection keeps moving bytes.
//!
//! Needs libfaketime (scripts/install-deps.sh); without it the test is NOT RUN, which
//! fails under CI=true.

mod common;
mod peer_fixture;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dlslime::peer::{ConnState, PeerAgent};
use dlslime::Status;
use peer_fixture::{opts, register, write_checked, Child, Cluster, WAIT};

peer_agent_child!();

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

#[test]
fn clock_jumps_do_not_expire_live_registrations() {
    if !Path::new(LIBFAKETIME).exists() {
        eprintln!(
            "NOT RUN: {LIBFAKETIME} is missing (scripts/install-deps.sh installs libfaketime)"
        );
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "clock-jump test NOT RUN under CI"
        );
        return;
    }
    let cl = Cluster::start("clock");
    let offset = std::env::temp_dir().join(format!("dlslime-faketime-{}", std::process::id()));
    std::fs::write(&offset, "+0\n").unwrap();
    let a = PeerAgent::new(cl.url(), Some("alice"), Some(&cl.scope), opts(300)).unwrap();
    let mut bufs = HashMap::new();
    register(&a, &mut bufs, "buf", 65536, 1);
    let fake = [
        ("LD_PRELOAD", LIBFAKETIME.to_string()),
        ("FAKETIME_TIMESTAMP_FILE", offset.display().to_string()),
        ("FAKETIME_NO_CACHE", "1".to_string()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
        ("PEER_HB_MS", "300".to_string()),
    ];
    let mut b = Child::start(&cl, "bob", &fake);
    b.ok("reg buf 65536 2");
    let c = a.connect_to("bob", "tcp").unwrap();
    c.wait(WAIT).unwrap();
    b.ok("wait alice 30000");
    let record = format!("{}:agent:bob", cl.scope);
    for step in ["+3600", "-3600"] {
        std::fs::write(&offset, format!("{step}\n")).unwrap();
        // well past the liveness window (3 beats + 1 s) and many heartbeats
        std::thread::sleep(Duration::from_secs(4));
        let ttl: i64 = redis::cmd("TTL")
            .arg(&record)
            .query(&mut cl.redis.conn())
            .unwrap();
        assert!(ttl > 0, "{step}: bob's record expired (TTL {ttl})");
        // the step took: bob's heartbeats carry its shifted wall clock
        let res: String = redis::cmd("HGET")
            .arg(&record)
            .arg("resource")
            .query(&mut cl.redis.conn())
            .unwrap();
        let res: serde_json::Value = serde_json::from_str(&res).unwrap();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let skew_s = (res["heartbeat_at_ms"].as_i64().unwrap() - now_ms) / 1000;
        let want: i64 = step.parse().unwrap();
        assert!(
            (skew_s - want).abs() < 30,
            "{step}: bob's clock is {skew_s} s off, libfaketime did not step it"
        );
        // a would-be successor may not take the alias of a live agent over
        let e = PeerAgent::new(cl.url(), Some("bob"), Some(&cl.scope), opts(300))
            .err()
            .expect("took a live agent's alias over");
        assert_eq!(e.status(), Status::NameConflict, "{step}: {e}");
        assert_eq!(c.state(), ConnState::Connected, "{step}");
        assert_eq!(b.ok("state alice"), "ok connected", "{step}");
        write_checked(&a, &mut b, 0, 65536);
        assert_eq!(
            a.list_agents().unwrap(),
            vec!["alice".to_string(), "bob".to_string()]
        );
    }
    b.exit();
    let _ = std::fs::remove_file(&offset);
}
