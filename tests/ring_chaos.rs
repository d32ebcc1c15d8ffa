//! A short chaos run of the slot ring (bench/ring/chaos.rs; the long one is
//! `make bench-ring RING_BENCH_ARGS="--chaos --secs 600"`): a producer process that
//! overwrites, a serving process SIGKILLed and restarted every ~2 s, patient and
//! impatient consumers. Every published payload is delivered whole or typed as stale;
//! nothing is corrupt, nothing is lost, no fetch outlives its worst case.

#[path = "../bench/ring/chaos.rs"]
mod chaos;
mod common;
#[path = "../bench/ring/proc.rs"]
mod proc;

use std::time::Duration;

/// The producer process of the chaos run.
#[test]
#[ignore]
fn chaos_producer() {
    if common::is_child() {
        chaos::producer_main();
    }
}

/// The restartable serving process of the chaos run.
#[test]
#[ignore]
fn chaos_server() {
    if common::is_child() {
        chaos::server_main();
    }
}

fn short_run(transport: &str) {
    let rep = chaos::run(&chaos::ChaosConfig {
        secs: 8,
        transport: transport.into(),
        payload: 64 << 10,
        slots: 8,
        write_every: Duration::from_millis(5),
        kill_every: Duration::from_secs(2),
        consumers: 2,
        impatient_timeout: Duration::from_millis(1),
    });
    eprintln!("{transport}: {rep:#?}");
    assert_eq!(rep.corrupt, 0, "{rep:?}");
    assert_eq!(rep.lost, 0, "{rep:?}");
    assert_eq!(rep.hangs, 0, "{rep:?}");
    assert_eq!(rep.unaccounted, 0, "{rep:?}");
    assert!(rep.fetched > 100, "{rep:?}");
    assert!(rep.kills >= 2, "{rep:?}");
}

common::scenario_tests! {
    chaos_short_run_shm => short_run("shm");
    chaos_short_run_tcp => short_run("tcp");
}
