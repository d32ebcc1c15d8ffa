//! CI's smoke pass of the fuzz targets (`fuzz/`), on stable: each target's corpus and a
//! few thousand mutated inputs through the same `dlslime::fuzz` entry point libFuzzer
//! drives. The long runs are `make fuzz` (nightly, cargo-fuzz).

#[path = "../fuzz/smoke.rs"]
mod smoke;

use std::path::Path;
use std::time::Duration;

const INPUTS: usize = 20_000;
const BUDGET: Duration = Duration::from_secs(10);

fn smoke(name: &str, f: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(name);
    let ran = smoke::run(name, &dir, INPUTS, BUDGET, f);
    assert!(ran > 100, "{name}: only {ran} inputs ran");
}

#[test]
fn tcp_hello() {
    smoke("tcp_hello", dlslime::fuzz::tcp_hello);
}

#[test]
fn tcp_frames() {
    smoke("tcp_frames", dlslime::fuzz::tcp_frames);
}

#[test]
fn rpc_message() {
    smoke("rpc_message", dlslime::fuzz::rpc_message);
}

#[test]
fn rpc_handshake() {
    smoke("rpc_handshake", dlslime::fuzz::rpc_handshake);
}

#[test]
fn shm_entry() {
    smoke("shm_entry", dlslime::fuzz::shm_entry);
}

#[test]
fn peer_mailbox() {
    smoke("peer_mailbox", dlslime::fuzz::peer_mailbox);
}

#[test]
fn endpoint_info() {
    smoke("endpoint_info", dlslime::fuzz::endpoint_info);
}
