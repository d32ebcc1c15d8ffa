//! A host whose wall clock jumps does not expire live registrations (issue 13): the
//! agent "bob" runs in a child process under libfaketime, its wall clock stepped an hour
//! forward and then an hour back while it runs (its monotonic clock untouched, as a real
//! `settimeofday` leaves it). Heartbeats run on the monotonic clock and NanoCtrl judges
//! liveness by Redis's clock, so through both steps bob's record stays registered, nobody
//! can take its alias over, and its connection keeps moving bytes. Redis's own clock
//! jumping is another matter (its expiry times are absolute): the agents repair their
//! records within about a second (second test).
//!
//! Needs libfaketime (scripts/install-deps.sh); without it the test is NOT RUN, which
//! fails under CI=true.

mod common;
mod peer_fixture;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dlslime::peer::{ConnState, PeerAgent};
use dlslime::Status;
use peer_fixture::{opts, register, wait_for, write_checked, Child, Cluster, WAIT};

peer_agent_child!();

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Whether libfaketime is installed; prints NOT RUN (which fails under CI) if not.
fn have_libfaketime() -> bool {
    if Path::new(LIBFAKETIME).exists() {
        return true;
    }
    eprintln!("NOT RUN: {LIBFAKETIME} is missing (scripts/install-deps.sh installs libfaketime)");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "clock-jump test NOT RUN under CI"
    );
    false
}

/// A libfaketime offset file ("+0" to start with) and the environment that makes a
/// process's wall clock follow it (its monotonic clock untouched, as `settimeofday`
/// leaves it).
fn faked_clock(tag: &str) -> (PathBuf, Vec<(&'static str, String)>) {
    let offset =
        std::env::temp_dir().join(format!("dlslime-faketime-{tag}-{}", std::process::id()));
    std::fs::write(&offset, "+0\n").unwrap();
    let env = vec![
        ("LD_PRELOAD", LIBFAKETIME.to_string()),
        ("FAKETIME_TIMESTAMP_FILE", offset.display().to_string()),
        ("FAKETIME_NO_CACHE", "1".to_string()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
    ];
    (offset, env)
}

#[test]
fn clock_jumps_do_not_expire_live_registrations() {
    if !have_libfaketime() {
        return;
    }
    let cl = Cluster::start("clock");
    let (offset, mut fake) = faked_clock("agent");
    let a = PeerAgent::new(cl.url(), Some("alice"), Some(&cl.scope), opts(300)).unwrap();
    let mut bufs = HashMap::new();
    register(&a, &mut bufs, "buf", 65536, 1);
    fake.push(("PEER_HB_MS", "300".to_string()));
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
        let skew_s = (res["heartbeat_at_ms"].as_i64().unwrap() - now_ms()) / 1000;
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

/// Redis's own clock jumping forward: Redis keeps absolute expiry times, so a record
/// whose remaining TTL is shorter than the jump expires at once, and one that survives
/// looks dead to a would-be successor (liveness is judged on Redis's clock). Agents
/// compare Redis's view of their record with their own heartbeats every second and beat
/// at once when it contradicts them (registering again when the record is gone), so
/// both are repaired within about a second, not at the next heartbeat (15 s here, the
/// default; the repair must come well before it).
///
/// The two states a jump leaves are made directly in Redis (the record's last beat set
/// 50 s back on Redis's clock; the record deleted, as its expiry does): libfaketime
/// cannot be preloaded into Debian's redis-server, whose jemalloc calls clock_gettime
/// while libfaketime initialises (it hangs at start-up).
#[test]
fn a_jump_of_redis_clock_is_repaired_within_seconds() {
    let cl = Cluster::start("redisclock");
    let hb_ms = 15_000;
    let a = PeerAgent::new(cl.url(), Some("alice"), Some(&cl.scope), opts(hb_ms)).unwrap();
    let b = PeerAgent::new(cl.url(), Some("bob"), Some(&cl.scope), opts(hb_ms)).unwrap();
    let mut bufs = HashMap::new();
    register(&b, &mut bufs, "buf", 65536, 1);
    let c = a.connect_to("bob", "tcp").unwrap();
    c.wait(WAIT).unwrap();
    let record = format!("{}:agent:bob", cl.scope);
    // ms since bob's last beat on Redis's clock; None while its record is gone
    let beat_age = || -> Option<i64> {
        let mut r = cl.redis.conn();
        let at: Option<i64> = redis::cmd("HGET")
            .arg(&record)
            .arg("hb_at_ms")
            .query(&mut r)
            .unwrap();
        at.map(|at| redis_now_ms(&mut r) - at)
    };
    let live_window_ms = 3 * hb_ms as i64 + 1000; // NanoCtrl's owner.lua
                                                  // a jump of 50 s (less than the 60 s TTL, more than the liveness window), then one
                                                  // past the TTL
    for jump in ["50 s", "past the TTL"] {
        let t = Instant::now();
        let mut r = cl.redis.conn();
        if jump == "50 s" {
            let at = redis_now_ms(&mut r) - 50_000;
            let _: () = redis::cmd("HSET")
                .arg(&record)
                .arg("hb_at_ms")
                .arg(at)
                .query(&mut r)
                .unwrap();
            assert!(
                beat_age().unwrap() > live_window_ms,
                "bob does not look dead"
            );
        } else {
            let n: i64 = redis::cmd("DEL").arg(&record).query(&mut r).unwrap();
            assert_eq!(n, 1);
        }
        // repaired: the record is there with a fresh beat, well before the heartbeat
        wait_for(Duration::from_secs(5), "bob's record repaired", || {
            beat_age().filter(|&ms| ms < live_window_ms / 2)
        });
        eprintln!(
            "Redis clock jump of {jump}: bob's record repaired after {:?}",
            t.elapsed()
        );
        let ttl: i64 = redis::cmd("TTL").arg(&record).query(&mut r).unwrap();
        assert!(ttl > 0, "{jump}: TTL {ttl}");
        let e = PeerAgent::new(cl.url(), Some("bob"), Some(&cl.scope), opts(hb_ms))
            .err()
            .expect("took a live agent's alias over");
        assert_eq!(e.status(), Status::NameConflict, "{jump}: {e}");
        assert_eq!(
            a.list_agents().unwrap(),
            vec!["alice".to_string(), "bob".to_string()]
        );
        // everything a re-registration republishes is back: the region resolves
        assert!(a.get_mr_info("bob", "buf").unwrap().is_some(), "{jump}");
        assert_eq!(c.state(), ConnState::Connected, "{jump}");
    }
}

/// Redis's clock (`TIME`), in ms.
fn redis_now_ms(r: &mut redis::Connection) -> i64 {
    let (s, us): (i64, i64) = redis::cmd("TIME").query(r).unwrap();
    s * 1000 + us / 1000
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
